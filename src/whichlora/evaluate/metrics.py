"""The metric table (metrics.yaml beside this file): one place for what a metric is.

Scoring writes the names, verdicts read the direction and the margin, the report reads the
display name, units and formatting, and `whichlora verdict` reads direction and margin. Harness
metrics (``harness:<task>:<metric>``) take their direction from lm-eval and a margin from the
table's ``harness`` rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from typing import Any

import yaml

from whichlora.evaluate.harness import PREFIX as HARNESS_PREFIX
from whichlora.evaluate.harness import higher_is_better as harness_higher_is_better

__all__ = [
    "HarnessRule",
    "Metric",
    "by_rank",
    "default_margin",
    "display_name",
    "higher_is_better",
    "is_harness",
    "metric",
    "metrics",
    "parse_table",
    "tradeoff_metrics",
]

TABLE = "metrics.yaml"


@dataclass(frozen=True)
class Metric:
    """One entry of metrics.yaml (its header says what each field means)."""

    name: str
    display: str
    unit: str
    delta_unit: str
    higher_is_better: bool
    margin: float
    discrete: bool
    scale: float
    digits: int
    primary: int | None
    column: int | None
    tradeoff: bool


@dataclass(frozen=True)
class HarnessRule:
    """Margin of the lm-eval metrics whose name starts with `prefix` (acc, acc_norm, ...)."""

    prefix: str
    margin: float
    discrete: bool


_TYPES: dict[str, tuple[type, ...]] = {
    "display": (str,), "unit": (str,), "delta_unit": (str,), "higher_is_better": (bool,),
    "margin": (int, float), "discrete": (bool,), "scale": (int, float), "digits": (int,),
    "primary": (int, type(None)), "column": (int, type(None)), "tradeoff": (bool,),
    "prefix": (str,),
}  # fmt: skip


def _checked(cls: type, where: str, raw: Any, **given: Any) -> Any:
    """`cls` from a mapping that has exactly its fields (less `given`), each of its type."""
    names = [f.name for f in fields(cls) if f.name not in given]
    if not isinstance(raw, dict) or set(raw) != set(names):
        have = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"{TABLE}: {where} must have exactly the fields {names}; has {have}.")
    for name in names:
        value = raw[name]
        ok = isinstance(value, _TYPES[name]) and not (
            isinstance(value, bool) and bool not in _TYPES[name]
        )
        if not ok:
            raise ValueError(f"{TABLE}: {where}.{name} is {value!r}, not of type {_TYPES[name]}.")
    if not (math.isfinite(raw["margin"]) and raw["margin"] > 0):
        raise ValueError(f"{TABLE}: {where}.margin must be a positive number.")
    return cls(**given, **raw)


def parse_table(text: str) -> tuple[dict[str, Metric], tuple[HarnessRule, ...]]:
    """The metric table and the harness rules from metrics.yaml's text, every field checked."""
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict) or set(raw) != {"metrics", "harness"}:
        raise ValueError(f"{TABLE} must hold exactly the sections 'metrics' and 'harness'.")
    table = {
        str(name): _checked(Metric, f"metrics.{name}", entry, name=str(name))
        for name, entry in raw["metrics"].items()
    }
    rules = tuple(
        _checked(HarnessRule, f"harness[{i}]", entry) for i, entry in enumerate(raw["harness"])
    )
    return table, rules


@cache
def _table() -> tuple[dict[str, Metric], tuple[HarnessRule, ...]]:
    return parse_table(resources.files("whichlora.evaluate").joinpath(TABLE).read_text("utf-8"))


def metrics() -> dict[str, Metric]:
    """Every metric of the table by name, in the table's order."""
    return dict(_table()[0])


def metric(name: str) -> Metric | None:
    """The table's entry for `name`, or None (harness metrics and names nobody described)."""
    return _table()[0].get(name)


def is_harness(name: str) -> bool:
    return name.startswith(HARNESS_PREFIX + ":")


def higher_is_better(name: str) -> bool | None:
    """True when higher is better, False when lower is, None for a metric nobody described:
    the table's direction, or lm-eval's for a harness metric."""
    found = metric(name)
    if found is not None:
        return found.higher_is_better
    if is_harness(name):
        return harness_higher_is_better(name)
    return None


def default_margin(name: str) -> float | None:
    """The table's margin of practical equivalence for `name`, or None when it has none."""
    found = metric(name)
    if found is not None:
        return float(found.margin)
    if is_harness(name):
        base = name.split(":")[-1].split("/")[0]
        for rule in _table()[1]:
            if base.startswith(rule.prefix):
                return float(rule.margin)
    return None


def display_name(name: str) -> str:
    """The name a reader sees: the table's, else the metric's own (harness metrics as written)."""
    found = metric(name)
    return found.display if found is not None else name


def by_rank(field: str) -> list[str]:
    """Metric names ordered by a rank field (``primary`` or ``column``), unranked ones left out."""
    ranked = [(getattr(m, field), m.name) for m in _table()[0].values()]
    return [name for rank, name in sorted((r, n) for r, n in ranked if r is not None)]


def tradeoff_metrics() -> list[str]:
    """The axes of the transfer/retention trade-off plot, in the table's order."""
    return [m.name for m in _table()[0].values() if m.tradeoff]
