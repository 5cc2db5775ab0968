"""Partner files, control numbers and duplicate-interchange detection (real SQLite store)."""

from __future__ import annotations

import asyncio
import datetime as dt
import textwrap
from pathlib import Path

import pytest

from engine.connectors.file import FileDestinationConfig
from engine.core.errors import ConfigError
from engine.edi.control import MAX_CONTROL, ControlNumbers, DuplicateInterchanges
from engine.edi.partners import find_partner, load_partner, load_partners
from engine.store.sqlite import SqliteStore, SqliteStoreConfig

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
name: {name}
us: {{isa_qualifier: ZZ, isa_id: MERCY, gs_id: MERCY}}
them: {{isa_qualifier: ZZ, isa_id: {them}, gs_id: ACME}}
version: "005010"
usage: T
route:
  type: file
  directory: out
"""


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_sample_partner_loads_with_its_route() -> None:
    partners = load_partners(ROOT / "config" / "partners")
    acme = partners["acme-medical"]
    assert isinstance(acme.route, FileDestinationConfig)
    assert acme.route.name == "acme-medical-route"
    assert acme.isa_version == "00401" and acme.x12_delimiters.repetition is None
    assert acme.order_type_code("bill_only") == "BO" and acme.order_type_code("drop_ship") == "DS"
    assert find_partner(partners, "ZZ", "ACMEMEDICAL    ") is acme
    assert find_partner(partners, "01", "ACMEMEDICAL") is None


def test_5010_partner_keeps_its_repetition_separator(tmp_path: Path) -> None:
    partner = load_partner(_write(tmp_path, "acme", GOOD.format(name="acme", them="ACME")))
    assert partner.x12_delimiters.repetition == "^" and partner.isa_version == "00501"
    assert partner.line_break == "\n"


def test_errors_carry_file_line_and_column(tmp_path: Path) -> None:
    text = """\
    name: acme
    us: {isa_qualifier: ZZZ, isa_id: MERCY, gs_id: MERCY}
    them: {isa_qualifier: ZZ, isa_id: ACME, gs_id: ACME}
    usage: Q
    acks:
      expect: "998"
      ack_timout_minutes: 5
    delimiters: {element: "*", component: "*"}
    route:
      type: file
      directry: out
    """
    path = _write(tmp_path, "acme", text)
    with pytest.raises(ConfigError) as caught:
        load_partner(path)
    lines = str(caught.value).splitlines()
    expect = [
        f"{path}:2:21: error: us.isa_qualifier:",
        f"{path}:10:3: error: route.directory: required field is missing",
        f"{path}:4:8: error: usage: expected one of T, P",
        f"{path}:6:11: error: acks.expect: expected one of 997, 999, none",
        f'{path}:7:3: error: acks.ack_timout_minutes: unknown key (did you mean "ack_timeout_minutes"?)',
        f"{path}:8:13: error: delimiters: element, component, repetition and segment separators must be distinct",
        f'{path}:11:3: error: route.directry: unknown key (did you mean "directory"?)',
    ]
    for wanted in expect:
        assert any(line.startswith(wanted) for line in lines), (wanted, lines)


def test_route_type_is_checked_through_the_registry(tmp_path: Path) -> None:
    path = _write(tmp_path, "acme", GOOD.format(name="acme", them="ACME").replace("type: file", "type: fiel"))
    with pytest.raises(ConfigError, match=r'acme.yaml:7:9: error: route.type: unknown destination "fiel".*"file"'):
        load_partner(path)
    path = _write(tmp_path, "acme", GOOD.format(name="acme", them="ACME").replace("type: file", "type: x12"))
    with pytest.raises(ConfigError, match="cannot be of type x12"):
        load_partner(path)


def test_name_must_match_the_file_and_isa_ids_must_be_unique(tmp_path: Path) -> None:
    _write(tmp_path, "one", GOOD.format(name="one", them="ACME"))
    _write(tmp_path, "two", GOOD.format(name="two", them="ACME"))
    _write(tmp_path, "three", GOOD.format(name="tree", them="OTHER"))
    with pytest.raises(ConfigError) as caught:
        load_partners(tmp_path)
    text = str(caught.value)
    assert 'three.yaml:1:7: error: name: expected the file stem "three"' in text
    assert 'two.yaml: error: them: the partner ISA qualifier and id are already used by partner "one"' in text
    assert load_partners(tmp_path / "missing") == {}


# -- control numbers -------------------------------------------------------------------


async def _with_store(path: Path, body):  # type: ignore[no-untyped-def]
    store = SqliteStore(SqliteStoreConfig(path="db/junction.db"), path)
    await store.open()
    try:
        return await body(store)
    finally:
        await store.close()


def test_control_numbers_are_monotonic_concurrent_safe_and_survive_reopen(tmp_path: Path) -> None:
    async def first(store: SqliteStore) -> list[int]:
        # Two channels sending to one partner each hold their own ControlNumbers.
        one, two = ControlNumbers(store), ControlNumbers(store)
        taken = await asyncio.gather(*((one if n % 2 else two).next("acme", "interchange") for n in range(20)))
        numbers = one
        assert await numbers.next("other", "interchange") == 1  # counters are per partner
        assert await numbers.take("acme", "transaction", 3) == [1, 2, 3]
        return list(taken)

    taken = asyncio.run(_with_store(tmp_path, first))
    assert sorted(taken) == list(range(1, 21))

    async def second(store: SqliteStore) -> tuple[int, int, int]:
        numbers = ControlNumbers(store)  # a new process: nothing cached
        return (
            await numbers.next("acme", "interchange"),
            await numbers.next("acme", "transaction"),
            await numbers.next("acme", "group"),
        )

    assert asyncio.run(_with_store(tmp_path, second)) == (21, 4, 1)


def test_control_numbers_wrap_to_one_after_the_nine_digit_maximum(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> list[int]:
        numbers = ControlNumbers(store)
        await numbers.set("acme", "interchange", MAX_CONTROL - 1)
        got = [await numbers.next("acme", "interchange") for _ in range(3)]
        with pytest.raises(ValueError, match="kind"):
            await numbers.next("acme", "isa")  # type: ignore[arg-type]
        return got

    assert asyncio.run(_with_store(tmp_path, body)) == [MAX_CONTROL, 1, 2]


def test_duplicate_interchanges_within_the_window(tmp_path: Path) -> None:
    window = dt.timedelta(days=30)
    day = 86400.0

    async def body(store: SqliteStore) -> list[bool]:
        seen = DuplicateInterchanges(store)
        return [
            await seen.seen("ZZ:ACME", "000000123", window, now=1000.0),
            await seen.seen("ZZ:ACME", "123", window, now=1000.0 + day),  # same number, padding ignored
            await seen.seen("ZZ:OTHER", "000000123", window, now=1000.0 + day),  # another sender
            await seen.seen("ZZ:ACME", "000000123", window, now=1000.0 + 31 * day),  # window passed: new
            await seen.seen("ZZ:ACME", "000000123", window, now=1000.0 + 32 * day),  # window restarted
        ]

    assert asyncio.run(_with_store(tmp_path, body)) == [False, True, False, False, True]

    async def after_restart(store: SqliteStore) -> bool:
        return await DuplicateInterchanges(store).seen("ZZ:OTHER", "123", window, now=1000.0 + 2 * day)

    assert asyncio.run(_with_store(tmp_path, after_restart)) is True


def test_the_partner_example_in_the_docs_validates() -> None:
    text = (ROOT / "docs" / "partners.md").read_text(encoding="utf-8")
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    partner = load_partner("docs/partners.md", text=block)
    assert partner.name == "acme-medical" and partner.route.type == "file"
    assert partner.order_type_code("bill_only") == "BO"
