"""decode -> parse -> filter -> transform -> route, for one channel.

Built once at deploy time; ``run`` is synchronous CPU work on one message and never
raises: every failure becomes a ``ProcessResult`` with status ERROR or EXCEPTION.
"""

from __future__ import annotations

import inspect
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core import registry
from engine.core.channel import ChannelDef, DestinationConfig, TransformConfig
from engine.core.contracts import DataType, Document, Header, Outcome, Transform
from engine.core.errors import MappingError, ParseError
from engine.core.message import InboundMessage, Status, StorageMode
from engine.core.store import DestinationRoute, ProcessResult
from engine.runtime.filters import Predicate, compile_filter


def build_datatype(config: object, base_dir: Path | None = None) -> DataType:
    """Build a data type; ``base_dir`` (for relative layout files) goes to factories that take it."""
    spec = registry.get("datatype", config.type)  # type: ignore[attr-defined]
    factory: Callable[..., DataType] = spec.load_factory()
    if base_dir is not None:
        try:
            takes_base_dir = "base_dir" in inspect.signature(factory).parameters
        except (TypeError, ValueError):
            takes_base_dir = False
        if takes_base_dir:
            return factory(config, base_dir=base_dir)
    return factory(config)


def build_transform(
    config: TransformConfig | None, datatype: DataType, base_dir: Path, shared: dict[str, Any]
) -> Transform:
    if config is None:
        spec = registry.get("transform", "passthrough")
        config = spec.config.model_validate({"type": "passthrough"})  # type: ignore[assignment]
    else:
        spec = registry.get("transform", config.type)
    factory: Callable[..., Transform] = spec.load_factory()
    return factory(config, datatype, base_dir=base_dir, shared=shared)


@dataclass
class Route:
    config: DestinationConfig
    accept: Predicate
    transform: Transform | None

    def partition(self, msg: InboundMessage, doc: Document) -> int:
        threads = self.config.threads
        if threads <= 1:
            return 0
        key = doc.get(self.config.order_key) if self.config.order_key else None
        return zlib.crc32((key if key is not None else msg.id).encode()) % threads


