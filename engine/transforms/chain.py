"""The ``chain`` transform: run transforms one after another (a mapping, then a renderer).

The first step reads the channel's parsed document; every later step reads the previous
step's output parsed as JSON (so a step after ``mapping`` sees canonical objects). A step
that produces nothing ends the chain with nothing: the message (or destination) is FILTERED.
Steps are built through the registry, so any transform type can be a step.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, field_validator

from engine.core import registry
from engine.core.channel import TransformConfig
from engine.core.contracts import DataType, Document, Transform
from engine.core.errors import MappingError
from engine.core.spec import Example, transform_spec


class ChainConfig(TransformConfig):
    """Settings of the ``chain`` transform."""

    steps: list[Any] = Field(
        min_length=2, description="Transforms to run in order, each {type: NAME, ...its settings}; at least two."
    )

    @field_validator("steps")
    @classmethod
    def _steps_are_transforms(cls, value: list[Any]) -> list[Any]:
        steps: list[Any] = []
        for number, step in enumerate(value, 1):
            if isinstance(step, TransformConfig):
                steps.append(step)
                continue
            data = {"type": step} if isinstance(step, str) else step
            if not isinstance(data, dict) or not isinstance(data.get("type"), str):
                raise ValueError(f"step {number} must be a transform: {{type: NAME, ...}}")
            if data["type"] == "chain":
                raise ValueError(f"step {number}: a chain cannot hold another chain")
            try:
                spec = registry.get("transform", data["type"])
            except registry.UnknownPlugin as exc:
                hint = f' (did you mean "{exc.suggestion}"?)' if exc.suggestion else ""
                raise ValueError(f'step {number}: unknown transform "{data["type"]}"{hint}') from None
            try:
                steps.append(spec.config.model_validate(data))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "(step)"
                raise ValueError(f"step {number} ({data['type']}): {where}: {first['msg']}") from None
        return steps


class Chain:
    """Applies its steps in order; the content type is the last step's."""

    def __init__(self, config: ChainConfig, datatype: DataType, **context: Any) -> None:
        self.config = config
        json_spec = registry.get("datatype", "json")
        self._json: DataType = json_spec.load_factory()(json_spec.config.model_validate({"type": "json"}))
        self.steps: list[Transform] = []
        for index, step in enumerate(config.steps):
            factory = registry.get("transform", step.type).load_factory()
            self.steps.append(factory(step, datatype if index == 0 else self._json, **context))

    def apply(self, raw: bytes, doc: Document) -> tuple[bytes | None, str]:
        content: bytes | None = raw
        content_type = ""
        current = doc
        for index, step in enumerate(self.steps):
            if index:
                assert content is not None
                try:
                    current = self._json.parse(content)
                except Exception as exc:
                    raise MappingError(
                        f"step {index} produced {content_type or 'content'} that is not JSON; "
                        "a step after the first reads JSON",
                        rule="chain",
                    ) from exc
                raw_in = content
            else:
                raw_in = raw
            content, content_type = step.apply(raw_in, current)
            if content is None:
                return None, content_type
        return content, content_type


CHAIN = transform_spec(
    name="chain",
    summary="Run transforms in order: the first reads the message, each next one the previous output as JSON.",
    config=ChainConfig,
    factory="engine.transforms.chain:Chain",
    examples=(
        Example(
            "Item master CSV to canonical Items, then to an HL7 MFN^M16 for the EHR",
            "type: chain\n"
            "steps:\n"
            "  - {type: mapping, file: mappings/item-master-csv-to-item.yaml}\n"
            "  - {type: item-to-mfn, receiving_application: EHR, receiving_facility: GH}\n",
        ),
    ),
)
