"""Pieces of the report checked on their own: the bootstrap against a plain reference, CD-diagram
groups, colours, number formatting and the verdict's wording."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import numpy as np
import pytest
from synthetic import SyntheticSpec, make_synthetic_study

from whichlora.report.cdplot import cliques
from whichlora.report.deltas import CONFIDENCE, bootstrap_cell, resample_weights
from whichlora.report.document import fmt_bytes, fmt_ci, fmt_num
from whichlora.report.familiar import comparisons, familiar_text
from whichlora.report.inputs import load_inputs
from whichlora.report.style import BASE_COLOR, OKABE_ITO, Palette
from whichlora.study.context import StudyContext

# --------------------------------------------------------------------------- bootstrap


def reference_interval(matrix: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """Resample example rows one at a time and take np.nanmean: the textbook loop."""
    n = matrix.shape[0]
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    means = np.array([np.nanmean(matrix[rows]) for rows in idx])
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def test_bootstrap_matches_reference_loop_with_missing_values() -> None:
    rng = np.random.default_rng(3)
    runs = rng.normal(0.5, 0.2, size=(30, 3))
    runs[4, 1] = runs[17, 0] = np.nan  # an example a seed could not score
    base = rng.normal(0.4, 0.2, size=30)
    cell = bootstrap_cell(runs, base, resample_weights(30, 500, seed=11))
    assert cell["value"] == pytest.approx(np.nanmean(runs))
    assert cell["delta"] == pytest.approx(np.nanmean(runs - base[:, None]))
    low, high = reference_interval(runs - base[:, None], 500, seed=11)
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx((low, high), rel=1e-12)
    low, high = reference_interval(runs, 500, seed=11)
    assert (cell["value_ci_low"], cell["value_ci_high"]) == pytest.approx((low, high), rel=1e-12)


def test_bootstrap_width_matches_normal_theory() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(0.0, 1.0, size=(400, 1))
    cell = bootstrap_cell(values, np.zeros(400), resample_weights(400, 4000, seed=1))
    expected = 2 * 1.96 * values.std() / math.sqrt(400)
    assert cell["ci_high"] - cell["ci_low"] == pytest.approx(expected, rel=0.1)
    assert cell["ci_low"] < cell["delta"] < cell["ci_high"]


def test_bootstrap_is_seeded_and_needs_two_examples() -> None:
    values = np.arange(10.0)[:, None]
    a = bootstrap_cell(values, np.zeros(10), resample_weights(10, 200, seed=5))
    b = bootstrap_cell(values, np.zeros(10), resample_weights(10, 200, seed=5))
    assert a == b
    single = bootstrap_cell(np.ones((1, 2)), np.zeros(1), resample_weights(1, 200, seed=5))
    assert single["delta"] == 1.0 and math.isnan(single["ci_low"])


# --------------------------------------------------------------------------- CD groups, colours


def test_cliques_join_techniques_closer_than_cd() -> None:
    ranks = {"a": 1.0, "b": 1.5, "c": 3.0, "d": 3.2}
    assert cliques(ranks, 1.0) == [["a", "b"], ["c", "d"]]
    assert cliques(ranks, 2.5) == [["a", "b", "c", "d"]]
    assert cliques(ranks, 0.1) == []
    assert cliques(ranks, float("nan")) == []
    # overlapping groups are both kept; one inside another is not
    assert cliques({"a": 1.0, "b": 1.8, "c": 2.6}, 1.0) == [["a", "b"], ["b", "c"]]


def test_palette_is_stable_and_colour_blind_safe() -> None:
    names = [f"t{i}" for i in range(9)]
    palette = Palette(names)
    assert [palette.color(n) for n in names[:8]] == OKABE_ITO
    assert palette.color("base") == BASE_COLOR
    assert palette.color("t8") == palette.color("t0")  # colours cycle after eight ...
    assert palette.marker("t8") != palette.marker("t0")  # ... so the marker changes
    assert Palette(reversed(names)).color("t8") == OKABE_ITO[0]  # order is the study's
    late = Palette(["lora"])
    assert late.color("unplanned") == late.color("unplanned") == OKABE_ITO[1]


def test_number_formats() -> None:
    assert fmt_num(float("nan")) == "–"
    assert fmt_num(-0.5, 2, signed=True) == "−0.50"
    assert fmt_ci(0.05, -0.01, 0.11) == "+0.050 [−0.010, +0.110]"
    assert fmt_ci(0.05, float("nan"), 0.1) == "+0.050"
    assert fmt_bytes(512) == "512 B" and fmt_bytes(3 * 1024**2) == "3.0 MiB"


# --------------------------------------------------------------------------- verdict


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StudyContext]:
    ctx = make_synthetic_study(tmp_path_factory.mktemp("verdict"), SyntheticSpec(analysis=False))
    yield ctx
    ctx.close()


def _row(family: str, metric: str, technique: str, **payload: object) -> dict[str, object]:
    base = {
        "metric": metric,
        "technique": technique,
        "baseline": "lora",
        "n_pairs": 20,
        "n_examples": 800,
        "mean_diff": 0.0,
        "ci_low": -0.1,
        "ci_high": 0.1,
        "wilcoxon_p": 0.5,
        "p_holm": 1.0,
        "rank_biserial": 0.0,
        "significant": False,
    }
    return {
        "family": family,
        "metric": metric,
        "technique": technique,
        "payload": json.dumps({**base, **payload}),
    }


def _verdict(ctx: StudyContext, rows: list[dict[str, object]]) -> str:
    ctx.store.replace_table("significance", rows, "significance")
    inputs = load_inputs(ctx.store, ctx.study, ctx.study_dir, ctx.runs)
    return familiar_text(inputs, comparisons(inputs), seeds=2)


def test_verdict_names_significant_techniques_and_direction(study: StudyContext) -> None:
    text = _verdict(
        study,
        [
            _row(
                "transfer",
                "nll",
                "dora",
                mean_diff=-0.1,
                ci_low=-0.15,
                ci_high=-0.05,
                p_holm=0.01,
                rank_biserial=-0.9,
                significant=True,
            ),
            _row("transfer", "nll", "pissa"),
            _row(
                "retention",
                "mc_acc",
                "pissa",
                mean_diff=-0.08,
                ci_low=-0.12,
                ci_high=-0.03,
                p_holm=0.02,
                rank_biserial=-0.8,
                significant=True,
            ),
            _row("retention", "mc_acc", "dora"),
        ],
    )
    assert "dora is significantly better on response NLL" in text  # lower NLL is better
    assert "pissa does not differ significantly" in text
    assert "pissa is significantly worse on knowledge accuracy" in text
    assert "2 seeds × 3 target languages" in text


def test_verdict_says_plainly_when_nothing_is_significant(study: StudyContext) -> None:
    text = _verdict(study, [_row("transfer", "nll", "dora"), _row("retention", "nll", "dora")])
    assert "No technique (dora) differs significantly from lora on transfer or retention" in text
    assert "within what seeds and example sampling produce" in text
    small = _verdict(
        study,
        [
            _row(f, "nll", t, n_pairs=3)
            for f in ("transfer", "retention")
            for t in ("dora", "pissa")
        ],
    )
    assert "This design cannot detect a difference" in small
    assert "transfer: at most 3 cells per test and 2 tests, best possible Holm p=0.5" in small


def test_verdict_without_tests(study: StudyContext) -> None:
    assert "have not been run yet" in _verdict(study, [])
    only_summary = [
        {
            "family": "transfer",
            "metric": "*",
            "technique": "__summary__",
            "payload": json.dumps({"sentence": "x"}),
        }
    ]
    assert "have not been run yet" in _verdict(study, only_summary)
    text = _verdict(study, [_row("transfer", "nll", "dora")])
    assert "No retention tests were recorded." in text


def test_unreadable_payload_is_no_crash(study: StudyContext) -> None:
    rows = [{"family": "transfer", "metric": "nll", "technique": "dora", "payload": "not json"}]
    text = _verdict(study, rows)
    assert "No technique (dora) differs significantly" in text
    assert "No transfer test had paired data" in text


def test_verdict_gives_the_analysis_reason_when_nothing_was_compared(study: StudyContext) -> None:
    note = "baseline 'lora' is not among the evaluated techniques ['dora']; comparisons skipped"
    rows = [
        {
            "family": f,
            "metric": "",
            "technique": "__summary__",
            "payload": json.dumps({"sentence": note + ".", "note": note}),
        }
        for f in ("transfer", "retention")
    ]
    text = _verdict(study, rows)
    assert text.startswith("No technique could be compared with the baseline")
    assert "transfer: baseline 'lora' is not among" in text


# --------------------------------------------------------------------------- descriptive wording


@pytest.mark.parametrize(
    ("transfer", "retention", "expect", "refuse"),
    [
        # every technique lost accuracy on target languages and on the source
        (
            {"a": -0.05, "b": -0.02},
            {"a": -0.01, "b": -0.03},
            ["every technique lost on target languages, b least (-2 pp)", "a forgot least"],
            ["gained most"],
        ),
        # one gained on target languages; one even improved the source
        (
            {"a": 0.04, "b": -0.02},
            {"a": -0.01, "b": 0.02},
            ["a gained most on target languages (+4 pp)", "b did best on the source"],
            ["every technique lost", "forgot least"],
        ),
    ],
)
def test_descriptive_sentence_says_lost_when_nothing_gained(
    transfer: dict[str, float], retention: dict[str, float], expect: list[str], refuse: list[str]
) -> None:
    import pandas as pd

    from whichlora.report.sections import _descriptive

    points = pd.DataFrame(
        [
            {"technique": t, "metric": "mc_acc", "transfer": transfer[t], "retention": retention[t]}
            for t in transfer
        ]
    )
    text = _descriptive(points)
    for phrase in expect:
        assert phrase in text, text
    for phrase in refuse:
        assert phrase not in text, text


def test_descriptive_sentence_treats_rounding_noise_as_no_change() -> None:
    import pandas as pd

    from whichlora.report.sections import _descriptive

    points = pd.DataFrame(
        [
            {"technique": "a", "metric": "mc_acc", "transfer": -2.2e-17, "retention": 0.0},
            {"technique": "b", "metric": "mc_acc", "transfer": -0.05, "retention": 0.0},
        ]
    )
    text = _descriptive(points)
    assert "no technique gained on target languages (a: +0 pp)" in text, text
    assert "with no loss (+0 pp)" in text, text
    assert "e-1" not in text and "-0 pp" not in text, text
