"""Resume inside a run: interrupted after step k and resumed from its last checkpoint, a run ends
with exactly the adapter and the loss curve of an uninterrupted one."""

from __future__ import annotations

import json
import os
import random
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from whichlora.config.study import parse_study
from whichlora.data.records import Record
from whichlora.errors import WhichloraError
from whichlora.techniques import REGISTRY
from whichlora.train.checkpoint import PROGRESS_FILE, Checkpointer, checkpoint_root
from whichlora.train.loop import LOG_FILE, train_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Interrupted(Exception):
    """Stands for a kill: raised from `on_step` after the given step."""


def stop_after(k: int) -> Callable[[int, float], None]:
    def on_step(step: int, loss: float) -> None:
        if step == k:
            raise Interrupted(step)

    return on_step


def outcome(out_dir: Path) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]], dict]:
    """The adapter tensors, the logged rows without wall-clock seconds, the adapter config."""
    from safetensors.torch import load_file

    log = json.loads((out_dir / LOG_FILE).read_text())
    rows = [{k: v for k, v in row.items() if k != "seconds"} for row in log["steps"]]
    weights = load_file(out_dir / "adapter" / "adapter_model.safetensors")
    return weights, rows, log["adapter_config"]


def assert_same(run: Path, reference: Path) -> None:
    weights, rows, config = outcome(run)
    ref_weights, ref_rows, ref_config = outcome(reference)
    assert rows == ref_rows
    assert config == ref_config
    assert weights.keys() == ref_weights.keys() and weights
    for key, tensor in weights.items():
        assert torch.equal(tensor, ref_weights[key]), key


def assert_clean(parent: Path) -> None:
    assert not list(parent.rglob(".tmp-*")) and not list(parent.rglob("*.tmp"))
    assert not [p for p in parent.iterdir() if p.name.endswith(".ckpt")]


@pytest.fixture
def train(
    tmp_path: Path, records: list[Record], fresh_model: Any, tiny_request: Any
) -> Callable[..., dict[str, Any]]:
    def run(technique: str, name: str, on_step: Any = None, **overrides: Any) -> dict[str, Any]:
        request = tiny_request(technique, steps=5, **overrides)
        return train_adapter(
            request, records, tmp_path / name, loaded=fresh_model(), on_step=on_step
        )

    return run


# Every technique, with request overrides where a case needs them: grad_accum 2 checks that the
# data order goes on where it stopped (not one batch per step); AdaLoRA's learning rate is one at
# which the resumed run differs unless the rank allocator's importance averages are restored.
OVERRIDES: dict[str, dict[str, Any]] = {
    "lora": {"grad_accum": 2},
    "adalora": {"learning_rate": 1e-2},
    # CorDA and LoRA-GA read a fixed number of batches first: two are enough for the tiny model.
    "corda": {"options": {"batches": 2}},
    "loraga": {"options": {"batches": 2}},
}
CASES = [(name, OVERRIDES.get(name, {})) for name in sorted(REGISTRY)]


@pytest.mark.parametrize(("technique", "overrides"), CASES, ids=[c[0] for c in CASES])
def test_interrupted_and_resumed_run_ends_as_uninterrupted(
    technique: str, overrides: dict[str, Any], train: Any, tmp_path: Path
) -> None:
    train(technique, "reference", checkpoint_every=None, **overrides)
    # Interrupted after step 3: the checkpoint of step 2 is resumed and step 3 is redone.
    with pytest.raises(Interrupted):
        train(technique, "run", stop_after(3), checkpoint_every=2, **overrides)
    saved = checkpoint_root(tmp_path / "run")
    assert [p.name for p in saved.iterdir()] == ["step-00000002"]
    assert json.loads((saved / "step-00000002" / PROGRESS_FILE).read_text())["step"] == 2
    assert not (tmp_path / "run").exists()
    seen: list[int] = []
    train(technique, "run", lambda step, _: seen.append(step), checkpoint_every=2, **overrides)
    assert seen == [1, 2, 3, 4, 5]  # restored steps are reported too: progress counts from 0
    assert_same(tmp_path / "run", tmp_path / "reference")
    assert_clean(tmp_path)


def test_fp16_run_resumes_exactly_with_its_loss_scale(train: Any, tmp_path: Path) -> None:
    train("lora", "reference", checkpoint_every=None, precision="fp16")
    with pytest.raises(Interrupted):
        train("lora", "run", stop_after(3), checkpoint_every=2, precision="fp16")
    state = torch.load(
        checkpoint_root(tmp_path / "run") / "step-00000002" / "state.pt", weights_only=True
    )
    assert state["scaler"]["scale"] > 1  # the loss scale travels with the checkpoint
    train("lora", "run", checkpoint_every=2, precision="fp16")
    assert_same(tmp_path / "run", tmp_path / "reference")


@pytest.mark.slow
def test_resume_may_switch_gradient_checkpointing_on(train: Any, tmp_path: Path) -> None:
    """A run that ran out of memory resumes with checkpointed activations: same result."""
    train("lora", "reference", checkpoint_every=None)
    with pytest.raises(Interrupted):
        train("lora", "run", stop_after(3), checkpoint_every=2)
    train("lora", "run", checkpoint_every=2, gradient_checkpointing=True)
    assert_same(tmp_path / "run", tmp_path / "reference")


