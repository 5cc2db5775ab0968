"""Structured logging: a fixed sentence plus fields; never message content.

log = bind(logging.getLogger("junction.mllp"), channel="ehr-adt-in")
log.info("Connection accepted.", extra={"peer": "127.0.0.1:50312"})
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class BoundLogger(logging.LoggerAdapter[logging.Logger]):
    """A LoggerAdapter whose bound fields merge with per-call ``extra``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs

    def bind(self, **fields: Any) -> BoundLogger:
        merged = dict(self.extra or {})
        merged.update(fields)
        return BoundLogger(self.logger, merged)


def bind(logger: logging.Logger | BoundLogger, **fields: Any) -> BoundLogger:
    if isinstance(logger, BoundLogger):
        return logger.bind(**fields)
    return BoundLogger(logger, fields)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(fields_of(record))
        if record.exc_info and record.exc_info[0] is not None:
            out["error_type"] = record.exc_info[0].__name__
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = " ".join(f"{k}={v}" for k, v in fields_of(record).items())
        return f"{stamp} {record.levelname:<7} {record.getMessage()} {extra}".rstrip()


def configure(level: str = "INFO", fmt: str = "text", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("junction")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
