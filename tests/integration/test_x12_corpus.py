"""Every file of the shared X12 corpus gets a definite outcome; our 999s satisfy pyx12."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.core.contracts import Outcome
from engine.core.errors import ParseError
from engine.core.store import MessageQuery
from engine.datatypes.x12 import X12Config, X12DataType
from engine.datatypes.x12.tokenizer import Interchange, tokenize

pytestmark = pytest.mark.integration

X = X12DataType()

# file -> (parse outcome per split part: "ok" or the ParseError code, AK5/IK5 codes of the answer,
# or None when no answer is due: acknowledgements are not acknowledged, an unreadable ISA has no envelope).
# The rejections were checked against the standard: ISS before TDS in an 810 (TDS opens the
# summary); BSN02 empty (mandatory); N103 without N104 (N1 syntax note P0304); AK202 "002"
# (ST02 is 4-9 characters) and a composite reference "C023" in numeric CTX06-1.
EXPECTED: dict[str, tuple[list[str], list[str] | None]] = {
    "810_oopfactory_caliso.edi": (["ok"], ["A"]),
    "810_oopfactory_manual_billing.edi": (["ok"], ["A"]),
    "810_oopfactory_multi_invoice.edi": (["AK5:5", "AK5:5"], ["R", "R"]),
    "810_staedi_simple.edi": (["ok", "ok"], ["A", "A"]),
    "832_4010_oopfactory_hibcc_catalog.edi": (["ok"], ["A"]),
    "835_5010_badx12_multi_claims_single_check.edi": (["ok"], ["A"]),
    "835_5010_lfh_managed_care.edi": (["ok"], ["A"]),
    "835_5010_lfh_secondary_payment.edi": (["ok"], ["A"]),
    "835_5010_oopfactory_nth.edi": (["ok", "ok", "ok"], ["A", "A", "A"]),
    "837i_5010_lfh_institutional.edi": (["ok"], ["A"]),
    "837i_5010_oopfactory_spec311.edi": (["ok"], ["A"]),
    "837p_4010_lfh_patient_is_subscriber.edi": (["ok"], ["A"]),
    "837p_5010_badx12_home_infusion_ndc.edi": (["ok"], ["A"]),
    "837p_5010_lfh_cob_3a.edi": (["ok"], ["A"]),
    "837p_5010_lfh_example1.edi": (["ok"], ["A"]),
    "837p_5010_lfh_example2.edi": (["ok"], ["A"]),
    "837p_5010_oopfactory_example1.edi": (["ok"], ["A"]),
    "846_oopfactory_inventory_advice.edi": (["ok"], ["A"]),
    "850_4000_oopfactory_pgwglass.edi": (["ok"], ["A"]),
    "850_4010_edengine_ok.edi": (["ok"], ["A"]),
    "850_oopfactory_adobe_clp.edi": (["ok"], ["A"]),
    "850_oopfactory_adobe_tlp.edi": (["ok"], ["A"]),
    "855_oopfactory_ssimmons.edi": (["ok", "ok"], ["A", "A"]),
    "856_4010_edengine_crossdock.edi": (["ok"], ["A"]),
    "856_4010_oopfactory_01.edi": (["ok"], ["A"]),
    "856_oopfactory_02.edi": (["AK5:5"], ["R"]),
    "856_oopfactory_03.edi": (["ok"], ["A"]),
    "997_staedi_simple.edi": (["ok"], None),
    "999_5010_oopfactory_wisconsin.edi": (["IK5:5"], None),
    "999_5010_pyx12_834_lui_id.edi": (["ok", "ok", "ok", "ok"], None),
    "999_staedi_simple.edi": (["ok"], None),
    "malformed_badx12_bad_file.edi": (["TA1:024"], None),
    "mixed_810_850_staedi_dual.edi": (["ok", "ok", "AK5:5"], ["A", "A", "R"]),
    "mixed_edengine_multi_interchange_groups.edi": (["ok"] * 6, ["A"] * 6),
}


def trailers(interchanges: list[Interchange]) -> list[str]:
    return [
        s.elements[1]
        for i in interchanges
        for g in i.groups
        for t in g.transactions
        for s in t.segments
        if s.id in ("AK5", "IK5")
    ]


def test_every_corpus_file_gets_a_definite_outcome(corpus: Path) -> None:
    names = sorted(p.name for p in (corpus / "x12").glob("*.edi"))
    assert names == sorted(EXPECTED)
    for name in names:
        raw = (corpus / "x12" / name).read_bytes()
        outcomes = []
        for part in X.split(raw):
            try:
                X.parse(part)
            except ParseError as exc:
                outcomes.append(exc.code if exc.position and exc.reason else "error without position")
            else:
                outcomes.append("ok")
        expected_parts, expected_acks = EXPECTED[name]
        assert outcomes == expected_parts, name
        answer = X.respond(raw, Outcome("AA"))
        if expected_acks is None:
            assert answer is None, name
            continue
        assert answer is not None, name
        X.parse(answer)  # clean envelopes, and valid against our 997/999 schemas
        interchanges, _ = tokenize(answer)
        assert trailers(interchanges) == expected_acks, name
        own = tokenize(raw)[0][0]
        first = interchanges[0]
        assert first.delimiters.element == own.delimiters.element, name
        assert first.delimiters.segment == own.delimiters.segment, name
        assert first.isa.elements[6].strip() == own.isa.elements[8].strip(), name  # swapped


def _pyx12_validate(text: str) -> tuple[bool, list[str]]:
    import pyx12.params
    import pyx12.x12n_document

    logging.getLogger("pyx12").propagate = False
    report = io.StringIO()
    valid = pyx12.x12n_document.x12n_document(
        param=pyx12.params.params(), src_file=io.StringIO(text), fd_997=None, fd_html=None, fd_json=report
    )
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            found.extend(str(e.get("err_cde")) for e in node.get("errors") or [])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(report.getvalue()))
    return bool(valid), found


def test_our_999s_for_corpus_835_and_837_validate_with_pyx12(corpus: Path) -> None:
    checked = 0
    for path in sorted((corpus / "x12").glob("83[57]*_5010_*.edi")):
        answer = X.respond(path.read_bytes(), Outcome("AA"))
        assert answer is not None
        text = answer.decode()
        # The TA1 (ISA14 = 1) travels in its own interchange, which pyx12's map does not cover.
        for chunk in ("ISA" + c for c in text.split("ISA")[1:]):
            if "ST*999" not in chunk:
                continue
            valid, errors = _pyx12_validate(chunk)
            assert valid and errors == [], (path.name, errors)
            checked += 1
    assert checked >= 11


def test_rejecting_999_validates_with_pyx12(corpus: Path) -> None:
    raw = (corpus / "x12" / "837p_5010_lfh_example1.edi").read_text().replace("BHT*", "XYZ*BHT*", 1)
    answer = X.respond(raw.encode(), Outcome("AR"))
    assert answer is not None
    chunk = next("ISA" + c for c in answer.decode().split("ISA")[1:] if "ST*999" in c)
    assert "IK3*XYZ*2**1" in chunk and "IK5*R*5" in chunk
    valid, errors = _pyx12_validate(chunk)
    assert valid and errors == []


def test_hipaa_validation_through_pyx12_reports_problems_without_content(corpus: Path) -> None:
    hipaa = X12DataType(X12Config(type="x12", hipaa_validation="pyx12"))
    assert hipaa.validates and not X.validates
    problems = hipaa.validate((corpus / "x12" / "835_5010_lfh_managed_care.edi").read_bytes())
    assert any("segment BPR" in p and "element 16" in p and "IK4 code 8" in p for p in problems)
    assert any("segment PER" in p and "IK3 code 3" in p for p in problems)
    assert not any("20002316" in p for p in problems)  # the bad date itself never appears
    assert hipaa.validate((corpus / "x12" / "835_5010_badx12_multi_claims_single_check.edi").read_bytes()) == []
    assert hipaa.validate((corpus / "x12" / "850_4010_edengine_ok.edi").read_bytes()) == []  # not HIPAA


def test_engine_stores_rejects_acknowledges_and_reprocesses(make_project: Callable[..., Path], corpus: Path) -> None:
    """A file with a valid 810 and a bad 850 through a real channel: one 997 answer, ERROR stored."""
    from engine.core.message import Status
    from engine.testing.peers import EngineThread

    channel = "name: edi-in\nsource:\n  type: http\n  listen: 127.0.0.1:0\npipeline:\n  datatype: {type: x12}\n"
    project = make_project({"edi-in": channel})
    raw = (corpus / "x12" / "mixed_810_850_staedi_dual.edi").read_bytes()
    with EngineThread(project) as running:
        runtime = running.engine.channels["edi-in"]
        result = running.run(runtime.submit(raw, {"transport": "test"}))
        assert result.accepted is False and result.response is not None
        answer, _ = tokenize(result.response)
        assert trailers(answer) == ["A", "A", "R"]  # one answer for the whole file
        assert [g.transactions[0].segments[1].elements[1] for g in answer[0].groups] == ["IN", "PO"]

        def stored() -> list[Any]:
            found: list[Any] = running.run(running.engine.store.search(MessageQuery(channel="edi-in")))
            return found

        def settled() -> bool:
            return len(stored()) == 3 and all(m.status != Status.RECEIVED for m in stored())

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not settled():
            time.sleep(0.02)
        messages = stored()
        assert sorted(m.status == Status.ERROR for m in messages) == [False, False, True]
        bad = next(m for m in messages if m.status == Status.ERROR)
        assert "segment 11 (N1), element 04" in bad.error
        assert "CARGO LIMITED" not in bad.error  # the content never appears
        queued = running.run(running.engine.reprocess(bad.id))
        assert queued["queued"] is True and queued["run"] == 2
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            again = running.run(running.engine.store.get(bad.id))
            if again is not None and again.summary.run == 2 and again.summary.status == Status.ERROR:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the reprocessed message did not end as ERROR again")


def test_a_999_names_the_line_of_an_element_error_in_ctx() -> None:
    raw = (Path(__file__).resolve().parents[2] / "samples" / "x12" / "850_5010_bill_only_implant.edi").read_text()
    segments = raw.split("~")
    second_line = [i for i, s in enumerate(segments) if s.strip().startswith("PO1")][1]
    elements = segments[second_line].split("*")
    elements[2] = "1X"  # PO102 quantity: not a number
    segments[second_line] = "*".join(elements)
    answer = X.respond("~".join(segments).encode(), Outcome("AE"))
    assert answer is not None
    text = answer.decode()
    assert "IK3*PO1*" in text and "CTX*PO101>2~" in text and "IK4*2**6*" in text
    assert text.index("IK3*PO1") < text.index("CTX*PO101") < text.index("IK4*2")
    # it passes Junction's own 999 schema (pyx12's 999 map only knows HIPAA functional ids)
    assert X.parse(answer).get("CTX01") == "PO101>2"