def test_interrupted_twice_and_checkpoint_ignored_when_request_changes(
    train: Any, tmp_path: Path
) -> None:
    train("lora", "reference", checkpoint_every=None)
    with pytest.raises(Interrupted):
        train("lora", "run", stop_after(3), checkpoint_every=2)
    with pytest.raises(Interrupted):  # resumed at 2, checkpointed at 4, stopped there
        train("lora", "run", stop_after(4), checkpoint_every=2)
    assert [p.name for p in checkpoint_root(tmp_path / "run").iterdir()] == ["step-00000004"]
    train("lora", "run", checkpoint_every=2)
    assert_same(tmp_path / "run", tmp_path / "reference")
    assert_clean(tmp_path)

    # A checkpoint of another request (here another learning rate) never leaks into a run.
    with pytest.raises(Interrupted):
        train("lora", "other", stop_after(3), checkpoint_every=2, learning_rate=5e-3)
    train("lora", "other", checkpoint_every=None)
    assert_same(tmp_path / "other", tmp_path / "reference")
    assert_clean(tmp_path)


def test_auto_turns_on_only_for_long_runs(tmp_path: Path) -> None:
    short = Checkpointer(tmp_path / "run", "auto", 100, dict)
    assert not any(short.due(step, 0.1 * step) for step in range(1, 100))  # 10 s in all
    long = Checkpointer(tmp_path / "run", "auto", 1000, dict)
    assert [s for s in range(1, 1000) if long.due(s, 2.0 * s)] == list(range(150, 1000, 150))
    never = Checkpointer(tmp_path / "run", None, 1000, dict)
    assert not any(never.due(step, 100.0 * step) for step in range(1, 1000))


@pytest.mark.parametrize("value", [0, -1, "sometimes", 2.5, True])
def test_bad_checkpoint_every_is_a_config_error(value: Any) -> None:
    with pytest.raises(WhichloraError) as caught:
        parse_study({"techniques": ["lora"], "training": {"checkpoint_every": value}})
    assert "'training.checkpoint_every'" in str(caught.value)


@pytest.mark.parametrize(("value", "parsed"), [(1, 1), (50, 50), ("auto", "auto"), (None, None)])
def test_checkpoint_every_values(value: Any, parsed: Any) -> None:
    from whichlora.study.plan import plan_study

    study = parse_study({"techniques": ["lora"], "training": {"checkpoint_every": value}})
    assert study.training.checkpoint_every == parsed
    assert plan_study(study)[0].request.checkpoint_every == parsed


# ------------------------------------------------------------------------ a real SIGKILL


def test_sigkill_during_training_then_resume(
    tmp_path: Path,
    records: list[Record],
    tiny_model_dir: Path,
    tiny_request: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A forked child trains with a checkpoint after every step and is killed with SIGKILL once
    it has checkpointed step 2 or later (at a seeded random moment of the steps after); the rerun
    ends exactly as the uninterrupted run, and no debris is left. On the CPU even where there is
    a GPU: a forked child cannot use CUDA its parent touched."""
    from whichlora.models.loading import load_model

    def fresh_model() -> Any:
        return load_model(str(tiny_model_dir), device="cpu")

    request = tiny_request("lora", steps=8, checkpoint_every=1, device="cpu")
    train_adapter(
        tiny_request("lora", steps=8, checkpoint_every=None, device="cpu"),
        records,
        tmp_path / "reference",
        loaded=fresh_model(),
    )
    out_dir, log = tmp_path / "run", tmp_path / "child.log"
    loaded = fresh_model()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 70
        try:
            handle = open(log, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
            os.dup2(handle.fileno(), 1)
            os.dup2(handle.fileno(), 2)
            torch.set_num_threads(1)
            # slow steps, so the parent sees the checkpoints long before the run could finish
            train_adapter(
                request, records, out_dir, loaded=loaded, on_step=lambda *_: time.sleep(0.3)
            )
            code = 0
        except BaseException:  # noqa: BLE001 - report whatever happened, then leave
            traceback.print_exc()
        finally:
            os._exit(code)
    saved = checkpoint_root(out_dir)
    deadline = time.monotonic() + 120
    try:
        while not any(int(p.name.split("-")[1]) >= 2 for p in _steps(saved)):
            assert time.monotonic() < deadline, log.read_text()
            assert os.waitpid(pid, os.WNOHANG) == (0, 0), log.read_text()
            time.sleep(0.01)
        time.sleep(random.Random(20240611).uniform(0.0, 0.6))  # into a step or a write
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert not (out_dir / LOG_FILE).exists(), "the child finished before the kill"
    assert list(tmp_path.glob(".tmp-run-*")), "the killed child's scratch folder"
    with caplog.at_level("INFO", logger="whichlora.train"):
        train_adapter(request, records, out_dir, loaded=fresh_model())
    assert "resuming from checkpoint" in caplog.text
    assert_same(out_dir, tmp_path / "reference")
    assert_clean(tmp_path)


def _steps(root: Path) -> list[Path]:
    return [p for p in root.glob("step-*")] if root.is_dir() else []
