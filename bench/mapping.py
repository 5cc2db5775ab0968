"""Declarative mapping speed against a hand-written Python function, in one run.

Compiles the mapping once, then for each message parses it and maps it into validated
pydantic objects, the same way a hand-written function does with the same field reads.
Prints microseconds per message for both, the ratio and messages per second.

    python bench/mapping.py [--n 20000]
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402

from engine.datatypes.hl7v2 import Hl7v2  # noqa: E402
from engine.mapping import Tables, compile_mapping  # noqa: E402
from engine.mapping.functions import parse_hl7_ts  # noqa: E402


class ItemRef(BaseModel):
    number: str
    description: str | None = None


class SupplyUsage(BaseModel):
    encounter: str
    item: ItemRef
    quantity: Decimal
    unit_price: Decimal | None = None
    used_at: datetime
    department: str | None = None
    charge_code: str | None = None


MAPPING = """\
source: hl7v2
target: SupplyUsage
for_each: FT1
fields:
  encounter: PV1-19.1
  item.number: FT1-7.1
  item.description: {from: FT1-7.1, lookup: {table: item_master, column: description}}
  quantity: {from: FT1-10, as: decimal, required: true}
  unit_price: {from: FT1-11.1, as: decimal}
  used_at: {from: FT1-4, as: datetime}
  department: FT1-13.1
  charge_code: {from: FT1-7.1, lookup: {table: item_master, column: charge_code}}
rules:
  - name: high-cost-needs-charge-code
    when: {field: unit_price, matches: "^[0-9]{4,}"}
    check: {field: charge_code, exists: true}
    message: high-cost item has no charge code
"""


def hand_written(doc: Any, tables: Tables) -> list[SupplyUsage]:
    """What a developer would write for the same objects and the same rule."""
    out = []
    encounter = doc.get("PV1-19.1")
    for line in doc.iterate("FT1"):
        item = line.get("FT1-7.1")
        row = tables.lookup("item_master", item) if item else None
        quantity = line.get("FT1-10")
        if quantity is None:
            raise ValueError("quantity is required")
        price = line.get("FT1-11.1")
        data: dict[str, Any] = {
            "encounter": encounter,
            "item": {"number": item, "description": row["description"] if row else None},
            "quantity": Decimal(quantity),
            "unit_price": Decimal(price) if price else None,
            "used_at": parse_hl7_ts(line.get("FT1-4") or ""),
            "department": line.get("FT1-13.1"),
            "charge_code": (row["charge_code"] or None) if row else None,
        }
        if price and len(price.split(".")[0]) >= 4 and not data["charge_code"]:
            raise ValueError("high-cost item has no charge code")
        out.append(SupplyUsage.model_validate(data))
    return out


def message(lines: int) -> bytes:
    """The sample DFT^P03 with its FT1 lines repeated to ``lines`` lines (set IDs renumbered)."""
    sample = (ROOT / "samples" / "hl7v2" / "dft_p03_supply_two_ft1.hl7").read_bytes()
    segments = [s for s in sample.split(b"\r") if s]
    body = [s for s in segments if not s.startswith((b"FT1", b"PR1"))]
    ft1 = [s.split(b"|", 2)[2] for s in segments if s.startswith(b"FT1")]
    extra = [b"FT1|%d|" % (i + 1) + ft1[i % len(ft1)] for i in range(lines)]
    return b"\r".join([*body, *extra]) + b"\r"


def per_message(fn: Callable[[], object], n: int) -> float:
    """Best of five rounds (timeit turns the GC off while timing), in microseconds."""
    rounds = timeit.repeat(fn, number=max(n // 5, 1), repeat=5)
    return min(rounds) / max(n // 5, 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    tables = Tables()
    tables.add(
        "item_master",
        [
            {"item": "SUP-100234", "description": "Femoral stem", "charge_code": "C-1"},
            {"item": "SUP-100877", "description": "Bone cement", "charge_code": ""},
        ],
    )
    mapping = compile_mapping(MAPPING, models={"SupplyUsage": SupplyUsage}, datatype="hl7v2")
    datatype = Hl7v2()
    for lines in (2, 5):
        raw = message(lines)
        declarative = mapping.run(datatype.parse(raw), tables).objects
        assert declarative == hand_written(datatype.parse(raw), tables) and len(declarative) == lines
        # Interleave the contenders so that machine noise hits both alike.
        parse_only, ours, baseline = float("inf"), float("inf"), float("inf")
        for _ in range(3):
            parse_only = min(parse_only, per_message(lambda raw=raw: datatype.parse(raw), args.n))
            ours = min(ours, per_message(lambda raw=raw: mapping.run(datatype.parse(raw), tables), args.n))
            baseline = min(baseline, per_message(lambda raw=raw: hand_written(datatype.parse(raw), tables), args.n))
        print(
            f"DFT^P03 with {lines} FT1: parse {parse_only:6.1f} us | parse+map declarative {ours:6.1f} us "
            f"({1e6 / ours:,.0f} msg/s) | hand-written {baseline:6.1f} us | ratio {ours / baseline:.2f}x"
        )


if __name__ == "__main__":
    main()
