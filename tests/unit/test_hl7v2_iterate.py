"""Iterating repeats: one view per segment occurrence, the rest of the message still visible."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.datatypes.hl7v2 import Hl7v2

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "hl7v2" / "dft_p03_supply_two_ft1.hl7"


def test_each_ft1_is_its_own_scope() -> None:
    msg = Hl7v2().parse(SAMPLE.read_bytes())
    lines = msg.iterate("FT1")
    assert len(lines) == 2
    assert [line.get("FT1-1") for line in lines] == ["1", "2"]
    assert [line.get_all("FT1-7.1") for line in lines] == [[v] for v in msg.get_all("FT1-7.1")]
    assert {line.get("PID-3.1") for line in lines} == {msg.get("PID-3.1")}  # other segments: the message
    assert lines[1].get("FT1[1]-1") == "1"  # an explicit occurrence still wins


def test_iterate_rejects_field_paths_and_finds_nothing_for_absent_segments() -> None:
    msg = Hl7v2().parse(SAMPLE.read_bytes())
    assert msg.iterate("ZZZ") == []
    with pytest.raises(ValueError, match="segment id"):
        msg.iterate("FT1-7")
