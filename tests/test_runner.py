"""The study runner end to end on a tiny model: stages, resume after kill -9, lock, Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from whichlora.errors import WhichloraError
from whichlora.store import Store
from whichlora.study.api import run_study
from whichlora.study.context import open_study


def tiny_study(model_dir: Path, **overrides: Any) -> dict[str, Any]:
    study: dict[str, Any] = {
        "name": "tiny",
        "model": str(model_dir),
        "techniques": ["lora", "pissa", {"name": "vera", "rank": 16}],
        "budget": {"rank": 4},
        "data": {"languages": ["de", "sw"], "items_per_language": 24},
        "training": {"steps": 3, "batch_size": 4, "max_length": 64, "seeds": [0], "threads": 1},
        "evaluation": {
            "languages": ["en", "de", "sw", "yo"],
            "items_per_language": 6,
            "generation_items": 2,
            "max_new_tokens": 6,
        },
        "analysis": {"sentences_per_language": 8, "bootstrap_resamples": 200},
    }
    study.update(overrides)
    return study


def write_study(tmp_path: Path, study: dict[str, Any]) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


def results_of(study_dir: Path) -> dict[str, Any]:
    with Store(study_dir / "results.sqlite") as store:
        return store.dump()


def test_run_study_end_to_end(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = write_study(tmp_path, tiny_study(tiny_model_dir))
    results = run_study(path, tmp_path / "out", stages=("train", "evaluate"))
    assert set(results.runs["run_id"]) == {"lora-s0", "pissa-s0", "vera-s0"}
    evaluated = set(results.metrics["run_id"])
    assert evaluated == {"base", "lora-s0", "pissa-s0", "vera-s0"}
    assert {"mc_acc", "nll", "chrf", "fidelity"} <= set(results.metrics["metric"])
    assert len(results.training) == 3 * 3
    deltas = results.deltas()
    assert set(deltas["technique"]) == {"lora", "pissa", "vera"}
    # every adapter loads with plain PEFT
    for run_id in ("lora-s0", "pissa-s0", "vera-s0"):
        assert (tmp_path / "out" / "runs" / run_id / "adapter" / "adapter_config.json").is_file()
    # a second call does nothing new and changes nothing
    before = results_of(tmp_path / "out")
    run_study(path, tmp_path / "out", stages=("train", "evaluate"))
    assert results_of(tmp_path / "out") == before


def test_second_process_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = write_study(tmp_path, tiny_study(tiny_model_dir))
    ctx = open_study(path, tmp_path / "out")
    try:
        with pytest.raises(WhichloraError, match="in use by another whichlora process"):
            open_study(path, tmp_path / "out")
    finally:
        ctx.close()


def test_a_changed_study_that_discards_nothing_opens(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Nothing finished yet: a changed setting discards nothing, so no --yes is needed, and
    resolved.yaml follows the study file."""
    path = write_study(tmp_path, tiny_study(tiny_model_dir))
    open_study(path, tmp_path / "out").close()
    write_study(tmp_path, tiny_study(tiny_model_dir, budget={"rank": 2}))
    open_study(path, tmp_path / "out").close()
    resolved = yaml.safe_load((tmp_path / "out" / "resolved.yaml").read_text(encoding="utf-8"))
    assert resolved["budget"]["rank"] == 2


def test_harness_tasks_are_scored_for_base_and_runs(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    data = Path(__file__).parent / "data" / "harness"
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    text = (data / "tinyqa_en.yaml").read_text(encoding="utf-8")
    (tasks / "tinyqa_en.yaml").write_text(
        text.replace("DATA_FILE", str(data / "tinyqa.jsonl")), encoding="utf-8"
    )
    study = tiny_study(tiny_model_dir, techniques=["lora"])
    study["evaluation"].update(harness_tasks=["tinyqa_en"], harness_include_path=str(tasks))
    results = run_study(
        write_study(tmp_path, study), tmp_path / "out", stages=("train", "evaluate")
    )
    harness = results.metrics[results.metrics["metric"] == "harness:tinyqa_en:acc"]
    assert set(harness["run_id"]) == {"base", "lora-s0"}
    assert (harness["n"] == 8).all()
    per_example = results.examples[results.examples["metric"] == "harness:tinyqa_en:acc"]
    assert len(per_example) == 2 * 8


def test_ray_executor_runs_two_runs_with_the_same_results_as_local(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    ray = pytest.importorskip("ray")
    techniques = ["lora", "dora"]
    local = write_study(tmp_path, tiny_study(tiny_model_dir, techniques=techniques))
    run_study(local, tmp_path / "local", stages=("train", "evaluate"))
    (tmp_path / "ray").mkdir()
    remote = tiny_study(
        tiny_model_dir, techniques=techniques, executor={"kind": "ray", "cpus_per_run": 1}
    )
    remote_path = tmp_path / "ray" / "study.yaml"
    remote_path.write_text(yaml.safe_dump(remote), encoding="utf-8")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = run_study(remote_path, tmp_path / "ray-out", stages=("train", "evaluate"))
    finally:
        ray.shutdown()
    assert set(results.costs["run_id"]) == {"lora-s0", "dora-s0"}
    local_dump, ray_dump = results_of(tmp_path / "local"), results_of(tmp_path / "ray-out")
    assert ray_dump["metrics"] == local_dump["metrics"]
    assert ray_dump["training"] == local_dump["training"]


@pytest.mark.parametrize("technique", ["dora", "vera", "adalora", "pissa"])
def test_merged_adapter_scores_like_the_unmerged_one(
    technique: str, tmp_path: Path, tiny_model_dir: Path, train_tiny: Any
) -> None:
    """Scoring merges each adapter into a fresh base: a plain model, same metrics."""
    import math

    from peft import PeftModel

    from whichlora.config.study import parse_study
    from whichlora.evaluate.suite import evaluate_model
    from whichlora.models.scoring import load_scoring_model
    from whichlora.study.datasets import evaluation_set, training_data

    overrides = {"rank": 16} if technique == "vera" else {}
    trained = train_tiny(technique, learning_rate=5e-2, steps=3, **overrides)
    results = {}
    for merge in (True, False):
        study = parse_study(
            tiny_study(
                tiny_model_dir,
                evaluation={
                    "languages": ["en", "de"],
                    "items_per_language": 4,
                    "generation_items": 1,
                    "max_new_tokens": 4,
                    "merge_adapters": merge,
                },
            )
        )
        adapter = trained.out_dir / "adapter"
        model, tokenizer = load_scoring_model(study.model, adapter, merge)
        assert isinstance(model, PeftModel) is not merge
        evalset = evaluation_set(study, training_data(study)[1])
        result = evaluate_model(model, tokenizer, evalset, "run", max_new_tokens=4)
        results[merge] = {(m["language"], m["metric"]): m["value"] for m in result.metrics}
    assert results[True].keys() == results[False].keys()
    for key, merged in results[True].items():
        assert math.isclose(merged, results[False][key], rel_tol=1e-4, abs_tol=1e-4), key
    base_model, _ = load_scoring_model(study.model, None, merge=True)
    assert not isinstance(base_model, PeftModel)
