"""The ``xml`` data type: XML documents read with XPath (lxml), parsed safely.

Paths are XPath 1.0 expressions. ``get`` returns the first result as text (an element's
text content, an attribute's value, or a string/number result), ``get_all`` every result,
and ``iterate("//line")`` one view per element: relative paths (``sku``, ``@qty``) read that
element, absolute ones (``/order/number``) the whole document. Namespaces are declared in
the config (``namespaces: {po: urn:example:po}``) and used as prefixes.

Parsing never resolves entities, never fetches anything over the network and refuses
DTD-driven tricks (billion laughs, external entities).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import Field

from engine.core.channel import DataTypeConfig
from engine.core.contracts import Header, Outcome
from engine.core.errors import ParseError
from engine.core.spec import Example, datatype_spec

SYNTAX = """\
XPath 1.0 (lxml), with the prefixes declared in the data type's namespaces:
  /order/number          the order number
  /order/line[1]/sku     the first line's sku;  /order/line/sku with get_all: every sku
  /order/@type           an attribute
  //po:item              with namespaces: {po: urn:example:po}
iterate("/order/line") gives one view per line: relative paths (sku, @qty) read the line,
absolute ones read the document."""


class XmlConfig(DataTypeConfig):
    """Settings of the ``xml`` data type."""

    namespaces: dict[str, str] = Field(default_factory=dict, description="Prefix -> namespace URI for paths.")
    control_id_path: str | None = Field(None, description="XPath of the business id used as control id.")


@lru_cache(maxsize=512)
def _compile(path: str, namespaces: tuple[tuple[str, str], ...]) -> Any:
    from lxml import etree

    try:
        return etree.XPath(path, namespaces=dict(namespaces))
    except etree.XPathSyntaxError as exc:
        raise ValueError(f"invalid XPath {path!r}: {exc}") from None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    text = "".join(value.itertext()) if hasattr(value, "itertext") else str(value)
    return text.strip()


class XmlDocument:
    """A parsed XML document or one element of it (Document protocol)."""

    __slots__ = ("namespaces", "node", "root")

    def __init__(self, node: Any, namespaces: tuple[tuple[str, str], ...], root: Any = None) -> None:
        self.node = node
        self.root = root if root is not None else node
        self.namespaces = namespaces

    def _results(self, path: str) -> list[Any]:
        target = self.root if path.startswith("/") else self.node
        result = _compile(path, self.namespaces)(target)
        return result if isinstance(result, list) else [result]

    def get(self, path: str) -> str | None:
        for value in self._results(path):
            text = _text(value)
            if text:
                return text
        return None

    def get_all(self, path: str) -> list[str]:
        return [_text(v) for v in self._results(path)]

    def iterate(self, path: str) -> list[XmlDocument]:
        return [XmlDocument(v, self.namespaces, self.root) for v in self._results(path) if hasattr(v, "tag")]

    def to_data(self) -> Any:
        from lxml import etree

        return etree.tostring(self.node, encoding="unicode")


class Xml:
    """The ``xml`` data type (DataType protocol)."""

    content_type = "application/xml"
    validates = False

    def __init__(self, config: XmlConfig | None = None) -> None:
        self.config = config or XmlConfig(type="xml")
        self._namespaces = tuple(sorted(self.config.namespaces.items()))

    def split(self, raw: bytes) -> list[bytes]:
        return [raw]

    def parse(self, raw: bytes) -> XmlDocument:
        from lxml import etree

        parser = etree.XMLParser(
            resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_blank_text=True
        )
        try:
            root = etree.fromstring(raw, parser=parser)
        except etree.XMLSyntaxError as exc:
            line, column = exc.position if exc.position else (0, 0)
            # lxml's message can quote the offending text; keep only its first words.
            reason = str(exc.msg or "not well-formed").split(",")[0][:80]
            raise ParseError(f"invalid XML: {reason}", f"line {line}, column {column}", "102") from None
        if root is None:
            raise ParseError("the body is empty", "", "100")
        if root.getroottree().docinfo.internalDTD is not None and any(
            True for _ in root.getroottree().docinfo.internalDTD.iterentities()
        ):
            raise ParseError("entity declarations are not accepted", "the DTD", "102")
        return XmlDocument(root, self._namespaces)

    def header(self, raw: bytes) -> Header:
        if not self.config.control_id_path:
            return Header()
        try:
            control = self.parse(raw).get(self.config.control_id_path) or ""
        except (ParseError, ValueError):
            return Header()
        return Header(control_id=control[:200], business_key=control[:200])

    def validate(self, raw: bytes) -> list[str]:
        return []

    def check_path(self, path: str) -> object:
        return _compile(path, self._namespaces)

    def respond(self, raw: bytes, outcome: Outcome) -> bytes | None:
        return None


XML = datatype_spec(
    name="xml",
    summary="XML documents read with XPath (lxml), parsed without entities or network access.",
    config=XmlConfig,
    factory="engine.datatypes.xml:Xml",
    path_syntax=SYNTAX,
    examples=(
        Example("Plain XML", "type: xml"),
        Example(
            "Namespaced purchase orders",
            "type: xml\nnamespaces: {po: 'urn:example:po'}\ncontrol_id_path: /po:order/po:number",
        ),
    ),
)
