"""Property tests: arbitrary bytes never crash the HL7 v2 data type; escaped values round-trip."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.contracts import Outcome
from engine.core.errors import ParseError
from engine.datatypes.hl7v2 import Hl7v2, ack_code
from engine.datatypes.hl7v2.encoding import DEFAULT, Encoding, escape

DATATYPE = Hl7v2()
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bytes that look a little like HL7 find more corner cases than uniform noise.
hl7ish = st.lists(
    st.sampled_from(
        [
            *(b"MSH", b"|", b"^~\\&", b"^", b"~", b"\\", b"&", b"\r", b"\n", b"\r\n", b"PID", b"FHS", b"BHS"),
            *(
                b"BTS",
                b"ZPI",
                b"A01",
                b"2.5",
                b"\xef\xbb\xbf",
                b"\xff",
                b"\xc3\xa9",
                b" ",
                b"8859/1",
                b"NE",
                b"\\X41\\",
                b"\x00",
                b"|||||||8859/1\x00",
                b"BTS|1",
                b"^~&",
            ),
        ]
    ),
    max_size=40,
).map(b"".join)
any_bytes = st.one_of(st.binary(max_size=300), hl7ish)
outcomes = st.builds(
    Outcome,
    code=st.sampled_from(["AA", "AE", "AR"]),
    reason=st.text(max_size=100),
    position=st.one_of(st.just(""), st.text(max_size=30), st.just("segment 2 (PID), field 3")),
    error_code=st.sampled_from(["", "100", "207", "999"]),
)


@PROPERTY
@given(any_bytes)
def test_parse_raises_only_parse_error(raw: bytes) -> None:
    try:
        msg = DATATYPE.parse(raw)
    except ParseError:
        return  # the only exception allowed
    # Whatever parsed must also answer paths and serialise.
    msg.get("MSH-9.1")
    msg.get_all("PID-3[*].1")
    msg.to_data()


@PROPERTY
@given(any_bytes)
def test_header_and_split_never_raise(raw: bytes) -> None:
    header = DATATYPE.header(raw)
    assert isinstance(header.control_id, str)
    parts = DATATYPE.split(raw)
    assert isinstance(parts, list)
    assert all(isinstance(p, bytes) for p in parts)


# MSH lines that parse: separators, optional fields, odd blanks, a BOM, other charsets.
parseable = st.builds(
    lambda bom, fields, tail, nl: bom + b"MSH|^~\\&|" + b"|".join(fields) + tail + nl + b"PID|1||42",
    st.sampled_from([b"", b"\xef\xbb\xbf"]),
    st.lists(
        st.sampled_from([b"", b"A", b" B ", b"ADT^A01", b"C1", b"2.5", b"\xe9", b"8859/1", b"UNICODE UTF-8"]),
        min_size=10,
        max_size=17,
    ).map(lambda f: [*f[:6], b"ADT^A01", b"CTRL" + f[7], b"P", b"2.5", *f[10:]]),
    st.sampled_from([b"", b" ", b"\t", b"|"]),
    st.sampled_from([b"\r", b"\n", b"\r\n"]),
)


@PROPERTY
@given(st.one_of(parseable, any_bytes))
def test_the_header_read_off_a_parsed_message_equals_the_one_read_from_bytes(raw: bytes) -> None:
    try:
        doc = DATATYPE.parse(raw)
    except ParseError:
        return
    fast = DATATYPE.header_of(doc)
    if fast is not None:
        assert fast == DATATYPE.header(raw)


def _without_stamps(ack: bytes | None) -> bytes | None:
    """An ACK with MSH-7 (the time) and MSH-10 (a fresh id) blanked: they differ per call."""
    if ack is None:
        return None
    first, _, rest = ack.partition(b"\r")
    separator = first[3:4]
    fields = first.split(separator)
    fields[6] = fields[9] = b""
    return separator.join(fields) + b"\r" + rest


@PROPERTY
@given(st.one_of(parseable, any_bytes), outcomes)
def test_the_ack_built_from_a_parsed_message_equals_the_one_built_from_bytes(raw: bytes, outcome: Outcome) -> None:
    try:
        doc = DATATYPE.parse(raw)
    except ParseError:
        return
    assert _without_stamps(DATATYPE.respond_parsed(doc, outcome)) == _without_stamps(DATATYPE.respond(raw, outcome))


def test_header_of_declines_an_msh_line_with_trailing_blanks() -> None:
    doc = DATATYPE.parse(b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5 \rPID|1")
    assert DATATYPE.header_of(doc) is None
    assert DATATYPE.header_of(DATATYPE.parse(b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5\rPID|1")) is not None


@PROPERTY
@given(any_bytes, outcomes)
def test_respond_never_raises_and_acks_are_readable(raw: bytes, outcome: Outcome) -> None:
    ack = DATATYPE.respond(raw, outcome)
    if ack is None:
        return  # only when the original's MSH-15 asked for no answer
    code, _ = ack_code(ack)
    assert code in {"AA", "AE", "AR"}
    assert ack.startswith(b"MSH")


# Values for the round trip: any text without CR (a CR cannot be represented inside a
# value; LF comes back through \.br\).
values = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r"), max_size=30)


@PROPERTY
@given(
    st.lists(st.lists(st.lists(values, min_size=1, max_size=3), min_size=1, max_size=3), min_size=1, max_size=3),
    st.sampled_from([DEFAULT, Encoding("#", "$", "*", "!", "@"), Encoding("|", "^", "~", "\\", "&", "#")]),
)
def test_generated_values_round_trip(reps: list[list[list[str]]], enc: Encoding) -> None:
    field = enc.repetition.join(
        enc.component.join(enc.subcomponent.join(escape(sub, enc) for sub in comp) for comp in rep) for rep in reps
    )
    fs = enc.field
    text = f"MSH{fs}{enc.msh2}{fs}A{fs}B{fs}C{fs}D{fs}20240101{fs}{fs}ADT{enc.component}A01{fs}1{fs}P{fs}2.7\r"
    text += f"ZZZ{fs}1{fs}{field}\r"
    msg = DATATYPE.parse(text.encode("utf-8"))
    for r, rep in enumerate(reps, 1):
        for c, comp in enumerate(rep, 1):
            for s, sub in enumerate(comp, 1):
                assert msg.get(f"ZZZ-2[{r}].{c}.{s}") == (sub or None)
    firsts = msg.get_all("ZZZ-2[*].1.1")
    assert firsts == [rep[0][0] for rep in reps] or field == ""
