"""Statistics against scipy / statsmodels / scikit-posthocs directly and hand-worked examples."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import scikit_posthocs as sp
from scipy import stats

from whichlora.analyze.significance import (
    RESULT_COLUMNS,
    SCORE_COLUMNS,
    compare_to_baseline,
    critical_difference,
    friedman_nemenyi,
    holm,
    paired_bootstrap_ci,
    paired_wilcoxon,
    summary_sentence,
)
from whichlora.errors import WhichloraError

# --------------------------------------------------------------------------- wilcoxon


def test_wilcoxon_matches_scipy():
    rng = np.random.default_rng(0)
    for n in (8, 15, 40):
        a = rng.normal(size=n)
        b = a + rng.normal(0.3, 1.0, size=n)
        ours = paired_wilcoxon(a, b)
        ref = stats.wilcoxon(a, b)
        assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-12)
        assert ours.statistic == pytest.approx(ref.statistic)
        assert ours.n == n


def test_rank_biserial_hand_example():
    # d = [1, -2, 3, 4]: ranks 1..4, T+ = 8, T- = 2 -> r = (8 - 2) / 10
    res = paired_wilcoxon([1.0, 0.0, 3.0, 4.0], [0.0, 2.0, 0.0, 0.0])
    assert res.rank_biserial == pytest.approx(0.6)
    assert paired_wilcoxon([0.0, 0.0, 0.0], [1.0, 2.0, 3.0]).rank_biserial == pytest.approx(-1.0)


def test_wilcoxon_all_zero_and_tiny_samples():
    same = paired_wilcoxon([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same.p_value == 1.0
    assert "no difference" in same.note
    small = paired_wilcoxon([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert "too few" in small.note
    assert paired_wilcoxon(np.arange(10.0), np.zeros(10)).note == ""
    with pytest.raises(WhichloraError):
        paired_wilcoxon([1.0, 2.0], [1.0])


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_true_shift_and_is_reproducible():
    rng = np.random.default_rng(42)
    b = rng.normal(size=500)
    a = b + 0.3 + rng.normal(0.0, 0.5, size=500)
    res = paired_bootstrap_ci(a, b, seed=7)
    assert res.ci_low < 0.3 < res.ci_high
    assert res.ci_low < res.mean_diff < res.ci_high
    assert res.mean_diff == pytest.approx(np.mean(a - b))
    assert res == paired_bootstrap_ci(a, b, seed=7)
    assert res.ci_low != paired_bootstrap_ci(a, b, seed=8).ci_low


def test_bootstrap_ci_matches_scipy_percentile_bootstrap():
    rng = np.random.default_rng(3)
    d = rng.normal(0.2, 0.5, size=400)
    ours = paired_bootstrap_ci(d, np.zeros_like(d), n_resamples=5000, confidence=0.9)
    ref = stats.bootstrap(
        (d,), np.mean, n_resamples=5000, confidence_level=0.9, method="percentile", rng=1
    ).confidence_interval
    assert ours.ci_low == pytest.approx(ref.low, abs=0.005)
    assert ours.ci_high == pytest.approx(ref.high, abs=0.005)


# --------------------------------------------------------------------------- holm


def test_holm_hand_computed():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    got = holm([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02])
    with_nan = holm([0.01, np.nan, 0.04, 0.03, 0.005])
    assert np.isnan(with_nan[1])
    assert np.delete(with_nan, 1) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


# --------------------------------------------------------------------------- friedman / nemenyi


def test_average_ranks_hand_example():
    table = pd.DataFrame(
        {"a": [0.9, 0.5, 0.3], "b": [0.8, 0.6, 0.3], "c": [0.7, 0.4, 0.1]},
    )
    res = friedman_nemenyi(table)
    assert res.avg_ranks.to_dict() == pytest.approx({"a": 1.5, "b": 1.5, "c": 3.0})
    low = friedman_nemenyi(table, higher_is_better=False)
    assert low.avg_ranks.to_dict() == pytest.approx({"a": 2.5, "b": 2.5, "c": 1.0})


def test_friedman_and_nemenyi_match_libraries():
    rng = np.random.default_rng(5)
    table = pd.DataFrame(
        rng.normal(size=(12, 4)) + [0.0, 0.5, 1.0, 0.2], columns=["lora", "dora", "vera", "pissa"]
    )
    res = friedman_nemenyi(table)
    ref_stat, ref_p = stats.friedmanchisquare(*(table[c] for c in table.columns))
    assert res.statistic == pytest.approx(ref_stat)
    assert res.p_value == pytest.approx(ref_p)
    pd.testing.assert_frame_equal(res.nemenyi, sp.posthoc_nemenyi_friedman(table))
    assert (res.k, res.n_blocks) == (4, 12)


def test_critical_difference_matches_demsar_table():
    # Demsar 2006, Table 5: q_0.05 = 2.569 for k=4; CD = 2.569 * sqrt(4*5 / (6*10)) = 1.483
    assert critical_difference(4, 10) == pytest.approx(1.483, abs=1e-3)
    assert critical_difference(4, 10) == pytest.approx(2.569 * np.sqrt(20 / 60), abs=1e-3)
    table = pd.DataFrame(np.random.default_rng(0).normal(size=(10, 4)), columns=list("abcd"))
    assert friedman_nemenyi(table).cd == pytest.approx(1.483, abs=1e-3)


def test_friedman_skipped_for_two_techniques_and_drops_incomplete_blocks():
    table = pd.DataFrame({"lora": [0.1, 0.2, 0.3, np.nan], "dora": [0.2, 0.3, 0.1, 0.5]})
    res = friedman_nemenyi(table)
    assert np.isnan(res.p_value) and res.nemenyi is None
    assert "at least 3 techniques" in res.note
    assert "dropped 1" in res.note
    assert res.n_blocks == 3
    with pytest.raises(WhichloraError):
        friedman_nemenyi(table.iloc[:1])


# --------------------------------------------------------------------------- compare_to_baseline


def synthetic_scores(seed: int = 0) -> pd.DataFrame:
    """lora baseline; dora = big real gain; vera = baseline + noise, on mc_acc and nll."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(3):
        for lang in ["en", "de", "sw", "yo", "fi"]:
            for metric, shift in [("mc_acc", 0.1), ("nll", -0.3)]:
                base = rng.normal(0.5, 0.1, size=30) + rng.normal(0.0, 0.2)
                techs = {
                    "lora": base,
                    "dora": base + shift + rng.normal(0, 0.05, size=30),
                    "vera": base + rng.normal(0, 0.05, size=30),
                }
                for tech, vals in techs.items():
                    rows += [(tech, s, lang, i, metric, v) for i, v in enumerate(vals)]
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def test_compare_to_baseline_finds_real_shift_only():
    df = compare_to_baseline(synthetic_scores(), higher_is_better={"nll": False})
    assert list(df.columns) == RESULT_COLUMNS
    assert len(df) == 4 and set(df["baseline"]) == {"lora"}
    by = df.set_index(["metric", "technique"])
    assert by.loc[("mc_acc", "dora"), "significant"]
    assert by.loc[("nll", "dora"), "significant"]
    assert not by.loc[("mc_acc", "vera"), "significant"]
    assert not by.loc[("nll", "vera"), "significant"]
    assert by.loc[("mc_acc", "dora"), "n_pairs"] == 15
    acc = by.loc[("mc_acc", "dora")]
    assert acc["ci_low"] < 0.1 < acc["ci_high"]
    pattern = (
        r"dora is significantly better than lora on mc_acc "
        r"\(\+0\.\d{3}, 95% CI \[0\.\d{3}, 0\.\d{3}\], Holm p[<=]0\.\d+\)"
    )
    assert re.fullmatch(pattern, acc["verdict"]), acc["verdict"]
    assert by.loc[("nll", "dora"), "verdict"].startswith("dora is significantly better")
    assert by.loc[("nll", "dora"), "mean_diff"] < 0
    assert by.loc[("nll", "vera"), "verdict"].startswith(
        "no significant difference between vera and lora on nll"
    )
    assert (df["p_holm"] >= df["wilcoxon_p"]).all()
    assert "2 of 4 comparisons are significant" in summary_sentence(df)


def test_compare_to_baseline_reports_worse_direction():
    scores = synthetic_scores()
    df = compare_to_baseline(scores, higher_is_better={"nll": True})
    verdict = df.set_index(["metric", "technique"]).loc[("nll", "dora"), "verdict"]
    assert verdict.startswith("dora is significantly worse than lora on nll")


def test_summary_says_no_significant_difference():
    scores = synthetic_scores()
    df = compare_to_baseline(scores[scores["technique"] != "dora"])
    assert not df["significant"].any()
    assert "no significant difference" in summary_sentence(df).lower()


def test_compare_to_baseline_validates_input():
    scores = synthetic_scores()
    with pytest.raises(WhichloraError, match="baseline"):
        compare_to_baseline(scores, baseline="adalora")
    with pytest.raises(WhichloraError, match="missing column"):
        compare_to_baseline(scores.drop(columns="example_id"))
