"""The analyze stage end to end on a tiny study, plus its pieces (CKA, probe layers, tests)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from whichlora.analyze import stage
from whichlora.analyze.measures import linear_cka, unbiased_cka
from whichlora.analyze.representations import cached_representations
from whichlora.analyze.stage import (
    FRIEDMAN,
    SUMMARY,
    _Grams,
    analyze_stage,
    probe_layers,
    significance_rows,
)

LANGS = ("en", "de", "fr")
PARALLEL = {
    "en": ["Hello there, my friend!", "Cold.", "The sky is blue.", "Paris is the capital.",
           "A cat has four legs.", "We drink coffee."],
    "de": ["Hallo, mein Freund!", "Kalt.", "Der Himmel ist blau.", "Berlin ist die Hauptstadt.",
           "Eine Katze hat vier Beine.", "Wir trinken Kaffee."],
    "fr": ["Bonjour, mon ami !", "Froid.", "Le ciel est bleu.", "Paris est la capitale.",
           "Un chat a quatre pattes.", "Nous buvons du café."],
}  # fmt: skip


# --------------------------------------------------------------------------- pieces


def test_gram_cka_matches_the_measures() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12))
    y = x @ rng.normal(size=(12, 7)) + 0.5 * rng.normal(size=(40, 7))
    grams = _Grams({"x": x, "y": y})
    assert grams.linear("x", "y") == pytest.approx(linear_cka(x, y), rel=1e-9)
    assert grams.unbiased("x", "y") == pytest.approx(unbiased_cka(x, y), rel=1e-9)
    assert grams.linear("x", "x") == pytest.approx(1.0)
    assert _Grams({"c": np.ones((5, 3)), "y": y[:5]}).linear("c", "y") is None


def test_probe_layers_always_first_and_last() -> None:
    assert probe_layers(3, 18, 64, 8) == [0, 1, 2]  # tiny: every layer
    # quickstart-sized: 7 models x 2 poolings, 10 languages x 60 sentences, 576 wide
    assert probe_layers(31, 600, 576, 14) == [0, 10, 20, 30]
    assert probe_layers(31, 600, 576, 200) == [0, 30]  # over budget: still first and last
    odd = probe_layers(25, 600, 576, 14)
    assert odd[0] == 0 and odd[-1] == 24 and len(set(np.diff(odd[:-1]))) <= 1
    assert probe_layers(1, 10, 8, 1) == [0]


def _scores(techniques: dict[str, float], seeds: tuple[int, ...] = (0, 1)) -> pd.DataFrame:
    """Per-example scores where each technique's accuracy is shifted by the given amount."""
    rng = np.random.default_rng(1)
    rows = []
    for technique, shift in techniques.items():
        for seed in seeds:
            for lang in LANGS:
                for i in range(12):
                    noise = rng.normal(scale=0.05)
                    rows.append((technique, seed, lang, f"x{i}", "mc_acc", 0.5 + shift + noise))
                    rows.append((technique, seed, lang, f"x{i}", "nll", 2.0 - shift + noise))
    cols = ["technique", "seed", "language", "example_id", "metric", "value"]
    return pd.DataFrame(rows, columns=cols)


def _payloads(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["family"], r["metric"], r["technique"]): json.loads(r["payload"]) for r in rows}


