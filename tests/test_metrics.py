"""The metric table (evaluate/metrics.yaml): complete, covering every metric a scorer writes, and
the one source the verdicts and the report read.

tests/test_study_metrics.py holds the real scorers on the tiny model to the same table."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from whichlora.analyze.verdicts import VerdictOptions
from whichlora.evaluate.atlas import ATLAS_METRICS
from whichlora.evaluate.metrics import (
    TABLE,
    Metric,
    default_margin,
    display_name,
    higher_is_better,
    metric,
    metrics,
    parse_table,
)
from whichlora.evaluate.suite import GENERATION_METRICS, HELDOUT_METRICS, KNOWLEDGE_METRICS
from whichlora.report.decision import PRIMARY_ORDER, margin_text
from whichlora.report.tables import SHOWN_METRICS, delta_header

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "whichlora"
SCORED = (*KNOWLEDGE_METRICS, *HELDOUT_METRICS, *GENERATION_METRICS, *ATLAS_METRICS)


@pytest.mark.parametrize("name", SCORED)
def test_every_metric_a_scorer_writes_has_an_entry(name: str) -> None:
    assert metric(name) is not None, f"add {name!r} to src/whichlora/evaluate/{TABLE}"


def test_every_entry_has_every_field() -> None:
    raw = yaml.safe_load((PACKAGE / "evaluate" / TABLE).read_text(encoding="utf-8"))
    wanted = {f.name for f in fields(Metric)} - {"name"}
    for name, entry in raw["metrics"].items():
        assert set(entry) == wanted, name
    table = metrics()
    assert list(table) == list(raw["metrics"])
    for entry in table.values():
        assert entry.display and entry.margin > 0 and entry.scale > 0 and entry.digits >= 1
    # one display name per metric, no two metrics alike
    assert len({m.display for m in table.values()}) == len(table)


def test_a_missing_or_mistyped_field_is_refused() -> None:
    text = (PACKAGE / "evaluate" / TABLE).read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    del raw["metrics"]["nll"]["margin"]
    with pytest.raises(ValueError, match=r"metrics\.nll must have exactly the fields"):
        parse_table(yaml.safe_dump(raw))
    raw = yaml.safe_load(text)
    raw["metrics"]["chrf"]["higher_is_better"] = "yes"
    with pytest.raises(ValueError, match=r"metrics\.chrf\.higher_is_better"):
        parse_table(yaml.safe_dump(raw))
    raw = yaml.safe_load(text)
    raw["harness"][0]["margin"] = 0
    with pytest.raises(ValueError, match=r"harness\[0\]\.margin must be a positive"):
        parse_table(yaml.safe_dump(raw))


def test_the_table_is_package_data() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = project["tool"]["setuptools"]["package-data"]["whichlora"]
    shipped = {p for g in globs for p in PACKAGE.glob(g)}
    assert PACKAGE / "evaluate" / TABLE in shipped


@pytest.mark.parametrize("name", list(metrics()))
def test_verdicts_and_report_read_the_table(name: str) -> None:
    entry = metrics()[name]
    options = VerdictOptions("lora")
    assert options.direction(name) is entry.higher_is_better
    assert options.margin(name) == entry.margin
    assert VerdictOptions("lora", margins={name: 0.5}).margin(name) == 0.5
    assert display_name(name) == entry.display
    header = delta_header(name)
    assert entry.display in header and ("↑" if entry.higher_is_better else "↓") in header
    assert margin_text(name, entry.margin).endswith(entry.delta_unit.replace("points", "point"))
    assert (name in PRIMARY_ORDER) == (entry.primary is not None)
    assert (name in SHOWN_METRICS) == (entry.column is not None)


def test_harness_metrics_take_direction_from_lm_eval_and_accuracy_margin_from_the_table() -> None:
    assert higher_is_better("harness:xcopa_sw:acc") is True
    assert higher_is_better("harness:wikitext:word_perplexity") is False
    assert default_margin("harness:xcopa_sw:acc") == 0.01
    assert default_margin("harness:arc_easy:acc_norm/none") == 0.01
    assert default_margin("harness:wikitext:word_perplexity") is None
    assert display_name("harness:xcopa_sw:acc") == "harness:xcopa_sw:acc"
    assert higher_is_better("bleu") is None and default_margin("bleu") is None
