"""Parse cost of the X12, flat-file and FHIR data types against a baseline in the same run.

- X12: a ~5 MB 850 (one interchange, many transaction sets): the bare tokenizer (baseline),
  parse with envelope checks only, parse with schema validation, and the 997 built for it.
- Flat: 50,000 typed CSV rows against Python's csv module reading the same text.
- FHIR: parse + validation of corpus-like resources against json.loads.

Prints seconds (best of ``--repeat``) and each ratio to its baseline; speed targets live
here, not in timed unit tests.

    python bench/formats.py [--repeat 3] [--x12-mb 5]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.core.contracts import Outcome  # noqa: E402
from engine.datatypes.fhir import FhirDataType  # noqa: E402
from engine.datatypes.flat import DelimitedConfig  # noqa: E402
from engine.datatypes.flat.delimited import Delimited  # noqa: E402
from engine.datatypes.x12 import X12Config, X12DataType  # noqa: E402
from engine.datatypes.x12.tokenizer import tokenize  # noqa: E402

PER_RUN = 200  # FHIR resources parsed per timed run


def best(run: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def big_850(megabytes: float) -> bytes:
    """The 4010 sample 850's transaction set repeated inside one interchange and group."""
    text = (ROOT / "samples" / "x12" / "850_4010_purchase_order.edi").read_text()
    segments = [s.strip() for s in text.split("~") if s.strip()]
    isa, gs = segments[0], segments[1]
    body = segments[segments.index(next(s for s in segments if s.startswith("ST*"))) : -2]
    body = body[: next(i for i, s in enumerate(body) if s.startswith("SE*")) + 1]
    sets = []
    size, number = 0, 0
    while size < megabytes * 1_000_000:
        number += 1
        control = f"{number:04d}"
        one = [f"ST*850*{control}", *body[1:-1], f"SE*{len(body)}*{control}"]
        chunk = "~".join(one) + "~"
        sets.append(chunk)
        size += len(chunk)
    gs06 = gs.split("*")[6]
    isa13 = isa.split("*")[13]
    return (isa + "~" + gs + "~" + "".join(sets) + f"GE*{number}*{gs06}~IEA*1*{isa13}~").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--x12-mb", type=float, default=5.0)
    args = parser.parse_args()
    r = args.repeat

    raw = big_850(args.x12_mb)
    envelope_only = X12DataType(X12Config(type="x12", schema_validation=False))
    with_schema = X12DataType()
    base = best(lambda: tokenize(raw), r)
    print(f"x12 {len(raw) / 1e6:.1f} MB 850: tokenize {base:.2f} s (baseline)")
    for label, run in (
        ("parse, envelope checks", lambda: envelope_only.parse(raw)),
        ("parse, schema validation", lambda: with_schema.parse(raw)),
        ("997 for the file", lambda: with_schema.respond(raw, Outcome("AA"))),
    ):
        took = best(run, r)
        print(f"    {label:28s} {took:6.2f} s  ratio {took / base:4.1f}x")

    lines = [
        f'SUP-{i:06d},"Item {i}, sterile",{i % 997}.{i % 100:02d},{i % 50},2024-03-{i % 28 + 1:02d}'
        for i in range(50_000)
    ]
    text = "id,description,cost,qty,day\r\n" + "\r\n".join(lines) + "\r\n"
    data = text.encode()
    plain = Delimited(DelimitedConfig.model_validate({"type": "delimited"}))
    typed = Delimited(
        DelimitedConfig.model_validate(
            {
                "type": "delimited",
                "columns": [
                    {"name": "id", "required": True},
                    {"name": "cost", "type": "decimal"},
                    {"name": "qty", "type": "int"},
                    {"name": "day", "type": "date"},
                ],
            }
        )
    )
    base = best(lambda: list(csv.reader(io.StringIO(text, newline=""))), r)
    print(f"flat 50,000 rows: csv module {base:.3f} s (baseline)")
    for label, parse in (("delimited, untyped", plain.parse), ("delimited, typed columns", typed.parse)):
        took = best(lambda parse=parse: parse(data), r)  # type: ignore[misc]
        print(f"    {label:28s} {took:6.3f} s  ratio {took / base:4.1f}x")

    fhir = FhirDataType()
    for name in (
        "chargeitem_implant_billable.json",
        "claim_professional_implant.json",
        "bundle_batch_two_charges.json",
    ):
        body = (ROOT / "samples" / "fhir" / name).read_bytes()
        base = best(lambda body=body: [json.loads(body) for _ in range(PER_RUN)], r) / PER_RUN  # type: ignore[misc]
        took = best(lambda body=body: [fhir.parse(body) for _ in range(PER_RUN)], r) / PER_RUN  # type: ignore[misc]
        print(
            f"fhir {name:36s} json.loads {base * 1e6:6.1f} us  parse+validate {took * 1e6:7.1f} us  ratio {took / base:5.1f}x"
        )


if __name__ == "__main__":
    main()