def test_significance_rows_families_summary_and_friedman() -> None:
    scores = _scores({"lora": 0.0, "dora": 0.2, "pissa": 0.0})
    rows = significance_rows(scores, "en", "lora", alpha=0.05, n_resamples=200)
    got = _payloads(rows)
    assert {k[0] for k in got} == {"transfer", "retention"}
    for family in ("transfer", "retention"):
        for metric in ("mc_acc", "nll"):
            for technique in ("dora", "pissa"):
                payload = got[(family, metric, technique)]
                assert payload["baseline"] == "lora"
                assert set(payload) >= {"mean_diff", "ci_low", "ci_high", "p_holm", "verdict"}
        assert "sentence" in got[(family, "", SUMMARY)]
    assert got[("transfer", "mc_acc", "dora")]["mean_diff"] > 0.1
    assert got[("transfer", "mc_acc", "dora")]["n_pairs"] == 4  # 2 languages x 2 seeds
    assert got[("retention", "mc_acc", "dora")]["n_pairs"] == 2  # English x 2 seeds
    friedman = got[("transfer", "mc_acc", FRIEDMAN)]
    assert friedman["k"] == 3 and friedman["n_blocks"] == 4
    assert set(friedman["avg_ranks"]) == {"lora", "dora", "pissa"}
    assert friedman["avg_ranks"]["dora"] == 1.0
    assert set(friedman["nemenyi"]) == {"lora", "dora", "pissa"}
    assert got[("transfer", "nll", FRIEDMAN)]["avg_ranks"]["dora"] == 1.0  # lower nll is better
    assert not any(k[0] == "retention" and k[2] == FRIEDMAN for k in got)


def test_significance_without_the_baseline_records_a_note() -> None:
    rows = significance_rows(_scores({"dora": 0.1, "pissa": 0.0}), "en", "lora")
    got = _payloads(rows)
    note = got[("transfer", "", SUMMARY)]["note"]
    assert "baseline 'lora'" in note and got[("retention", "", SUMMARY)]["n_comparisons"] == 0
    friedman = got[("transfer", "mc_acc", FRIEDMAN)]  # ranking needs no baseline
    assert friedman["statistic"] is None and "at least 3" in friedman["note"]
    assert not [k for k in got if k[2] not in (SUMMARY, FRIEDMAN)]


