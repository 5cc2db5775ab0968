"""HL7 v2 parser: paths, escapes, line endings, charsets, errors, corpus and samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.errors import ParseError
from engine.datatypes.hl7v2 import Hl7Message, Hl7v2, Hl7v2Config
from engine.datatypes.hl7v2.encoding import DEFAULT, Encoding, escape, unescape
from engine.datatypes.hl7v2.paths import ALL, parse_path

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "hl7v2"  # ../shared beside the clone
SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"

DFT = (
    "MSH|^~\\&|OR|HOSP|JUNCTION|ENGINE|20240313143005||DFT^P03^DFT_P03|CTRL-1|P|2.5|||AL|NE\r"
    "PID|1||MRN1^^^HOSP^MR~ALT2^^^OTHER^PI||TEST^PATIENT\r"
    "FT1|1|||20240313141500||CG|SUP-1^Hip stem^ITEMS|||1|4250.00^USD\r"
    "FT1|2|||20240313141700||CG|SUP-2^Bone cement^ITEMS|||2|185.50^USD\r"
    "ZPI|1|VIP&Flag^second\r"
)


def parse(text: str, **config: object) -> Hl7Message:
    datatype = Hl7v2(Hl7v2Config.model_validate({"type": "hl7v2", **config}))
    return datatype.parse(text.encode("utf-8"))


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"third-party corpus not found at {CORPUS} (it lives beside the clone in CI only)")
    return CORPUS


@pytest.fixture
def dft() -> Hl7Message:
    return parse(DFT)


# -- paths -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("MSH-1", "|"),
        ("MSH-2", "^~\\&"),
        ("MSH-3", "OR"),
        ("MSH-9", "DFT^P03^DFT_P03"),  # a composite addressed whole is returned as written
        ("MSH-9.1", "DFT"),
        ("MSH-9.2", "P03"),
        ("MSH-10", "CTRL-1"),
        ("MSH-12", "2.5"),
        ("PID-3", "MRN1^^^HOSP^MR"),  # first repetition, whole field
        ("PID-3.1", "MRN1"),
        ("PID-3.4", "HOSP"),
        ("PID-3[2].1", "ALT2"),
        ("PID-3[2].4", "OTHER"),
        ("PID-3[*].1", "MRN1"),  # get with [*]: the first non-empty value
        ("PID-1", "1"),
        ("FT1-7.1", "SUP-1"),
        ("FT1[2]-7.1", "SUP-2"),
        ("FT1[2]-10", "2"),
        ("FT1[*]-10", "1"),
        ("ZPI-2.1.1", "VIP"),
        ("ZPI-2.1.2", "Flag"),
        ("ZPI-2.1", "VIP&Flag"),  # stops above sub-components: as written
        ("ZPI-2.2", "second"),
        ("ZPI", "ZPI|1|VIP&Flag^second"),
        ("PID", "PID|1||MRN1^^^HOSP^MR~ALT2^^^OTHER^PI||TEST^PATIENT"),
    ],
)
def test_get_every_path_form(dft: Hl7Message, path: str, expected: str) -> None:
    assert dft.get(path) == expected


@pytest.mark.parametrize(
    "path",
    ["PID-4", "PID-3[3].1", "PID-3.9", "PID-3.1.2", "FT1[3]-7", "OBX-5", "PID-99", "MSH-9.4", "MSH-2.2", "ZZZ"],
)
def test_get_absent_or_empty_is_none(dft: Hl7Message, path: str) -> None:
    assert dft.get(path) is None


def test_get_all_one_value_per_segment_and_per_repetition(dft: Hl7Message) -> None:
    assert dft.get_all("FT1-7.1") == ["SUP-1", "SUP-2"]
    assert dft.get_all("FT1-11.1") == ["4250.00", "185.50"]
    assert dft.get_all("FT1-13") == ["", ""]  # kept aligned with the other FT1 paths
    assert dft.get_all("PID-3[*].1") == ["MRN1", "ALT2"]
    assert dft.get_all("PID-3.1") == ["MRN1"]
    assert dft.get_all("FT1[2]-7.1") == ["SUP-2"]
    assert dft.get_all("PID-4[*]") == []  # an empty field has no repetitions
    assert dft.get_all("OBX-5") == []
    assert dft.get_all("MSH-2") == ["^~\\&"]


@pytest.mark.parametrize(
    "path", ["pid-3", "PID-0", "PID-3.0", "PID-3[0]", "PID-3..1", "PID-3.1.2.3", "PID3", "PID-x", "", "PID-3[]"]
)
def test_invalid_path_syntax_raises_value_error(dft: Hl7Message, path: str) -> None:
    with pytest.raises(ValueError, match="invalid HL7 v2 path"):
        dft.get(path)


def test_parse_path_structure() -> None:
    path = parse_path("PID[2]-3[*].4.1")
    assert (path.segment, path.occurrence, path.field, path.repetition, path.component, path.subcomponent) == (
        "PID",
        2,
        3,
        ALL,
        4,
        1,
    )


# -- escapes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "value"),
    [
        (r"A\F\B", "A|B"),
        (r"A\S\B", "A^B"),
        (r"A\T\B", "A&B"),
        (r"A\R\B", "A~B"),
        (r"A\E\B", "A\\B"),
        (r"line1\.br\line2", "line1\nline2"),
        ("\\X41\\\\X4243\\", "ABC"),
        ("\\H\\bold\\N\\ text", "bold text"),
        (r"unterminated \F", "unterminated \\F"),
        (r"unknown \Zabc\ kept", "unknown \\Zabc\\ kept"),
        ("plain", "plain"),
    ],
)
def test_unescape(written: str, value: str) -> None:
    assert unescape(written, DEFAULT) == value


def test_escapes_resolved_in_leaf_values_only() -> None:
    msg = parse("MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5\rNTE|1|L|Hives \\T\\ rash\\.br\\itchy|X\\S\\Y^Z\r")
    assert msg.get("NTE-3") == "Hives & rash\nitchy"
    assert msg.get("NTE-4.1") == "X^Y"
    assert msg.get("NTE-4") == "X\\S\\Y^Z"  # composite as written


def test_escape_then_unescape_round_trip() -> None:
    value = "a|b^c~d\\e&f\nnext"
    assert unescape(escape(value, DEFAULT), DEFAULT) == value


def test_custom_encoding_characters() -> None:
    msg = parse("MSH#$*!@#A#B#C#D#20240101##ADT$A01#7#P#2.5\rPID#1##X1$$$MRN*X2!S!Z#NAME@1$F\r")
    assert msg.encoding == Encoding("#", "$", "*", "!", "@")
    assert msg.get("MSH-1") == "#"
    assert msg.get("MSH-2") == "$*!@"
    assert msg.get("MSH-9.2") == "A01"
    assert msg.get("PID-3.4") == "MRN"
    assert msg.get("PID-3[2].1") == "X2$Z"
    assert msg.get("PID-4.1.2") == "1"
    assert msg.get("PID-4.2") == "F"


def test_escape_sequences_follow_the_messages_escape_character() -> None:
    msg = parse("MSH#$*!@#A#B#C#D#20240101##ADT$A01#7#P#2.5\rNTE#1#L#one!F!two!T!three\r")
    assert msg.get("NTE-3") == "one#two@three"


def test_truncation_character_v27() -> None:
    msg = parse("MSH|^~\\&#|A|B|C|D|20240101||ADT^A01|1|P|2.7\rNTE|1|L|cut\\P\\here\r")
    assert msg.encoding.truncation == "#"
    assert msg.get("MSH-2") == "^~\\&#"
    assert msg.get("NTE-3") == "cut#here"


# -- line endings, BOM, whitespace, Z-segments -----------------------------------------


@pytest.mark.parametrize("newline", ["\r", "\n", "\r\n"])
def test_segment_separators(newline: str) -> None:
    msg = parse(DFT.replace("\r", newline))
    assert [s[:3] for s in msg.segments] == ["MSH", "PID", "FT1", "FT1", "ZPI"]
    assert msg.get("FT1[2]-7.1") == "SUP-2"


def test_mixed_separators_trailing_blank_segments_and_whitespace() -> None:
    text = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\r\nPID|1||X\nPV1|1|I\r\r\n  \n\t\r"
    msg = parse(text)
    assert [s[:3] for s in msg.segments] == ["MSH", "PID", "PV1"]
    assert msg.get("PV1-2") == "I"


def test_bom_is_stripped_and_means_utf8() -> None:
    raw = "\ufeffMSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||X||Müller^Zoë\r".encode()
    msg = Hl7v2().parse(raw)
    assert msg.charset == "utf-8"
    assert msg.get("MSH-1") == "|"
    assert msg.get("PID-5.2") == "Zoë"


def test_z_segments_are_kept(dft: Hl7Message) -> None:
    assert dft.get("ZPI-1") == "1"
    assert [s["id"] for s in dft.to_data()["segments"]][-1] == "ZPI"


# -- charsets --------------------------------------------------------------------------

LATIN = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||{msh18}\rPID|1||X||Müller^José\r"


def test_latin1_declared_in_msh18() -> None:
    raw = LATIN.format(msh18="8859/1").encode("latin-1")
    msg = Hl7v2().parse(raw)
    assert msg.charset == "latin-1"
    assert msg.get("PID-5.1") == "Müller"


def test_msh18_wins_over_utf8_detection() -> None:
    # UTF-8 bytes labelled 8859/1 are read as latin-1, as the sender declared.
    raw = LATIN.format(msh18="8859/1").encode("utf-8")
    assert Hl7v2().parse(raw).get("PID-5.1") == "MÃ¼ller"


def test_latin1_by_fallback_without_msh18() -> None:
    raw = LATIN.format(msh18="").encode("latin-1")
    msg = Hl7v2().parse(raw)
    assert msg.charset == "windows-1252"
    assert msg.get("PID-5.2") == "José"


def test_utf8_without_declaration() -> None:
    msg = Hl7v2().parse(LATIN.format(msh18="").encode("utf-8"))
    assert msg.charset == "utf-8"
    assert msg.get("PID-5.1") == "Müller"


def test_ascii_declared_but_8bit_falls_back() -> None:
    msg = Hl7v2().parse(LATIN.format(msh18="ASCII").encode("latin-1"))
    assert msg.get("PID-5.1") == "Müller"


def test_configured_charset_is_trusted() -> None:
    raw = LATIN.format(msh18="").encode("latin-1")
    datatype = Hl7v2(Hl7v2Config.model_validate({"type": "hl7v2", "charset": "8859/1"}))
    assert datatype.parse(raw).get("PID-5.2") == "José"
    strict_utf8 = Hl7v2(Hl7v2Config.model_validate({"type": "hl7v2", "charset": "utf-8"}))
    with pytest.raises(ParseError) as info:
        strict_utf8.parse(raw)
    assert info.value.code == "102"
    assert "Müller" not in str(info.value)


@pytest.mark.parametrize("name", ["nonsense-charset", "utf-16"])
def test_config_rejects_unknown_or_non_ascii_compatible_charsets(name: str) -> None:
    with pytest.raises(ValueError, match="charset"):
        Hl7v2Config.model_validate({"type": "hl7v2", "charset": name})


# -- parse errors ----------------------------------------------------------------------

MSH = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|CTL|P|2.5"


@pytest.mark.parametrize(
    ("text", "position", "code", "reason"),
    [
        ("", "", "100", "message is empty"),
        ("  \r\n", "", "100", "message is empty"),
        ("PID|1||SECRET\r" + MSH, "segment 1", "100", "message does not start with MSH"),
        ("MSH|^~", "segment 1 (MSH), field 2", "101", "too short"),
        ("MSH|^~\\&|A|B|C|D|2024", "segment 1 (MSH), field 9", "101", "ends before field 9"),
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A01", "segment 1 (MSH), field 10", "101", "ends before field 10"),
        ("MSH|^~\\&|A|B|C|D|2024|||CTL|P|2.5", "segment 1 (MSH), field 9", "101", "MSH-9 (message type) is empty"),
        ("MSH|^~\\&|A|B|C|D|2024||^A01|CTL|P|2.5", "segment 1 (MSH), field 9", "101", "MSH-9.1"),
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A01||P|2.5", "segment 1 (MSH), field 10", "101", "MSH-10"),
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A01|CTL|P|", "segment 1 (MSH), field 12", "101", "MSH-12"),
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A01|CTL|P", "segment 1 (MSH), field 12", "101", "ends before field 12"),
        ("MSH|^^\\&|A|B|C|D|2024||ADT^A01|CTL|P|2.5", "segment 1 (MSH), field 2", "102", "distinct"),
        ("MSH|^~|A|B|C|D|2024||ADT^A01|CTL|P|2.5", "segment 1 (MSH), field 2", "102", "4 or 5"),
        (MSH + "\rPID|1\rEVN|A01\rsecret text|x", "segment 4", "100", "segment id must be 3 upper-case"),
        (MSH + "\rPID|1\rpid|2", "segment 3", "100", "segment id"),
        (MSH + "\rPID1|2", "segment 2", "100", "segment id"),
        (MSH + "\rPI", "segment 2", "100", "segment id"),
    ],
)
def test_parse_errors(text: str, position: str, code: str, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        Hl7v2().parse(text.encode())
    error = info.value
    assert (error.position, error.code) == (position, code)
    assert reason in error.reason
    assert "secret" not in str(error).lower()


def test_segment_error_message_names_the_segment_number() -> None:
    with pytest.raises(ParseError, match=r"^segment 4: segment id must be 3 upper-case letters or digits$"):
        Hl7v2().parse((MSH + "\rPID|1\rEVN|A01\rsecret text|x").encode())


def test_message_properties_and_text(dft: Hl7Message) -> None:
    assert (dft.message_type, dft.control_id, dft.version) == ("DFT^P03^DFT_P03", "CTRL-1", "2.5")
    assert dft.text == DFT


# -- to_data ---------------------------------------------------------------------------


def test_to_data_structure_is_lossless_and_unescaped() -> None:
    msg = parse("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||X1^^^M~X2||A\\T\\B^C&D||\r")
    data = msg.to_data()
    assert data["charset"] == "utf-8"
    assert data["encoding"]["component"] == "^"
    msh, pid = data["segments"]
    assert msh["fields"][:3] == ["|", "^~\\&", "A"]
    assert msh["fields"][8] == ["ADT", "A01"]
    assert pid["id"] == "PID"
    assert pid["fields"][0] == "1"
    assert pid["fields"][2] == {"repetitions": [["X1", "", "", "M"], "X2"]}
    assert pid["fields"][4] == ["A&B", ["C", "D"]]
    assert pid["fields"][5:] == ["", ""]


def test_to_data_subcomponents_of_a_single_component_stay_nested() -> None:
    msg = parse("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rZZZ|a&b\r")
    assert msg.to_data()["segments"][1]["fields"] == [[["a", "b"]]]


# -- corpus and samples ----------------------------------------------------------------


def test_every_corpus_file_parses_except_the_malformed_one(corpus: Path) -> None:
    datatype = Hl7v2()
    files = sorted(corpus.glob("*.hl7"))
    assert len(files) > 30
    for path in files:
        raw = path.read_bytes()
        if path.name.startswith("malformed_missing_msh9"):
            with pytest.raises(ParseError) as info:
                datatype.parse(raw)
            assert (info.value.position, info.value.code) == ("segment 1 (MSH), field 9", "101")
            continue
        for message in datatype.split(raw):
            msg = datatype.parse(message)
            assert msg.get("MSH-9.1"), path.name
            assert msg.get("MSH-10"), path.name


def test_corpus_details(corpus: Path) -> None:
    datatype = Hl7v2()
    bom = datatype.parse((corpus / "adt_a04_v251_fhirconv_bom.hl7").read_bytes())
    assert bom.get("MSH-3") == "REDOX"
    assert bom.get("PID-3.1") == "MRN12345"
    reps = datatype.parse((corpus / "orm_o01_v24_mirth_repetitions.hl7").read_bytes())
    assert reps.get_all("OBX-2[*]") == ["foo", "bar", "baz"]
    latin = datatype.parse((corpus / "orm_o01_v23_cdc_oracle.hl7").read_bytes())
    assert latin.charset == "latin-1"


def test_samples_parse_except_the_malformed_one() -> None:
    datatype = Hl7v2()
    names = {p.name for p in SAMPLES.glob("*.hl7")}
    assert {"adt_a01_admit.hl7", "adt_a08_update_zsegment.hl7", "dft_p03_supply_two_ft1.hl7"} <= names
    for path in sorted(SAMPLES.glob("*.hl7")):
        raw = path.read_bytes()
        if path.name.startswith("malformed"):
            with pytest.raises(ParseError, match="segment 5: segment id"):
                datatype.parse(raw)
            continue
        for message in datatype.split(raw):
            assert datatype.parse(message).get("PID-3.1"), path.name


def test_sample_values() -> None:
    datatype = Hl7v2()
    dft = datatype.parse((SAMPLES / "dft_p03_supply_two_ft1.hl7").read_bytes())
    assert dft.get_all("FT1-7.1") == ["SUP-100234", "SUP-100877"]
    assert dft.get_all("FT1-10") == ["1", "2"]
    assert dft.get("FT1[2]-11.1") == "185.50"
    assert dft.get("PV1-19") == "ENC900003"
    adt = datatype.parse((SAMPLES / "adt_a08_update_zsegment.hl7").read_bytes())
    assert adt.get("ZPI-3[2].2") == "OTHER SYNTH PHARMACY"
    assert adt.get("ZPI-4") == "Patient prefers text | email"
    oru = datatype.parse((SAMPLES / "oru_r01_lab.hl7").read_bytes())
    assert oru.get("NTE-3") == "Specimen slightly hemolysed\nPotassium may be falsely elevated & should be repeated"
    assert oru.get_all("OBX-3.2") == ["Sodium", "Potassium", "Glucose"]
    a01 = datatype.parse((SAMPLES / "adt_a01_admit.hl7").read_bytes())
    assert a01.get("AL1-5") == "Hives & rash"
    assert a01.get("PID-3[2].5") == "SS"


def test_a_bare_lf_inside_a_field_of_a_cr_message_stays_in_the_field() -> None:
    # Real senders put line breaks in note fields instead of \.br\; a bare LF ends a segment
    # only where a segment id and the field separator follow it.
    raw = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|M8|P|2.5\r\nNTE|1||line one\nline two\r\nPID|1||X\nPV1|1|I\r"
    msg = Hl7v2().parse(raw)
    assert [s[:3] for s in msg.segments] == ["MSH", "NTE", "PID", "PV1"]
    assert msg.get("NTE-3") == "line one\nline two"
    second = raw.replace(b"M8", b"M9")
    parts = Hl7v2().split(raw + second)
    assert len(parts) == 2 and Hl7v2().parse(parts[1]).get("NTE-3") == "line one\nline two"
    # LF-only messages still split on every LF
    lf = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|M8|P|2.5\nNTE|1||one\nPID|1\n"
    assert [s[:3] for s in Hl7v2().parse(lf).segments] == ["MSH", "NTE", "PID"]
