"""Channel definitions: pydantic models, frozen, unknown keys rejected.

Plug-in configs subclass ``SourceConfig``, ``DestinationConfig``, ``DataTypeConfig`` or
``TransformConfig``; the loader picks the subclass from the ``type`` key through the
registry, so these models never import a plug-in.
"""

from __future__ import annotations

import random
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.core.message import StorageMode

KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
Kebab = Annotated[str, Field(pattern=KEBAB.pattern, description="kebab-case name", min_length=1, max_length=64)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(Strict):
    """How a destination retries a failed delivery (exponential backoff with jitter)."""

    max_attempts: int = Field(10, ge=0, description="Attempts before ERROR; 0 retries forever.")
    backoff_secs: float = Field(1.0, gt=0, description="Delay before the first retry.")
    multiplier: float = Field(2.0, ge=1, description="Each retry waits this many times longer.")
    max_backoff_secs: float = Field(300.0, gt=0, description="Cap on the delay between attempts.")
    jitter: float = Field(0.2, ge=0, le=1, description="Random spread, as a fraction of the delay.")

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``attempts`` failed attempts (1-based)."""
        base = min(self.backoff_secs * self.multiplier ** max(attempts - 1, 0), self.max_backoff_secs)
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))

    def gives_up(self, attempts: int) -> bool:
        return self.max_attempts > 0 and attempts >= self.max_attempts


class FilterRule(Strict):
    """A declarative condition on a document field; combine with all/any/not."""

    field: str | None = Field(None, description="Path into the parsed document, e.g. MSH-9.1.")
    in_: list[str] | None = Field(None, alias="in", description="Accept when the value is one of these.")
    not_in: list[str] | None = Field(None, description="Accept when the value is none of these.")
    equals: str | None = Field(None, description="Accept when the value equals this.")
    matches: str | None = Field(None, description="Accept when the value matches this regular expression.")
    exists: bool | None = Field(None, description="Accept when the field is (true) or is not (false) present.")
    all: list[FilterRule] | None = Field(None, description="Accept when every rule accepts.")
    any: list[FilterRule] | None = Field(None, description="Accept when at least one rule accepts.")
    not_: FilterRule | None = Field(None, alias="not", description="Accept when the rule rejects.")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_operator(self) -> FilterRule:
        combinators = [x for x in (self.all, self.any, self.not_) if x is not None]
        tests = [x for x in (self.in_, self.not_in, self.equals, self.matches, self.exists) if x is not None]
        if combinators and (tests or self.field):
            raise ValueError("use either all/any/not or field with one test, not both")
        if not combinators:
            if not self.field:
                raise ValueError("a filter needs 'field' and one of in, not_in, equals, matches, exists")
            if len(tests) != 1:
                raise ValueError("give exactly one of in, not_in, equals, matches, exists")
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as exc:
                raise ValueError(f"matches is not a valid regular expression: {exc}") from None
        return self


class PluginConfig(Strict):
    type: str = Field(description="Plug-in type name; see `junction plugins list`.")


class SourceConfig(PluginConfig):
    """Base of every source plug-in config."""


class DataTypeConfig(PluginConfig):
    """Base of every data type config."""


class TransformConfig(PluginConfig):
    """Base of every transform config."""


class DestinationConfig(PluginConfig):
    """Base of every destination config: the keys shared by all destination types."""

    name: Kebab = Field(description="Destination name, unique in the channel.")
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy,  # type: ignore[arg-type]
        description="Retries: max_attempts, backoff_secs, multiplier, max_backoff_secs, jitter.",
    )
    threads: int = Field(1, ge=1, le=64, description="Queue workers; >1 needs order_key to keep order.")
    order_key: str | None = Field(
        None, description="Document path whose value keeps messages in order across threads (e.g. PID-3.1)."
    )
    send_first: bool = Field(False, description="Try delivery at once in the pipeline; queue only on failure.")
    filter: FilterRule | None = Field(None, description="Only messages this rule accepts reach the destination.")
    transform: TransformConfig | None = Field(None, description="Replaces the channel transform for this destination.")
    lease_secs: float = Field(60.0, gt=0, description="How long a worker's claim on a queued message lasts.")


class PipelineDef(Strict):
    """decode -> parse -> filter -> transform -> route."""

    datatype: DataTypeConfig = Field(description="How raw bytes are parsed (e.g. hl7v2).")
    filter: FilterRule | None = Field(None, description="Messages the rule rejects are FILTERED.")
    transform: TransformConfig | None = Field(None, description="Default: passthrough.")


class ErrorAlertDef(Strict):
    """Raise an alert when a channel has this many errors within a sliding window: messages
    refused or stored as ERROR or EXCEPTION, and deliveries that gave up (destination ERROR)."""

    count: int = Field(gt=0, description="Errors within the window that raise the alert.")
    minutes: float = Field(gt=0, le=1440, description="Length of the sliding window, in minutes (at most a day).")


class QueueAlertDef(Strict):
    """Raise an alert, per destination, when its queue is too deep or waits too long."""

    depth: int | None = Field(None, gt=0, description="Messages QUEUED for one destination that raise the alert.")
    age_minutes: float | None = Field(
        None, gt=0, description="Raise the alert when a destination's oldest QUEUED message waited this long."
    )

    @model_validator(mode="after")
    def _something_to_watch(self) -> QueueAlertDef:
        if self.depth is None and self.age_minutes is None:
            raise ValueError("queue alerts need depth, age_minutes or both")
        return self


class AlertsDef(Strict):
    """Where and when a channel raises alerts: a message sent to the exception queue, and
    thresholds on errors and on destination queues (one alert when crossed, one when cleared)."""

    webhook: DestinationConfig | None = Field(
        None, description="A destination (usually type: http) that receives each alert as JSON."
    )
    errors: ErrorAlertDef | None = Field(
        None, description="Alert when errors reach a count within a window of minutes (count, minutes)."
    )
    queue: QueueAlertDef | None = Field(
        None, description="Alert when a destination queue reaches a depth or its oldest message an age."
    )


class DuplicatesDef(Strict):
    """Refuse a message whose business key (X12: sender, ISA13, GS06, ST02; HL7: MSH-10 and
    the sending facility) arrived before within a window: stored as ERROR, answered AR (HL7
    205) or with a TA1 025 (X12), never processed twice."""

    window_hours: float = Field(gt=0, description="How long a business key counts as seen (partners wrap numbers).")


class RetentionDef(Strict):
    """How long a channel's finished messages are kept (Mirth's data pruner, per channel).

    A message is finished when it was FILTERED, or TRANSFORMED with every destination of its
    latest run SENT or FILTERED. Messages still RECEIVED or with a delivery waiting are never
    pruned; messages in ERROR or EXCEPTION are kept unless ``keep_errors`` is false. Ages
    count from the later of receipt and the last processing (a reprocessed message starts
    again). The engine's ``pruning`` settings say how often the pruner runs.
    """

    content_days: float | None = Field(
        None,
        gt=0,
        description="Drop the stored contents (raw, stages, responses) after this many days; "
        "the metadata stays searchable, the message can no longer be reprocessed.",
    )
    message_days: float | None = Field(
        None, gt=0, description="Delete finished messages altogether (metadata, attempts) after this many days."
    )
    keep_errors: bool = Field(
        True, description="Never prune messages in ERROR or EXCEPTION, or with a destination in ERROR."
    )

    @model_validator(mode="after")
    def _something_to_do(self) -> RetentionDef:
        if self.content_days is None and self.message_days is None:
            raise ValueError("retention needs content_days, message_days or both")
        if self.content_days is not None and self.message_days is not None and self.content_days > self.message_days:
            raise ValueError("content_days must not be longer than message_days (the content goes with the message)")
        return self


class ChannelDef(Strict):
    """One channel: a source, a pipeline and destinations."""

    name: Kebab = Field(description="Channel name; equals the file stem.")
    description: str = ""
    initial_state: Literal["started", "stopped", "paused"] = "started"
    storage: StorageMode = Field(StorageMode.PRODUCTION, description="Which content is kept per message.")
    debug: bool = Field(False, description="Allow message content in logs (PHI!). Off in production.")
    source: SourceConfig
    pipeline: PipelineDef
    destinations: list[DestinationConfig] = Field(default_factory=list)
    alerts: AlertsDef | None = Field(
        None, description="Alerts raised by this channel (exception queue, error and queue thresholds)."
    )
    duplicates: DuplicatesDef | None = Field(
        None, description="Refuse a message whose business key was seen within a window (duplicate interchanges)."
    )
    retention: RetentionDef | None = Field(
        None, description="Prune finished messages after a number of days (default: keep everything)."
    )

    @field_validator("destinations")
    @classmethod
    def _unique_names(cls, value: list[DestinationConfig]) -> list[DestinationConfig]:
        seen: set[str] = set()
        for dest in value:
            if dest.name in seen:
                raise ValueError(f"destination name {dest.name!r} is used twice")
            seen.add(dest.name)
        return value
