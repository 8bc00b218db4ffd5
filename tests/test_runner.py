"""The study runner end to end on a tiny model: stages, resume after kill -9, lock, Ray (one
local instance for the module; a worker SIGKILLed mid-training)."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
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


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """One local Ray instance for every Ray test here: starting one costs seconds."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _kill_when_checkpointed(run_log: Path, checkpoints: Path, killed: list[int]) -> None:
    """SIGKILL the Ray worker training a run once its first checkpoint exists: mid-training.
    The worker's process id is the one the run's log names (train_one writes it)."""
    deadline = time.monotonic() + 120
    pid = None
    while time.monotonic() < deadline:
        if pid is None and run_log.is_file():
            found = re.search(r"in process (\d+)", run_log.read_text(encoding="utf-8"))
            pid = int(found.group(1)) if found else None
        if pid is not None and any(checkpoints.glob("step-*")):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.005)


def _only_in_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make training, scoring and embedding impossible in this (the driver's) process: under
    Ray they must run in workers, which import their own copies of these modules."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the driver computed a unit that belongs in a Ray task")

    monkeypatch.setattr("whichlora.train.loop.train_adapter", refuse)
    monkeypatch.setattr("whichlora.models.scoring.shared_scoring_models", refuse)
    monkeypatch.setattr("whichlora.analyze.representations.layer_representations", refuse)


def _ray_study(model_dir: Path, **executor: Any) -> dict[str, Any]:
    study = tiny_study(
        model_dir,
        techniques=["lora", "dora"],
        executor={"kind": "ray", "cpus_per_run": 1, **executor},
    )
    # enough steps that a kill after the first checkpoint lands mid-training; little to score
    study["training"].update(steps=16, checkpoint_every=2)
    study["evaluation"].update(languages=["en", "de"], items_per_language=4, generation_items=1)
    return study


@pytest.mark.slow  # long: `make test-slow`
def test_ray_survives_a_worker_killed_mid_training(
    tmp_path: Path, tiny_model_dir: Path, local_ray: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGKILLed training worker (no retries left) becomes a failed unit with the reason;
    the study goes on (the other run trains and every model is scored, in Ray tasks); the next
    call retries the run, which resumes from its checkpoint, and the study ends with exactly the
    results of an uninterrupted local study."""
    remote = _ray_study(tiny_model_dir, max_retries=0)
    local = {**remote, "executor": {"kind": "local"}}
    run_study(write_study(tmp_path, local), tmp_path / "local", stages=("train", "evaluate"))
    (tmp_path / "ray").mkdir()
    path = write_study(tmp_path / "ray", remote)
    out = tmp_path / "ray-out"
    killed: list[int] = []
    killer = threading.Thread(
        target=_kill_when_checkpointed,
        args=(out / "runs" / "lora-s0.log", out / "runs" / ".lora-s0.ckpt", killed),
    )
    killer.start()
    _only_in_workers(monkeypatch)
    try:
        run_study(path, out, stages=("train", "evaluate"), progress=False)
    finally:
        killer.join()
    assert killed, "the worker was not killed mid-training"
    with Store(out / "results.sqlite") as store:
        assert store.unit_status("lora-s0", "train") == "failed"
        error = store.unit_error("lora-s0", "train") or ""
        assert error.startswith("worker lost") and "Error" in error, error
        assert store.unit_status("dora-s0", "train") == "done"
        assert store.unit_status("dora-s0", "evaluate:de") == "done"
        assert store.unit_status("base", "evaluate:de") == "done"
    # resumed: the lost run is retried (no --retry-failed needed) and resumes from its checkpoint
    results = run_study(path, out, stages=("train", "evaluate"), progress=False)
    assert set(results.costs["run_id"]) == {"lora-s0", "dora-s0"}
    local_dump, ray_dump = results_of(tmp_path / "local"), results_of(out)
    assert ray_dump["metrics"] == local_dump["metrics"]
    assert ray_dump["training"] == local_dump["training"]


@pytest.mark.slow
def test_ray_retries_a_killed_worker_and_the_run_resumes(
    tmp_path: Path, tiny_model_dir: Path, local_ray: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a retry left, a SIGKILLed worker is invisible in the results: Ray reruns the task,
    the run resumes from its checkpoint, and nothing is recorded as failed. The analysis' models
    are embedded in Ray tasks and its measures equal the local study's."""
    remote = _ray_study(tiny_model_dir, max_retries=1)
    local = {**remote, "executor": {"kind": "local"}}
    stages = ("train", "evaluate", "analyze")
    run_study(write_study(tmp_path, local), tmp_path / "local", stages=stages)
    (tmp_path / "ray").mkdir()
    out = tmp_path / "ray-out"
    killed: list[int] = []
    killer = threading.Thread(
        target=_kill_when_checkpointed,
        args=(out / "runs" / "lora-s0.log", out / "runs" / ".lora-s0.ckpt", killed),
    )
    killer.start()
    _only_in_workers(monkeypatch)
    try:
        run_study(write_study(tmp_path / "ray", remote), out, stages=stages, progress=False)
    finally:
        killer.join()
    assert killed
    with Store(out / "results.sqlite") as store:
        assert {store.unit_status(r, "train") for r in ("lora-s0", "dora-s0")} == {"done"}
        assert store.unit_status("study", "analyze") == "done"
    local_dump, ray_dump = results_of(tmp_path / "local"), results_of(out)
    for table in ("training", "metrics", "analysis"):
        assert ray_dump[table] == local_dump[table], table
    reps = {p.name for p in (out / "analysis" / "reps").glob("*.npz")}
    assert reps == {"base.npz", "lora-s0.npz", "dora-s0.npz"}


@pytest.mark.slow  # long: `make test-slow`
def test_ray_trains_a_two_process_run_in_a_worker_whose_threads_ran(
    tmp_path: Path, tiny_model_dir: Path, local_ray: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ray worker that has run a parallel region on two threads (as after scoring a model)
    trains a run of two processes, each on two threads: processes forked from that worker hung
    in their first parallel region. Every idle worker is warmed; the run's log names the
    worker that trained it."""

    def warm() -> int:
        import torch

        torch.set_num_threads(2)
        torch.randn(256, 256) @ torch.randn(256, 256)
        time.sleep(1.0)  # the two run at once: two workers
        return os.getpid()

    task = local_ray.remote(num_cpus=1)(warm)
    warmed = set(local_ray.get([task.remote() for _ in range(2)]))
    study = tiny_study(
        tiny_model_dir, techniques=["lora"], executor={"kind": "ray", "cpus_per_run": 2}
    )
    study["training"].update(processes=2, batch_size=2, threads=2, stall_timeout=120)
    out = tmp_path / "out"
    _only_in_workers(monkeypatch)
    run_study(write_study(tmp_path, study), out, stages=("train",), progress=False)
    with Store(out / "results.sqlite") as store:
        assert store.unit_status("lora-s0", "train") == "done", store.unit_error("lora-s0", "train")
    log = (out / "runs" / "lora-s0.log").read_text(encoding="utf-8")
    worker = re.search(r"in process (\d+)", log)
    assert worker and int(worker.group(1)) in warmed, (warmed, log)
    assert "2 processes ready" in log and "(2 threads each)" in log


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
