"""HL7 v2 batches, header(), ACKs (respond, ack_code) and strict validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.core import registry
from engine.core.contracts import AckCode, Outcome
from engine.core.errors import ParseError
from engine.datatypes.hl7v2 import Hl7v2, Hl7v2Config, ack_code
from engine.datatypes.hl7v2.validation import clean

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "hl7v2"  # ../shared beside the clone
SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"

ORIGINAL = (
    "MSH|^~\\&|EHR|NORTH_HOSP|JUNCTION|ENGINE|20240313143005||DFT^P03^DFT_P03|CTRL-77|P|{version}|||{accept}|NE\r"
    "PID|1||MRN1^^^HOSP^MR||SECRETNAME^PATIENT\r"
    "FT1|1|||20240313141500||CG|SUP-1|||1\r"
    "FT1|2|||20240313141700||CG|SUP-2|||x\r"
)


def original(version: str = "2.5", accept: str = "AL") -> bytes:
    return ORIGINAL.format(version=version, accept=accept).encode()


def segments(ack: bytes | None) -> list[list[str]]:
    assert ack is not None
    return [s.split("|") for s in ack.decode().split("\r") if s]


def respond(raw: bytes, outcome: Outcome, datatype: Hl7v2 | None = None) -> bytes:
    ack = (datatype or Hl7v2()).respond(raw, outcome)
    assert ack is not None
    return ack


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"third-party corpus not found at {CORPUS} (it lives beside the clone in CI only)")
    return CORPUS


# -- split -----------------------------------------------------------------------------


def test_split_single_message_returns_raw_unchanged() -> None:
    raw = original()
    assert Hl7v2().split(raw) == [raw]
    lf = raw.replace(b"\r", b"\n")
    assert Hl7v2().split(lf) == [lf]


def test_split_drops_batch_trailers_after_a_single_message() -> None:
    one = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|M6|P|2.5\rPID|1\r"
    assert Hl7v2().split(one + b"BTS|1\rFTS|1|END OF FILE\r") == [one]
    assert Hl7v2().split(one.replace(b"\r", b"\r\n") + b"BTS|1\r\n") == [one]
    # the letters in a field are no trailer
    note = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|M6|P|2.5\rNTE|1||SUBTS FTS\r"
    assert Hl7v2().split(note) == [note]


def test_split_fhs_bhs_batch_with_trailers() -> None:
    raw = (SAMPLES / "batch_fhs_bhs_three.hl7").read_bytes()
    parts = Hl7v2().split(raw)
    assert len(parts) == 3
    assert all(p.startswith(b"MSH|") and p.endswith(b"\r") and b"\n" not in p for p in parts)
    assert not any(re.search(rb"(^|\r)(FHS|BHS|BTS|FTS)", p) for p in parts)
    assert [Hl7v2().parse(p).get("MSH-10") for p in parts] == ["BAT0000000401", "BAT0000000402", "BAT0000000403"]


def test_split_corpus_fhs_bhs_batch_without_trailers(corpus: Path) -> None:
    raw = (corpus / "orm_o01_v24_mirth_fhs_bhs_batch.hl7").read_bytes()
    parts = Hl7v2().split(raw)
    assert len(parts) == 1
    assert parts[0].startswith(b"MSH|")
    assert b"\r\n" not in parts[0]
    msg = Hl7v2().parse(parts[0])
    assert msg.get("MSH-10") == "12345678"
    assert len(msg.get_all("OBX-1")) == 17


def test_split_corpus_multi_message_file(corpus: Path) -> None:
    raw = (corpus / "mixed_adt_a40_oru_r01_v23_mirth_batch.hl7").read_bytes()
    parts = Hl7v2().split(raw)
    assert [Hl7v2().parse(p).get("MSH-9.1") for p in parts] == ["ADT", "ORU"]
    assert Hl7v2().parse(parts[1]).get_all("OBX-1")[-1] == "14"


def test_split_keeps_orphan_segments_as_their_own_item() -> None:
    raw = b"BHS|^~\\&|A\rPID|1||ORPHAN\r" + original() + b"BTS|1\r"
    parts = Hl7v2().split(raw)
    assert len(parts) == 2
    with pytest.raises(ParseError):
        Hl7v2().parse(parts[0])
    assert Hl7v2().parse(parts[1]).get("MSH-10") == "CTRL-77"


def test_split_concatenated_files_with_boms_and_crlf() -> None:
    one = b"\xef\xbb\xbf" + original().replace(b"\r", b"\r\n")
    parts = Hl7v2().split(one + one)
    assert len(parts) == 2
    assert all(p.startswith(b"MSH|") for p in parts)


def test_split_empty_batch_gives_no_messages() -> None:
    assert Hl7v2().split(b"FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|1\r") == []


# -- header ----------------------------------------------------------------------------


def test_header_reads_msh_fields() -> None:
    header = Hl7v2().header(original())
    assert header.control_id == "CTRL-77"
    assert header.message_type == "DFT^P03^DFT_P03"
    assert header.business_key == "CTRL-77|NORTH_HOSP|EHR"
    assert header.fields["MSH-3"] == "EHR"
    assert header.fields["MSH-12"] == "2.5"
    assert header.fields["MSH-15"] == "AL"
    assert header.fields["MSH-16"] == "NE"
    assert set(header.fields) == {f"MSH-{n}" for n in (3, 4, 5, 6, 9, 10, 11, 12, 15, 16, 18)}


def test_header_with_custom_delimiters_joins_type_with_caret() -> None:
    header = Hl7v2().header(b"MSH#$*!@#A#B#C#D#20240101##ADT$A01$ADT_A01#7#P#2.5\r")
    assert header.message_type == "ADT^A01^ADT_A01"
    assert header.control_id == "7"


@pytest.mark.parametrize("raw", [b"", b"garbage", b"PID|1|2", b"MSH|", b"\xff\xfe\x00", b"MSH|^~\\&|A\r"])
def test_header_never_raises_on_garbage(raw: bytes) -> None:
    header = Hl7v2().header(raw)
    assert header.business_key == ""


def test_header_skips_batch_headers_and_bom(corpus: Path) -> None:
    assert Hl7v2().header((corpus / "orm_o01_v24_mirth_fhs_bhs_batch.hl7").read_bytes()).control_id == "12345678"
    assert Hl7v2().header((corpus / "adt_a04_v251_fhirconv_bom.hl7").read_bytes()).control_id == "1270326314"


# -- respond ---------------------------------------------------------------------------


def test_ack_mirrors_the_original() -> None:
    ack = respond(original(), Outcome("AA"))
    msh, msa = segments(ack)
    assert msh[1] == "^~\\&"
    assert (msh[2], msh[3], msh[4], msh[5]) == ("JUNCTION", "ENGINE", "EHR", "NORTH_HOSP")
    assert re.fullmatch(r"\d{14}[+-]\d{4}", msh[6])
    assert msh[8] == "ACK^P03^ACK"
    assert msh[9] not in ("", "CTRL-77")
    assert len(msh[9]) <= 20
    assert (msh[10], msh[11]) == ("P", "2.5")
    assert msa == ["MSA", "AA", "CTRL-77"]
    assert ack_code(ack) == ("AA", "CTRL-77")


def test_ack_control_ids_are_unique() -> None:
    ids = {segments(Hl7v2().respond(original(), Outcome("AA")))[0][9] for _ in range(50)}
    assert len(ids) == 50


def test_ack_config_overrides_sending_application_and_facility() -> None:
    config = Hl7v2Config.model_validate(
        {"type": "hl7v2", "ack_sending_application": "JX", "ack_sending_facility": "MAIN"}
    )
    msh = segments(Hl7v2(config).respond(original(), Outcome("AA")))[0]
    assert (msh[2], msh[3], msh[4], msh[5]) == ("JX", "MAIN", "EHR", "NORTH_HOSP")


def test_ae_has_msa_text_and_v25_err_with_location() -> None:
    outcome = Outcome("AE", "expected a number", "segment 4 (FT1), field 10", "102")
    ack = respond(original("2.5.1"), outcome)
    msh, msa, err = segments(ack)
    assert msh[11] == "2.5.1"
    assert msa == ["MSA", "AE", "CTRL-77", "segment 4 (FT1), field 10: expected a number"]
    assert err == ["ERR", "", "FT1^2^10", "102^Data type error^HL70357", "E"]
    assert ack_code(ack) == ("AE", "CTRL-77")


def test_ar_err_location_from_a_path_and_default_code() -> None:
    ack = Hl7v2().respond(original(), Outcome("AR", "mapping failed", "PID-3"))
    err = segments(ack)[2]
    assert err == ["ERR", "", "PID^1^3", "207^Application internal error^HL70357", "E"]


def test_v23_err_style() -> None:
    ack = Hl7v2().respond(original("2.3"), Outcome("AE", "bad", "segment 3 (FT1), field 10", "102"))
    assert segments(ack)[2] == ["ERR", "FT1^1^10^102&Data type error&HL70357"]
    ack = Hl7v2().respond(original("2.4"), Outcome("AE", "bad"))
    assert segments(ack)[2] == ["ERR", "^^^207&Application internal error&HL70357"]


def test_msa_text_is_escaped_and_short() -> None:
    ack = respond(original(), Outcome("AE", "a|b^c " + "x" * 200))
    msa = ack.decode().split("\r")[1]
    assert msa.startswith("MSA|AE|CTRL-77|a\\F\\b\\S\\c x")
    assert len(msa) < 120


def test_bad_segment_id_is_not_echoed_in_err() -> None:
    raw = original() + b"secret line|x\r"
    with pytest.raises(ParseError) as info:
        Hl7v2().parse(raw)
    error = info.value
    ack = respond(raw, Outcome("AR", error.reason, error.position, error.code))
    assert b"secret" not in ack
    assert segments(ack)[2] == ["ERR", "", "", "100^Segment sequence error^HL70357", "E"]


@pytest.mark.parametrize("raw", [b"", b"garbage", b"\x00\xff", b"PID|1||X", b"MSH|^", b"\xef\xbb\xbf\xff"])
def test_garbage_gets_an_ar_with_defaults(raw: bytes) -> None:
    ack = Hl7v2().respond(raw, Outcome("AE", "message does not start with MSH", "segment 1", "100"))
    msh, msa, err = segments(ack)
    assert msh[:6] == ["MSH", "^~\\&", "", "", "", ""]
    assert (msh[8], msh[11]) == ("ACK", "2.5")
    assert msa[:3] == ["MSA", "AR", ""]
    assert err[3] == "100^Segment sequence error^HL70357"


@pytest.mark.parametrize(
    ("accept", "code", "answered"),
    [
        ("NE", "AA", False),
        ("NE", "AE", False),
        ("ER", "AA", False),
        ("ER", "AR", True),
        ("SU", "AA", True),
        ("SU", "AE", False),
        ("AL", "AA", True),
        ("AL", "AR", True),
        ("", "AA", True),
    ],
)
def test_accept_ack_type_msh15(accept: str, code: AckCode, answered: bool) -> None:
    honoring = Hl7v2(Hl7v2Config.model_validate({"type": "hl7v2", "honor_accept_ack_type": True}))
    ack = honoring.respond(original(accept=accept), Outcome(code))
    assert (ack is not None) == answered
    assert Hl7v2().respond(original(accept=accept), Outcome(code)) is not None, "default: always answer"


def test_ack_uses_the_input_charset_and_delimiters() -> None:
    raw = "MSH#$*!@#APP#FAC#RCV#RFAC#20240101##ADT$A01#7#P#2.4######8859/1\rPID#1##X##Müller\r".encode("latin-1")
    ack = respond(raw, Outcome("AE", "Prüfung fehlgeschlagen"))
    text = ack.decode("latin-1")
    assert text.startswith("MSH#$*!@#RCV#RFAC#APP#FAC#")
    assert "#ACK$A01$ACK#" in text
    assert "Prüfung" in text
    assert text.count("8859/1") == 1
    with pytest.raises(UnicodeDecodeError):
        ack.decode("utf-8")


def test_corpus_malformed_message_gets_ar(corpus: Path) -> None:
    raw = (corpus / "malformed_missing_msh9_cdc.hl7").read_bytes()
    with pytest.raises(ParseError) as info:
        Hl7v2().parse(raw)
    error = info.value
    ack = respond(raw, Outcome("AR", error.reason, error.position, error.code))
    msh, msa, err = segments(ack)
    assert msh[8] == "ACK"  # the trigger is unknown
    assert msa[:3] == ["MSA", "AR", "111111"]
    assert err[2:4] == ["MSH^1^9", "101^Required field missing^HL70357"]


@pytest.mark.parametrize(
    ("ack", "expected"),
    [
        (b"MSH|^~\\&|A|B|C|D|1||ACK|9|P|2.5\rMSA|AE|X1|oops\r", ("AE", "X1")),
        (b"\x0bMSH|^~\\&|A|B|C|D|1||ACK|9|P|2.5\rMSA|AA\r\x1c\r", ("AA", "")),
        (b"MSH#^~\\&#A\nMSA#CA#Q2\n", ("CA", "Q2")),
        (b"nothing here", ("", "")),
        (b"", ("", "")),
    ],
)
def test_ack_code(ack: bytes, expected: tuple[str, str]) -> None:
    assert ack_code(ack) == expected


# -- validate --------------------------------------------------------------------------


def test_validate_is_off_by_default() -> None:
    assert Hl7v2().validate(b"garbage") == []


def test_strict_validation_reports_problems_without_values() -> None:
    strict = Hl7v2(Hl7v2Config.model_validate({"type": "hl7v2", "validate": "strict"}))
    good = (SAMPLES / "adt_a08_update_zsegment.hl7").read_bytes()  # ADT^A08 without MSH-9.3, with a Z-segment
    assert strict.validate(good) == []  # its table warnings (e.g. coding systems) are not problems
    raw = (
        b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01^ADT_A01|1|P|2.5\r"
        b"EVN|A01|20240101\rPID|1||X^^^H^MR||SECRETNAME^PATIENT||19800101|SECRETSEX\r"
    )
    assert strict.validate(raw) == ["error: Missing required child ADT_A01.PV1"]
    bad_date = raw.replace(b"19800101", b"SECRET-DATE") + b"PV1|1|I\r"
    problems = strict.validate(bad_date)
    assert problems == ["error: ValueError: a value is not a valid HL7 date value"]
    assert strict.validate(b"not hl7") == ["error: segment 1: message does not start with MSH"]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Value JOHN not in table HL70001 in element PID.PID_8", "value not in table HL70001 in element PID.PID_8"),
        ("The value SMITH JOHN exceed the max length: 20", "a value exceeds the maximum length 20"),
        ("1980-01-15 is not an HL7 valid date value", "a value is not a valid HL7 date value"),
        ("Missing required child ADT_A01.PV1", "Missing required child ADT_A01.PV1"),
        ("something new quoting JOHN", "details withheld (the validator's message may quote content)"),
    ],
)
def test_clean_hl7apy_messages(message: str, expected: str) -> None:
    assert clean(message) == expected


# -- spec ------------------------------------------------------------------------------


def test_spec_registered_and_examples_validate() -> None:
    import yaml

    spec = registry.get("datatype", "hl7v2")
    assert spec.load_factory() is Hl7v2
    assert "PID-3[2].1" in spec.path_syntax
    for example in spec.examples:
        spec.config.model_validate(yaml.safe_load(example.yaml))
    assert all(field.description for field in spec.config.model_fields.values() if field.alias != "type")


# -- real senders' quirks ---------------------------------------------------------------------

BATCH = (
    b"FHS|^~\\&|SND|SF|RCV|RF|20240101||||F1\r"
    b"BHS|^~\\&|SND|SF|RCV|RF|20240101||||B1\r"
    b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|M1|P|2.5\rPID|1\r"
    b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|M2|P|2.5\rPID|1\r"
    b"BTS|2\rFTS|1\r"
)


def _acks_for(raw: bytes) -> list[bytes]:
    dt = Hl7v2()
    first, second = dt.split(raw)
    return [dt.respond(first, Outcome("AA")), dt.respond(second, Outcome("AR", "bad", "segment 2", "100"))]  # type: ignore[list-item]


def test_a_batch_is_answered_with_a_response_batch_holding_every_ack() -> None:
    answer = Hl7v2().respond_batch(BATCH, _acks_for(BATCH))
    rows = segments(answer)
    assert [r[0] for r in rows] == ["FHS", "BHS", "MSH", "MSA", "MSH", "MSA", "ERR", "BTS", "FTS"]
    fhs, bhs = rows[0], rows[1]
    assert fhs[2:6] == ["RCV", "RF", "SND", "SF"] and fhs[11] == "F1"  # ends swapped, FHS-12 = FHS-11
    assert bhs[2:6] == ["RCV", "RF", "SND", "SF"] and bhs[11] == "B1" and bhs[10] not in ("", "B1")
    assert [r[1:3] for r in rows if r[0] == "MSA"] == [["AA", "M1"], ["AR", "M2"]]
    assert rows[7][:2] == ["BTS", "2"] and rows[8][:2] == ["FTS", "1"]


def test_a_batch_without_a_file_header_has_no_file_trailer() -> None:
    raw = BATCH.split(b"\r", 1)[1].replace(b"FTS|1\r", b"")
    rows = segments(Hl7v2().respond_batch(raw, _acks_for(raw)))
    assert [r[0] for r in rows] == ["BHS", "MSH", "MSA", "MSH", "MSA", "ERR", "BTS"]


def test_several_messages_without_a_batch_header_get_their_acks_in_order() -> None:
    raw = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|M1|P|2.5\rPID|1\rMSH|^~\\&|A|B|C|D|20240101||ADT^A01|M2|P|2.5\rPID|1\r"
    rows = segments(Hl7v2().respond_batch(raw, _acks_for(raw)))
    assert [r[1:3] for r in rows if r[0] == "MSA"] == [["AA", "M1"], ["AR", "M2"]]
    assert rows[0][0] == "MSH"


def test_unusable_encoding_characters_still_get_their_control_id_mirrored() -> None:
    # MSH-2 with three characters (a real sender's slip): refused, but the AR names M3 and
    # goes back to the sender, so it can match the NAK to its message.
    raw = b"MSH|^~&|LAB|HOSP|EHR|HOSP|20240101||ADT^A01|M3|P|2.2\rPID|1\r"
    dt = Hl7v2()
    with pytest.raises(ParseError):
        dt.parse(raw)
    assert dt.header(raw).control_id == "M3"
    msh, msa, _err = segments(dt.respond(raw, Outcome("AE", "MSH-2 must hold 4 or 5 encoding characters", "", "102")))
    assert msh[1] == "^~\\&" and msh[2:6] == ["EHR", "HOSP", "LAB", "HOSP"] and msh[11] == "2.2"
    assert msa[:3] == ["MSA", "AR", "M3"]


@pytest.mark.parametrize(
    ("version", "msh9"),
    [("2.2", "ACK^A01"), ("2.3", "ACK^A01"), ("2.3.1", "ACK^A01^ACK"), ("2.5.1", "ACK^A01^ACK"), ("", "ACK^A01^ACK")],
)
def test_the_message_structure_component_only_from_v231(version: str, msh9: str) -> None:
    raw = f"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|M1|P|{version}\rPID|1\r".encode()
    assert segments(Hl7v2().respond(raw, Outcome("AA")))[0][8] == msh9


def test_a_nul_padded_msh18_is_read_and_answered_clean() -> None:
    raw = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|M5|P|2.5||||||8859/1\x00\rPID|1||X||M\xfcller\r"
    dt = Hl7v2()
    msg = dt.parse(raw)
    assert (msg.charset, msg.get("PID-5.1")) == ("latin-1", "Müller")
    msh, msa = segments(dt.respond(raw, Outcome("AA")))
    assert msh[17] == "8859/1" and msa[:3] == ["MSA", "AA", "M5"]
    # a NUL inside the name: not a charset, so the bytes decide; never an exception
    odd = raw.replace(b"8859/1\x00", b"88\x0059/1")
    assert dt.header(odd).control_id == "M5"
    assert segments(dt.respond(odd, Outcome("AA")))[1][:3] == ["MSA", "AA", "M5"]


@pytest.mark.parametrize(("code", "commit"), [("AA", "CA"), ("AE", "CE"), ("AR", "CR")])
def test_enhanced_mode_is_answered_with_commit_codes_when_honoured(code: AckCode, commit: str) -> None:
    honoring = Hl7v2(Hl7v2Config.model_validate({"type": "hl7v2", "honor_accept_ack_type": True}))
    enhanced = original(accept="AL")  # MSH-15 AL, MSH-16 NE
    assert segments(honoring.respond(enhanced, Outcome(code, "x")))[1][1] == commit
    # original mode (MSH-15 and MSH-16 empty) keeps AA/AE/AR, and so does the default config
    plain = original(accept="").replace(b"|NE\r", b"|\r")
    assert segments(honoring.respond(plain, Outcome(code, "x")))[1][1] == code
    assert segments(Hl7v2().respond(enhanced, Outcome(code, "x")))[1][1] == code
