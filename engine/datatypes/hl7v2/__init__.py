"""HL7 v2 data type: a fast lazy parser, paths, batches, charsets and ACKs.

hl7apy is used only for the optional strict validation (it costs 15-30 ms per message and
drops Z-segments), and it is imported lazily.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from engine.core.channel import DataTypeConfig
from engine.core.contracts import Header, Outcome
from engine.core.spec import Example, datatype_spec
from engine.datatypes.hl7v2 import charsets
from engine.datatypes.hl7v2.ack import ack_code, batch_response, build_ack, build_ack_parsed
from engine.datatypes.hl7v2.batch import split
from engine.datatypes.hl7v2.header import Msh, header, header_of
from engine.datatypes.hl7v2.message import Hl7Message, parse
from engine.datatypes.hl7v2.paths import SYNTAX, parse_path

__all__ = ["HL7V2", "Hl7Message", "Hl7v2", "Hl7v2Config", "ack_code"]


class Hl7v2Config(DataTypeConfig):
    """Settings of the ``hl7v2`` data type."""

    model_config = ConfigDict(populate_by_name=True)

    charset: str = Field(
        default="auto",
        description="Character set of incoming bytes: auto (BOM, then MSH-18, then UTF-8 with a windows-1252 "
        "fallback), an HL7 MSH-18 name such as 8859/1, or a Python codec name.",
        examples=["auto", "8859/1", "utf-8"],
    )
    # "validate" would shadow BaseModel.validate, hence the alias.
    validation: Literal["none", "strict"] = Field(
        default="none",
        alias="validate",
        description="strict: also check each message against the HL7 standard with hl7apy, off the ACK path.",
    )
    # Off by default: over MLLP the sender blocks until it hears back, and real senders put
    # NE in MSH-15 by mistake (one of the corpus files does), so silence would stall the feed.
    honor_accept_ack_type: bool = Field(
        default=False,
        description="Follow MSH-15 (NE, ER, SU, AL) when deciding whether to send an ACK, and answer messages in "
        "enhanced mode (MSH-15 or MSH-16 valued) with CA/CE/CR; off: always answer, with AA/AE/AR.",
    )
    ack_sending_application: str | None = Field(
        default=None, description="MSH-3 of the ACKs we send; default: the original's receiving application (MSH-5)."
    )
    ack_sending_facility: str | None = Field(
        default=None, description="MSH-4 of the ACKs we send; default: the original's receiving facility (MSH-6)."
    )

    @field_validator("charset")
    @classmethod
    def _known_charset(cls, value: str) -> str:
        if value == "auto":
            return value
        try:
            charsets.resolve(value)
        except LookupError:
            raise ValueError(
                f"unknown or unsupported charset {value!r}: use auto, an HL7 name (ASCII, 8859/1, 8859/15, "
                "UNICODE UTF-8, ...) or an ASCII-compatible Python codec name"
            ) from None
        return value


class Hl7v2:
    """The ``hl7v2`` data type (implements ``engine.core.contracts.DataType``)."""

    content_type = "x-application/hl7-v2+er7"

    def __init__(self, config: Hl7v2Config | None = None) -> None:
        self.config = config or Hl7v2Config.model_validate({"type": "hl7v2"})
        self._charset = "auto" if self.config.charset == "auto" else charsets.resolve(self.config.charset)
        self.validates = self.config.validation == "strict"

    def split(self, raw: bytes) -> list[bytes]:
        """Split FHS/BHS batches and multi-MSH files into messages (segments joined by CR)."""
        return split(raw)

    def header(self, raw: bytes) -> Header:
        """Read MSH-3..18 cheaply; an empty ``Header`` for garbage (never raises)."""
        return header(raw, self._charset)

    def header_of(self, doc: Hl7Message) -> Header | None:
        """The header of a message just parsed, without reading MSH a second time; None when
        ``header`` could differ (it strips the MSH line, the parser keeps trailing blanks)."""
        segment = doc.segments[0]
        fields = doc.msh_fields
        if fields is None or segment[-1:].isspace():
            return None
        return header_of(Msh(doc.encoding, fields))

    def parse(self, raw: bytes) -> Hl7Message:
        """Parse one message; ``ParseError`` with an HL7 table 0357 code when it is not valid ER7."""
        return parse(raw, self._charset)

    def validate(self, raw: bytes) -> list[str]:
        """Strict hl7apy problems (element names only, no values), or [] unless ``validate: strict``."""
        if self.config.validation != "strict":
            return []
        from engine.datatypes.hl7v2.validation import validate_strict

        return validate_strict(raw, self._charset)

    def check_path(self, path: str) -> object:
        """Raise ValueError when ``path`` is not a valid HL7 v2 path (mappings check at load)."""
        return parse_path(path)

    def respond(self, raw: bytes, outcome: Outcome) -> bytes | None:
        """The accept ACK for ``raw`` (AA/AE/AR with MSA and, for errors, ERR), or None when
        MSH-15 says not to answer this outcome. Unreadable input gets an AR."""
        return build_ack(
            raw,
            outcome,
            charset=self._charset,
            honor_accept_ack_type=self.config.honor_accept_ack_type,
            sending_application=self.config.ack_sending_application,
            sending_facility=self.config.ack_sending_facility,
        )

    def respond_batch(self, raw: bytes, responses: list[bytes]) -> bytes | None:
        """The answer to a payload ``split`` cut into several messages, given each one's ACK
        (a response batch for FHS/BHS batches, the ACKs in order otherwise)."""
        return batch_response(raw, responses, charset=self._charset)

    def respond_parsed(self, doc: Hl7Message, outcome: Outcome) -> bytes | None:
        """``respond`` for a message ``parse`` returned: the same ACK without decoding again."""
        return build_ack_parsed(
            doc,
            outcome,
            honor_accept_ack_type=self.config.honor_accept_ack_type,
            sending_application=self.config.ack_sending_application,
            sending_facility=self.config.ack_sending_facility,
        )


HL7V2 = datatype_spec(
    name="hl7v2",
    summary="HL7 v2.x (ER7 pipe-delimited) messages: lazy parser, batches, charsets, ACK/NAK.",
    config=Hl7v2Config,
    factory="engine.datatypes.hl7v2:Hl7v2",
    capabilities=frozenset({"batches", "responds", "validates"}),
    path_syntax=SYNTAX,
    examples=(
        Example("Defaults: detect the charset, always answer with an ACK", "type: hl7v2"),
        Example(
            "Latin-1 feed validated against the standard, ACKs from a fixed application",
            "type: hl7v2\ncharset: 8859/1\nvalidate: strict\nack_sending_application: JUNCTION\n"
            "ack_sending_facility: MAIN_HOSPITAL",
        ),
    ),
)
