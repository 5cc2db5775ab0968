"""Reference tables: CSV loading (BOM, header, duplicates), lookups, versions, atomic reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.errors import ConfigError
from engine.mapping import Tables, UnknownColumn, UnknownTable, parse_csv, read_csv

ITEMS = 'item,description,unit_cost,high_cost\r\nSUP-1,Femoral stem,4250.00,Y\r\nSUP-2,"Cement, 40 g",185.50,N\r\n'


def write(folder: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.csv"
    path.write_text(text, encoding=encoding, newline="")
    return path


def test_load_dir_reads_every_csv_with_or_without_bom(tmp_path: Path) -> None:
    write(tmp_path, "item_master", ITEMS, encoding="utf-8-sig")
    write(tmp_path, "location", "department,cost_centre\nORSURG,CC-4410\n")
    (tmp_path / "notes.txt").write_text("ignored", encoding="utf-8")
    tables = Tables.from_dir(tmp_path)
    assert tables.names() == ["item_master", "location"]
    items = tables.get("item_master")
    assert items.columns == ("item", "description", "unit_cost", "high_cost") and len(items) == 2
    assert tables.lookup("item_master", "SUP-2", column="description") == "Cement, 40 g"
    assert tables.lookup("location", "ORSURG") == {"department": "ORSURG", "cost_centre": "CC-4410"}
    assert items.source.endswith("item_master.csv")


def test_lookups_are_case_sensitive_unless_asked(tmp_path: Path) -> None:
    tables = Tables()
    tables.add("items", [{"item": "SUP-1", "alt": "Stem-A"}])
    assert tables.lookup("items", "sup-1") is None
    assert tables.lookup("items", "sup-1", column="alt", ignore_case=True) == "Stem-A"
    assert tables.lookup("items", "STEM-a", key_column="alt", column="item", ignore_case=True) == "SUP-1"
    assert tables.lookup("items", "nope", column="alt") is None
    with pytest.raises(UnknownColumn, match="no column colour"):
        tables.lookup("items", "SUP-1", column="colour")
    with pytest.raises(UnknownColumn):
        tables.lookup("items", "SUP-1", key_column="colour")
    with pytest.raises(UnknownTable, match="table other is not loaded"):
        tables.lookup("other", "SUP-1")


def test_returned_rows_are_copies() -> None:
    tables = Tables()
    tables.add("items", [{"item": "SUP-1", "alt": "A"}])
    row = tables.lookup("items", "SUP-1")
    row["alt"] = "changed"
    assert tables.lookup("items", "SUP-1", column="alt") == "A"


def test_versions_follow_content_and_generation_counts_changes(tmp_path: Path) -> None:
    tables = Tables()
    first = tables.add("items", [{"item": "SUP-1", "cost": "1"}])
    same = tables.get("items").version
    tables.add("items", [{"item": "SUP-1", "cost": "1"}])
    assert tables.get("items").version == same == first.version and tables.generation == 2
    tables.add("items", [{"item": "SUP-1", "cost": "2"}])
    assert tables.versions()["items"] != same and tables.generation == 3
    assert parse_csv("item,cost\nSUP-1,1\n", "items").version == first.version


def test_bad_csv_reports_every_problem_with_lines_and_keeps_the_old_tables(tmp_path: Path) -> None:
    write(tmp_path, "item_master", ITEMS)
    tables = Tables.from_dir(tmp_path)
    write(tmp_path, "item_master", "item,description\nSUP-1,a\nSUP-2\nSUP-1,dup-secret\n")
    write(tmp_path, "location", " ,cost_centre\n")
    with pytest.raises(ConfigError) as caught:
        tables.load_dir(tmp_path)
    text = str(caught.value)
    assert "item_master.csv:3:1: error: expected 2 cells like the header; found 1" in text
    assert "item_master.csv:4:1: error: duplicate key in column item (first on line 2)" in text
    assert "location.csv:1:1: error: expected a header row naming every column" in text
    assert "dup-secret" not in text and "SUP-1" not in text
    assert tables.lookup("item_master", "SUP-1", column="high_cost") == "Y"  # unchanged
    assert tables.generation == 1


def test_reload_replaces_the_whole_set(tmp_path: Path) -> None:
    write(tmp_path / "a", "old", "k,v\n1,x\n")
    write(tmp_path / "b", "new", "k,v\n1,y\n")
    tables = Tables.from_dir(tmp_path / "a")
    tables.load_dir(tmp_path / "b")
    assert tables.names() == ["new"] and "old" not in tables
    put = read_csv(write(tmp_path / "c", "extra", "k,v\n2,z\n"))
    tables.put(put)
    assert tables.names() == ["extra", "new"] and tables.lookup("extra", "2", column="v") == "z"


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"k,v\n\xff\xfe,1\n")
    with pytest.raises(ConfigError, match="cannot read table"):
        read_csv(path)
    with pytest.raises(ConfigError, match="column names must be unique"):
        parse_csv("k,k\n1,2\n", "dup")
