"""Canonical objects -> X12 transaction set bodies (850, 855, 856, 810), version 4010 vocabulary.

Each generator is a pure function of a canonical object (the pydantic model or its JSON
form) returning a ``TransactionSet``: the segments between ST and SE as lists of element
texts. The writer (``engine.datatypes.x12.writer``) adds ST/SE and the envelopes. Names and
descriptions are ``FreeText`` (delimiter characters become spaces); identifiers that hold a
delimiter are refused by the writer.

Code choices (element numbers from the X12 dictionary):

- parties (N1, element 98): BY buyer, SU supplier, ST ship-to, BT bill-to, Z7 mark-for,
  SF ship-from, SE selling party, RE remit-to; ids (element 66): UL GLN, 21 HIN, 1 DUNS,
  11 DEA, 92 buyer-assigned, 91 seller-assigned, XX NPI, 24 tax id;
- item ids (element 235): VC vendor, MG manufacturer, UK GTIN-14, UP UPN, N4 NDC, HI HIBC,
  IN buyer item; UDI-DI as UK when it is a 14-digit GTIN;
- references (element 128): CT contract, LT lot, SE serial (SN on 856 items), EA medical record (patient of
  a bill-only line), DP department, BM bill of lading, CN carrier tracking number, ZZ with
  REF03 ``CASE`` for the surgical case (``UDI`` for the full UDI on 856 items);
- dates (element 374): 002 delivery requested, 036 expiration, 011 shipped, 017 estimated
  delivery, 068 current schedule ship, 472 service (procedure) date;
- money in SAC05 and TDS01 is in cents (implied two decimals, type N2).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from engine.canonical.common import Party, PartyIdType, Reference
from engine.canonical.invoice import AllowanceCharge, AllowanceChargeIndicator, Invoice, InvoiceKind
from engine.canonical.item import ItemIdType, ItemRef
from engine.canonical.purchasing import BillOnlyDetail, OrderPurpose, PurchaseOrder, PurchaseOrderAck
from engine.canonical.shipping import Pack, PackLevelKind, ShipNotice, ShippedItem, ShippedOrder
from engine.datatypes.x12.writer import FreeText, TransactionSet
from engine.edi.partners import DEFAULT_ORDER_TYPE_CODES

__all__ = [
    "GENERATORS",
    "MODELS",
    "GenerateError",
    "coerce",
    "generate",
    "invoice_810",
    "purchase_order_850",
    "purchase_order_ack_855",
    "ship_notice_856",
]

Segment = list[str]
M = TypeVar("M", bound=BaseModel)

PARTY_ID_QUALIFIERS: dict[PartyIdType, str] = {
    PartyIdType.GLN: "UL",
    PartyIdType.HIN: "21",
    PartyIdType.DUNS: "1",
    PartyIdType.DEA: "11",
    PartyIdType.BUYER_ASSIGNED: "92",
    PartyIdType.SELLER_ASSIGNED: "91",
    PartyIdType.NPI: "XX",
    PartyIdType.TAX_ID: "24",
}
# Preference when a party has several ids: location ids first (what receiving docks scan).
_PARTY_ORDER = list(PARTY_ID_QUALIFIERS)

ITEM_ID_QUALIFIERS: dict[ItemIdType, str] = {
    ItemIdType.VENDOR_PART: "VC",
    ItemIdType.MANUFACTURER_PART: "MG",
    ItemIdType.GTIN: "UK",
    ItemIdType.UPN: "UP",
    ItemIdType.NDC: "N4",
    ItemIdType.HIBC: "HI",
    ItemIdType.BUYER_ITEM: "IN",
}
MAX_ID_PAIRS = 10  # PO106..PO125, IT106..IT125, LIN02..LIN21 (LIN: up to 15 pairs; 10 kept)

BEG01 = {OrderPurpose.ORIGINAL: "00", OrderPurpose.CANCEL: "01", OrderPurpose.CHANGE: "04", OrderPurpose.REPLACE: "05"}
SAC01 = {
    AllowanceChargeIndicator.ALLOWANCE: "A",
    AllowanceChargeIndicator.CHARGE: "C",
    AllowanceChargeIndicator.NO_CHARGE: "N",
}


class GenerateError(ValueError):
    """A canonical object cannot be turned into the transaction set (shape, never values)."""


# -- value formatting ---------------------------------------------------------------------


def number(value: Decimal | int) -> str:
    """An X12 decimal (R): no exponent, no trailing zeros, no leading plus.

    >>> number(Decimal("10.500")), number(Decimal("1E+2")), number(Decimal("-0.50"))
    ('10.5', '100', '-0.5')
    """
    text = format(Decimal(value).normalize(), "f")
    return "0" if text in ("-0", "") else text


def cents(value: Decimal) -> str:
    """An amount in cents (N2: implied two decimals), rounded half up.

    >>> cents(Decimal("1234.5")), cents(Decimal("-0.004"))
    ('123450', '0')
    """
    whole = int((Decimal(value) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return str(whole)


def date8(value: dt.date) -> str:
    return value.strftime("%Y%m%d")


def _text(value: str | None) -> str:
    return FreeText(value) if value else ""


# -- shared building blocks -------------------------------------------------------------


def party_loop(code: str, party: Party | None) -> list[Segment]:
    """N1 (name, id qualifier, id), N3 (two lines per segment), N4, REF DP for a department."""
    if party is None:
        return []
    chosen = next(
        (pid for kind in _PARTY_ORDER for pid in party.ids if pid.type == kind),
        None,
    )
    n1 = ["N1", code, _text(party.name)]
    if chosen is not None:
        n1 += [PARTY_ID_QUALIFIERS[chosen.type], chosen.value]
    if len(n1) == 3 and not party.name:
        raise GenerateError(f"party {code} has neither a name nor an identifier X12 can carry")
    out = [n1]
    if party.address is not None:
        address = party.address
        lines = list(address.lines)
        for start in range(0, len(lines), 2):
            out.append(["N3", *(FreeText(line) for line in lines[start : start + 2])])
        if address.city or address.region or address.postal_code or address.country:
            out.append(
                ["N4", _text(address.city), address.region or "", address.postal_code or "", address.country or ""]
            )
    if party.department:
        out.append(["REF", "DP", party.department])
    return out


def item_ids(item: ItemRef) -> list[str]:
    """Qualifier/id pairs for PO106+, IT106+, LIN02+ in the order the object lists them."""
    pairs: list[str] = []
    seen: set[tuple[str, str]] = set()
    for identifier in item.identifiers:
        qualifier = ITEM_ID_QUALIFIERS.get(identifier.type)
        if qualifier is None and identifier.type == ItemIdType.UDI_DI and len(identifier.value) == 14:
            qualifier = "UK" if identifier.value.isdigit() else None
        if qualifier is None or (qualifier, identifier.value) in seen:
            continue
        seen.add((qualifier, identifier.value))
        pairs += [qualifier, identifier.value]
    if not pairs:
        raise GenerateError("an item has no identifier X12 can carry (vendor, manufacturer, GTIN, NDC, HIBC ...)")
    return pairs[: 2 * MAX_ID_PAIRS]


def description(item: ItemRef | None) -> list[Segment]:
    """PID*F (free-form) with the item description, when there is one."""
    if item is None or not item.description:
        return []
    return [["PID", "F", "", "", "", FreeText(item.description)]]


def references(refs: Iterable[Reference]) -> list[Segment]:
    return [["REF", ref.qualifier, ref.value] for ref in refs]


def bill_only_segments(detail: BillOnlyDetail | None) -> list[Segment]:
    """Lot, serial, patient, case and dates of a bill-only line (REF and DTM).

    The full UDI has no REF qualifier partners agree on (ZZ already carries the case), so it
    is not sent on 850/810 lines; lot, serial and expiry carry its production identifiers.
    """
    if detail is None:
        return []
    out: list[Segment] = []
    if detail.lot:
        out.append(["REF", "LT", detail.lot])
    if detail.serial:
        out.append(["REF", "SE", detail.serial])
    if detail.patient is not None:
        out.append(["REF", "EA", detail.patient.id])
    if detail.case_id:
        out.append(["REF", "ZZ", detail.case_id, "CASE"])
    if detail.expiry_date:
        out.append(["DTM", "036", date8(detail.expiry_date)])
    if detail.procedure_date:
        out.append(["DTM", "472", date8(detail.procedure_date)])
    return out


def sac(charge: AllowanceCharge) -> Segment:
    """SAC with the amount in cents (SAC05) and the percent (SAC06 3 = discount/gross, SAC07)."""
    segment = ["SAC", SAC01[charge.indicator], charge.code or "", "", "", cents(charge.amount)]
    if charge.percent is not None or charge.description:
        segment += ["3" if charge.percent is not None else "", number(charge.percent) if charge.percent else ""]
        if charge.description:
            segment += [""] * 7 + [FreeText(charge.description)]  # SAC08..SAC14 empty, SAC15 description
    return segment


def _hash_total(values: Iterable[Decimal]) -> str:
    return number(sum(values, Decimal(0)))


# -- 850 --------------------------------------------------------------------------------


def purchase_order_850(order: PurchaseOrder, order_type_code: Callable[[str], str] | None = None) -> TransactionSet:
    """850 Purchase Order: BEG, CUR, REF, N1 loops, PO1 loops (PID, REF, DTM), CTT.

    ``order_type_code`` maps the canonical order type to BEG02 (a partner may override the
    defaults in ``engine.edi.partners.DEFAULT_ORDER_TYPE_CODES``).
    """
    code = (order_type_code or DEFAULT_ORDER_TYPE_CODES.__getitem__)(order.order_type.value)
    beg = ["BEG", BEG01[order.purpose], code, order.po_number, order.revision or "", date8(order.order_date)]
    out: list[Segment] = [beg, ["CUR", "BY", order.currency]]
    if order.contract is not None:
        out.append(["REF", "CT", order.contract.contract_id])
    out += references(order.references)
    for role, party in (
        ("BY", order.buyer),
        ("SU", order.supplier),
        ("ST", order.ship_to),
        ("BT", order.bill_to),
        ("Z7", order.mark_for),
    ):
        out += party_loop(role, party)
    for line in order.lines:
        price = number(line.unit_price) if line.unit_price is not None else ""
        out.append(["PO1", line.line_number, number(line.quantity), line.uom, price, "", *item_ids(line.item)])
        out += description(line.item)
        if line.contract is not None and line.contract != order.contract:
            out.append(["REF", "CT", line.contract.contract_id])
        if line.cost_centre:
            out.append(["REF", "DP", line.cost_centre])
        out += bill_only_segments(line.bill_only)
        if line.requested_delivery_date:
            out.append(["DTM", "002", date8(line.requested_delivery_date)])
    out.append(["CTT", str(len(order.lines)), _hash_total(line.quantity for line in order.lines)])
    return TransactionSet("850", out)


# -- 855 --------------------------------------------------------------------------------


def purchase_order_ack_855(ack: PurchaseOrderAck) -> TransactionSet:
    """855 Purchase Order Acknowledgment: BAK, CUR, N1 loops, PO1 loops with PID and ACK, CTT.

    The canonical acknowledgement has no order date, so BAK04 carries the acknowledgement
    date, as does BAK09.
    """
    bak = [
        "BAK",
        "00",
        ack.status.value,
        ack.po_number,
        date8(ack.ack_date),
        "",
        "",
        "",
        ack.supplier_order_number or "",
    ]
    bak.append(date8(ack.ack_date))
    out: list[Segment] = [bak, ["CUR", "SE", ack.currency]]
    out += party_loop("SU", ack.supplier)
    out += party_loop("BY", ack.buyer)
    for line in ack.lines:
        quantity = number(line.ordered_quantity) if line.ordered_quantity is not None else ""
        price = number(line.unit_price) if line.unit_price is not None else ""
        ids = item_ids(line.item) if line.item is not None else []
        out.append(["PO1", line.line_number, quantity, line.uom or "", price, "", *ids])
        out += description(line.item)
        for status in line.acks:
            segment = [
                "ACK",
                status.status.value,
                number(status.quantity) if status.quantity is not None else "",
                status.uom or "",
                (status.date_qualifier or "068") if status.scheduled_date else "",
                date8(status.scheduled_date) if status.scheduled_date else "",
            ]
            if status.substitute is not None:
                segment += ["", *item_ids(status.substitute)]  # ACK06 empty, ACK07+ pairs
            out.append(segment)
    hashed = (line.ordered_quantity for line in ack.lines if line.ordered_quantity is not None)
    out.append(["CTT", str(len(ack.lines)), _hash_total(hashed)])
    return TransactionSet("855", out)


# -- 856 --------------------------------------------------------------------------------


class _Hierarchy:
    """Numbers HL segments and fills HL04 (has children) once the children are known."""

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self._hl: dict[int, Segment] = {}
        self.count = 0

    def open(self, parent: int | None, level: str) -> int:
        self.count += 1
        hl = ["HL", str(self.count), str(parent) if parent else "", level, "0"]
        self._hl[self.count] = hl
        if parent is not None:
            self._hl[parent][4] = "1"
        self.segments.append(hl)
        return self.count

    def add(self, *segments: Segment) -> None:
        self.segments.extend(segments)


def _shipped_item(tree: _Hierarchy, parent: int, item: ShippedItem) -> None:
    tree.open(parent, "I")
    ids = item_ids(item.item)
    if item.gtin and ("UK", item.gtin) not in zip(ids[::2], ids[1::2], strict=True):
        ids = ["UK", item.gtin, *ids][: 2 * MAX_ID_PAIRS]
    tree.add(["LIN", item.line_number or "", *ids], ["SN1", "", number(item.quantity), item.uom])
    tree.add(*description(item.item))
    if item.lot:
        tree.add(["REF", "LT", item.lot])
    for serial in item.serial_numbers:
        tree.add(["REF", "SN", serial])  # the 856 convention of healthcare ASNs (HDMA); 850/810 use SE
    if item.udi:
        tree.add(["REF", "ZZ", item.udi, "UDI"])
    if item.expiry_date:
        tree.add(["DTM", "036", date8(item.expiry_date)])


def _pack(tree: _Hierarchy, parent: int, pack: Pack) -> int:
    level = "T" if pack.kind == PackLevelKind.PALLET else "P"
    number_ = tree.open(parent, level)
    if pack.weight is not None:
        tree.add(["TD1", "", "", "", "", "", "G", number(pack.weight.value), pack.weight.uom])
    if pack.sscc:
        tree.add(["MAN", "GM", pack.sscc])
    return number_


def _order(tree: _Hierarchy, shipment: int, order: ShippedOrder) -> None:
    hl = tree.open(shipment, "O")
    tree.add(["PRF", order.po_number, "", "", date8(order.po_date) if order.po_date else ""])
    tree.add(*party_loop("Z7", order.mark_for))
    for item in order.items:
        _shipped_item(tree, hl, item)
    # Pallets first, so that cartons naming a pallet's SSCC as parent_sscc nest under it.
    pallets: dict[str, int] = {}
    ordered = sorted(order.packs, key=lambda p: p.kind != PackLevelKind.PALLET)
    for pack in ordered:
        parent = pallets.get(pack.parent_sscc or "", hl)
        pack_hl = _pack(tree, parent, pack)
        if pack.kind == PackLevelKind.PALLET and pack.sscc:
            pallets[pack.sscc] = pack_hl
        for item in pack.items:
            _shipped_item(tree, pack_hl, item)


def ship_notice_856(notice: ShipNotice) -> TransactionSet:
    """856 Ship Notice/Manifest: BSN, HL S (TD1, TD5, REF, DTM, N1), HL O (PRF), HL T/P (MAN), HL I.

    BSN05 is 0001 (shipment, order, packaging, item) when any order has packs, else 0004
    (shipment, order, item). CTT01 counts the HL segments, CTT02 sums the shipped quantities.
    """
    has_packs = any(order.packs for order in notice.orders)
    when = notice.shipped_at
    # BSN04 (time) is mandatory; the canonical notice has a creation date only.
    bsn_time = when.strftime("%H%M") if when is not None else "0000"
    bsn = ["BSN", "00", notice.shipment_id, date8(notice.notice_date), bsn_time, "0001" if has_packs else "0004"]
    tree = _Hierarchy()
    shipment = tree.open(None, "S")
    if notice.package_count is not None or notice.gross_weight is not None:
        td1 = ["TD1", "CTN25" if notice.package_count is not None else "", str(notice.package_count or "")]
        if notice.gross_weight is not None:
            td1 += ["", "", "", "G", number(notice.gross_weight.value), notice.gross_weight.uom]
        tree.add(td1)
    if notice.carrier is not None:
        carrier = notice.carrier
        td5 = ["TD5", "", "2" if carrier.scac else "", carrier.scac or "", "", _text(carrier.name)]
        if carrier.service_level:
            td5 += ["", "", "", "", "", "", _text(carrier.service_level)]  # TD512 service level code
        tree.add(td5)
    if notice.bill_of_lading:
        tree.add(["REF", "BM", notice.bill_of_lading])
    if notice.tracking_number:
        tree.add(["REF", "CN", notice.tracking_number])
    tree.add(*references(notice.references))
    if when is not None:
        tree.add(["DTM", "011", date8(when.date()), when.strftime("%H%M")])
    if notice.expected_delivery is not None:
        tree.add(["DTM", "017", date8(notice.expected_delivery)])
    tree.add(*party_loop("ST", notice.ship_to), *party_loop("SF", notice.ship_from), *party_loop("SU", notice.supplier))
    for order in notice.orders:
        _order(tree, shipment, order)
    quantities = (item.quantity for item in notice.items())
    segments = [bsn, *tree.segments, ["CTT", str(tree.count), _hash_total(quantities)]]
    return TransactionSet("856", segments)


# -- 810 --------------------------------------------------------------------------------


def invoice_810(invoice: Invoice) -> TransactionSet:
    """810 Invoice: BIG, CUR, REF, N1 loops, ITD, IT1 loops (PID, REF, SAC), TDS (cents), TXI, SAC, CTT.

    TDS01 is the stated total when the invoice has one, else the computed total.
    """
    kind = "CR" if invoice.kind == InvoiceKind.CREDIT else "DI"
    big = ["BIG", date8(invoice.invoice_date), invoice.invoice_number, "", invoice.po_number or "", "", "", kind]
    out: list[Segment] = [big, ["CUR", "SE", invoice.currency]]
    out += references(invoice.references)
    for role, party in (
        ("SE", invoice.supplier),
        ("BT", invoice.bill_to),
        ("ST", invoice.ship_to),
        ("RE", invoice.remit_to),
    ):
        out += party_loop(role, party)
    if invoice.terms is not None:
        terms = invoice.terms
        out.append(
            [
                "ITD",
                "01",
                "3",
                number(terms.discount_percent) if terms.discount_percent is not None else "",
                "",
                str(terms.discount_days) if terms.discount_days is not None else "",
                date8(terms.due_date) if terms.due_date else "",
                str(terms.net_days) if terms.net_days is not None else "",
            ]
        )
    for line in invoice.lines:
        ids = item_ids(line.item)
        out.append(["IT1", line.line_number, number(line.quantity), line.uom, number(line.unit_price), "", *ids])
        out += description(line.item)
        if line.contract is not None:
            out.append(["REF", "CT", line.contract.contract_id])
        out += bill_only_segments(line.bill_only)
        out += [sac(charge) for charge in line.allowances_charges]
    total = invoice.total_amount if invoice.total_amount is not None else invoice.computed_total()
    out.append(["TDS", cents(total)])
    if invoice.tax_amount is not None:
        out.append(["TXI", "TX", number(invoice.tax_amount)])
    out += [sac(charge) for charge in invoice.allowances_charges]
    out.append(["CTT", str(len(invoice.lines))])
    return TransactionSet("810", out)


# -- dispatch ---------------------------------------------------------------------------

MODELS: dict[str, type[BaseModel]] = {
    "850": PurchaseOrder,
    "855": PurchaseOrderAck,
    "856": ShipNotice,
    "810": Invoice,
}


def coerce(model: type[M], data: Any) -> M:
    """Validate a canonical object given as a model, a JSON dict, or JSON text/bytes.

    ``GenerateError`` lists the failing fields and problem kinds, never the values.
    """
    if isinstance(data, model):
        return data
    try:
        if isinstance(data, bytes | str):
            return model.model_validate_json(data)
        # JSON dicts may hold floats for amounts: validate through JSON text, as the mapper's output would be.
        return model.model_validate_json(json.dumps(data, default=str))
    except (ValidationError, TypeError, ValueError) as exc:
        raise GenerateError(_describe(model, exc)) from None


def _describe(model: type[BaseModel], exc: Exception) -> str:
    if not isinstance(exc, ValidationError):
        return f"the content is not a {model.__name__} object ({type(exc).__name__})"
    problems = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        problems.append(f"{where}: {err['type']}")
    more = exc.error_count() - len(problems)
    tail = f" and {more} more" if more > 0 else ""
    return f"not a valid {model.__name__}: " + "; ".join(problems) + tail


def generate(code: str, data: Any, *, order_type_code: Callable[[str], str] | None = None) -> TransactionSet:
    """The transaction set ``code`` (850, 855, 856, 810) for a canonical object."""
    if code not in MODELS:
        raise GenerateError(f"unknown transaction set {code!r}; expected one of " + ", ".join(MODELS))
    obj = coerce(MODELS[code], data)
    if isinstance(obj, PurchaseOrder):
        return purchase_order_850(obj, order_type_code)
    if isinstance(obj, PurchaseOrderAck):
        return purchase_order_ack_855(obj)
    if isinstance(obj, ShipNotice):
        return ship_notice_856(obj)
    assert isinstance(obj, Invoice)
    return invoice_810(obj)


GENERATORS = {
    "850": purchase_order_850,
    "855": purchase_order_ack_855,
    "856": ship_notice_856,
    "810": invoice_810,
}
