"""Every setting of the study file with its type, default and description (`whichlora config`).

Read from the pydantic models in config/study.py, so the list cannot drift from what is validated.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from whichlora.config.study import Study
from whichlora.errors import WhichloraError


@dataclass(frozen=True)
class Setting:
    key: str  # dotted; a list of mappings is `techniques[].name`
    type: str
    default: str  # "required" for keys without one
    description: str


def _bounds(node: dict[str, Any]) -> str:
    marks = (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    )
    return ", ".join(f"{sign} {node[key]:g}" for key, sign in marks if key in node)


def _type(node: dict[str, Any]) -> str:
    """A JSON-schema node as a short type: `int >= 1 | null`, `list[str]`, `'a' | 'b'`."""
    if "$ref" in node:
        return "mapping (keys below)"
    if "anyOf" in node:
        return " | ".join(dict.fromkeys(_type(option) for option in node["anyOf"]))
    if "enum" in node:
        return " | ".join(json.dumps(value) for value in node["enum"])
    if "const" in node:
        return json.dumps(node["const"])
    kind = node.get("type")
    if kind == "array":
        return f"list[{_type(node.get('items', {}))}]"
    if kind == "object":
        values = node.get("additionalProperties")
        return f"mapping of str to {_type(values)}" if isinstance(values, dict) else "mapping"
    name = {"integer": "int", "number": "float", "string": "str", "boolean": "bool"}.get(
        kind or "", kind or "any"
    )
    bounds = _bounds(node)
    return f"{name} {bounds}" if bounds else name


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "see its keys"
    if value is PydanticUndefined:
        return "required"
    return json.dumps(value)


def _models(annotation: Any, in_list: bool = False) -> list[tuple[type[BaseModel], bool]]:
    """The study-file models inside an annotation, each with whether it sits in a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, in_list)]
    inner = in_list or get_origin(annotation) is list
    return [found for arg in get_args(annotation) for found in _models(arg, inner)]


def settings(model: type[BaseModel] = Study, prefix: str = "") -> Iterator[Setting]:
    """Every key of the study file, a section before its keys, in the order of the models."""
    properties = model.model_json_schema()["properties"]
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        yield Setting(key, _type(properties[name]), _default(field), field.description or "")
        for sub, in_list in _models(field.annotation):
            yield from settings(sub, f"{key}[]." if in_list else f"{key}.")


def select(key: str | None) -> list[Setting]:
    """The settings under `key` (a section gives all its keys); every setting without one."""
    every = list(settings())
    if not key:
        return every
    chosen = [s for s in every if s.key == key or s.key.startswith((f"{key}.", f"{key}[]."))]
    if not chosen:
        close = difflib.get_close_matches(key, [s.key for s in every], n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise WhichloraError(
            f"The study file has no setting '{key}'. Fix: {hint}`whichlora config` lists them all "
            "(a section such as `training` lists its keys)."
        )
    return chosen
