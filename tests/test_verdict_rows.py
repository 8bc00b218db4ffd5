"""The study's verdict rows: families from the study, harness metrics with their direction."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from whichlora.analyze.verdict_rows import verdict_rows
from whichlora.evaluate.metrics import higher_is_better


def _scores(metric: str, effect: float) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for technique, shift in (("lora", 0.0), ("dora", effect)):
        for seed in range(3):
            for language in ("en", "de", "sw", "yo"):
                for item in range(20):
                    value = float(rng.random() < 0.5 + shift)
                    rows.append((technique, seed, language, str(item), metric, value))
    return pd.DataFrame(
        rows, columns=["technique", "seed", "language", "example_id", "metric", "value"]
    )


def test_harness_accuracy_is_judged_with_its_direction_and_families() -> None:
    metric = "harness:xcopa_sw:acc"
    assert higher_is_better(metric) is True
    rows = verdict_rows(
        _scores(metric, 0.0), source="en", seen=["de", "sw"], baseline="lora", alpha=0.05,
        margins={},
    )
    families = {r["family"] for r in rows}
    assert families == {"transfer_seen", "transfer_unseen", "retention", "tradeoff"}
    payload = json.loads(rows[0]["payload"])
    assert payload["higher_is_better"] is True and payload["margin"] == 0.01


def test_a_metric_without_margin_is_left_out_until_the_study_sets_one() -> None:
    metric = "harness:flores_sw:bleu"
    scores = _scores(metric, 0.0)
    kwargs = {"source": "en", "seen": ["de"], "baseline": "lora", "alpha": 0.05}
    assert verdict_rows(scores, margins={}, **kwargs) == []
    rows = verdict_rows(scores, margins={metric: 1.0}, **kwargs)
    assert rows and all(r["metric"] == metric for r in rows)
