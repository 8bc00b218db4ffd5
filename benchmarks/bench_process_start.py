"""Start cost of one run's processes (`training.processes: N`): spawn, forkserver and fork.

The parent imports the training stack and does what a study's process does before it trains (a
matmul: OpenMP's thread pool is up), then starts N processes the way train/distributed.py does
(torch's `start_processes`; the forkserver with distributed.PRELOAD) and each process imports
what a training process needs (PRELOAD, peft's LoRA, a Llama) and reports how long after the
start it was ready. That time is what a run pays per attempt before its processes load the
model. fork, what runs used before, is measured before the matmul: after it, a forked process
hangs in its first parallel region (the reason runs no longer fork).

    python benchmarks/bench_process_start.py --reps 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, command_line, loadavg, machine, median, write_json  # noqa: E402


def _probe(rank: int, started: float, queue: Any) -> None:
    import importlib

    from whichlora.train.distributed import PRELOAD

    for name in PRELOAD:  # what a training process imports before its first step
        importlib.import_module(name)
    import peft.tuners.lora  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401

    queue.put((rank, time.time() - started))


def start(method: str, processes: int) -> list[float]:
    """Seconds from the start until each process was ready."""
    import torch.multiprocessing as mp

    queue = mp.get_context(method).SimpleQueue()
    mp.start_processes(_probe, (time.time(), queue), nprocs=processes, start_method=method)
    return sorted(queue.get()[1] for _ in range(processes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "process_start.json")
    args = parser.parse_args(argv)

    import torch
    import torch.multiprocessing as mp

    from whichlora.train.distributed import PRELOAD

    _probe(0, time.time(), mp.get_context("fork").SimpleQueue())  # imported, as in a study

    load = [loadavg()]
    fork = [start("fork", args.processes) for _ in range(args.reps)]  # before any thread
    torch.randn(512, 512) @ torch.randn(512, 512)  # the pool is up, as after measure_machine
    spawn = [start("spawn", args.processes) for _ in range(args.reps)]
    mp.set_forkserver_preload(PRELOAD)
    forkserver = [start("forkserver", args.processes) for _ in range(args.reps)]
    load.append(loadavg())
    runs = {"fork (no threads yet)": fork, "spawn": spawn, "forkserver": forkserver}
    summary = {
        name: {
            "median_ready_s": median([t for rep in reps for t in rep]),
            "slowest_ready_s": max(t for rep in reps for t in rep),
        }
        for name, reps in runs.items()
    }
    summary["forkserver"]["first_start_s"] = max(forkserver[0])
    summary["forkserver"]["later_starts_median_s"] = median([t for r in forkserver[1:] for t in r])
    write_json(
        args.out,
        {
            "benchmark": "process_start",
            "command": command_line("bench_process_start.py", f"--reps {args.reps}"),
            "machine": machine(),
            "processes": args.processes,
            "loadavg": load,
            "summary": summary,
            "runs": runs,
        },
    )
    for name, row in summary.items():
        print(name, {k: round(v, 2) for k, v in row.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