class Pipeline:
    def __init__(self, channel: ChannelDef, base_dir: Path, shared: dict[str, Any] | None = None) -> None:
        self.channel = channel
        shared = {} if shared is None else shared
        self.datatype = build_datatype(channel.pipeline.datatype, base_dir)
        self.transform = build_transform(channel.pipeline.transform, self.datatype, base_dir, shared)
        self.accept = compile_filter(channel.pipeline.filter)
        self.routes = [
            Route(
                d,
                compile_filter(d.filter),
                build_transform(d.transform, self.datatype, base_dir, shared) if d.transform else None,
            )
            for d in channel.destinations
        ]
        self.slow = bool(getattr(self.datatype, "validates", False))
        self._header_of: Callable[[Document], Header | None] | None = getattr(self.datatype, "header_of", None)
        self._respond_parsed: Callable[[Document, Outcome], bytes | None] | None = getattr(
            self.datatype, "respond_parsed", None
        )

    # -- at the door (before the durable commit) ------------------------------------------

    def precheck(self, raw: bytes) -> tuple[Header, Document | None, ParseError | None]:
        """Cheap header read plus the fast parse, so a malformed message is refused at once."""
        try:
            doc = self.datatype.parse(raw)
        except ParseError as exc:
            return self._header(raw), None, exc
        except Exception as exc:  # noqa: BLE001 - a data type bug must not kill the listener
            error = ParseError(f"unexpected parser failure ({type(exc).__name__})", code="parse")
            return self._header(raw), None, error
        # A data type may read the header off the parsed document instead of the raw bytes.
        header = self._header_of(doc) if self._header_of is not None else None
        return header if header is not None else self._header(raw), doc, None

    def _header(self, raw: bytes) -> Header:
        """The data type's header read, or an empty header if that fails: the message is still
        stored (as ERROR when it did not parse) and answered, never dropped."""
        try:
            return self.datatype.header(raw)
        except Exception:  # noqa: BLE001 - a data type bug must not lose the message
            return Header()

    def respond(self, raw: bytes, outcome: Outcome, doc: Document | None = None) -> bytes | None:
        """The data type's answer to the sender; ``doc``, when ``raw`` was parsed, saves a re-read."""
        try:
            if doc is not None and self._respond_parsed is not None:
                return self._respond_parsed(doc, outcome)
            return self.datatype.respond(raw, outcome)
        except Exception:  # noqa: BLE001 - never fail to answer because the ACK builder failed
            return None

    def respond_batch(self, raw: bytes, responses: list[bytes]) -> bytes | None:
        """One answer for a payload split into several messages, from their answers: the data
        type's ``respond_batch`` when it has one, else the answers one after the other."""
        plain = b"".join(responses) if responses else None
        combine = getattr(self.datatype, "respond_batch", None)
        if combine is None:
            return plain
        try:
            return combine(raw, responses)  # type: ignore[no-any-return]
        except Exception:  # noqa: BLE001 - never fail to answer because the batch builder failed
            return plain

    # -- processing --------------------------------------------------------------------------

    def run(self, msg: InboundMessage, doc: Document | None = None) -> ProcessResult:
        try:
            return self._run(msg, doc)
        except ParseError as exc:
            return ProcessResult(msg.id, msg.run, Status.ERROR, error=f"parse: {exc}")
        except MappingError as exc:
            status = Status.EXCEPTION if exc.severity == "error" else Status.ERROR
            rule = f" [{exc.rule}]" if exc.rule else ""
            return ProcessResult(msg.id, msg.run, status, error=f"mapping{rule}: {exc}", rule=exc.rule, field=exc.field)
        except Exception as exc:  # noqa: BLE001 - the per-message boundary: store it and move on
            return ProcessResult(msg.id, msg.run, Status.ERROR, error=f"internal: {type(exc).__name__}: {exc}")

    def _run(self, msg: InboundMessage, doc: Document | None) -> ProcessResult:
        if doc is None:
            doc = self.datatype.parse(msg.raw)
        problems = self.datatype.validate(msg.raw) if self.slow else []
        if problems:
            shown = "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
            return ProcessResult(msg.id, msg.run, Status.ERROR, error=f"validation: {shown}")
        stages: dict[str, bytes] = {}
        mode = self.channel.storage
        if mode == StorageMode.DEVELOPMENT:
            stages["parsed"] = json.dumps(doc.to_data(), ensure_ascii=False).encode()
        if not self.accept(doc):
            return ProcessResult(msg.id, msg.run, Status.FILTERED, stages=stages)
        content, content_type = self.transform.apply(msg.raw, doc)
        if content is None:  # the channel transform produced nothing: nothing to route
            return ProcessResult(msg.id, msg.run, Status.FILTERED, stages=stages)
        if mode in (StorageMode.DEVELOPMENT, StorageMode.PRODUCTION):
            stages["transformed"] = content
        routes = []
        for route in self.routes:
            if not route.accept(doc):
                routes.append(DestinationRoute(route.config.name, status=Status.FILTERED))
                continue
            body, body_type = route.transform.apply(msg.raw, doc) if route.transform else (content, content_type)
            if body is None:  # the destination's transform produced nothing to send
                routes.append(DestinationRoute(route.config.name, status=Status.FILTERED))
                continue
            routes.append(
                DestinationRoute(route.config.name, route.partition(msg, doc), Status.QUEUED, body, body_type)
            )
        return ProcessResult(
            msg.id,
            msg.run,
            Status.TRANSFORMED,
            stages=stages,
            routes=routes,
            content=content,
            content_type=content_type,
        )


def outcome_of(result: ProcessResult) -> Outcome:
    """The ACK a processed message deserves (after_processing mode)."""
    if result.status in (Status.TRANSFORMED, Status.FILTERED):
        return Outcome("AA")
    reason = result.error.split("\n", 1)[0][:200]
    return Outcome("AE", reason=reason, error_code="207")
