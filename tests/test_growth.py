"""A study grows without redoing finished work: content keys, reuse, stale units, plan and gc.

Each extension (a seed, a technique, an evaluation language) must run only the new units (read
from the units table: finished units keep their rows, timings included) and end with the store a
fresh run of the extended study file produces.
"""

from __future__ import annotations

import copy
import hashlib
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_runner import results_of, write_study

from whichlora.cli import main
from whichlora.config.study import parse_study
from whichlora.errors import WhichloraError
from whichlora.store import Store
from whichlora.study.api import run_study
from whichlora.study.keys import evaluate_key, train_key
from whichlora.study.plan import plan_study

STAGES = ("train", "evaluate", "analyze")


def small_study(model_dir: Path, **overrides: Any) -> dict[str, Any]:
    study: dict[str, Any] = {
        "name": "grow",
        "model": {"id": str(model_dir), "device": "cpu"},
        "techniques": ["lora"],
        "budget": {"rank": 4},
        "data": {"languages": ["de", "sw"], "items_per_language": 12},
        "training": {"steps": 2, "batch_size": 4, "max_length": 64, "seeds": [0], "threads": 1},
        "evaluation": {
            "languages": ["en", "de"],
            "items_per_language": 4,
            "generation_items": 1,
            "max_new_tokens": 4,
        },
        "analysis": {"sentences_per_language": 4, "bootstrap_resamples": 100},
    }
    study.update(overrides)
    return study


