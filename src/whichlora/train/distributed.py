"""One run over N data-parallel processes, through accelerate (gloo on CPU, NCCL on GPU).

`training.processes: N` starts N processes on this machine; each loads the base, builds the same
adapter (same seed) and trains it on its share of every global batch; accelerate's `Accelerator`
wraps the model in torch's DistributedDataParallel, which averages the gradients in backward.
Nothing here is a training engine of its own: this module only starts the processes, splits each
batch and sums a few numbers across them.

The same run on one process with `batch_size x N` sees the same global batches (the stream is
drawn at the global size and split), and its loss is normalised the same way: by the labelled
tokens of the whole global batch, summed over the processes (see `World.token_weight`), so a
process holding short sequences does not weigh more. Loss curve and adapter then agree with the
one-process run up to float rounding (tested with two gloo processes). Dropout masks are drawn
per process (every process from the run's seed), so with dropout on the run agrees with the
one-process run in distribution only, and a resumed run is not bit-exact (the checkpoint holds
process 0's random state); without dropout, resuming is exact (tested).

Sharding the model or the optimizer state (FSDP, DeepSpeed ZeRO) is accelerate's job, not ours:
see docs/scaling.md for the configs a user may pass to `accelerate launch`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whichlora.errors import TrainingDiverged, WhichloraError
from whichlora.store.names import LOG_FILE


@dataclass
class World:
    """This process's place among the run's processes; the single-process world does nothing."""

    rank: int = 0
    size: int = 1
    accelerator: Any = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> str:
        return requested if self.accelerator is None else str(self.accelerator.device)

    def wrap(self, model: Any) -> Any:
        """The model the forward runs through: DDP under accelerate, the model itself alone."""
        if self.accelerator is None:
            return model
        return self.accelerator.prepare_model(model, device_placement=False)

    def no_sync(self, model: Any, last: bool) -> AbstractContextManager[Any]:
        """Skip DDP's gradient all-reduce on every micro-batch but the step's last."""
        if self.accelerator is None or last:
            return nullcontext()
        return self.accelerator.no_sync(model)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the processes (the values themselves alone)."""
        if self.accelerator is None:
            return values
        import torch

        tensor = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(tensor, reduction="sum").tolist()

    def shard(self, batch: list[Any]) -> tuple[list[Any], bool]:
        """This process's contiguous share of a global batch (neighbours in length: little
        padding). A share left empty by a short last batch borrows one example at weight 0, so
        the process still takes part in the gradient all-reduce; the flag says so."""
        if self.size == 1:
            return batch, True
        per = -(-len(batch) // self.size)
        share = batch[self.rank * per : (self.rank + 1) * per]
        return (share, True) if share else (batch[:1], False)

    def token_weight(self, local_tokens: int, global_tokens: int) -> float:
        """Factor on a micro-batch's mean loss so that, after DDP averages the gradients over
        the processes, the step minimises the sum of token losses over the global batch divided
        by its labelled tokens. Alone, with one micro-batch per step, it is exactly 1.0."""
        return self.size * local_tokens / global_tokens


SINGLE = World()
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_method(on_gpu: bool) -> str:
    """fork on CPU (fast: nothing is imported again); spawn for GPUs, since CUDA cannot be used
    in a child forked from a process that has touched it (the study's process may have)."""
    return "spawn" if on_gpu else "fork"


def check_processes(request: Any) -> bool:
    """Refuse what N processes cannot do, before any is started; True when they use GPUs."""
    import torch

    if request.device_map:
        raise WhichloraError(
            "training.processes > 1 replicates the model in each process; model.device_map "
            "splits one copy across GPUs. Fix: use one of them (remove model.device_map)."
        )
    on_gpu = request.device.startswith("cuda") or (
        request.device == "auto" and torch.cuda.is_available()
    )
    if on_gpu and torch.cuda.device_count() < request.processes:
        raise WhichloraError(
            f"training.processes is {request.processes} but {torch.cuda.device_count()} CUDA "
            "GPUs are visible. Fix: lower training.processes to the GPU count or make the GPUs "
            "visible (CUDA_VISIBLE_DEVICES)."
        )
    return on_gpu


def train_in_processes(
    request: Any,
    records: list[Any],
    out_dir: Path,
    on_step: Callable[[int, float], None] | None,
    train_adapter: Callable[..., Any],
) -> dict[str, Any]:
    """Run `train_adapter` as `request.processes` processes; process 0 writes the adapter and the
    log (atomically, as alone) and reports each step here, where `on_step` is called (beside
    the training, which does not wait for it). When `on_step` raises (a caller stopping the
    run), the processes are killed and the exception re-raised, as in a one-process run; a
    checkpoint already written stays for the next attempt."""
    import torch.multiprocessing as mp

    method = start_method(check_processes(request))
    steps = mp.get_context(method).SimpleQueue()
    stop, raised = threading.Event(), []
    relay = threading.Thread(target=_relay, args=(steps, on_step, stop, raised), daemon=True)
    relay.start()
    try:
        processes = mp.start_processes(
            _worker,
            args=(train_adapter, request, records, str(out_dir), _free_port(), steps, os.getpid()),
            nprocs=request.processes,
            start_method=method,
            join=False,
        )
        try:
            while not processes.join(timeout=0.2):
                if raised:
                    break
        except mp.ProcessRaisedException as exc:
            raise _as_own_error(exc) from None
        finally:
            for process in processes.processes:
                if process.is_alive():
                    process.kill()
                    process.join()
    finally:
        stop.set()
        relay.join()
    if raised:
        raise raised[0]
    return json.loads((out_dir / LOG_FILE).read_text(encoding="utf-8"))


def _relay(
    steps: Any,
    on_step: Callable[[int, float], None] | None,
    stop: threading.Event,
    raised: list[BaseException],
) -> None:
    """Call `on_step` for each step process 0 reports, until stopped and drained. The parent
    never writes to the queue, so a killed writer cannot leave it holding the queue's lock."""
    while True:
        if not steps.empty():
            item = steps.get()
            if on_step is not None and not raised:
                try:
                    on_step(*item)
                except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
                    raised.append(exc)
        elif stop.is_set():
            return
        else:
            stop.wait(0.05)


def _die_with(parent: int) -> None:
    """A process of the run ends when the process that started it is killed (kill -9 included):
    an orphan would go on training and write the run's folder under a resumed attempt."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def _worker(
    rank: int,
    train_adapter: Callable[..., Any],
    request: Any,
    records: list[Any],
    out_dir: str,
    port: int,
    steps: Any,
    parent: int,
) -> None:
    _die_with(parent)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(request.processes),
        LOCAL_WORLD_SIZE=str(request.processes),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=request.device == "cpu")
    sharded = accelerator.distributed_type.name in {"FSDP", "DEEPSPEED", "MEGATRON_LM"}
    if sharded:  # an accelerate config in the environment (ACCELERATE_USE_FSDP=true, ...)
        raise WhichloraError(
            f"The environment asks accelerate for {accelerator.distributed_type.name}; "
            "training.processes runs plain data parallelism (DDP) and does not shard. Fix: "
            "unset the ACCELERATE_USE_* variables, or see docs/scaling.md for models that do "
            "not fit one GPU."
        )
    world = World(rank=rank, size=request.processes, accelerator=accelerator)
    report = (lambda step, loss: steps.put((step, loss))) if world.main else None
    try:
        train_adapter(request, records, Path(out_dir), on_step=report, world=world)
    finally:
        accelerator.end_training()
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _as_own_error(exc: Exception) -> Exception:
    """A worker's failure as the error the one-process run would raise (its last line kept)."""
    text = str(exc)
    last = text.strip().splitlines()[-1] if text.strip() else text
    for kind in (TrainingDiverged, WhichloraError):
        prefix = f"{kind.__module__}.{kind.__name__}: "
        if prefix in last or last.startswith(f"{kind.__name__}: "):
            return kind(last.split(": ", 1)[1])
    return RuntimeError(f"a training process failed: {last}")
