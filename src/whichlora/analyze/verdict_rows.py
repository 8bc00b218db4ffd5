"""The study's verdicts: its per-example test scores through the same machinery as
`whichlora verdict`, one stored row per (family, metric, technique).

Families come from the study: the source language is retention, languages in the training data
(including those added through `data.target_ratio`) are seen transfer, every other evaluated
language is unseen transfer. Directions and margins come from the metric table
(evaluate/metrics.yaml); harness metrics take their direction from lm-eval's metric names.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

KEY_COLUMNS = ("family", "metric", "technique")
log = logging.getLogger("whichlora")


def directions(metrics: Sequence[str]) -> dict[str, bool]:
    """Direction of each metric the metric table (or lm-eval) describes; others left out."""
    from whichlora.evaluate.metrics import higher_is_better

    found = {metric: higher_is_better(metric) for metric in metrics}
    return {metric: hib for metric, hib in found.items() if hib is not None}


def json_safe(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to null, frames and series to dicts."""
    if isinstance(value, pd.DataFrame):
        return {str(k): json_safe(v) for k, v in value.to_dict(orient="index").items()}
    if isinstance(value, pd.Series):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def verdict_rows(
    scores: pd.DataFrame,
    *,
    source: str,
    seen: Sequence[str],
    baseline: str,
    alpha: float,
    margins: Mapping[str, float],
) -> list[dict[str, Any]]:
    """Rows for the `verdicts` table (empty when the baseline or a second technique is missing:
    the report says why from the runs it has)."""
    from whichlora.analyze.verdicts import VerdictOptions, assign_families, judge
    from whichlora.evaluate.metrics import default_margin

    if scores.empty or baseline not in set(scores["technique"]):
        return []
    if scores["technique"].nunique() < 2:
        return []
    hib = directions(sorted(set(scores["metric"])))
    # A metric needs a margin to be judged: ours and lm-eval accuracies have one; any other
    # harness metric is judged once the study sets analysis.margins for it.
    judged = [m for m in hib if m in margins or default_margin(m) is not None]
    left_out = sorted(set(hib) - set(judged))
    if left_out:
        log.warning(
            "no verdict for %s: no margin of practical equivalence; set analysis.margins",
            ", ".join(left_out),
        )
    scores = scores[scores["metric"].isin(judged)]
    if scores.empty:
        return []
    options = VerdictOptions(
        baseline=baseline, alpha=alpha, margins=dict(margins), higher_is_better=hib
    )
    table = judge(assign_families(scores, source, seen), options)
    rows = []
    for record in table.to_dict("records"):
        payload = json_safe(record)
        rows.append(
            {
                "family": str(record["family"]),
                "metric": str(record["metric"]),
                "technique": str(record["technique"]),
                "verdict": str(record["verdict"]),
                "payload": json.dumps(payload, sort_keys=True, allow_nan=False, default=str),
            }
        )
    return rows
