"""X12 inbound mappings: 850, 855, 856, 810 and 835 to canonical objects.

Every sample and corpus transaction set of those types has a golden file under
``tests/golden/mapped/x12/{samples,corpus}/<file>.<n>-<type>.json`` holding its definite
outcome: the canonical objects and warnings, the business rule that stopped it, or the parse
rejection. ``pytest --update-golden`` rewrites them; review the diff.
"""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import BaseModel

from engine.canonical import (
    Invoice,
    ItemIdType,
    PartyIdType,
    PurchaseOrder,
    PurchaseOrderAck,
    Remittance,
    ShipNotice,
)
from engine.core import registry
from engine.core.contracts import Document
from engine.core.errors import MappingError, ParseError
from engine.core.loader import load_channel
from engine.core.message import InboundMessage, Status
from engine.datatypes.x12 import X12Config, X12DataType
from engine.mapping import Tables, compile_mapping
from engine.mapping.runner import CompiledMapping, MappingResult
from engine.runtime.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "x12"
GOLDEN = ROOT / "tests" / "golden" / "mapped" / "x12"
CORPUS_X12 = ROOT.parent / "shared" / "corpus" / "x12"
MAPPINGS = {
    "850": "x12-850-to-purchase-order",
    "855": "x12-855-to-purchase-order-ack",
    "856": "x12-856-to-ship-notice",
    "810": "x12-810-to-invoice",
    "835": "x12-835-to-remittance",
}
X12 = X12DataType()


@cache
def mapping(kind: str) -> CompiledMapping:
    path = ROOT / "mappings" / f"{MAPPINGS[kind]}.yaml"
    return compile_mapping(path, models=registry.models(), datatype="x12", check_path=X12.check_path)


@cache
def tables() -> Tables:
    return Tables.from_dir(ROOT / "mappings" / "tables")


def parse(raw: bytes, datatype: X12DataType = X12) -> Document:
    # X12Document satisfies Document at run time; mypy sees list[X12Document] from iterate
    # as incompatible with list[Document] (list is invariant).
    return cast(Document, datatype.parse(raw))


def run(kind: str, raw: bytes) -> MappingResult:
    """Map one transaction set (raw X12) with the mapping of its type."""
    return mapping(kind).run(parse(raw), tables())


def one(kind: str, raw: bytes) -> Any:
    result = run(kind, raw)
    assert len(result.objects) == 1
    return result.objects[0]


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def interchange(*segments: str, group: str = "PO", version: str = "005010") -> bytes:
    """A one-transaction interchange around ``segments`` (ST..before SE), with correct counts."""
    isa = f"ISA*00*{'':10}*00*{'':10}*ZZ*{'HOSPITAL':<15}*ZZ*{'SUPPLIER':<15}*260301*1200*^*00501*000000001*0*T*>"
    body = [*segments, f"SE*{len(segments) + 1}*0001"]
    lines = [isa, f"GS*{group}*HOSPITAL*SUPPLIER*20260301*1200*1*X*{version}", *body, "GE*1*1", "IEA*1*000000001"]
    return ("~\n".join(lines) + "~\n").encode()


# -- golden outcomes for every sample and corpus transaction set ------------------------------


def transactions(folder: Path) -> list[tuple[Path, int, str]]:
    """(file, 1-based transaction number, ST01) of every 850/855/856/810/835 in ``folder``."""
    found = []
    for path in sorted(folder.glob("*.edi")):
        for number, part in enumerate(X12.split(path.read_bytes()), 1):
            kind = X12.header(part).message_type
            if kind in MAPPINGS:
                found.append((path, number, kind))
    return found


def outcome(path: Path, number: int, kind: str) -> dict[str, Any]:
    """The definite outcome of one transaction set, as stored in its golden file."""
    raw = X12.split(path.read_bytes())[number - 1]
    try:
        doc = parse(raw)
    except ParseError as exc:
        return {"rejected_at_parse": {"code": exc.code, "message": str(exc)}}
    try:
        result = mapping(kind).run(doc, tables())
    except MappingError as exc:
        return {"exception": {"rule": exc.rule, "field": exc.field, "message": str(exc)}}
    objects = [obj.model_dump(mode="json", exclude_none=True) for obj in result.objects]
    return {"mapping": MAPPINGS[kind], "objects": objects, "warnings": result.warnings}


