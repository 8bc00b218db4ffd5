"""Verdicts: each piece against an independent reference, then simulations with a known truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from verdict_scenarios import SCENARIOS
from verdict_sim import Scenario, error_rates, simulate

from whichlora.analyze import power as pw
from whichlora.analyze.verdicts import (
    VERDICT_COLUMNS,
    VerdictOptions,
    assign_families,
    evidence_sentence,
    judge,
    language_intervals,
)
from whichlora.cli import main
from whichlora.errors import WhichloraError

FAST = {"bayes": False, "aso": False}


def _table(
    values: dict[str, list[float]], metric: str = "nll", family: str = "transfer_seen"
) -> pd.DataFrame:
    """One language, two items a hair apart on which the techniques differ alike: per-seed values
    per technique (the analysis is a paired t test over seeds)."""
    language = "en" if family == "retention" else "de"
    rows = [
        {"technique": t, "seed": s, "language": language, "example_id": str(i), "metric": metric,
         "value": v + 1e-6 * i, "family": family}
        for t, vals in values.items() for s, v in enumerate(vals) for i in range(2)
    ]  # fmt: skip
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- pieces


def test_paired_t_and_tost_match_scipy_and_statsmodels() -> None:
    from scipy import stats
    from statsmodels.stats.weightstats import ttost_paired

    lora = [2.92, 2.98, 3.05, 3.00]
    pissa = [2.81, 2.82, 2.91, 2.87]
    out = judge(_table({"lora": lora, "pissa": pissa}), VerdictOptions("lora", **FAST))
    row = out[out["family"] == "transfer_seen"].iloc[0]
    assert row["seed_variance"] == "paired" and row["df"] == pytest.approx(3)
    assert row["estimate"] == pytest.approx(np.mean(np.subtract(pissa, lora)))
    assert row["p_difference"] == pytest.approx(stats.ttest_rel(pissa, lora).pvalue)
    for margin in (0.02, 0.2):
        opts = VerdictOptions("lora", margins={"nll": margin}, **FAST)
        r = judge(_table({"lora": lora, "pissa": pissa}), opts).iloc[0]
        ref = ttost_paired(np.array(pissa), np.array(lora), -margin, margin)[0]
        assert r["p_equivalence"] == pytest.approx(ref)
    ci = stats.ttest_rel(pissa, lora).confidence_interval()
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))


def test_holm_matches_statsmodels_and_skips_nan() -> None:
    from statsmodels.stats.multitest import multipletests

    from whichlora.analyze.significance import holm  # the one Holm the verdicts use

    p = np.array([0.01, 0.04, np.nan, 0.03, 0.5, 0.002])
    ok = np.isfinite(p)
    out = holm(p)
    assert np.isnan(out[2])
    np.testing.assert_allclose(out[ok], multipletests(p[ok], method="holm")[1])


def test_direction_decides_better_or_worse() -> None:
    lo, hi = [1.0, 1.1, 1.2], [1.5, 1.62, 1.69]
    for metric, word in (("nll", "better"), ("chrf", "worse")):
        opts = VerdictOptions("lora", margins={"chrf": 0.01}, **FAST)
        row = judge(_table({"lora": hi, "new": lo}, metric), opts).iloc[0]
        assert row["verdict"] == word and row["higher_is_better"] == (metric == "chrf")


def test_one_seed_is_never_a_verdict_and_the_advice_is_a_labelled_guess() -> None:
    one = judge(_table({"lora": [3.0], "new": [1.0]}), VerdictOptions("lora", **FAST)).iloc[0]
    assert one["verdict"] == "inconclusive" and one["seed_variance"] == "none"
    assert "one seed" in one["note"] and one["more_seeds"] == 1  # the minimum; no guess
    # the baseline's three stable seeds lend no precision to a technique run once
    data = _table({"lora": [3.0, 3.001, 2.999], "new": [2.0]})
    row = judge(data, VerdictOptions("lora", **FAST)).iloc[0]
    assert row["verdict"] == "inconclusive" and np.isnan(row["se"]) and np.isnan(row["ci_low"])
    assert row["estimate"] == pytest.approx(-1.0)
    assert "run new with at least 1 more seed" in row["note"] and "planning guess" in row["note"]
    assert row["more_seeds"] >= 1


def test_a_language_with_one_item_is_never_a_verdict() -> None:
    """Three seeds that agree, but one scored item in a language: no item noise is estimated."""
    rows = [
        {"technique": t, "seed": s, "language": lg, "example_id": str(i), "metric": "chrf",
         "value": 40.0 + (10.0 if t == "new" else 0.0) + 0.01 * s + i, "family": "transfer_seen"}
        for t in ("lora", "new") for s in range(3) for lg, n in (("de", 3), ("sw", 1))
        for i in range(n)
    ]  # fmt: skip
    row = judge(pd.DataFrame(rows), VerdictOptions("lora", **FAST)).iloc[0]
    assert row["verdict"] == "inconclusive" and np.isnan(row["p_difference"])
    assert "one scored item (sw)" in row["note"] and "score >= 2 items per language" in row["note"]
    assert row["more_items"] >= 2 and row["more_seeds"] is None


def test_no_trade_off_claim_from_a_side_without_variance() -> None:
    seen = _table({"lora": [3.0, 3.1, 3.2], "new": [2.5, 2.62, 2.69]})
    ret = _table({"lora": [3.0], "new": [3.0]}, family="retention")
    out = judge(pd.concat([seen, ret]), VerdictOptions("lora", **FAST))
    assert out[out["family"] == "transfer_seen"].iloc[0]["verdict"] == "better"
    assert out[out["family"] == "tradeoff"].iloc[0]["verdict"] == "inconclusive"


def test_df_is_satterthwaite_over_seed_and_item_parts() -> None:
    """Seed noise that is tiny beside constant item noise: the items' df, not the seeds'."""
    from verdict_scenarios import SCENARIOS as sc

    data = simulate(sc["zero_effect_fixed_items_3_seeds"], np.random.default_rng(0))
    row = judge(data, VerdictOptions("lora", **FAST)).iloc[0]
    assert row["df"] > 3  # more than the seeds' 2
    seedy = simulate(sc["null_seed_noise_3_seeds"], np.random.default_rng(0))
    assert judge(seedy, VerdictOptions("lora", **FAST)).iloc[0]["df"] == pytest.approx(2, abs=0.3)


def test_missing_margin_and_direction_name_the_metric_and_the_fix() -> None:
    data = _table({"lora": [1.0, 2.0], "new": [1.5, 2.5]}, metric="bleu")
    with pytest.raises(WhichloraError, match=r"'bleu'.*margin"):
        judge(data, VerdictOptions("lora", higher_is_better={"bleu": True}, **FAST))
    with pytest.raises(WhichloraError, match=r"'bleu'.*lower-is-better"):
        judge(data, VerdictOptions("lora", margins={"bleu": 1.0}, **FAST))
    with pytest.raises(WhichloraError, match="baseline 'dora'"):
        judge(data, VerdictOptions("dora", margins={"bleu": 1.0}, **FAST))
    assert VerdictOptions("lora").margin("harness:belebele:acc_norm") == 0.01


def test_assign_families() -> None:
    data = pd.DataFrame({"language": ["en", "de", "sw", "fi"]})
    assert assign_families(data, "en", ["de", "sw"])["family"].tolist() == [
        "retention", "transfer_seen", "transfer_seen", "transfer_unseen"]  # fmt: skip


def test_judge_columns_tradeoff_views_and_evidence() -> None:
    rng = np.random.default_rng(0)
    sc = Scenario("mix", effects={"lora": 0.0, "good": -0.2, "same": 0.0}, seeds=3)
    seen = simulate(sc, rng)
    ret = simulate(Scenario("r", effects={"lora": 0.0, "good": 0.0, "same": 0.0}, seeds=3,
                            family="retention"), rng)  # fmt: skip
    ret["language"] = "en"
    ret = ret.drop_duplicates(["technique", "seed", "language", "example_id", "metric"])
    out = judge(pd.concat([seen, ret]), VerdictOptions("lora", aso=False))
    assert list(out.columns[: len(VERDICT_COLUMNS)]) == VERDICT_COLUMNS
    good = out[(out["technique"] == "good") & (out["family"] == "transfer_seen")].iloc[0]
    assert good["verdict"] == "better" and good["estimate"] < 0
    assert good["p_bayes_better"] > 0.9 and good["p_bayes_worse"] < 0.05
    trade = out[(out["technique"] == "good") & (out["family"] == "tradeoff")].iloc[0]
    assert trade["verdict"] in {"better", "inconclusive"}
    assert set(out["family"]) == {"transfer_seen", "retention", "tradeoff"}
    sentence = evidence_sentence(out)
    assert sentence.endswith(".") and ("inconclusive" in sentence or "Nothing" in sentence)
    per_lang = language_intervals(seen, VerdictOptions("lora"))
    assert list(per_lang.columns) == ["technique", "language", "metric", "estimate", "ci_low",
                                      "ci_high", "n_seeds", "seed_variance"]  # fmt: skip
    assert len(per_lang) == 2 * 4


def test_aso_view_over_seeds() -> None:
    data = _table({"lora": [3.0, 3.1, 3.2], "new": [2.5, 2.62, 2.69]})
    row = judge(data, VerdictOptions("lora", bayes=False)).iloc[0]
    assert row["verdict"] == "better" and row["aso_epsilon"] < 0.5  # lower nll is better
    two = judge(_table({"lora": [3.0, 3.1], "new": [2.5, 2.6]}), VerdictOptions("lora"))
    assert np.isnan(two.iloc[0]["aso_epsilon"])


def test_trade_off_row_names_the_trade() -> None:
    seen = _table({"lora": [3.0, 3.1, 3.2], "new": [2.5, 2.62, 2.69]})
    ret = _table({"lora": [3.0, 3.1, 3.2], "new": [3.5, 3.58, 3.71]}, family="retention")
    out = judge(pd.concat([seen, ret]), VerdictOptions("lora", **FAST))
    row = out[out["family"] == "tradeoff"].iloc[0]
    assert row["verdict"] == "inconclusive" and "trades retention for transfer" in row["note"]


def test_power_grows_with_seeds_and_items() -> None:
    design = pw.Design(seed=0.002, resid=0.0005, item=0.0005, n_seeds=2, n_items=20,
                       df_item=76)  # fmt: skip
    p2 = pw.power(0.08, 0.02, design, 0.05, 2)
    assert p2 < pw.power(0.08, 0.02, design, 0.05, 6) < pw.power(0.08, 0.02, design, 0.05, 12)
    extra = pw.more_seeds(0.08, 0.02, design, 0.05, 0.8)
    assert extra is not None and pw.power(0.08, 0.02, design, 0.05, 2 + extra) >= 0.8
    assert pw.power(0.08, 0.02, design, 0.05, 1 + extra) < 0.8
    # items alone cannot beat the seed part: None
    assert pw.more_items(0.08, 0.02, design, 0.05, 0.8) is None


# --------------------------------------------------------------------------- simulations

SIMS = 60
SLACK = 0.06  # Monte Carlo slack: sd of a rate near 0.05 over 60 sims is 0.028


def _rate(name: str, *verdicts: str, sims: int = SIMS) -> float:
    sc = SCENARIOS[name]
    rates = error_rates(sc, sims, seed=1)
    techs = [t for t in sc.effects if t != "lora"]
    return sum(rates[f"{t}:{v}"] for t in techs for v in verdicts) / len(techs)


NULLS = [name for name in SCENARIOS if name.startswith("null")]


@pytest.mark.parametrize("name", NULLS)
def test_no_true_effect_gives_few_false_verdicts(name: str) -> None:
    assert _rate(name, "better", "worse", sims=20 if len(SCENARIOS[name].effects) > 2 else SIMS) \
        <= 0.05 + SLACK


def test_a_seed_sensitive_technique_is_not_called_better_or_worse_for_its_luck() -> None:
    """Each comparison uses its own seed variance: a technique's seed luck is never an effect."""
    sc = SCENARIOS["null_heterogeneous_seed_noise"]
    own = error_rates(sc, 40, seed=3)
    assert own["wild:better"] + own["wild:worse"] <= 0.05 + SLACK


