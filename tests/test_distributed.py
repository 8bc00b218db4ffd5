"""One run over two gloo processes (accelerate DDP) against the same run in one process.

Two processes with batch_size B see the global batches one process with 2B sees, and the loss of
each step is normalised by the labelled tokens of the whole global batch, so the loss curve and
the adapter agree up to float rounding. Dropout is off: masks are drawn per process.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from whichlora.data.records import Record
from whichlora.train.loop import train_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def compare(
    tmp_path: Path,
    records: list[Record],
    tiny_request: Any,
    technique: str,
    grad_accum: int,
    **two_only: Any,
) -> None:
    common = {"steps": 3, "dropout": 0.0, "device": "cpu", "threads": 1, "grad_accum": grad_accum}
    one = train_adapter(tiny_request(technique, batch_size=4, **common), records, tmp_path / "one")
    seen: list[tuple[int, float]] = []
    two = train_adapter(
        tiny_request(technique, batch_size=2, processes=2, **common, **two_only),
        records,
        tmp_path / "two",
        on_step=lambda step, loss: seen.append((step, loss)),
    )
    assert two["summary"]["processes"] == 2 and two["summary"]["global_batch"] == 4 * grad_accum
    assert seen == [(s["step"], s["loss"]) for s in two["steps"]]  # progress from process 0
    for a, b in zip(one["steps"], two["steps"], strict=True):
        assert b["tokens"] == a["tokens"]  # the same global batches
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["objective"] == pytest.approx(a["objective"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    weights_one = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    weights_two = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert weights_one.keys() == weights_two.keys() and weights_one
    for key, tensor in weights_one.items():
        torch.testing.assert_close(weights_two[key], tensor, atol=1e-5, rtol=1e-4, msg=key)


def test_two_processes_train_what_one_process_trains_on_the_same_global_batch(
    tmp_path: Path, records: list[Record], tiny_request: Any
) -> None:
    """Per-process mean losses would differ here: the two halves of a batch hold different
    numbers of labelled tokens."""
    compare(tmp_path, records, tiny_request, "lora", grad_accum=1)


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "technique",
    ["adalora", *(pytest.param(t, marks=SLOW) for t in ("loraplus", "pissa", "dora"))],
)
def test_two_processes_with_hooks_own_optimizers_and_micro_batches(
    technique: str, tmp_path: Path, records: list[Record], tiny_request: Any
) -> None:
    """AdaLoRA reallocates ranks from gradients DDP has already averaged, LoRA+ brings its own
    optimizer, PiSSA rewrites the base at init; two micro-batches per step weigh by tokens."""
    compare(tmp_path, records, tiny_request, technique, grad_accum=2)


def test_processes_are_keyed_and_refuse_a_device_map(tiny_model_dir: Path) -> None:
    from whichlora.config.study import parse_study
    from whichlora.errors import WhichloraError
    from whichlora.study.keys import train_key
    from whichlora.study.plan import plan_study

    def key(**training: Any) -> str:
        study = parse_study(
            {"model": str(tiny_model_dir), "techniques": ["lora"], "training": training}
        )
        return train_key(study, plan_study(study)[0])

    assert key(processes=1) == key()  # the default leaves the key of earlier runs alone
    assert key(processes=2) != key()  # another global batch: another result
    assert key(processes=2, stall_timeout=None) == key(processes=2)  # when to give up: no key
    with pytest.raises(WhichloraError, match=r"training.processes > 1.*device_map"):
        parse_study(
            {
                "model": {"id": str(tiny_model_dir), "device_map": "auto"},
                "techniques": ["lora"],
                "training": {"processes": 2},
            }
        )
    with pytest.raises(WhichloraError, match=r"set gpus_per_run to 8"):
        parse_study(
            {
                "model": str(tiny_model_dir),
                "techniques": ["lora"],
                "training": {"processes": 8},
                "executor": {"kind": "ray", "gpus_per_run": 1},
            }
        )


def test_a_user_error_in_the_processes_is_the_same_clear_error(
    tmp_path: Path, records: list[Record], tiny_request: Any
) -> None:
    from whichlora.errors import WhichloraError

    request = tiny_request("lora", processes=2, device="cpu", threads=1, max_length=4)
    with pytest.raises(WhichloraError, match=r"^No training example has a response left"):
        train_adapter(request, records, tmp_path / "run")
    assert not (tmp_path / "run").exists()


RUN_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import SAMPLES
from whichlora.data.records import Record
from whichlora.train.loop import TrainRequest, train_adapter
records = [Record(id=f"s{{i}}", language=l, instruction=a, output=b)
           for i, (l, a, b) in enumerate(SAMPLES)]
progress = Path({progress!r})
request = TrainRequest(model={model!r}, steps=100000, batch_size=2, processes=2, device="cpu",
                       threads=1, rank=4, max_length=64, checkpoint_every=None)
if __name__ == "__main__":  # the run's processes import this file again
    train_adapter(request, records, Path({out!r}),
                  on_step=lambda step, loss: progress.write_text(str(step)))
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _descendants(pid: int) -> list[int]:
    """Children, grandchildren, ...: a forkserver's processes are the caller's grandchildren."""
    found, queue = [], [pid]
    while queue:
        children = _children(queue.pop())
        found += children
        queue += children
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_kill_9_of_the_run_ends_its_processes(tmp_path: Path, tiny_model_dir: Path) -> None:
    """An orphaned process would go on training and write the run folder under a resumed run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    progress, out = tmp_path / "progress", tmp_path / "run"
    script = tmp_path / "run.py"
    script.write_text(
        RUN_SCRIPT.format(
            tests=str(Path(__file__).parent),
            progress=str(progress),
            model=str(tiny_model_dir),
            out=str(out),
        )
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    proc = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": src})
    try:
        deadline = time.monotonic() + 300
        while not progress.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert progress.exists(), "the run never reported a step"
        workers = [pid for pid in _descendants(proc.pid) if _alive(pid)]
        assert len(workers) >= 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)
    assert not out.exists()


