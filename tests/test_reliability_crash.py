"""Crash recovery and determinism on the real CLI entry point.

A study is killed with SIGKILL at seeded random moments (training, evaluation, analysis or report
writing: wherever the delay lands), resumed, and must end with exactly the store an uninterrupted
run produces, no temp file anywhere, and every planned run recorded once. Each attempt is a child
forked from this process, so it skips the interpreter start (seconds of imports) and many kills
fit in the default suite; the child runs `whichlora.cli.main`, as `whichlora run` does.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_runner import results_of, tiny_study

from whichlora.store import Store

SEED = 20240611


@dataclass
class Reference:
    study: Path
    folder: Path
    seconds: float
    planned: list[str]


def crash_study(model_dir: Path) -> dict[str, Any]:
    """Two techniques, three steps, small evaluation and analysis: ~15 s end to end on 2 cores.
    On the CPU even where there is a GPU: a forked child cannot use CUDA its parent touched."""
    return tiny_study(
        model_dir,
        model={"id": str(model_dir), "device": "cpu"},
        techniques=["lora", "dora"],
        data={"languages": ["de", "sw"], "items_per_language": 12},
        evaluation={
            "languages": ["en", "de", "sw"],
            "items_per_language": 4,
            "generation_items": 1,
            "max_new_tokens": 4,
        },
        analysis={"sentences_per_language": 4, "bootstrap_resamples": 100},
    )


def warm_imports() -> None:
    """Import what a run imports, once, here: forked children inherit it, so a kill lands in real
    work (training, scoring, analysis, report) instead of in seconds of imports."""
    import matplotlib.pyplot  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    import whichlora.analyze.stage  # noqa: F401
    import whichlora.evaluate.suite  # noqa: F401
    import whichlora.report.build  # noqa: F401
    import whichlora.study.executors  # noqa: F401
    import whichlora.train.loop  # noqa: F401


def spawn(study: Path, out: Path, log: Path) -> int:
    """Fork a child that runs `whichlora run STUDY --out OUT --quiet`; return its pid."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 70
        try:
            handle = open(log, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
            os.dup2(handle.fileno(), 1)
            os.dup2(handle.fileno(), 2)
            sys.stdout = sys.stderr = handle
            import torch

            torch.set_num_threads(1)  # no thread pool inherited across fork
            from whichlora.cli import main

            code = main(["run", str(study), "--out", str(out), "--quiet"])
        except BaseException:  # noqa: BLE001 - report whatever happened, then leave
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def wait(pid: int, timeout: float) -> int | None:
    """The child's exit status, or None if it is still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def run_to_end(study: Path, out: Path, log: Path, timeout: float = 400) -> None:
    pid = spawn(study, out, log)
    code = wait(pid, timeout)
    if code is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail(f"study did not finish in {timeout} s; log:\n{log.read_text()[-3000:]}")
    assert code == 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """One uninterrupted run, shared by every test here."""
    warm_imports()
    root = tmp_path_factory.mktemp("reference")
    study = root / "study.yaml"
    study.write_text(yaml.safe_dump(crash_study(tiny_model_dir)), encoding="utf-8")
    started = time.monotonic()
    run_to_end(study, root / "clean", root / "clean.log")
    seconds = time.monotonic() - started
    with Store(root / "clean" / "results.sqlite") as store:
        planned = [row[0] for row in store.query("SELECT run_id FROM runs")]
    assert sorted(planned) == ["dora-s0", "lora-s0"]
    return Reference(study=study, folder=root / "clean", seconds=seconds, planned=planned)


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".tmp-") or p.suffix == ".tmp"]


def check_complete(folder: Path, reference: Reference, languages: list[str] | None = None) -> None:
    """Same store as the uninterrupted run, nothing half-written, every run exactly once."""
    assert leftovers(folder) == []
    assert results_of(folder) == results_of(reference.folder)
    with Store(folder / "results.sqlite") as store:
        runs = [row[0] for row in store.query("SELECT run_id FROM runs")]
        units = store.query("SELECT run_id, stage, status FROM units")
    assert sorted(runs) == sorted(reference.planned)
    languages = languages or crash_study(Path("."))["evaluation"]["languages"]
    stages = [("train", [])] + [(f"evaluate:{lang}", ["base"]) for lang in languages]
    for stage, expected in stages:
        done = sorted(r for r, s, status in units if s == stage and status == "done")
        assert done == sorted([*expected, *reference.planned]), (stage, units)
    known = {*reference.planned, "base", "study"}
    assert {run_id for run_id, _, _ in units} <= known, units
    assert (folder / "report" / "report.html").is_file()
    for run_id in reference.planned:
        assert (folder / "runs" / run_id / "adapter" / "adapter_config.json").is_file()


def kill_and_resume(reference: Reference, folder: Path, kills: int, seed: int) -> dict[str, Any]:
    """Start the study, SIGKILL it after a seeded random delay, again and again, then resume it
    to the end. Returns what happened, for the failure message."""
    rng = random.Random(seed)
    log = folder.parent / f"{folder.name}.log"
    landed: list[float] = []
    finished_early = 0
    while len(landed) < kills:
        assert finished_early <= 3 * kills, "the study kept finishing before the kill"
        # The k-th of n delays is uniform in [0.1, 1] x k/n of the uninterrupted duration: early
        # kills hit training and scoring, and since each resume goes on from the last finished
        # unit, later, longer ones reach analysis and report writing.
        window = reference.seconds * (len(landed) + 1) / kills
        delay = rng.uniform(0.1, 1.0) * window
        pid = spawn(reference.study, folder, log)
        code = wait(pid, delay)
        if code is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            landed.append(round(delay, 2))
        else:
            assert code == 0, log.read_text()[-3000:]
            finished_early += 1
    run_to_end(reference.study, folder, log)
    return {"kills": landed, "finished_before_a_kill": finished_early}


def test_sigkill_at_random_points_then_resume(reference: Reference, tmp_path: Path) -> None:
    # three kills in the default suite (time budget); twenty in the slow test below
    history = kill_and_resume(reference, tmp_path / "killed", kills=3, seed=SEED)
    assert len(history["kills"]) == 3
    check_complete(tmp_path / "killed", reference)


@pytest.mark.slow
def test_sigkill_twenty_times_then_resume(reference: Reference, tmp_path: Path) -> None:
    """Four studies killed five times each: twenty kills spread over the whole timeline."""
    total = 0
    for round_ in range(4):
        folder = tmp_path / f"killed-{round_}"
        history = kill_and_resume(reference, folder, kills=5, seed=SEED + 1 + round_)
        total += len(history["kills"])
        check_complete(folder, reference)
    assert total == 20


@pytest.fixture(scope="module")
def extended(reference: Reference, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The reference study plus a seed, a technique and a language, run fresh; `seconds` is how
    long extending the finished reference takes (the window the kills land in)."""
    import shutil

    root = tmp_path_factory.mktemp("extended")
    study = yaml.safe_load(reference.study.read_text(encoding="utf-8"))
    study["training"]["seeds"] = [0, 1]
    study["techniques"] = ["lora", "dora", "rslora"]
    study["evaluation"]["languages"] = ["en", "de", "sw", "yo"]
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    run_to_end(path, root / "fresh", root / "fresh.log")
    shutil.copytree(reference.folder, root / "grown")
    started = time.monotonic()
    run_to_end(path, root / "grown", root / "grown.log")
    seconds = time.monotonic() - started
    with Store(root / "fresh" / "results.sqlite") as store:
        planned = [row[0] for row in store.query("SELECT run_id FROM runs")]
    ext = Reference(study=path, folder=root / "fresh", seconds=seconds, planned=planned)
    check_complete(root / "grown", ext, languages=study["evaluation"]["languages"])
    return ext


@pytest.mark.slow  # long: `make test-slow`
def test_sigkill_while_extending_a_study_then_resume(
    reference: Reference, extended: Reference, tmp_path: Path
) -> None:
    """Kill -9 a study while it grows (new runs train, old runs score a new language): the
    resumed store equals a fresh run of the extended study, nothing lost or duplicated."""
    import shutil

    folder = tmp_path / "killed"
    shutil.copytree(reference.folder, folder)
    history = kill_and_resume(extended, folder, kills=2, seed=SEED + 99)
    assert len(history["kills"]) == 2
    languages = yaml.safe_load(extended.study.read_text(encoding="utf-8"))["evaluation"]
    check_complete(folder, extended, languages=languages["languages"])


def test_same_study_same_seed_same_results(reference: Reference, tmp_path: Path) -> None:
    """Two fresh folders, the same study and seed: identical metrics, down to the last digit."""
    run_to_end(reference.study, tmp_path / "again", tmp_path / "again.log")
    again, first = results_of(tmp_path / "again"), results_of(reference.folder)
    assert again["metrics"] and again["metrics"] == first["metrics"]
    assert again["examples"] == first["examples"]
    assert again["generations"] == first["generations"]
    assert again == first  # training losses, costs (less timings), analysis, significance


def test_study_threads_hold_for_a_resumed_process(reference: Reference) -> None:
    """A process that resumes after training (so never enters the training loop, which used to
    be the only place `training.threads` was applied) must score with the study's thread count:
    CPU reductions depend on it, and the resumed results must match the uninterrupted ones."""
    import torch

    from whichlora.study.context import open_study
    from whichlora.study.runner import run_all

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    ctx = open_study(reference.folder, locked=False, create=False)
    try:
        run_all(ctx, stages=(), progress=False)
        assert torch.get_num_threads() == ctx.study.training.threads == 1
    finally:
        ctx.close()
        torch.set_num_threads(before)