def test_single_seed_techniques_beside_stable_ones_are_never_better_or_worse() -> None:
    rates = error_rates(SCENARIOS["null_mixed_1_seed_2_items"], 20, seed=4)
    assert all(rates[f"{t}:{v}"] == 0 for t in ("vera", "adalora", "pissa")
               for v in ("better", "worse", "equivalent"))  # fmt: skip


def test_agreeing_binary_items_are_not_exact_equivalence() -> None:
    """Ten 0/1 items per seed on which both techniques agree: no variance is observed, yet ten
    items cannot show a difference below one accuracy point."""
    rows = [
        {"technique": t, "seed": s, "language": "en", "example_id": str(i), "metric": "mc_acc",
         "value": float(i % 3 != 0), "family": "retention"}
        for t in ("lora", "dora") for s in range(3) for i in range(10)
    ]  # fmt: skip
    out = judge(pd.DataFrame(rows), VerdictOptions(baseline="lora", **FAST))
    row = out[out["family"] == "retention"].iloc[0]
    assert row["verdict"] == "inconclusive"
    assert row["ci_high"] - row["ci_low"] > 0.05


def test_one_seed_with_seed_noise_is_never_better_or_worse() -> None:
    assert _rate("null_1_seed", "better", "worse", sims=20) == 0.0


