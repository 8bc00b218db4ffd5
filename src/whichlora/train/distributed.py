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

The processes are never forked from the caller: a process forked after the caller ran a parallel
region (any matmul: a study measures GEMM speed and converts its model before it trains) hangs
in its own first one, since OpenMP's thread pool does not survive fork. On CPU they come from a
forkserver (a clean process started once, with the training stack imported: ~0.1 s a process
after its first start, measured in benchmarks/bench_process_start.py); on GPUs they are spawned.
A run whose processes report no progress for `request.stall_timeout` seconds is killed and fails
with `TrainingStalled`, which a study records as a lost worker and retries on its next call.

Sharding the model or the optimizer state (FSDP, DeepSpeed ZeRO) is accelerate's job, not ours:
see docs/scaling.md for the configs a user may pass to `accelerate launch`.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whichlora.errors import TrainingDiverged, WhichloraError
from whichlora.store.names import LOG_FILE

log = logging.getLogger("whichlora.train")


class TrainingStalled(Exception):
    """The run's processes made no progress for `stall_timeout` seconds and were killed: the
    inputs may be fine, so a study retries the run on its next call."""


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
# What a training process imports, loaded once into the forkserver: its processes start without
# importing them again (model-specific modules still load in each process).
PRELOAD = ["torch", "transformers", "peft", "accelerate", "whichlora.train.loop"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_method(on_gpu: bool) -> str:
    """forkserver on CPU, spawn for GPUs; never fork. A child forked from a process that has
    run a parallel region waits forever in its own first one (OpenMP's thread pool does not
    survive fork; the caller may have run one: a study measures GEMM speed and converts its
    model before training, a Ray worker may have scored a model), and CUDA cannot be used in a
    child forked from a process that has touched it. The forkserver is a clean process started
    once per calling process, with PRELOAD imported; spawn imports everything in every process."""
    return "spawn" if on_gpu else "forkserver"


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


def process_threads(threads: int | None, processes: int) -> int:
    """Torch threads of each process: `training.threads` when set, else this process's threads
    shared out (torchrun gives each 1): N processes with all of them each would oversubscribe
    the cores N-fold, and OpenMP's waiting threads then take the cores the working ones need
    (3 steps of SmolLM2 on 2 processes of a loaded 2-core machine: 90 s a step, 4 s with 1)."""
    import torch

    return threads or max(1, torch.get_num_threads() // processes)


@dataclass
class Progress:
    """What the parent hears from the run's processes: when last, and how far."""

    last: float
    step: int = 0
    ready: int = 0
    pids: list[int] = field(default_factory=list)


def train_in_processes(
    request: Any,
    records: list[Any],
    out_dir: Path,
    on_step: Callable[[int, float], None] | None,
    train_adapter: Callable[..., Any],
    validation: Sequence[Any] = (),
) -> dict[str, Any]:
    """Run `train_adapter` as `request.processes` processes; process 0 writes the adapter and the
    log (atomically, as alone) and reports each step here, where `on_step` is called (beside
    the training, which does not wait for it). When `on_step` raises (a caller stopping the
    run), the processes are killed and the exception re-raised, as in a one-process run; a
    checkpoint already written stays for the next attempt. When no process reports progress
    (started, a step done) for `request.stall_timeout` seconds, they are killed and
    `TrainingStalled` is raised."""
    import torch.multiprocessing as mp

    on_gpu = check_processes(request)
    method = start_method(on_gpu)
    context = mp.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(PRELOAD)  # read when the server starts (once)
    events = context.SimpleQueue()
    started = time.time()
    progress = Progress(last=time.monotonic())
    stop, raised = threading.Event(), []
    relay = threading.Thread(
        target=_relay, args=(events, on_step, stop, raised, progress, request), daemon=True
    )
    relay.start()
    stalled = False
    try:
        parent = {
            "pid": os.getpid(),
            "environ": dict(os.environ),  # a forkserver holds the environment it started with
            "threads": process_threads(request.threads, request.processes),
            "started": started,
            "on_gpu": on_gpu,
            "validation": list(validation),  # the learning curve: read by process 0 only
        }
        processes = mp.start_processes(
            _worker,
            args=(train_adapter, request, records, str(out_dir), _free_port(), events, parent),
            nprocs=request.processes,
            start_method=method,
            join=False,
        )
        try:
            while not processes.join(timeout=0.2):
                if raised:
                    break
                idle = time.monotonic() - progress.last
                if request.stall_timeout is not None and idle > request.stall_timeout:
                    stalled = True
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
    if stalled:
        raise TrainingStalled(_stall_message(request, progress, method))
    return json.loads((out_dir / LOG_FILE).read_text(encoding="utf-8"))


def _stall_message(request: Any, progress: Progress, method: str) -> str:
    where = (
        f"after step {progress.step} of {request.steps}"
        if progress.step
        else f"before the first step ({progress.ready} of {request.processes} processes started)"
    )
    return (
        f"training stalled: the run's {request.processes} processes made no progress for "
        f"{request.stall_timeout:g} s (training.stall_timeout), {where}, and were killed. "
        "Likely cause: a process waiting forever, on another process of the run that died or "
        "hangs in a collective (gloo/NCCL: a crashed or stopped peer, 127.0.0.1 blocked), or "
        "on a thread pool it inherited broken (a process forked after its parent ran OpenMP "
        f"threads hangs so; these were started with {method}). If loading the model or a step "
        "truly takes that long, raise training.stall_timeout; the next `whichlora run` retries "
        "the run (from its last checkpoint)."
    )


def _relay(
    events: Any,
    on_step: Callable[[int, float], None] | None,
    stop: threading.Event,
    raised: list[BaseException],
    progress: Progress,
    request: Any,
) -> None:
    """Note every event the processes report, and call `on_step` for each step process 0
    reports, until stopped and drained. The parent never writes to the queue, so a killed
    writer cannot leave it holding the queue's lock."""
    while True:
        if not events.empty():
            kind, *item = events.get()
            progress.last = time.monotonic()
            if kind == "ready":
                progress.ready += 1
                progress.pids.append(item[2])
                if progress.ready == request.processes:  # which processes to look at (or kill)
                    log.info(
                        "%d processes ready after %.1f s (%d threads each): pids %s",
                        progress.ready,
                        *item[:2],
                        ", ".join(map(str, progress.pids)),
                    )
                continue
            progress.step = item[0]
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
    an orphan would go on training and write the run's folder under a resumed attempt. The
    death signal covers the direct parent (the caller when spawned; the forkserver, which exits
    with the caller, otherwise); a watcher thread covers the caller itself, also when it died
    before this line."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        handle = os.pidfd_open(parent)  # readable once the caller has ended (zombie included)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd here: ask every second
        threading.Thread(target=_poll_parent, args=(parent,), daemon=True).start()
        return
    threading.Thread(target=_await_end, args=(handle,), daemon=True).start()


def _await_end(handle: int) -> None:
    select.select([handle], [], [])
    os._exit(1)


def _poll_parent(parent: int) -> None:
    while True:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)
        time.sleep(1.0)


def _worker(
    rank: int,
    train_adapter: Callable[..., Any],
    request: Any,
    records: list[Any],
    out_dir: str,
    port: int,
    events: Any,
    parent: dict[str, Any],
) -> None:
    _die_with(parent["pid"])
    os.environ.clear()
    os.environ.update(
        parent["environ"],
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(request.processes),
        LOCAL_WORLD_SIZE=str(request.processes),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    import torch
    from accelerate import Accelerator

    torch.set_num_threads(parent["threads"])
    events.put(("ready", time.time() - parent["started"], parent["threads"], os.getpid()))
    # cpu=True whenever the run is not on GPUs (model.device auto on a machine without CUDA
    # too): accelerate sets up gloo only when told so, else each process would train alone.
    accelerator = Accelerator(cpu=not parent["on_gpu"])
    sharded = accelerator.distributed_type.name in {"FSDP", "DEEPSPEED", "MEGATRON_LM"}
    if sharded:  # an accelerate config in the environment (ACCELERATE_USE_FSDP=true, ...)
        raise WhichloraError(
            f"The environment asks accelerate for {accelerator.distributed_type.name}; "
            "training.processes runs plain data parallelism (DDP) and does not shard. Fix: "
            "unset the ACCELERATE_USE_* variables, or see docs/scaling.md for models that do "
            "not fit one GPU."
        )
    if accelerator.num_processes != request.processes:
        raise RuntimeError(
            f"accelerate joined {accelerator.num_processes} of the run's {request.processes} "
            f"processes ({accelerator.distributed_type.name})"
        )
    world = World(rank=rank, size=request.processes, accelerator=accelerator)
    report = (lambda step, loss: events.put(("step", step, loss))) if world.main else None
    try:
        train_adapter(
            request,
            records,
            Path(out_dir),
            on_step=report,
            world=world,
            validation=parent["validation"] if world.main else (),
        )
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