def test_parallel_texts_uses_the_bundled_sentences(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import whichlora.data.languages as datasets

    monkeypatch.setattr(datasets, "evaluation_languages", lambda study: ["en", "de", "fr"])
    analysis = SimpleNamespace(parallel="builtin:sentences", sentences_per_language=5)
    texts = stage.parallel_texts(SimpleNamespace(analysis=analysis))
    assert list(texts) == ["en", "de", "fr"]
    assert {len(v) for v in texts.values()} == {5}


# --------------------------------------------------------------------------- end to end


def _open(tmp_path: Path, model_dir: Path) -> Any:
    from whichlora.study.context import open_study

    study = {
        "name": "tiny",
        "model": str(model_dir),
        "techniques": ["lora", "dora"],
        "training": {"seeds": [0, 1], "steps": 1},
        "evaluation": {"languages": list(LANGS)},
        "analysis": {"sentences_per_language": 6, "bootstrap_resamples": 200},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return open_study(path, tmp_path / "out", locked=False)


def _fake_train_and_evaluate(ctx: Any, run: Any, model_dir: Path, shift: float) -> None:
    """A random (non-zero) LoRA adapter on disk plus per-example test scores in the store."""
    from peft import LoraConfig, get_peft_model

    from whichlora.models.loading import load_model

    seed = zlib.crc32(run.run_id.encode()) % 1000  # the same adapters in every process
    import torch

    torch.manual_seed(seed)
    config = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(load_model(str(model_dir)).model, config)
    model.save_pretrained(ctx.run_dir(run.run_id) / "adapter")
    rng = np.random.default_rng(seed)
    examples = [
        {
            "run_id": run.run_id,
            "split": "test",
            "language": lang,
            "metric": metric,
            "example_id": f"x{i}",
            "value": float(base + sign * shift + rng.normal(scale=0.05)),
        }
        for lang in LANGS
        for metric, base, sign in (("mc_acc", 0.5, 1), ("nll", 2.0, -1))
        for i in range(8)
    ]
    ctx.store.finish_unit(run.run_id, "train", {}, key=ctx.key(run.run_id, "train"))
    for unit in ctx.test_stages():
        lang = unit.partition(":")[2]
        rows = [e for e in examples if e["language"] == lang]
        ctx.store.finish_unit(
            run.run_id, unit, {"examples": rows}, key=ctx.key(run.run_id, unit), clear=[]
        )


def test_analyze_stage_end_to_end(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stage, "parallel_texts", lambda study: PARALLEL)
    monkeypatch.setattr(stage, "PROBE_BUDGET_S", 1.0)  # keeps the test fast: first and last
    ctx = _open(tmp_path, tiny_model_dir)
    try:
        runs = {r.run_id: r for r in ctx.runs}
        assert sorted(runs) == ["dora-s0", "dora-s1", "lora-s0", "lora-s1"]
        for run_id in ("lora-s0", "lora-s1", "dora-s0"):
            _fake_train_and_evaluate(
                ctx, runs[run_id], tiny_model_dir, 0.2 * run_id.startswith("d")
            )

        analyze_stage(ctx, progress=False)
        assert ctx.store.unit_status("study", "analyze") == "done"
        frame = ctx.store.frame("analysis")
        models = {"base", "lora-s0", "lora-s1", "dora-s0"}
        measures = set(frame["measure"])
        assert measures == {
            "cosine", "sim_to_source", "retrieval_to_source", "probe", "probe_control",
            "probe_selectivity", "cka_base", "cka_base_unbiased", "cka_pair",
        }  # fmt: skip
        assert set(frame["pooling"]) == {"mean", "last"}
        assert set(frame["layer"]) == {0, 1, 2}  # 2 layers + embeddings
        per_model = frame[frame["measure"] == "cosine"]
        assert set(per_model["run_id"]) == models
        diag = per_model[per_model["language"] == per_model["other"]]
        np.testing.assert_allclose(diag["value"], 1.0, atol=1e-5)
        assert len(per_model) == 4 * 2 * 3 * 9  # models x poolings x layers x 3x3 languages
        sim = frame[frame["measure"] == "sim_to_source"]
        assert set(sim["language"]) == {"de", "fr"} and set(sim["other"]) == {"en"}
        cka = frame[frame["measure"] == "cka_base"]
        assert set(cka["run_id"]) == models - {"base"}
        assert set(cka["language"]) == {""} and set(cka["other"]) == {""}
        emb = cka[cka["layer"] == 0]["value"]
        np.testing.assert_allclose(emb, 1.0, atol=1e-6)  # embeddings are not adapted
        pairs = set(frame[frame["measure"] == "cka_pair"]["run_id"])
        assert pairs == {"dora-s0|lora-s0", "dora-s0|lora-s1", "lora-s0|lora-s1"}
        probe = frame[frame["measure"] == "probe"]
        assert set(probe["layer"]) == {0, 2} and probe["value"].between(0, 1).all()
        assert set(probe["run_id"]) == models and set(probe["language"]) == {""}
        keys = ["run_id", "pooling", "layer"]
        control = frame[frame["measure"] == "probe_control"].set_index(keys)
        selectivity = frame[frame["measure"] == "probe_selectivity"]
        by_key = probe.set_index(keys)["value"]
        for r in selectivity.itertuples():
            key = (r.run_id, r.pooling, r.layer)
            assert r.value == pytest.approx(by_key[key] - control.loc[key, "value"])
        alike = ctx.store.frame("alike")
        # dora has one evaluated seed here: a row per pooling and layer, none of them a claim
        assert len(alike) == 2 * 3 and set(alike["technique"]) == {"dora"}
        assert set(alike["verdict"]) == {"cannot tell"}

        sig = _payloads(ctx.store.frame("significance").to_dict("records"))
        assert ("transfer", "mc_acc", "dora") in sig and ("retention", "nll", "dora") in sig
        assert sig[("transfer", "mc_acc", "dora")]["mean_diff"] > 0.1
        assert ("transfer", "", SUMMARY) in sig and ("transfer", "mc_acc", FRIEDMAN) in sig

        # Same runs again: skipped without touching a model.
        reps_dir = ctx.study_dir / "analysis" / "reps"
        stamps = {p.name: p.stat().st_mtime_ns for p in reps_dir.glob("*.npz")}
        assert set(stamps) == {f"{m}.npz" for m in models}

        def boom(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("analyze should have been skipped")

        monkeypatch.setattr(stage, "cached_representations", boom)
        analyze_stage(ctx, progress=False)
        monkeypatch.setattr(stage, "cached_representations", cached_representations)

        # A new evaluated run: redone, reusing every cached model's vectors.
        _fake_train_and_evaluate(ctx, runs["dora-s1"], tiny_model_dir, 0.2)
        analyze_stage(ctx, progress=False)
        after = {p.name: p.stat().st_mtime_ns for p in reps_dir.glob("*.npz")}
        assert {k: after[k] for k in stamps} == stamps and "dora-s1.npz" in after
        cka = ctx.store.frame("analysis").query("measure == 'cka_pair'")
        assert len(set(cka["run_id"])) == 6
        assert ctx.store.get_kv("analyze_inputs")["runs"] == sorted(runs)
    finally:
        ctx.close()


def test_a_crash_before_significance_leaves_the_stage_undone(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stage, "parallel_texts", lambda study: PARALLEL)
    monkeypatch.setattr(stage, "PROBE_BUDGET_S", 1.0)
    ctx = _open(tmp_path, tiny_model_dir)
    try:
        run = next(r for r in ctx.runs if r.run_id == "lora-s0")
        _fake_train_and_evaluate(ctx, run, tiny_model_dir, 0.0)

        def crash(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("killed")

        monkeypatch.setattr(stage, "significance_rows", crash)
        with pytest.raises(RuntimeError):
            analyze_stage(ctx, progress=False)
        assert ctx.store.unit_status("study", "analyze") is None
        monkeypatch.setattr(stage, "significance_rows", significance_rows)
        analyze_stage(ctx, progress=False)
        assert ctx.store.unit_status("study", "analyze") == "done"
        sig = _payloads(ctx.store.frame("significance").to_dict("records"))
        # only the baseline itself was evaluated: nothing to compare, and the summary says so
        assert sig[("transfer", "", SUMMARY)]["n_comparisons"] == 0
    finally:
        ctx.close()


def test_the_same_technique_under_two_labels_is_never_called_different(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LoRA against LoRA under another label, three seeds each: the null of the alike test.
    Each run's adapter is its own random draw, so lora2 is exchangeable with lora."""
    from whichlora.study.context import open_study

    monkeypatch.setattr(stage, "parallel_texts", lambda study: PARALLEL)
    monkeypatch.setattr(stage, "PROBE_BUDGET_S", 1.0)
    study = {
        "name": "null",
        "model": str(tiny_model_dir),
        "techniques": ["lora", {"name": "lora", "label": "lora2"}],
        "training": {"seeds": [0, 1, 2], "steps": 1},
        "evaluation": {"languages": list(LANGS)},
        "analysis": {"sentences_per_language": 6, "bootstrap_resamples": 200,
                     "pooling": ["mean"], "margins": {"cka": 0.05}},
    }  # fmt: skip
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    ctx = open_study(path, tmp_path / "out", locked=False)
    try:
        for run in ctx.runs:
            _fake_train_and_evaluate(ctx, run, tiny_model_dir, 0.0)
        analyze_stage(ctx, progress=False)
        alike = ctx.store.frame("alike")
        assert set(alike["technique"]) == {"lora2"} and set(alike["layer"]) == {0, 1, 2}
        assert "differs" not in set(alike["verdict"])
        payloads = [json.loads(p) for p in alike["payload"]]
        assert {p["n_seeds"] for p in payloads} == {3} and {p["margin"] for p in payloads} == {0.05}
        embeddings = next(p for p in payloads if p["layer"] == 0)  # not adapted: identical
        assert embeddings["verdict"] == "alike" and "identical" in embeddings["note"]
    finally:
        ctx.close()