def units_of(folder: Path) -> dict[tuple[str, str], tuple[Any, ...]]:
    """(run_id, stage) -> (status, key, seconds, finished_at): a redone unit changes its row."""
    with Store(folder / "results.sqlite") as store:
        rows = store.query("SELECT run_id, stage, status, key, seconds, finished_at FROM units")
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def snapshot(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def unit_seconds(units: dict[tuple[str, str], tuple[Any, ...]], keys: set[Any]) -> float:
    return sum(float(units[k][2] or 0.0) for k in keys)


@pytest.fixture(scope="module")
def finished(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished small study, copied by each test that extends it."""
    root = tmp_path_factory.mktemp("grow")
    run_study(write_study(root, small_study(tiny_model_dir)), root / "out", stages=STAGES)
    return root / "out"


def _extend(
    finished: Path, tmp_path: Path, study: dict[str, Any]
) -> tuple[set[tuple[str, str]], float, float]:
    """Extend a copy of the finished study and run the extended file fresh; compare the two.

    Returns the units the extension ran, its unit seconds and the fresh run's."""
    import shutil

    folder = tmp_path / "extended"
    shutil.copytree(finished, folder)
    before = units_of(folder)
    (tmp_path / "ext").mkdir()
    run_study(write_study(tmp_path / "ext", study), folder, stages=STAGES)
    after = units_of(folder)
    (tmp_path / "fresh").mkdir()
    run_study(write_study(tmp_path / "fresh", study), tmp_path / "fresh-out", stages=STAGES)
    fresh = units_of(tmp_path / "fresh-out")
    # every unit finished before is untouched (same key, same timing row): reused, not redone
    per_model = {k for k in before if k[0] != "study"}
    assert {k: after[k] for k in per_model} == {k: before[k] for k in per_model}
    ran = {k for k in after if k[0] != "study" and k not in before}
    assert results_of(folder) == results_of(tmp_path / "fresh-out")
    per_model_fresh = {k for k in fresh if k[0] != "study"}
    return ran, unit_seconds(after, ran), unit_seconds(fresh, per_model_fresh)


def test_adding_a_seed_trains_and_scores_only_the_new_run(
    finished: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    study = small_study(tiny_model_dir)
    study["training"]["seeds"] = [1, 0]  # in front: the data split must not move (split_seed)
    ran, extension, fresh = _extend(finished, tmp_path, study)
    assert ran == {("lora-s1", "train"), ("lora-s1", "evaluate:en"), ("lora-s1", "evaluate:de")}
    assert extension < fresh
    print(f"seed extension: {extension:.1f} s of units vs {fresh:.1f} s fresh")


def test_adding_a_technique_trains_and_scores_only_the_new_runs(
    finished: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    study = small_study(tiny_model_dir, techniques=["lora", "dora"])
    ran, extension, fresh = _extend(finished, tmp_path, study)
    assert ran == {("dora-s0", "train"), ("dora-s0", "evaluate:en"), ("dora-s0", "evaluate:de")}
    print(f"technique extension: {extension:.1f} s of units vs {fresh:.1f} s fresh")


def test_adding_an_evaluation_language_scores_only_that_language(
    finished: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    study = small_study(tiny_model_dir)
    study["evaluation"]["languages"] = ["en", "de", "sw"]
    ran, extension, fresh = _extend(finished, tmp_path, study)
    assert ran == {("base", "evaluate:sw"), ("lora-s0", "evaluate:sw")}
    print(f"language extension: {extension:.1f} s of units vs {fresh:.1f} s fresh")


def test_a_changed_setting_is_stale_refused_without_yes_then_redone(
    finished: Path,
    tmp_path: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    folder = tmp_path / "changed"
    shutil.copytree(finished, folder)
    study = small_study(tiny_model_dir)
    study["training"]["steps"] = 3
    path = write_study(tmp_path, study)
    before = snapshot(folder)

    assert main(["plan", str(path), "--out", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "stale" in out and "lora-s0" in out
    assert snapshot(folder) == before, "plan wrote something"

    assert main(["run", str(path), "--out", str(folder), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "would discard" in err and "train of lora-s0" in err and "--yes" in err
    assert "--out" in err and "Traceback" not in err
    assert snapshot(folder) == before, "a refused run wrote something"

    with pytest.raises(WhichloraError, match="--yes"):
        run_study(path, folder, stages=STAGES)
    run_study(path, folder, stages=STAGES, yes=True)
    resolved = yaml.safe_load((folder / "resolved.yaml").read_text(encoding="utf-8"))
    assert resolved["training"]["steps"] == 3
    (tmp_path / "fresh").mkdir()
    run_study(write_study(tmp_path / "fresh", study), tmp_path / "fresh-out", stages=STAGES)
    assert results_of(folder) == results_of(tmp_path / "fresh-out")
    # the base's units did not depend on training: reused
    assert units_of(folder)[("base", "evaluate:en")] == units_of(finished)[("base", "evaluate:en")]
    # the old adapter is kept until gc, which says what it frees and frees it
    stale = folder / "runs" / ".stale"
    assert any(stale.iterdir())
    assert main(["gc", str(path), "--out", str(folder), "--dry-run"]) == 0
    assert "would free" in capsys.readouterr().out and stale.exists()
    assert main(["gc", str(path), "--out", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "freed" in out and "MB" in out and "rows" in out
    assert not stale.exists()
    assert results_of(folder) == results_of(tmp_path / "fresh-out")


def test_gc_frees_runs_and_languages_the_study_dropped(
    finished: Path, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    folder = tmp_path / "shrunk"
    shutil.copytree(finished, folder)
    study = small_study(tiny_model_dir, techniques=["lora", "dora"])
    run_study(write_study(tmp_path, study), folder, stages=STAGES)
    study = small_study(tiny_model_dir)
    study["evaluation"]["languages"] = ["en"]
    path = write_study(tmp_path, study)
    results = run_study(path, folder, stages=(*STAGES, "report"))
    # dropped results stay on disk but out of the results, the analysis and the report
    assert set(results.runs["run_id"]) == {"lora-s0"}
    assert (folder / "runs" / "dora-s0").is_dir()
    with Store(folder / "results.sqlite") as store:
        assert store.query("SELECT COUNT(*) FROM metrics WHERE run_id='dora-s0'")[0][0] > 0
        scored = {r[0] for r in store.query("SELECT language FROM analysis WHERE measure='probe'")}
    assert scored <= {""}
    report = (folder / "report" / "report.md").read_text(encoding="utf-8")
    assert "dora" not in report.lower()
    assert main(["gc", str(path), "--out", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "1 runs no longer planned" in out
    assert not (folder / "runs" / "dora-s0").exists()
    with Store(folder / "results.sqlite") as store:
        assert store.query("SELECT COUNT(*) FROM metrics WHERE run_id='dora-s0'")[0][0] == 0
        assert store.query("SELECT COUNT(*) FROM metrics WHERE language='de'")[0][0] == 0
    (tmp_path / "fresh").mkdir()
    run_study(write_study(tmp_path / "fresh", study), tmp_path / "fresh-out", stages=STAGES)
    assert results_of(folder) == results_of(tmp_path / "fresh-out")


def test_plan_writes_nothing_not_even_the_folder(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_study(tmp_path, small_study(tiny_model_dir))
    before = snapshot(tmp_path)
    assert main(["plan", str(path), "--out", str(tmp_path / "nowhere")]) == 0
    out = capsys.readouterr().out
    assert "new" in out and "not created yet" in out
    assert not (tmp_path / "nowhere").exists()
    assert snapshot(tmp_path) == before


def test_plan_of_a_finished_study_is_all_done(
    finished: Path, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Batch size, device and progress options are not inputs of any unit."""
    study = small_study(tiny_model_dir)
    study["evaluation"]["batch_size"] = 2
    before = snapshot(finished)
    assert main(["plan", str(write_study(tmp_path, study)), "--out", str(finished)]) == 0
    out = capsys.readouterr().out
    assert "0 new, 0 stale, 0 failed" in out
    assert snapshot(finished) == before


def test_keys_name_exactly_the_inputs_that_change_results(tiny_model_dir: Path) -> None:
    base = small_study(tiny_model_dir)

    def keys(study: dict[str, Any]) -> tuple[str, str]:
        parsed = parse_study(study)
        run = plan_study(parsed)[0]
        return train_key(parsed, run), evaluate_key(parsed, run, "de")

    reference = keys(base)
    same = {
        ("model", "device"): "cpu",
        ("evaluation", "batch_size"): 1,
        ("evaluation", "precision"): "fp32",  # the default: keys of studies from before it
        ("analysis", "alpha"): 0.1,
        ("analysis", "bootstrap_resamples"): 300,
        ("executor", "kind"): "local",
    }
    for (section, name), value in same.items():
        study = copy.deepcopy(base)
        study.setdefault(section, {})[name] = value
        assert keys(study) == reference, (section, name)
    changed_train = {
        ("training", "steps"): 3,
        ("training", "threads"): 2,
        ("training", "max_length"): 48,
        ("data", "split_seed"): 1,
        ("data", "items_per_language"): 10,
        ("budget", "rank"): 2,
    }
    for (section, name), value in changed_train.items():
        study = copy.deepcopy(base)
        study[section][name] = value
        new = keys(study)
        assert new[0] != reference[0] and new[1] != reference[1], (section, name)
    study = copy.deepcopy(base)
    study["evaluation"]["max_new_tokens"] = 5
    assert keys(study)[0] == reference[0] and keys(study)[1] != reference[1]
    study = copy.deepcopy(base)
    study["training"]["seeds"] = [1, 0]  # another seed in front: seed 0's run is unchanged
    parsed = parse_study(study)
    run = next(r for r in plan_study(parsed) if r.seed == 0)
    assert train_key(parsed, run) == reference[0]


def test_scores_do_not_depend_on_the_batch_size(tiny_model_dir: Path) -> None:
    """Why evaluation.batch_size is in no key: same scores at batch 1 and 16 (float rounding)."""
    from whichlora.models.scoring import load_scoring_model
    from whichlora.study.datasets import evaluation_set, training_data

    study = parse_study(small_study(tiny_model_dir))
    evalset = evaluation_set(study, training_data(study)[1])
    model, tokenizer = load_scoring_model(study.model, None, merge=True)
    from whichlora.evaluate.suite import evaluate_model

    results = {}
    for batch in (1, 16):
        result = evaluate_model(model, tokenizer, evalset, "base", batch_size=batch)
        results[batch] = {
            (e["language"], e["metric"], e["example_id"]): e["value"] for e in result.examples
        }
    assert results[1].keys() == results[16].keys()
    for key, value in results[1].items():
        assert math.isclose(value, results[16][key], rel_tol=1e-4, abs_tol=1e-4), key


def test_plan_estimates_new_units_from_the_study_own_finished_ones(
    finished: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Once units of a kind have run, their measured seconds price the new ones."""
    import shutil

    from whichlora.study.context import open_study
    from whichlora.study.status import unit_estimates, unit_states

    folder = tmp_path / "copy"
    shutil.copytree(finished, folder)
    study = small_study(tiny_model_dir, techniques=["lora", "dora"])
    (tmp_path / "ext").mkdir()
    ctx = open_study(write_study(tmp_path / "ext", study), folder, locked=False, create=False)
    try:
        measured = dict(
            ((r, st), sec)
            for r, st, sec in ctx.store.query("SELECT run_id, stage, seconds FROM units")
        )
        estimates = unit_estimates(ctx, unit_states(ctx))
    finally:
        ctx.close()
    per_step = measured[("lora-s0", "train")] / study["training"]["steps"]
    assert estimates[("dora-s0", "train")] == pytest.approx(per_step * study["training"]["steps"])
    scored = [sec for (_, st), sec in measured.items() if st == "evaluate:de"]  # base, lora
    assert estimates[("dora-s0", "evaluate:de")] == pytest.approx(sum(scored) / len(scored))