def check_golden(where: str, path: Path, number: int, kind: str, request: pytest.FixtureRequest) -> None:
    actual = json.dumps(outcome(path, number, kind), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    golden = GOLDEN / where / f"{path.stem}.{number}-{kind}.json"
    if request.config.getoption("--update-golden"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden}; run pytest --update-golden and review it"
    assert actual == golden.read_text(encoding="utf-8")


SAMPLE_CASES = transactions(SAMPLES)


@pytest.mark.parametrize(("path", "number", "kind"), SAMPLE_CASES, ids=[f"{p.name}:{n}" for p, n, _ in SAMPLE_CASES])
def test_sample_outcome_matches_golden(path: Path, number: int, kind: str, request: pytest.FixtureRequest) -> None:
    check_golden("samples", path, number, kind, request)


def test_samples_cover_every_mapping() -> None:
    assert {kind for _, _, kind in SAMPLE_CASES} == set(MAPPINGS)


def test_every_corpus_transaction_has_a_golden_outcome(corpus: Path, request: pytest.FixtureRequest) -> None:
    cases = transactions(corpus / "x12")
    assert {kind for _, _, kind in cases} == set(MAPPINGS)
    for path, number, kind in cases:
        check_golden("corpus", path, number, kind, request)


def test_no_stale_golden_files(corpus: Path) -> None:
    expected = {f"{p.stem}.{n}-{k}.json" for p, n, k in transactions(corpus / "x12")}
    assert {p.name for p in (GOLDEN / "corpus").glob("*.json")} == expected
    assert {p.name for p in (GOLDEN / "samples").glob("*.json")} == {
        f"{p.stem}.{n}-{k}.json" for p, n, k in SAMPLE_CASES
    }


# -- 835: the payment is the claim payments less the provider adjustments ---------------------


def remittance_balance(remittance: Remittance) -> tuple[Decimal, Decimal, Decimal]:
    """(BPR02, sum of CLP04, sum of PLB amounts), from the mapped object."""
    claims = sum((claim.paid_amount for claim in remittance.claims), Decimal(0))
    provider = sum((adjustment.amount for adjustment in remittance.provider_adjustments), Decimal(0))
    return remittance.payment.amount, claims, provider


def test_sample_remittance_balances_at_every_level() -> None:
    remittance = one("835", sample("835_5010_remittance_adjustments.edi"))
    payment, claims, provider = remittance_balance(remittance)
    assert (payment, claims, provider) == (Decimal("3870.00"), Decimal("4120.00"), Decimal("250.00"))
    assert payment == claims - provider
    assert remittance.balance_problems() == []  # claims and service lines balance too


# Measured on the corpus: (file, transaction) -> (BPR02, sum CLP04, sum PLB). The oopfactory
# file is de-identified (amounts replaced by 9s), so its payments cannot balance.
CORPUS_835 = {
    ("835_5010_badx12_multi_claims_single_check.edi", 1): ("810.8", "810.8", "0"),
    ("835_5010_oopfactory_nth.edi", 1): ("999.99", "776.06", "0"),
    ("835_5010_oopfactory_nth.edi", 2): ("9999.99", "3111.09", "0"),
    ("835_5010_oopfactory_nth.edi", 3): ("482.13", "3439.89", "0"),
}


def test_corpus_remittances_balance_or_show_why(corpus: Path) -> None:
    for (name, number), numbers in CORPUS_835.items():
        raw = X12.split((corpus / "x12" / name).read_bytes())[number - 1]
        remittance = one("835", raw)
        payment, claims, provider = remittance_balance(remittance)
        assert (payment, claims, provider) == tuple(Decimal(n) for n in numbers), (name, number)
        balanced = payment == claims - provider
        assert balanced == (name.startswith("835_5010_badx12")), (name, number, payment, claims, provider)
        problem = f"payment amount {payment} is not claim payments less provider adjustments {claims - provider}"
        assert (problem in remittance.balance_problems()) is not balanced


def test_unbalanced_remittance_is_reported_by_a_mapping_rule(corpus: Path) -> None:
    raw = X12.split((corpus / "x12" / "835_5010_oopfactory_nth.edi").read_bytes())[0]
    result = run("835", raw)
    assert any("remittance-balances:" in warning for warning in result.warnings)
    balanced = run("835", sample("835_5010_remittance_adjustments.edi"))
    assert not any("remittance-balances" in warning for warning in balanced.warnings)


def test_corpus_835_with_invalid_payment_dates_are_exceptions(corpus: Path) -> None:
    # managed-care: BPR16 20002316 has month 23; secondary-payment: the date sits in BPR15.
    for name, rule in (("835_5010_lfh_managed_care.edi", "as"), ("835_5010_lfh_secondary_payment.edi", "required")):
        with pytest.raises(MappingError) as caught:
            run("835", (corpus / "x12" / name).read_bytes())
        assert (caught.value.rule, caught.value.field) == (rule, "payment.date")
        assert "2000" not in str(caught.value) and "2005" not in str(caught.value)  # no content quoted


def test_835_multi_reason_cas_and_plb_are_flagged() -> None:
    raw = interchange(
        "ST*835*0001",
        "BPR*I*50.00*C*CHK************20260310",
        "TRN*1*CHK1001*1512345678",
        "N1*PR*Example Health Plan",
        "N1*PE*Example Hospital*XX*1234567893",
        "CLP*C1*1*100.00*60.00**12*P1",
        "SVC*HC>99213*100.00*60.00**1",
        "CAS*CO*45*30.00**PR*2*10.00",
        "PLB*1234567893*20261231*WO>R1*5.00*L6>R2*-2.00",
        group="HP",
        version="005010X221A1",
    )
    result = run("835", raw)
    # 50.00 paid against 60.00 less the one PLB amount mapped (5.00): flagged, not silently accepted
    assert [w.split(":")[0] for w in result.warnings] == [
        "adjustments-complete",
        "provider-adjustments-complete",
        "remittance-balances",
    ]
    remittance = result.objects[0]
    assert isinstance(remittance, Remittance)
    assert remittance.claims[0].service_lines[0].adjustments[0].amount == Decimal("30.00")
    assert remittance.provider_adjustments[0].reason_code == "WO"


def test_claim_without_service_lines_has_none() -> None:
    raw = interchange(
        "ST*835*0001",
        "BPR*I*90.00*C*CHK************20260310",
        "TRN*1*CHK1002*1512345678",
        "N1*PR*Example Health Plan",
        "N1*PE*Example Hospital*XX*1234567893",
        "CLP*C1*2*100.00*40.00**12*P1",
        "CLP*C2*1*80.00*50.00**12*P2",
        "SVC*HC>99213*80.00*50.00**1",
        "CAS*CO*45*30.00",
        group="HP",
        version="005010X221A1",
    )
    remittance = one("835", raw)
    assert [len(claim.service_lines) for claim in remittance.claims] == [0, 1]


def test_service_line_dates_as_a_single_date_or_a_period() -> None:
    raw = interchange(
        "ST*835*0001",
        "BPR*I*90.00*C*CHK************20260310",
        "TRN*1*CHK1003*1512345678",
        "N1*PR*Example Health Plan",
        "N1*PE*Example Hospital*XX*1234567893",
        "CLP*C1*1*180.00*90.00**12*P1",
        "SVC*HC>99213*80.00*40.00**1",
        "DTM*472*20260301",
        "SVC*HC>E0601*100.00*50.00**1",
        "DTM*150*20260201",
        "DTM*151*20260228",
        "CAS*CO*45*50.00",
        group="HP",
        version="005010X221A1",
    )
    lines = one("835", raw).claims[0].service_lines
    assert [(str(line.service_date), line.service_to and str(line.service_to)) for line in lines] == [
        ("2026-03-01", None),
        ("2026-02-01", "2026-02-28"),
    ]


# -- 850 ---------------------------------------------------------------------------------------


def test_bill_only_order_carries_case_patient_lot_and_serial() -> None:
    order = one("850", sample("850_5010_bill_only_implant.edi"))
    assert isinstance(order, PurchaseOrder)
    assert order.order_type == "bill_only"
    assert order.buyer.id_of(PartyIdType.GLN) == "0614141000012"
    assert order.supplier.id_of(PartyIdType.HIN) == "HINSUP001"
    detail = order.lines[0].bill_only
    assert detail is not None and detail.patient is not None
    assert (detail.case_id, detail.patient.id, detail.lot, detail.serial) == (
        "CASE-26-0311",
        "MRN0004417",
        "LOT24A117",
        "SN0098812",
    )
    assert str(detail.expiry_date) == "2029-01-31" and str(detail.procedure_date) == "2026-03-01"
    assert order.lines[0].item.id_of(ItemIdType.GTIN) == "10614141000019"
    assert order.problems() == []


def test_order_without_parties_reads_them_from_the_envelope() -> None:
    raw = interchange(
        "ST*850*0001", "BEG*00*SA*PO-9**20260301", "N1*ST*Dock*UL*0614141000043", "PO1*1*2*BX*3.50**VC*A-1"
    )
    order = one("850", raw)
    assert (order.buyer.ids[0].value, order.supplier.ids[0].value) == ("HOSPITAL", "SUPPLIER")
    assert order.order_type == "stock" and order.lines[0].unit_price == Decimal("3.50")


def ids(item: Any) -> list[tuple[str, str, str | None]]:
    return [(i.type.value, i.value, i.qualifier) for i in item.identifiers]


# Product id pairs 1 and 3 (pair 2 empty), qualifiers the crosswalk does not know, ten pairs.
PAIRS = "**VC*CAT-1***IN*H-99*BL*ACME*UI*00312345678906*MG*M-7*UK*10614141000019*SK*S-1*EN*E-1*B6*B-6"
PAIR_IDS = [
    ("vendor_part", "CAT-1", None),
    ("buyer_item", "H-99", None),
    ("other", "ACME", "BL"),
    ("other", "00312345678906", "UI"),
    ("manufacturer_part", "M-7", None),
    ("gtin", "10614141000019", None),
    ("vendor_part", "S-1", None),
    ("upn", "E-1", None),
    ("other", "B-6", "B6"),
]


def test_order_line_reads_every_product_id_pair_and_keeps_unknown_qualifiers() -> None:
    raw = interchange("ST*850*0001", "BEG*00*SA*PO-9**20260301", "N1*ST*Dock", f"PO1*1*2*BX*3.50{PAIRS}")
    assert ids(one("850", raw).lines[0].item) == PAIR_IDS


def test_invoice_and_acknowledgement_lines_read_every_product_id_pair() -> None:
    raw = interchange("ST*810*0001", "BIG*20260301*INV-1", f"IT1*1*2*BX*3.50{PAIRS}", "TDS*700", group="IN")
    assert ids(one("810", raw).lines[0].item) == PAIR_IDS
    raw = interchange("ST*855*0001", "BAK*00*AC*PO-9*20260301", f"PO1*1*2*BX*3.50{PAIRS}", "ACK*IA*2*BX", group="PR")
    assert ids(one("855", raw).lines[0].item) == PAIR_IDS


def test_lines_without_po101_are_unnumbered() -> None:
    # PO101 is optional in X12: the line maps, like an 810 line without IT101.
    raw = interchange("ST*850*0001", "BEG*00*SA*PO-9**20260301", "N1*ST*Dock", "PO1**2*BX*3.50**VC*A-1")
    assert [line.line_number for line in one("850", raw).lines] == ["unnumbered"]
    raw = interchange("ST*855*0001", "BAK*00*AC*PO-9*20260301", "PO1**2*BX*3.50**VC*A-1", "ACK*IA*2*BX", group="PR")
    assert [line.line_number for line in one("855", raw).lines] == ["unnumbered"]


def test_unknown_order_type_warns_and_missing_ship_to_fails() -> None:
    raw = interchange("ST*850*0001", "BEG*00*QQ*PO-9**20260301", "N1*ST*Dock", "PO1*1*2*BX*3.50**VC*A-1")
    assert [w.split(":")[0] for w in run("850", raw).warnings] == ["order-type-known"]
    raw = interchange("ST*850*0001", "BEG*00*SA*PO-9**20260301", "PO1*1*2*BX*3.50**VC*A-1")
    with pytest.raises(MappingError) as caught:
        run("850", raw)
    assert caught.value.rule == "ship-to-present"


def test_bad_order_date_is_named_without_quoting_it() -> None:
    # Schema validation rejects it at parse already; without it, the mapping names the field.
    raw = interchange("ST*850*0001", "BEG*00*SA*PO-9**040317", "N1*ST*Dock", "PO1*1*2*BX*3.50**VC*A-1")
    doc = parse(raw, X12DataType(X12Config(type="x12", schema_validation=False)))
    with pytest.raises(MappingError) as caught:
        mapping("850").run(doc, tables())
    assert caught.value.field == "order_date" and "040317" not in str(caught.value)


def test_line_without_serial_has_no_serial() -> None:
    order = one("850", sample("850_5010_bill_only_implant.edi"))
    assert order.lines[1].bill_only is not None
    assert order.lines[1].bill_only.serial is None


# -- 855 ---------------------------------------------------------------------------------------


def test_mixed_line_statuses_with_reason_and_substitute() -> None:
    ack = one("855", sample("855_5010_mixed_line_status.edi"))
    assert isinstance(ack, PurchaseOrderAck)
    assert [line.acks[0].status for line in ack.lines] == ["IA", "IR", "IQ", "IS"]
    assert [line.acks[0].status.bucket for line in ack.lines] == [
        "accepted",
        "rejected",
        "accepted_with_changes",
        "accepted_with_changes",
    ]
    assert ack.lines[2].acks[0].quantity == Decimal(12) and ack.lines[2].ordered_quantity == Decimal(20)
    substitute = ack.lines[3].acks[0].substitute
    assert substitute is not None and substitute.id_of(ItemIdType.VENDOR_PART) == "SYR-10ML-LL"
    assert (str(ack.ack_date), ack.supplier_order_number) == ("2026-03-04", "SO-778812")
    assert run("855", sample("855_5010_mixed_line_status.edi")).warnings == []


def test_rejected_line_without_reason_warns() -> None:
    raw = interchange("ST*855*0001", "BAK*00*AC*PO-9*20260301", "PO1*1*5*CA*9**VC*A-1", "ACK*IR*5*CA", group="PR")
    result = run("855", raw)
    assert [w.split(":")[0] for w in result.warnings] == ["rejected-line-has-reason"]
    ack = result.objects[0]
    assert isinstance(ack, PurchaseOrderAck) and str(ack.ack_date) == "2026-03-01"  # BAK04 when BAK09 is absent


def test_acknowledged_without_detail_lines_are_accepted_as_ordered() -> None:
    raw = interchange("ST*855*0001", "BAK*00*AD*PO-9*20260301", "PO1*1*5*CA*9**VC*A-1", group="PR")
    ack = one("855", raw)
    assert [(a.status, a.quantity, a.uom) for a in ack.lines[0].acks] == [("IA", Decimal(5), "CA")]


def test_rejected_order_with_an_accepted_line_fails() -> None:
    raw = interchange("ST*855*0001", "BAK*00*RD*PO-9*20260301", "PO1*1*5*CA*9**VC*A-1", "ACK*IA*5*CA", group="PR")
    with pytest.raises(MappingError) as caught:
        run("855", raw)
    assert caught.value.rule == "rejection-has-no-lines"


@pytest.mark.parametrize(
    ("code", "bucket"),
    [("AT", "accepted"), ("AK", "accepted"), ("AE", "accepted_with_changes"), ("AH", "on_hold"), ("NA", "other")],
)
def test_every_x12_acknowledgement_type_maps_as_sent(code: str, bucket: str) -> None:
    raw = interchange("ST*855*0001", f"BAK*00*{code}*PO-9*20260301", "PO1*1*5*CA*9**VC*A-1", "ACK*IA*5*CA", group="PR")
    ack = one("855", raw)
    assert (ack.status, ack.status.bucket) == (code, bucket)


def test_any_rejection_type_with_an_accepted_line_fails() -> None:
    raw = interchange("ST*855*0001", "BAK*00*RN*PO-9*20260301", "PO1*1*5*CA*9**VC*A-1", "ACK*IA*5*CA", group="PR")
    with pytest.raises(MappingError) as caught:
        run("855", raw)
    assert caught.value.rule == "rejection-has-no-lines"


# -- 856 ---------------------------------------------------------------------------------------


def test_ship_notice_nests_orders_packs_and_items() -> None:
    notice = one("856", sample("856_5010_implant_lot_expiry.edi"))
    assert isinstance(notice, ShipNotice)
    (order,) = notice.orders
    assert order.po_number == "4500012399" and order.items == []
    assert [len(pack.items) for pack in order.packs] == [2, 1]
    assert [pack.sscc for pack in order.packs] == ["006141410000000012", "006141410000000029"]  # AI 00 removed
    first = order.packs[0].items[1]
    assert (first.gtin, first.lot, str(first.expiry_date)) == ("10614141000026", "LOT24B220", "2028-11-30")
    assert first.serial_numbers == ["SN0100455", "SN0100456"]
    assert notice.problems() == []  # SSCC and GTIN check digits verify
    assert (notice.package_count, notice.carrier and notice.carrier.scac) == (2, "UPSN")


def test_multi_order_ship_notice_keeps_packs_with_their_order(corpus: Path) -> None:
    notice = one("856", (corpus / "x12" / "856_4010_edengine_crossdock.edi").read_bytes())
    assert [(o.po_number, len(o.packs), sum(len(p.items) for p in o.packs)) for o in notice.orders] == [
        ("POREF00", 4, 4),
        ("POREF01", 1, 1),
    ]


def test_ship_notice_without_order_level_warns() -> None:
    raw = interchange(
        "ST*856*0001",
        "BSN*00*ASN-1*20260301*1200",
        "HL*1**S",
        "N1*ST*Dock*UL*0614141000043",
        "HL*2*1*I",
        "LIN*1*VC*A-1",
        "SN1**3*EA",
        "PRF*PO-9",
        group="SH",
    )
    result = run("856", raw)
    assert [w.split(":")[0] for w in result.warnings] == ["order-level-present"]
    notice = result.objects[0]
    assert isinstance(notice, ShipNotice)
    assert [(o.po_number, len(o.items)) for o in notice.orders] == [("PO-9", 1)]


SHIP_HEAD = ("ST*856*0001", "BSN*00*ASN-1*20260301*1200", "HL*1**S", "TD1*CTN*2", "N1*ST*Dock*UL*0614141000043")
SSCC_1, SSCC_2, SSCC_3 = "006141410000000012", "006141410000000029", "006141410000000036"


def shipped(notice: Any) -> list[tuple[str, list[tuple[str | None, list[str | None]]], list[str | None]]]:
    """Per order: its PO number, its packs (SSCC and item line numbers) and its unpacked items."""
    return [
        (
            order.po_number,
            [(pack.sscc, [item.line_number for item in pack.items]) for pack in order.packs],
            [item.line_number for item in order.items],
        )
        for order in notice.orders
    ]


def test_ship_notice_hierarchy_follows_the_parent_links() -> None:
    # S/O/P/I whose order level has REF PO instead of PRF: the pack keeps its item.
    raw = interchange(
        *SHIP_HEAD, "HL*2*1*O", "REF*PO*PO-77", "HL*3*2*P", f"MAN*GM*{SSCC_1}", "HL*4*3*I", "LIN*1*VC*A-1",
        "SN1**5*EA", group="SH",
    )  # fmt: skip
    assert shipped(one("856", raw)) == [("PO-77", [(SSCC_1, ["1"])], [])]
    # S/O/I/P: each item is followed by its carton.
    raw = interchange(
        *SHIP_HEAD, "HL*2*1*O", "PRF*PO-77", "HL*3*2*I", "LIN*1*VC*A-1", "SN1**5*EA", "HL*4*3*P", f"MAN*GM*{SSCC_1}",
        "HL*5*2*I", "LIN*2*VC*B-2", "SN1**7*EA", "HL*6*5*P", f"MAN*GM*{SSCC_2}", group="SH",
    )  # fmt: skip
    assert shipped(one("856", raw)) == [("PO-77", [(SSCC_1, ["1"]), (SSCC_2, ["2"])], [])]
    # Two orders, the first packed (S/O/P/I, a second MAN for the carrier), the second not (S/O/I).
    raw = interchange(
        *SHIP_HEAD, "HL*2*1*O", "PRF*PO-1", "HL*3*2*P", f"MAN*GM*{SSCC_1}", "MAN*CP*1Z999", "HL*4*3*I",
        "LIN*1*VC*A-1", "SN1**5*EA", "HL*5*1*O", "PRF*PO-2", "HL*6*5*I", "LIN*1*VC*C-3", "SN1**9*EA", group="SH",
    )  # fmt: skip
    assert shipped(one("856", raw)) == [("PO-1", [(SSCC_1, ["1"])], []), ("PO-2", [], ["1"])]
    # S/O/T/P/I: the carton knows its pallet; an item on the pallet outside a carton is unpacked.
    raw = interchange(
        *SHIP_HEAD, "HL*2*1*O", "PRF*PO-1", "HL*3*2*T", f"MAN*GM*{SSCC_3}", "HL*4*3*P", f"MAN*GM*{SSCC_1}",
        "HL*5*4*I", "LIN*1*VC*A-1", "SN1**5*EA", "HL*6*3*I", "LIN*2*VC*B-2", "SN1**1*EA", group="SH",
    )  # fmt: skip
    notice = one("856", raw)
    assert shipped(notice) == [("PO-1", [(SSCC_1, ["1"])], ["2"])]
    assert notice.orders[0].packs[0].parent_sscc == SSCC_3


def test_ship_notice_item_outside_every_order_is_an_exception() -> None:
    # HL*4 hangs from the shipment level, next to the order: it must not vanish.
    raw = interchange(
        *SHIP_HEAD, "HL*2*1*O", "PRF*PO-1", "HL*3*2*I", "LIN*1*VC*A-1", "SN1**5*EA", "HL*4*1*I", "LIN*2*VC*B-2",
        "SN1**2*EA", group="SH",
    )  # fmt: skip
    with pytest.raises(MappingError) as caught:
        run("856", raw)
    assert caught.value.rule == "every-item-placed"
    # An order level without any purchase order number fails, naming the field.
    raw = interchange(*SHIP_HEAD, "HL*2*1*O", "HL*3*2*I", "LIN*1*VC*A-1", "SN1**5*EA", group="SH")
    with pytest.raises(MappingError) as caught:
        run("856", raw)
    assert caught.value.field is not None and caught.value.field.endswith("po_number")


def test_item_without_serials_has_none() -> None:
    notice = one("856", sample("856_5010_implant_lot_expiry.edi"))
    assert notice.orders[0].packs[1].items[0].serial_numbers == []


# -- 810 ---------------------------------------------------------------------------------------


def test_invoice_allowances_charges_and_implied_decimals_add_up() -> None:
    invoice = one("810", sample("810_5010_allowance_charge.edi"))
    assert isinstance(invoice, Invoice)
    assert [(sac.indicator, sac.code, sac.amount) for sac in invoice.allowances_charges] == [
        ("allowance", "C310", Decimal("21.00")),
        ("charge", "D240", Decimal("18.50")),
    ]
    assert invoice.total_amount == Decimal("722.90") == invoice.computed_total()
    assert invoice.problems() == []
    assert invoice.terms is not None and (invoice.terms.discount_percent, invoice.terms.net_days) == (Decimal(2), 30)


def test_line_level_allowances_when_the_summary_has_none() -> None:
    raw = interchange(
        "ST*810*0001",
        "BIG*20260301*INV-1**PO-9",
        "N1*BT*Hospital*UL*0614141000012",
        "IT1*1*2*EA*10.00**VC*A-1",
        "SAC*C*D360***150",
        "IT1*2*1*EA*5.00**VC*B-2",
        "SAC*A*C310***50",
        "TDS*2600",
        group="IN",
    )
    invoice = one("810", raw)
    assert [[sac.signed_amount for sac in line.allowances_charges] for line in invoice.lines] == [
        [Decimal("1.50")],
        [Decimal("-0.50")],
    ]
    assert invoice.problems() == [] and invoice.total_amount == Decimal("26.00")


def test_credit_memo_without_invoice_reference_warns() -> None:
    raw = interchange("ST*810*0001", "BIG*20260301*CM-1*****CR", "IT1*1*-1*EA*10.00**VC*A-1", "TDS*-1000", group="IN")
    result = run("810", raw)
    assert [w.split(":")[0] for w in result.warnings] == ["credit-memo-references-invoice"]
    invoice = result.objects[0]
    assert isinstance(invoice, Invoice) and invoice.kind == "credit" and invoice.total_amount == Decimal("-10.00")


# -- every mapping -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MAPPINGS))
def test_mapping_compiles_against_the_x12_data_type(kind: str) -> None:
    compiled = mapping(kind)
    assert (compiled.source, compiled.model) == ("x12", registry.models()[compiled.target])
    assert issubclass(compiled.model, BaseModel)


def test_crosswalk_tables_are_loaded() -> None:
    loaded = tables()
    assert loaded.lookup("x12_party_id", "UL", column="party_id_type") == "gln"
    assert loaded.lookup("x12_item_id", "UK", column="item_id_type") == "gtin"
    assert loaded.lookup("x12_order_type", "BO", column="order_type") == "bill_only"
    assert loaded.lookup("x12_order_purpose", "01", column="purpose") == "cancel"


# -- in a channel ------------------------------------------------------------------------------


def doc_channel() -> str:
    """The channel example of docs/mappings/x12.md, so the page stays correct."""
    text = (ROOT / "docs" / "mappings" / "x12.md").read_text(encoding="utf-8")
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert block.startswith("name: supplier-edi-in")
    return block


def test_the_documented_channel_routes_each_transaction_set_to_its_mapping() -> None:
    pipeline = Pipeline(load_channel("supplier-edi-in.yaml", env={}, text=doc_channel()), ROOT)
    names = ["855_5010_mixed_line_status.edi", "856_5010_implant_lot_expiry.edi", "810_5010_allowance_charge.edi"]
    payload = b"".join(sample(name) for name in [*names, "850_5010_bill_only_implant.edi"])
    parts = pipeline.datatype.split(payload)
    results = [pipeline.run(InboundMessage("supplier-edi-in", part)) for part in parts]
    assert [r.status for r in results] == [Status.TRANSFORMED] * 3 + [Status.FILTERED]
    sent = [[(route.destination, route.status) for route in r.routes] for r in results[:3]]
    for index, routes in enumerate(sent):
        assert [status for _, status in routes] == [Status.QUEUED if i == index else Status.FILTERED for i in range(3)]
    body = json.loads(results[2].routes[2].content or b"")
    assert (body["invoice_number"], body["total_amount"]) == ("INV-88120", "722.90")


def test_a_failed_business_rule_is_an_exception_in_the_channel() -> None:
    pipeline = Pipeline(load_channel("supplier-edi-in.yaml", env={}, text=doc_channel()), ROOT)
    raw = interchange("ST*855*0001", "BAK*00*RJ*PO-9*20260301", "PO1*1*5*CA*9**VC*A-1", "ACK*IA*5*CA", group="PR")
    result = pipeline.run(InboundMessage("supplier-edi-in", raw))
    assert (result.status, result.rule) == (Status.EXCEPTION, "rejection-has-no-lines")
    assert "PO-9" not in result.error  # no content in the error


def test_a_mapping_skips_other_transaction_sets() -> None:
    result = run("855", sample("850_5010_bill_only_implant.edi"))
    assert (result.objects, result.skipped) == ([], 1)
