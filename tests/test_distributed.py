"""One run over two gloo processes (accelerate DDP) against the same run in one process.

Two processes with batch_size B see the global batches one process with 2B sees, and the loss of
each step is normalised by the labelled tokens of the whole global batch, so the loss curve and
the adapter agree up to float rounding. Dropout is off: masks are drawn per process.
"""

from __future__ import annotations

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
        workers = [pid for pid in _children(proc.pid) if _alive(pid)]
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
