"""The ``item-to-mfn`` transform: canonical Item objects -> one HL7 v2 MFN^M16 (materials item master).

Reads the JSON of canonical ``Item`` objects (one object, a list, or ``{"items": [...]}``,
as the ``mapping`` transform or an ERP poll produce) and writes one MFN^M16 message with an
MFE/ITM group per item (HL7 v2.6+, chapter 8 "Master Files", materials management):

- MFI: INV^Inventory Master File^HL70175, file-level event UPD, response level (AL/NE/ER/SU).
- MFE: record-level event (MAD add, MUP update, MDC deactivate: an inactive item), the
  item's hospital number as primary key (type CWE).
- ITM: item identifier (hospital item number), description, status (A/I), manufacturer id
  and name, manufacturer catalogue number, patient chargeable, charge code (transaction
  code), unit cost (transaction amount), HCPCS as procedure code.
- PKG: one per packaging level (base unit first), default order unit flagged.

Values are escaped for HL7 (``|^~\\&`` become ``\\F\\ \\S\\ \\R\\ \\E\\ \\T\\``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from engine.core.channel import TransformConfig
from engine.core.contracts import DataType, Document
from engine.core.errors import MappingError
from engine.core.message import new_id
from engine.core.spec import Example, transform_spec

_ESCAPES = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "~": "\\R\\", "&": "\\T\\"}
_HOSPITAL_ID_TYPES = ("buyer_item", "vendor_part", "manufacturer_part", "gtin")


class ItemToMfnConfig(TransformConfig):
    """Settings of ``item-to-mfn``."""

    version: Literal["2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2", "2.9"] = Field(
        "2.6", description="HL7 version in MSH-12 (MFN^M16 exists from 2.6 on)."
    )
    sending_application: str = Field("JUNCTION", description="MSH-3.")
    sending_facility: str = Field("", description="MSH-4.")
    receiving_application: str = Field("", description="MSH-5 (the EHR).")
    receiving_facility: str = Field("", description="MSH-6.")
    processing_id: Literal["P", "T", "D"] = Field("P", description="MSH-11: production, training or debugging.")
    response_level: Literal["AL", "NE", "ER", "SU"] = Field(
        "AL", description="MFI-6: which record-level answers the receiver sends in its MFK."
    )
    event: Literal["MAD", "MUP"] = Field(
        "MUP", description="MFE-1 for active items: MUP (update, the usual full sync) or MAD (add)."
    )
    assigning_authority: str = Field("", description="ITM-1.2 namespace of the hospital item numbers (e.g. ERP).")


def _esc(value: Any) -> str:
    text = "" if value is None else str(value)
    return "".join(_ESCAPES.get(ch, ch) for ch in text).replace("\r", " ").replace("\n", " ")


def _items(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        data = data["items"]
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(i, dict) for i in items):
        raise MappingError("item-to-mfn needs canonical Item objects (JSON objects)", rule="item-to-mfn")
    return items


def _identifier(item: dict[str, Any], kind: str) -> str:
    for ident in item.get("identifiers") or []:
        if isinstance(ident, dict) and ident.get("type") == kind and ident.get("value"):
            return str(ident["value"])
    return ""


def _item_number(item: dict[str, Any], number: int) -> str:
    for kind in _HOSPITAL_ID_TYPES:
        value = _identifier(item, kind)
        if value:
            return value
    raise MappingError(
        f"item {number} has no buyer, vendor, manufacturer or GTIN identifier",
        rule="item-to-mfn",
        field="identifiers",
    )


def _yn(value: Any) -> str:
    return "Y" if value is True else "N" if value is False else ""


class ItemToMfn:
    """Renders canonical Items as one MFN^M16."""

    content_type = "x-application/hl7-v2+er7"

    def __init__(self, config: ItemToMfnConfig, datatype: DataType, **_context: Any) -> None:
        self.config = config

    def apply(self, raw: bytes, doc: Document) -> tuple[bytes | None, str]:
        items = _items(doc.to_data())
        return self.render(items).encode("utf-8"), self.content_type

    def render(self, items: list[dict[str, Any]], now: dt.datetime | None = None, control_id: str = "") -> str:
        c = self.config
        stamp = (now or dt.datetime.now().astimezone()).strftime("%Y%m%d%H%M%S%z")
        control = control_id or new_id()
        segments = [
            "|".join(
                [
                    "MSH",
                    "^~\\&",
                    _esc(c.sending_application),
                    _esc(c.sending_facility),
                    _esc(c.receiving_application),
                    _esc(c.receiving_facility),
                    stamp,
                    "",
                    "MFN^M16^MFN_M16",
                    control,
                    c.processing_id,
                    c.version,
                ]
            ),
            f"MFI|INV^Inventory Master File^HL70175||UPD|{stamp}|{stamp}|{c.response_level}",
        ]
        for number, item in enumerate(items, 1):
            segments.extend(self._group(item, number, stamp, control))
        return "\r".join(segments) + "\r"

    def _group(self, item: dict[str, Any], number: int, stamp: str, control: str) -> list[str]:
        c = self.config
        item_no = _esc(_item_number(item, number))
        description = _esc(item.get("description"))
        active = item.get("active", True) is not False
        event = c.event if active else "MDC"
        key = f"{item_no}^{description}^{_esc(c.assigning_authority)}" if c.assigning_authority else item_no
        manufacturer = item.get("manufacturer") or {}
        mfr_ids = (manufacturer.get("ids") or []) if isinstance(manufacturer, dict) else []
        mfr_id = next((i.get("value", "") for i in mfr_ids if isinstance(i, dict)), "")
        unit_cost = item.get("unit_cost")
        currency = item.get("currency") or "USD"
        itm = [
            "ITM",
            f"{item_no}^{_esc(c.assigning_authority)}" if c.assigning_authority else item_no,  # 1 item identifier
            description,  # 2
            "A" if active else "I",  # 3 item status
            "",  # 4 item type
            "",  # 5 item category
            _yn(item.get("lot_controlled")),  # 6 subject to expiration (lot/expiry tracked)
            _esc(mfr_id),  # 7 manufacturer identifier
            _esc(manufacturer.get("name") if isinstance(manufacturer, dict) else ""),  # 8 manufacturer name
            _esc(_identifier(item, "manufacturer_part")),  # 9 manufacturer catalog number
            _esc(_identifier(item, "hibc")[:5] if _identifier(item, "hibc") else ""),  # 10 labeler code
            _yn(item.get("chargeable")),  # 11 patient chargeable indicator
            _esc(item.get("charge_code")),  # 12 transaction code (CDM)
            f"{_esc(unit_cost)}&{_esc(currency)}" if unit_cost is not None else "",  # 13 transaction amount - unit
            "",  # 14 stocked item indicator
            "",  # 15 supply risk codes
            "",  # 16 approving regulatory agency
            "",  # 17 latex indicator
            "",  # 18 ruling act
            "",  # 19 item natural account code
            "",  # 20 approved to buy quantity
            "",  # 21 approved to buy price
            "",  # 22 taxable item indicator
            "",  # 23 freight charge indicator
            "",  # 24 item set indicator
            "",  # 25 item set identifier
            "",  # 26 track department usage indicator
            f"{_esc(item.get('hcpcs'))}^^HCPCS" if item.get("hcpcs") else "",  # 27 procedure code
        ]
        lines = [f"MFE|{event}|{control}-{number}|{stamp}|{key}|CWE", "|".join(itm).rstrip("|")]
        base = item.get("base_uom") or ""
        levels = [{"uom": base, "base_quantity": 1}] if base else []
        levels += [lv for lv in item.get("pack_levels") or [] if isinstance(lv, dict)]
        purchase = item.get("purchase_uom")
        for set_id, level in enumerate(levels, 1):
            uom = _esc(level.get("uom"))
            default = "Y" if level.get("uom") == purchase else "N"
            lines.append(f"PKG|{set_id}|{uom}|{default}|{_esc(level.get('base_quantity'))}")
        return lines


ITEM_TO_MFN = transform_spec(
    name="item-to-mfn",
    summary="Render canonical Item objects as one HL7 v2 MFN^M16 (materials item master) for the EHR.",
    config=ItemToMfnConfig,
    factory="engine.transforms.mfn:ItemToMfn",
    status="beta",
    examples=(
        Example("Defaults: v2.6, MUP per active item", "type: item-to-mfn"),
        Example(
            "To the EHR's materials interface, add events, ERP numbers",
            "type: item-to-mfn\n"
            "receiving_application: EHR\n"
            "receiving_facility: GH\n"
            "event: MAD\n"
            "assigning_authority: ERP\n",
        ),
    ),
)