@pytest.mark.slow
def test_spawned_processes_as_on_gpus_train_the_same_run(
    tmp_path: Path, records: list[Record], tiny_request: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GPU runs spawn their processes (CUDA and fork do not mix): the spawn path, on CPU."""
    from whichlora.train import distributed

    monkeypatch.setattr(distributed, "start_method", lambda on_gpu: "spawn")
    compare(tmp_path, records, tiny_request, "lora", grad_accum=1)


@pytest.mark.slow
def test_two_processes_with_checkpointed_activations(
    tmp_path: Path, records: list[Record], tiny_request: Any
) -> None:
    """DDP's gradient hooks and recomputation in backward go together."""
    compare(tmp_path, records, tiny_request, "dora", grad_accum=2, gradient_checkpointing=True)


class Stop(Exception):
    """Raised from on_step: the caller stops the run."""


@pytest.mark.slow
def test_two_process_run_stopped_then_resumed_from_its_checkpoint(
    tmp_path: Path, records: list[Record], tiny_request: Any
) -> None:
    """A caller's exception in on_step stops every process (nothing written but the
    checkpoint), and the next attempt resumes from that checkpoint to the uninterrupted end.
    on_step runs beside the processes, so they may have gone a few steps further (and saved a
    later checkpoint). Dropout off: then no random draw differs between the processes."""
    from whichlora.train.checkpoint import checkpoint_root

    def request(**extra: Any) -> Any:
        return tiny_request(
            "lora", steps=30, batch_size=2, processes=2, dropout=0.0, device="cpu", threads=1,
            **extra,
        )  # fmt: skip

    reference = train_adapter(request(checkpoint_every=None), records, tmp_path / "reference")

    def stop_at_3(step: int, loss: float) -> None:
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        train_adapter(request(checkpoint_every=2), records, tmp_path / "run", on_step=stop_at_3)
    assert not (tmp_path / "run").exists()
    # complete checkpoints only: a kill during a save leaves its scratch (.tmp-step-...), ignored
    (saved,) = checkpoint_root(tmp_path / "run").glob("step-*")
    assert 2 <= int(saved.name.removeprefix("step-")) < 30
    resumed = train_adapter(request(checkpoint_every=2), records, tmp_path / "run")
    assert [s["loss"] for s in resumed["steps"]] == [s["loss"] for s in reference["steps"]]
    weights = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    expected = load_file(tmp_path / "reference" / "adapter" / "adapter_model.safetensors")
    for key, tensor in expected.items():
        assert torch.equal(weights[key], tensor), key


# ------------------------------------------------------------------------------ through the CLI
# The study's process measures GEMM speed (a matmul on every torch thread) before it trains:
# OpenMP's thread pool is up when the run's processes start. A process forked then hung in its
# first parallel region (the first Embedding.forward) for good, if it ran one on several threads.
# `training.threads: 2` gives the parent two threads on any machine (the store's `matmul` row
# says the GEMM ran on them) and each of the two processes two.
CLI_TIMEOUT = 300
STALL_TIMEOUT = 15  # well above a step of the tiny model, well below the test's patience
HANG = 120  # a run that hangs fails with its reason long before CLI_TIMEOUT


def cli_study(model_dir: Path, **training: Any) -> dict[str, Any]:
    return {
        "name": "cli",
        "model": str(model_dir),
        "techniques": ["lora"],
        "budget": {"rank": 4, "dropout": 0.0},  # dropout masks are drawn per process
        "data": {"languages": ["de"], "items_per_language": 16},
        "training": {
            "steps": 3,
            "batch_size": 2,
            "seeds": [0],
            "max_length": 64,
            "processes": 2,
            "threads": 2,
            "stall_timeout": HANG,
            **training,
        },
        "evaluation": {"languages": ["en", "de"], "items_per_language": 2, "generation_items": 0},
    }


def cli(study: dict[str, Any], folder: Path, *, wait: bool = True) -> Any:
    """`python -m whichlora train` on `study` in a fresh process: the CLI's own start."""
    import os
    import subprocess
    import sys

    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
    }
    argv = [sys.executable, "-m", "whichlora", "train", str(path), "--out", str(folder / "out")]
    argv.append("--quiet")
    if wait:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    return subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)


