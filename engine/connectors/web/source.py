"""The HTTP source: one endpoint per channel; asynchronous (202) or synchronous answers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from engine.connectors.web.base import BodyTooLarge, WebSource
from engine.connectors.web.config import HttpSourceConfig
from engine.connectors.web.problems import problem
from engine.core.contracts import SourceContext, SubmitResult


class HttpSource(WebSource):
    """Stores each request body as one message (``ctx.submit``) and answers the caller.

    ``response: async`` answers 202 with the message id once the message is durably stored.
    ``response: sync`` (with ``ack_mode: after_processing``) waits for the pipeline and answers
    with the reply of the ``respond_from`` destination, or with the channel transform's output;
    after ``sync_timeout_secs`` it answers 504 and the message carries on in the background.
    Errors are RFC 9457 problem details; refused bodies (413, 415, unparsable) are stored.
    """

    config: HttpSourceConfig

    def __init__(self, config: HttpSourceConfig, ctx: SourceContext) -> None:
        super().__init__(config, ctx)

    async def route(self, request: web.Request, rest: str) -> web.StreamResponse:
        if rest not in ("", "/"):
            return problem(404, detail="no endpoint at this path; post to the channel path itself")
        refused = self.refuse_unusable() or self.authenticate(request)
        if refused is not None:
            return refused
        if request.method not in self.config.methods:
            return problem(405, detail=f"use {' or '.join(self.config.methods)}", headers=_allow(self.config.methods))
        source = self.source_fields(request)
        try:
            raw = await self.read_body(request)
        except BodyTooLarge as exc:
            return await self._too_large(exc, source)
        if request.content_type not in self.config.content_types:
            reason = "media type not accepted by this endpoint"
            message_id = await self.reject(raw, source, reason)
            self._log(logging.WARNING, "Request refused: media type.", peer=source["peer"], message_id=message_id)
            return problem(415, detail=f"send one of: {', '.join(self.config.content_types)}", message_id=message_id)
        if not raw:
            message_id = await self.reject(raw, source, "empty body")
            return problem(400, detail="the request body is empty", message_id=message_id)
        if self._ctx.debug:
            self._log(logging.DEBUG, "Request received.", peer=source["peer"], content=raw.decode("utf-8", "replace"))
        timeout = self.config.sync_timeout_secs if self.config.ack_mode == "after_processing" else None
        result = await self.submit(raw, source, timeout)
        if result is None:
            self._log(logging.WARNING, "Request timed out while processing.", peer=source["peer"], limit=timeout)
            return problem(
                504,
                detail=f"no result within {timeout:g} s; the message is stored and still being processed, "
                "so do not simply resend it",
            )
        if not result.accepted:
            return refused_answer(result)
        if self.config.response == "async":
            return web.json_response({"message_id": result.message_id, "status": str(result.status)}, status=202)
        return self._sync_answer(result)

    async def _too_large(self, exc: BodyTooLarge, source: dict[str, Any]) -> web.Response:
        limit = self.config.max_body_bytes
        reason = f"request body exceeds max_body_bytes ({limit} bytes)"
        message_id = await self.reject(exc.prefix, source, reason)
        self._log(
            logging.WARNING, "Request refused: body too large.", peer=source["peer"], limit=limit, size=exc.declared
        )
        return problem(413, detail=f"the body is larger than {limit} bytes", message_id=message_id)

    def _sync_answer(self, result: SubmitResult) -> web.Response:
        headers = {"X-Junction-Message-Id": result.message_id}
        name = self.config.respond_from
        if name is None:
            content = result.content
            if content is None:
                return web.Response(status=204, headers=headers)
            content_type = result.content_type or "application/octet-stream"
            return web.Response(status=200, body=content, headers={**headers, "Content-Type": content_type})
        reply = result.replies.get(name)
        if reply is None:
            return problem(
                502,
                detail=f"destination {name} gave no answer (filtered out, not send_first, or not tried)",
                message_id=result.message_id,
            )
        if not reply.ok:
            return problem(
                502,
                detail=f"destination {name} failed: {reply.detail}" if reply.detail else f"destination {name} failed",
                message_id=result.message_id,
                upstream_status=reply.status_code,
            )
        if not reply.body:
            return web.Response(status=204, headers=headers)
        content_type = reply.content_type or "application/octet-stream"
        return web.Response(status=200, body=reply.body, headers={**headers, "Content-Type": content_type})


def refused_answer(result: SubmitResult) -> web.Response:
    """The problem answer for a message the channel refused (it is stored as ERROR)."""
    reason = result.reason
    status = refusal_status(str(result.status), reason)
    detail = reason or "the channel refused the message; it is stored with its error"
    return problem(status, detail=detail, message_id=result.message_id)


def refusal_status(status: str, reason: str) -> int:
    """HTTP status of a refusal: 400 unparsable, 422 refused by rules or mapping, 500 engine fault.

    >>> refusal_status("ERROR", "parse: not JSON"), refusal_status("EXCEPTION", "")
    (400, 422)
    >>> refusal_status("ERROR", "internal: KeyError")
    500
    """
    if status == "EXCEPTION" or reason.startswith(("mapping", "validation")):
        return 422
    if reason.startswith("internal"):
        return 500
    return 400


def _allow(methods: Sequence[str]) -> dict[str, str]:
    return {"Allow": ", ".join(methods)}