def test_large_effect_found_in_the_right_direction() -> None:
    assert _rate("large_effect_3_seeds", "better") >= 0.8


def test_zero_effect_tight_design_is_equivalent() -> None:
    assert _rate("zero_effect_tight", "equivalent", sims=30) >= 0.6


def test_effect_twice_the_margin_is_rarely_equivalent() -> None:
    for name in ("effect_2x_margin_tight", "effect_2x_margin_loose",
                 "effect_2x_margin_fixed_items"):  # fmt: skip
        assert _rate(name, "equivalent", sims=30) <= 0.05


def test_power_where_the_items_carry_the_df() -> None:
    assert _rate("zero_effect_fixed_items_3_seeds", "equivalent", sims=15) >= 0.7
    assert _rate("effect_3x_margin_noisy_items", "better", sims=15) >= 0.6


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_error_rates_many_simulations(name: str) -> None:
    sims = 1000
    sc = SCENARIOS[name]
    rates = error_rates(sc, sims, seed=1)
    techs = [t for t in sc.effects if t != "lora"]
    if name.startswith("null"):  # every technique, not only on average
        for t in techs:
            assert rates[f"{t}:better"] + rates[f"{t}:worse"] <= 0.05 + 0.02
            if sc.seeds_by.get(t) == 1:
                assert rates[f"{t}:better"] + rates[f"{t}:worse"] == 0
    if name == "large_effect_3_seeds":
        assert rates["new:better"] >= 0.9
    if name.startswith("effect_2x"):
        assert all(rates[f"{t}:equivalent"] <= 0.05 + 0.02 for t in techs)


