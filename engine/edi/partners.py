"""Trading partners: one YAML file per partner in ``config/partners/``.

A partner file names both sides of the interchange (ISA qualifier and id, GS application
code), the X12 version and delimiters, the usage indicator, the acknowledgement policy and
the ``route``: a destination config (``file``, ``sftp``, ``http`` ...) validated through
the registry exactly like a channel destination. Problems are reported as ``ConfigError``
diagnostics with file:line:column, all at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from engine.core.channel import KEBAB, DestinationConfig, Kebab, Strict
from engine.core.errors import ConfigError, Diagnostic, Location
from engine.core.loader import YamlDoc, channel_files, load_yaml, resolve_plugin, validate_model
from engine.datatypes.x12.tokenizer import Delimiters

__all__ = ["AckPolicy", "EdiIdentity", "Partner", "PartnerDelimiters", "find_partner", "load_partner", "load_partners"]

# Default BEG02 (element 92) purchase order type codes per canonical order type, matching
# mappings/tables/x12_order_type.csv. BO/BR for bill-only are a trading-partner convention
# (no public sample agrees): override per partner.
DEFAULT_ORDER_TYPE_CODES: dict[str, str] = {
    "stock": "SA",
    "non_stock": "OS",
    "drop_ship": "DS",
    "consignment": "CN",
    "bill_only": "BO",
    "bill_and_replace": "BR",
}


class EdiIdentity(Strict):
    """One side of an interchange: ISA05/06 (or 07/08) and GS02 (or GS03)."""

    isa_qualifier: str = Field(
        pattern=r"^[A-Z0-9]{2}$", description="ISA id qualifier (ISA05/ISA07), e.g. ZZ mutually defined, 01 DUNS."
    )
    isa_id: str = Field(
        min_length=1, max_length=15, pattern=r"^[A-Za-z0-9 ._-]+$", description="ISA id (ISA06/ISA08), at most 15."
    )
    gs_id: str = Field(
        min_length=2, max_length=15, pattern=r"^[A-Za-z0-9 ._-]+$", description="GS application code (GS02/GS03)."
    )


class PartnerDelimiters(Strict):
    """The separators used on interchanges sent to the partner."""

    element: str = Field("*", min_length=1, max_length=1, description="Element separator.")
    component: str = Field(":", min_length=1, max_length=1, description="Component separator (ISA16).")
    repetition: str = Field("^", min_length=1, max_length=1, description="Repetition separator (ISA11, 5010 only).")
    segment: str = Field("~", min_length=1, max_length=1, description="Segment terminator.")
    line_break: Literal["none", "lf", "crlf"] = Field(
        "lf", description="What follows each segment terminator: nothing, LF or CR LF."
    )

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        chars = [self.element, self.component, self.repetition, self.segment]
        if len(set(chars)) != len(chars):
            raise ValueError("element, component, repetition and segment separators must be distinct")
        if any(c.isalnum() or c.isspace() for c in chars):
            raise ValueError("separators must be punctuation, not letters, digits or blanks")
        return self


class AckPolicy(Strict):
    """Which acknowledgements the partner sends back, and how long to wait for them."""

    expect: Literal["997", "999", "none"] = Field("997", description="Functional acknowledgement expected.")
    ta1: bool = Field(False, description="Ask for an interchange acknowledgement (ISA14 = 1).")
    ack_timeout_minutes: int = Field(
        240, ge=1, description="Raise an alert when a sent group is not acknowledged within this many minutes."
    )


class Partner(Strict):
    """A trading partner: identities, version, delimiters, acknowledgement policy and route."""

    name: Kebab = Field(description="Partner name; equals the file stem.")
    description: str = Field("", description="Free text for people.")
    us: EdiIdentity = Field(description="Our identity towards this partner (ISA05/06, GS02 on what we send).")
    them: EdiIdentity = Field(description="The partner's identity (ISA07/08, GS03 on what we send).")
    version: Literal["004010", "005010"] = Field("004010", description="X12 version (GS08; ISA12 00401 or 00501).")
    usage: Literal["T", "P"] = Field(description="ISA15: T for test, P for production interchanges.")
    delimiters: PartnerDelimiters = Field(
        default_factory=PartnerDelimiters,  # type: ignore[arg-type]
        description="Separators for interchanges sent to the partner.",
    )
    acks: AckPolicy = Field(
        default_factory=AckPolicy,  # type: ignore[arg-type]
        description="Acknowledgements expected from the partner: expect, ta1, ack_timeout_minutes.",
    )
    duplicate_window_days: int = Field(
        30, ge=1, description="An inbound ISA13 seen again from this partner within this window is a duplicate."
    )
    order_type_codes: dict[str, str] = Field(
        default_factory=dict,
        description="BEG02 code per order type: stock, non_stock, drop_ship, consignment, bill_only ...",
    )
    route: DestinationConfig = Field(description="Destination (file, sftp, http ...) that carries interchanges.")

    @field_validator("order_type_codes")
    @classmethod
    def _known_order_types(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(DEFAULT_ORDER_TYPE_CODES))
        if unknown:
            raise ValueError(
                f"unknown order type {unknown[0]!r}; expected one of " + ", ".join(DEFAULT_ORDER_TYPE_CODES)
            )
        for code in value.values():
            if not (1 <= len(code) <= 2 and code.isalnum() and code.isupper()):
                raise ValueError("a BEG02 code is 1 or 2 upper-case letters or digits")
        return value

    @property
    def x12_delimiters(self) -> Delimiters:
        """The delimiters as the X12 writer takes them (no repetition separator in 4010)."""
        d = self.delimiters
        return Delimiters(d.element, d.component, d.segment, d.repetition if self.version >= "005010" else None)

    @property
    def line_break(self) -> str:
        return {"none": "", "lf": "\n", "crlf": "\r\n"}[self.delimiters.line_break]

    @property
    def isa_version(self) -> str:
        """ISA12 for this partner's version: 00401 or 00501."""
        return self.version[:5]

    def order_type_code(self, order_type: str) -> str:
        """BEG02 for a canonical order type (partner override, else the default)."""
        return self.order_type_codes.get(order_type) or DEFAULT_ORDER_TYPE_CODES[order_type]


