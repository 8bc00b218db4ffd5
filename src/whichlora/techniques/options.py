"""Typed technique options and capacity knobs.

Each technique's options are one small pydantic model (field, type, default, range, help text),
so the study file, the CLI (`whichlora techniques --details NAME`) and the config builder read the
same definition. A knob is the one integer that sets a technique's capacity (LoRA's rank,
FourierFT's number of frequencies, C3A's block size ...): budgets solve it for a target count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from whichlora.errors import WhichloraError

Shapes = list[tuple[int, int]]  # (in_features, out_features) of every targeted linear layer


class Options(BaseModel):
    """Base of every technique's options: unknown keys are refused, values are checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(Options):
    pass


def option(default: Any, description: str, **bounds: Any) -> Any:
    """An option field: its default, its help text (required: the CLI and docs print it) and
    pydantic bounds."""
    return Field(default, description=description, **bounds)


def parse_options(technique: str, model: type[Options], values: dict[str, Any]) -> Options:
    """`values` validated into `model`, or one WhichloraError naming the technique and option."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        allowed = sorted(model.model_fields) or "none"
        problems = []
        for error in exc.errors():
            option = ".".join(str(part) for part in error["loc"]) or "(options)"
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown option '{option}' for {technique}; allowed: {allowed}")
            else:
                msg = error["msg"].removeprefix("Value error, ")
                problems.append(f"option '{option}' of {technique}: {msg}")
        raise WhichloraError(
            "; ".join(problems)
            + f". Fix: see `whichlora techniques --details {technique}` for each option's type "
            "and range."
        ) from None


def describe_options(model: type[Options]) -> list[dict[str, Any]]:
    """One row per option: name, type, default, range, help text (for the CLI and the docs)."""
    import typing

    rows = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        metas = list(info.metadata)
        args = typing.get_args(annotation)
        if type(None) in args:  # `Annotated[int, Field(ge=1)] | None`: bounds sit in the union
            inner = [a for a in args if a is not type(None)]
            metas += [m for a in inner for m in getattr(a, "__metadata__", ())]
            inner_names = [
                getattr(typing.get_origin(a) and typing.get_args(a)[0] or a, "__name__", str(a))
                for a in inner
            ]
            kind = " | ".join([*inner_names, "None"])
        elif typing.get_origin(annotation) is Literal:
            kind = " | ".join(repr(a) for a in args)
        else:
            kind = getattr(annotation, "__name__", str(annotation))
        bounds = []
        for meta in metas:
            for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                if getattr(meta, attr, None) is not None:
                    bounds.append(f"{sign} {getattr(meta, attr)}")
        rows.append(
            {
                "name": name,
                "type": kind,
                "default": info.default,
                "range": ", ".join(bounds),
                "help": info.description or "",
            }
        )
    return rows


ValuesFn = Callable[[Shapes, Any], Sequence[int]]


@dataclass(frozen=True)
class Knob:
    """The integer that sets a technique's capacity, and the values it may take on a model.

    `name` "rank" is the run's rank (`AdapterSettings.rank`); any other name is one of the
    technique's options. `values(shapes, options)` lists the valid values in ascending order for
    the targeted layers' shapes. `trend` says how the trainable count moves as the value rises:
    "rises" or "falls" (solved by bisection), or "any" (every value is counted).
    """

    name: str
    values: ValuesFn
    trend: Literal["rises", "falls", "any"] = "rises"
    help: str = ""


def up_to_narrowest(shapes: Shapes, options: Any) -> Sequence[int]:
    return range(1, min(min(s) for s in shapes) + 1)


def multiples_up_to_narrowest(step: int) -> ValuesFn:
    def values(shapes: Shapes, options: Any) -> Sequence[int]:
        return range(step, min(min(s) for s in shapes) + 1, step)

    return values


def common_divisors(shapes: Shapes, options: Any) -> Sequence[int]:
    import math

    width = 0
    for shape in shapes:
        width = math.gcd(width, math.gcd(*shape))
    return [d for d in range(1, width + 1) if width % d == 0]


def up_to_smallest_matrix(shapes: Shapes, options: Any) -> Sequence[int]:
    return range(1, min(i * o for i, o in shapes) + 1)


def up_to(top: int) -> ValuesFn:
    def values(shapes: Shapes, options: Any) -> Sequence[int]:
        return range(1, top + 1)

    return values


RANK = Knob("rank", up_to_narrowest, help="rank of the low-rank update")
