"""The ``json`` data type: JSON documents read by dotted paths (``order.lines[0].sku``).

Path syntax (``SYNTAX``): keys separated by dots, ``[n]`` (counted from 0, like JSON) or
``[*]`` after a key for array items; ``$`` is the whole document. ``get`` returns the first
value as text (numbers as written, booleans ``true``/``false``), ``get_all`` every value,
``iterate("lines")`` one sub-document per array item in which paths read the item first and
fall back to the whole document.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from functools import lru_cache
from typing import Any

from pydantic import Field

from engine.core.channel import DataTypeConfig
from engine.core.contracts import Header, Outcome
from engine.core.errors import ParseError
from engine.core.spec import Example, datatype_spec

SYNTAX = """\
key.key[n].key, [n] counted from 0 like JSON arrays, [*] for every item:
  id                  a top-level value
  order.lines[0].sku  the sku of the first line
  order.lines[*].sku  every line's sku (get_all)
  $                   the whole document, as JSON text
iterate("order.lines") gives one view per line: paths read the line first (sku), then the
whole document (order.id). Values come back as text: numbers as written, true/false."""

_STEP = re.compile(r"([^.\[\]]+)((?:\[(?:\d+|\*)\])*)")
_INDEX = re.compile(r"\[(\d+|\*)\]")
ALL = -1


class JsonConfig(DataTypeConfig):
    """Settings of the ``json`` data type."""

    control_id_path: str | None = Field(
        None, description="Path of the business id used as control id (e.g. id or order.number)."
    )


@lru_cache(maxsize=512)
def parse_path(path: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Split a path into (key, indexes) steps; ``ValueError`` with the syntax when invalid.

    >>> parse_path("order.lines[0].sku")
    (('order', ()), ('lines', (0,)), ('sku', ()))
    """
    text = path.strip()
    if text == "$":
        return ()
    steps = []
    for part in text.split("."):
        match = _STEP.fullmatch(part)
        if match is None:
            raise ValueError(f"invalid JSON path {path!r}: expected key.key[n].key with [n] or [*] after a key")
        indexes = tuple(ALL if i == "*" else int(i) for i in _INDEX.findall(match.group(2)))
        steps.append((match.group(1), indexes))
    return tuple(steps)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def _walk(node: Any, steps: tuple[tuple[str, tuple[int, ...]], ...]) -> list[Any]:
    nodes = [node]
    for key, indexes in steps:
        nodes = [n[key] for n in nodes if isinstance(n, dict) and key in n]
        for index in indexes:
            picked: list[Any] = []
            for n in nodes:
                if isinstance(n, list):
                    picked.extend(n if index == ALL else n[index : index + 1])
            nodes = picked
    return nodes


class JsonDocument:
    """A parsed JSON document (Document protocol)."""

    __slots__ = ("data", "parent")

    def __init__(self, data: Any, parent: JsonDocument | None = None) -> None:
        self.data = data
        self.parent = parent

    def _values(self, path: str) -> list[Any]:
        steps = parse_path(path)
        found = _walk(self.data, steps)
        if not found and self.parent is not None and steps:
            return self.parent._values(path)
        return found

    def get(self, path: str) -> str | None:
        for value in self._values(path):
            text = _text(value)
            if text not in (None, ""):
                return text
        return None

    def get_all(self, path: str) -> list[str]:
        values: list[Any] = []
        for value in self._values(path):
            values.extend(value if isinstance(value, list) and "[*]" in path else [value])
        return [_text(v) or "" for v in values]

    def iterate(self, path: str) -> list[JsonDocument]:
        items: list[Any] = []
        for value in self._values(path):
            items.extend(value if isinstance(value, list) else [value])
        return [JsonDocument(item, self) for item in items]

    def to_data(self) -> Any:
        return self.data


class Json:
    """The ``json`` data type (DataType protocol)."""

    content_type = "application/json"
    validates = False

    def __init__(self, config: JsonConfig | None = None) -> None:
        self.config = config or JsonConfig(type="json")

    def split(self, raw: bytes) -> list[bytes]:
        return [raw]

    def parse(self, raw: bytes) -> JsonDocument:
        text = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
        try:
            return JsonDocument(json.loads(text, parse_float=Decimal))
        except UnicodeDecodeError as exc:
            raise ParseError("the body is not UTF-8 text", f"byte {exc.start + 1}", "102") from None
        except json.JSONDecodeError as exc:
            # The position, never the text around it (it may hold PHI).
            raise ParseError(f"invalid JSON: {exc.msg}", f"line {exc.lineno}, column {exc.colno}", "102") from None
        except RecursionError:
            raise ParseError("JSON nested too deeply", "", "102") from None

    def header(self, raw: bytes) -> Header:
        if not self.config.control_id_path:
            return Header()
        try:
            control = self.parse(raw).get(self.config.control_id_path) or ""
        except ParseError:
            return Header()
        return Header(control_id=control[:200], business_key=control[:200])

    def validate(self, raw: bytes) -> list[str]:
        return []

    def check_path(self, path: str) -> object:
        return parse_path(path)

    def respond(self, raw: bytes, outcome: Outcome) -> bytes | None:
        return None  # the HTTP source answers JSON callers itself


JSON = datatype_spec(
    name="json",
    summary="JSON documents (UTF-8), read by dotted paths such as order.lines[0].sku.",
    config=JsonConfig,
    factory="engine.datatypes.json:Json",
    path_syntax=SYNTAX,
    examples=(
        Example("Plain JSON", "type: json"),
        Example("Purchase orders keyed by their number", "type: json\ncontrol_id_path: order.number"),
    ),
)