def _route(doc: YamlDoc, data: dict[str, object], partner: str) -> None:
    route = data.get("route")
    if route is None:
        return
    loc: tuple[str | int, ...] = ("route",)
    if isinstance(route, dict):
        route = dict(route)
        if "name" not in route:
            route["name"] = f"{partner}-route" if KEBAB.match(partner) and len(partner) <= 58 else "route"
            doc.values.setdefault((*loc, "name"), doc.values.get(loc, (1, 1)))
        if route.get("type") == "x12":
            doc.error((*loc, "type"), "a partner route cannot be of type x12", "use file, sftp, http ...")
            data["route"] = DestinationConfig.model_construct(type="x12", name="route")
            return
    resolved = resolve_plugin(doc, "destination", route, loc)
    data["route"] = resolved if resolved is not None else DestinationConfig.model_construct(type="", name="route")


def load_partner(path: str | Path, env: Mapping[str, str] | None = None, *, text: str | None = None) -> Partner:
    """Load and validate one partner file; raise ``ConfigError`` listing every problem."""
    doc = load_yaml(path, env, text=text)
    partner: Partner | None = None
    if doc.data is not None and not isinstance(doc.data, dict):
        doc.error((), "expected a mapping of partner keys")
    elif isinstance(doc.data, dict):
        data = dict(doc.data)
        name = data.get("name")
        _route(doc, data, name if isinstance(name, str) else "")
        partner = validate_model(Partner, doc, data)
        stem = Path(path).stem
        if isinstance(name, str) and name != stem and text is None:
            doc.error(("name",), f'expected the file stem "{stem}"; found "{name}"', "rename the file or the partner")
    if doc.problems:
        raise ConfigError(sorted(doc.problems, key=lambda d: (d.location.line, d.location.column)))
    assert partner is not None
    return partner


def load_partners(directory: str | Path, env: Mapping[str, str] | None = None) -> dict[str, Partner]:
    """Every partner of a folder by name; ``ConfigError`` with the problems of all files.

    Two partners with the same ISA qualifier and id are an error: inbound interchanges
    could not be told apart. A missing folder means no partners.
    """
    folder = Path(directory)
    partners: dict[str, Partner] = {}
    problems: list[Diagnostic] = []
    if not folder.is_dir():
        return partners
    owners: dict[tuple[str, str], str] = {}
    for file in channel_files([folder]):
        try:
            partner = load_partner(file, env)
        except ConfigError as exc:
            problems.extend(exc.diagnostics)
            continue
        key = (partner.them.isa_qualifier, partner.them.isa_id)
        if key in owners:
            problems.append(
                Diagnostic(
                    Location(str(file)),
                    "them",
                    f'the partner ISA qualifier and id are already used by partner "{owners[key]}"',
                    "each partner needs its own ISA id",
                )
            )
            continue
        owners[key] = partner.name
        partners[partner.name] = partner
    if problems:
        raise ConfigError(problems)
    return partners


def find_partner(partners: Mapping[str, Partner], qualifier: str, isa_id: str) -> Partner | None:
    """The partner whose ISA qualifier and id match an inbound ISA05/ISA06 (padding ignored)."""
    for partner in partners.values():
        if partner.them.isa_qualifier == qualifier.strip() and partner.them.isa_id == isa_id.strip():
            return partner
    return None
