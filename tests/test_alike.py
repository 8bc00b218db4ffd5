"""The alike statistic (analyze/alike.py): CKA on row subsets against an independent reference,
and its answers tested by simulation with a known truth (tests/alike_sim.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from alike_sim import SCENARIOS, Scenario, rates

from whichlora.analyze import alike
from whichlora.analyze.alike import (
    ALIKE,
    CANNOT_TELL,
    DIFFERS,
    LayerCKA,
    alike_rows,
    compare_layer,
    judge,
    sentence_groups,
)
from whichlora.analyze.measures import control_labels, linear_cka, probe_accuracy
from whichlora.analyze.representations import Representations


def _loop_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kernel-form linear CKA with an explicit centring matrix: the reference."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, m = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float(np.trace(k @ m) / np.sqrt(np.trace(k @ k) * np.trace(m @ m)))


def test_layer_cka_on_subsets_matches_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8))
    y = x @ rng.normal(size=(8, 5)) + rng.normal(size=(30, 5))
    rows = np.array([0, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29])
    for cka in (LayerCKA({"x": x, "y": y}), None):
        if cka is None:  # the feature-space path for layers too large for Grams
            monkeypatch.setattr(alike, "MAX_GRAM_ROWS", 10)
            cka = LayerCKA({"x": x, "y": y})
            assert cka.grams is None
        assert cka.pairs([("x", "y")])[("x", "y")] == pytest.approx(_loop_cka(x, y), rel=1e-9)
        sub = cka.pairs([("x", "y")], rows)[("x", "y")]
        assert sub == pytest.approx(_loop_cka(x[rows], y[rows]), rel=1e-9)
        assert sub == pytest.approx(linear_cka(x[rows], y[rows]), rel=1e-9)
    constant = LayerCKA({"c": np.ones((6, 3)), "y": y[:6]})
    assert constant.pairs([("c", "y")])[("c", "y")] is None


def test_sentence_groups_drop_a_sentence_with_all_its_translations() -> None:
    kept = sentence_groups(n_languages=3, n_per_language=7, groups=3)
    assert len(kept) == 3
    for rows in kept:
        sentences = [set(rows[(rows >= j * 7) & (rows < (j + 1) * 7)] - j * 7) for j in range(3)]
        assert sentences[0] == sentences[1] == sentences[2]  # the same sentences in every language
    left_out = [set(range(21)) - set(rows) for rows in kept]
    assert set().union(*left_out) == set(range(21)) and sum(map(len, left_out)) == 21
    assert len(sentence_groups(3, 4, 10)) == 4  # at most one group per sentence
    assert sentence_groups(3, 1, 10) == []


def _models(rng: np.random.Generator, same: bool) -> dict[str, np.ndarray]:
    x0 = rng.normal(size=(40, 6))
    mats = {"base": x0}
    for s in range(3):
        mats[f"l{s}"] = x0 + 0.1 * rng.normal(size=x0.shape)
        mats[f"t{s}"] = mats[f"l{s}"] if same else x0 + 0.1 * rng.normal(size=x0.shape)
    return mats


def test_identical_representations_are_alike_without_noise() -> None:
    cka = LayerCKA(_models(np.random.default_rng(1), same=True))
    seeds = {s: f"t{s}" for s in range(3)}
    row = compare_layer(cka, seeds, {s: f"l{s}" for s in range(3)}, margin=0.01, base="base")
    assert row["estimate"] == pytest.approx(0.0, abs=1e-12)
    assert row["p_alike"] == 0.0 and row["p_differs"] == 1.0 and "identical" in row["note"]
    assert row["floor_technique"] == pytest.approx(row["floor_baseline"])
    assert row["baseline_drift"] > 0


def test_estimate_is_mean_excess_over_the_seed_floor() -> None:
    """D(s, s') = [1 - CKA(T_s, L_s')] - [1 - CKA(L_s, L_s')], averaged: checked by hand."""
    mats = _models(np.random.default_rng(2), same=False)
    cka = LayerCKA(mats)
    t, b = {s: f"t{s}" for s in range(3)}, {s: f"l{s}" for s in range(3)}
    row = compare_layer(cka, t, b, margin=0.01)
    pair = {
        (s, r): _loop_cka(mats[b[s]], mats[b[r]]) - _loop_cka(mats[t[s]], mats[b[r]])
        for s in range(3) for r in range(3) if r != s
    }  # fmt: skip
    assert row["estimate"] == pytest.approx(np.mean(list(pair.values())), rel=1e-9)
    d = [np.mean([v for (s, _), v in pair.items() if s == k]) for k in range(3)]  # D_s
    assert row["seed_se"] == pytest.approx(np.std(d, ddof=1) / np.sqrt(3), rel=1e-9)
    assert row["ci_low"] < row["estimate"] < row["ci_high"]


def test_one_shared_seed_cannot_tell_and_says_what_would_settle_it() -> None:
    cka = LayerCKA(_models(np.random.default_rng(3), same=False))
    row = compare_layer(cka, {0: "t0"}, {s: f"l{s}" for s in range(3)}, margin=0.01)
    row.update(technique="vera", n_technique_seeds=1, n_baseline_seeds=3)
    [judged] = judge([row], baseline="lora")
    assert judged["verdict"] == CANNOT_TELL and judged["estimate"] != judged["estimate"]  # NaN
    assert "run vera with more seeds" in judged["note"]


def test_holm_runs_over_every_technique_and_layer() -> None:
    rows = [
        {"technique": "t", "n_seeds": 3, "margin": 0.01, "estimate": 0.02, "ci_low": 0.015,
         "ci_high": 0.025, "p_alike": 0.9, "p_differs": p, "note": "", "baseline_drift": 0.1}
        for p in (0.01, 0.02, 0.03)
    ]  # fmt: skip
    verdicts = [r["verdict"] for r in judge(rows, alpha=0.05)]
    assert verdicts == [DIFFERS] * 3  # Holm: 0.03, 0.04, 0.04
    rows.append({**rows[0], "p_differs": 0.5})
    judged = judge(rows, alpha=0.05)  # Holm: 0.04, 0.06, 0.06, 0.5
    assert [r["verdict"] for r in judged] == [DIFFERS, CANNOT_TELL, CANNOT_TELL, CANNOT_TELL]
    assert "not after Holm over 4 tests" in judged[1]["note"]


# --------------------------------------------------------------------------- simulation


def test_null_technique_is_lora_rarely_differs() -> None:
    """Technique = LoRA (same direction, same seed noise): 'differs' anywhere in a study of
    2 techniques x 2 layers at most about alpha of the time (nominal 5%, family-wise)."""
    for seeds in (2, 3):
        r = rates(Scenario("null", seeds=seeds, layers=2, techniques=2), sims=30, seed=seeds)
        assert r["any_differs"] <= 0.1, r


def test_null_with_noisy_seeds_rarely_differs() -> None:
    r = rates(Scenario("null", seeds=3, c=0.4, b=0.2), sims=60, seed=7)
    assert r["differs"] <= 0.1, r


def test_a_real_difference_is_found_and_never_called_alike() -> None:
    far = SCENARIOS["far_3_seeds"]  # theta 0.055, 5x the margin
    r = rates(far, sims=25, seed=4)
    assert r["differs"] >= 0.9 and r["alike"] == 0.0, r
    r = rates(SCENARIOS["far_2_seeds"], sims=25, seed=5)
    assert r["differs"] >= 0.6 and r["alike"] == 0.0, r


def test_a_difference_inside_the_margin_is_alike() -> None:
    r = rates(SCENARIOS["inside_margin_3_seeds"], sims=25, seed=6)  # theta 0.0054: half a margin
    assert r["alike"] >= 0.75, r


def test_a_difference_at_the_margin_is_rarely_called_alike() -> None:
    r = rates(SCENARIOS["at_margin_3_seeds"], sims=40, seed=11)  # theta 0.0106 > margin 0.01
    assert r["alike"] <= 0.15, r  # nominal 5% (4.7% in 300 studies, docs/alike.md)


def test_one_technique_seed_never_claims() -> None:
    r = rates(SCENARIOS["one_technique_seed"], sims=5, seed=8)
    assert r["cannot tell"] == 1.0


# --------------------------------------------------------------------------- rows


def _reps(x: np.ndarray, languages: int, n: int) -> Representations:
    return Representations([f"l{j}" for j in range(languages)], n, {"mean": x[None]})


def test_alike_rows_one_per_technique_and_layer_with_payload() -> None:
    rng = np.random.default_rng(9)
    x0 = rng.normal(size=(5 * 8, 6))
    reps = {"base": _reps(x0, 5, 8)}
    runs = {}
    for label in ("lora", "same", "solo"):
        for s in range(1 if label == "solo" else 2):
            reps[f"{label}-s{s}"] = _reps(x0 + 0.1 * rng.normal(size=x0.shape), 5, 8)
            runs[f"{label}-s{s}"] = (label, s)
    rows = alike_rows(reps, runs, "lora", ["mean"], margin=0.01)
    assert [(r["technique"], r["layer"]) for r in rows] == [("same", 0), ("solo", 0)]
    payload = {r["technique"]: json.loads(r["payload"]) for r in rows}
    assert payload["solo"]["n_seeds"] == 1 and rows[1]["verdict"] == CANNOT_TELL
    assert payload["same"]["n_seeds"] == 2 and payload["same"]["baseline"] == "lora"
    assert payload["same"]["n_sentences"] == 8 and payload["same"]["margin"] == 0.01
    assert rows[0]["verdict"] in (ALIKE, CANNOT_TELL)
    assert alike_rows(reps, {k: v for k, v in runs.items() if v[0] != "lora"}, "lora",
                      ["mean"]) == []  # fmt: skip


# --------------------------------------------------------------------------- probe control


def test_control_labels_follow_the_sentence_and_balance_the_classes() -> None:
    labels = control_labels(n_languages=4, n_per_language=10)
    grid = labels.reshape(4, 10)
    assert (grid == grid[0]).all()  # a sentence keeps its label in every language
    _, counts = np.unique(grid[0], return_counts=True)
    assert len(counts) == 4 and counts.max() - counts.min() <= 1
    assert len(set(control_labels(3, 2))) == 2  # no more classes than sentences


def test_selectivity_falls_when_translations_share_their_content() -> None:
    rng = np.random.default_rng(10)
    n, langs, dim = 20, 4, 16
    content = rng.normal(size=(n, dim))
    offsets = rng.normal(size=(langs, dim))
    labels = np.repeat([f"l{j}" for j in range(langs)], n)
    control = control_labels(langs, n)
    separate = np.concatenate([rng.normal(size=(n, dim)) + 3 * offsets[j] for j in range(langs)])
    shared = np.concatenate([content + 0.3 * offsets[j] + 0.05 * rng.normal(size=(n, dim))
                             for j in range(langs)])  # fmt: skip
    sel_separate = probe_accuracy(separate, labels) - probe_accuracy(separate, control)
    sel_shared = probe_accuracy(shared, labels) - probe_accuracy(shared, control)
    assert probe_accuracy(separate, control) < 0.5  # no content to carry across: near chance
    assert probe_accuracy(shared, control) > 0.7  # translations recognised: control is fit
    assert sel_separate > 0.5 > sel_shared