def store_of(folder: Path) -> Any:
    from whichlora.store import Store

    return Store(folder / "out" / "results.sqlite")


@pytest.mark.slow  # long: `make test-slow`
def test_two_processes_from_the_cli_train_what_one_process_trains(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    two = cli(cli_study(tiny_model_dir), tmp_path / "two")
    assert two.returncode == 0 and "failed" not in two.stderr, two.stderr[-3000:]
    one = cli(cli_study(tiny_model_dir, processes=1, batch_size=4), tmp_path / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    with store_of(tmp_path / "two") as store:
        assert store.get_kv("matmul")["threads"] == 2  # the parent ran threads before the start
        curve_two = store.dump()["training"]
    with store_of(tmp_path / "one") as store:
        curve_one = store.dump()["training"]
    log = (tmp_path / "two" / "out" / "runs" / "lora-s0.log").read_text(encoding="utf-8")
    assert "2 processes ready" in log and "(2 threads each)" in log
    assert len(curve_two) == len(curve_one) == 3
    for a, b in zip(curve_one, curve_two, strict=True):  # run, step, loss, lr, grad, tokens, s
        assert b[:2] == a[:2] and b[5] == a[5]  # the same global batches
        assert b[2] == pytest.approx(a[2], rel=1e-5)
        assert b[4] == pytest.approx(a[4], rel=1e-4)


def _run_pids(run_log: Path, proc: Any) -> list[int]:
    """The run's processes, from the line its log writes once all are ready."""
    import re
    import time

    deadline = time.monotonic() + CLI_TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        text = run_log.read_text(encoding="utf-8") if run_log.is_file() else ""
        found = re.search(r"processes ready .*: pids ([\d, ]+)", text)
        if found:
            return [int(pid) for pid in found.group(1).split(", ")]
        time.sleep(0.1)
    return []


class StopWhenReady(logging.Handler):
    """SIGSTOPs the run's processes when the run logs that they are ready: alive, no progress."""

    def __init__(self) -> None:
        super().__init__()
        self.pids: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        import os
        import re
        import signal

        found = re.search(r"processes ready .*: pids ([\d, ]+)", record.getMessage())
        if found:
            self.pids = [int(pid) for pid in found.group(1).split(", ")]
            for pid in self.pids:
                os.kill(pid, signal.SIGSTOP)


def test_processes_without_progress_fail_the_run_as_stalled(
    tmp_path: Path, records: list[Record], tiny_request: Any
) -> None:
    """Stopped processes make no progress: after `stall_timeout` seconds they are killed and
    the run fails with the likely cause (the study records it as a lost worker, retried)."""
    from whichlora.train.distributed import TrainingStalled

    stopper = StopWhenReady()
    logger = logging.getLogger("whichlora.train")
    logger.addHandler(stopper)
    level = logger.level
    logger.setLevel(logging.INFO)  # setLevel: clears the cached isEnabledFor answers
    request = tiny_request(  # steps enough that it cannot end before it is stopped
        "lora", steps=10**6, processes=2, device="cpu", threads=1, stall_timeout=5,
        checkpoint_every=None,
    )  # fmt: skip
    try:
        with pytest.raises(TrainingStalled, match=r"no progress for 5 s \(training.stall_t"):
            train_adapter(request, records, tmp_path / "run")
    finally:
        logger.removeHandler(stopper)
        logger.setLevel(level)
    assert stopper.pids and not [pid for pid in stopper.pids if _alive(pid)]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_stalled_run_fails_with_its_likely_cause_and_the_next_call_retries_it(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The run's processes are stopped (SIGSTOP: alive, making no progress, as in a deadlock)
    once they are ready; after `stall_timeout` seconds without progress the run is killed and
    recorded as failed with the likely cause, the study goes on, and the next call trains it."""
    import os
    import signal

    folder = tmp_path / "stall"
    steps = 40  # the run is stopped well before its end
    study = cli_study(tiny_model_dir, steps=steps, stall_timeout=STALL_TIMEOUT)
    proc = cli(study, folder, wait=False)
    try:
        pids = _run_pids(folder / "out" / "runs" / "lora-s0.log", proc)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        _, stderr = proc.communicate(timeout=CLI_TIMEOUT)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    assert "run lora-s0 failed: worker lost: training stalled" in stderr, stderr[-3000:]
    assert f"no progress for {STALL_TIMEOUT} s (training.stall_timeout)" in stderr
    assert not [pid for pid in pids if _alive(pid)]  # killed, not left stopped
    with store_of(folder) as store:
        assert store.unit_status("lora-s0", "train") == "failed"
    again = cli(cli_study(tiny_model_dir, steps=steps), folder)  # a longer timeout, same unit
    assert again.returncode == 0 and "failed" not in again.stderr, again.stderr[-3000:]
    with store_of(folder) as store:
        assert store.unit_status("lora-s0", "train") == "done"
        assert len(store.dump()["training"]) == steps