# --------------------------------------------------------------------------- command line


def _csv(tmp_path, frame: pd.DataFrame, name: str = "scores.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _good_frame() -> pd.DataFrame:
    rng = np.random.default_rng(2)
    sc = Scenario("cli", effects={"lora": 0.0, "pissa": -0.15}, seeds=3)
    frame = simulate(sc, rng).drop(columns="family")
    frame["language"] = frame["language"].map({"l0": "en", "l1": "de", "l2": "sw", "l3": "fi"})
    return frame


def test_cli_verdict_writes_json(tmp_path, capsys) -> None:
    path = _csv(tmp_path, _good_frame())
    out = tmp_path / "v.json"
    argv = ["verdict", str(path), "--baseline", "lora", "--source", "en", "--seen", "de,sw",
            "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    records = json.loads(out.read_text())
    assert {r["family"] for r in records} == {"transfer_seen", "transfer_unseen", "retention",
                                              "tradeoff"}  # fmt: skip
    assert set(VERDICT_COLUMNS) <= set(records[0])
    seen = next(r for r in records if r["family"] == "transfer_seen")
    assert seen["verdict"] == "better" and seen["technique"] == "pissa"
    printed = capsys.readouterr().out
    assert "pissa" in printed and "transfer_seen" in printed


BAD = {
    "missing column": (lambda f: f.drop(columns="example_id"), [], "example_id"),
    "non-numeric": (lambda f: f.assign(value=f["value"].astype(object).where(
        f.index != 5, "abc")), [], "not a number"),  # fmt: skip
    "unknown baseline": (lambda f: f, ["--baseline", "dora"], "baseline 'dora'"),
    "reserved family": (lambda f: f.assign(family="tradeoff"), [], "reserved"),
    "duplicate": (lambda f: pd.concat([f, f.iloc[:1]]), [], "duplicated"),
    "no margin": (lambda f: f.assign(metric="bleu"), ["--higher-is-better", "bleu"], "margin"),
    "no direction": (lambda f: f.assign(metric="bleu"), ["--margin", "bleu=1"], "--lower-is"),
    "no families": (lambda f: f, ["--no-source"], "--source"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_cli_verdict_bad_tables(tmp_path, capsys, case: str) -> None:
    change, extra, message = BAD[case]
    path = _csv(tmp_path, change(_good_frame()))
    out = tmp_path / "v.json"
    argv = ["verdict", str(path), "--json", str(out)]
    if "--baseline" not in extra:
        argv += ["--baseline", "lora"]
    if "--no-source" not in extra:
        argv += ["--source", "en", "--seen", "de"]
    argv += [a for a in extra if a != "--no-source"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()
