"""Intra-op threads on a shared machine: one training step with 1 vs 2 torch threads.

Same model, adapter (LoRA rank 8, no dropout) and batch (8 x 128 tokens) in one process; the
thread count alternates between steps (after a warm-up step at each count), so both see the
same background load. Reports wall and process CPU seconds per step and the machine's load.
Where other processes keep the cores busy, every parallel operator waits for its second
thread to be scheduled, and a 2-thread step can take several times longer than a 1-thread one.

    python benchmarks/bench_threads.py --reps 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MODEL, RESULTS, command_line, loadavg, machine, median, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per count and rep")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--out", type=Path, default=RESULTS / "threads.json")
    args = parser.parse_args(argv)

    import torch
    from bench_train_step import full_length_records
    from peft import get_peft_model

    from whichlora.models.loading import load_model
    from whichlora.techniques import REGISTRY, AdapterSettings
    from whichlora.train.batching import collate
    from whichlora.train.loop import batch_losses, head_on_label_positions
    from whichlora.train.prompting import encode_record

    loaded = load_model(MODEL)
    records = full_length_records(loaded.tokenizer, 128)[:8]
    examples = [encode_record(loaded.tokenizer, r, 128) for r in records]
    batch = collate(examples, loaded.tokenizer.pad_token_id)
    model = get_peft_model(loaded.model, REGISTRY["lora"].build_config(AdapterSettings(dropout=0)))
    model.train()
    model.config.use_cache = False
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    head_only = head_on_label_positions(model)

    def step() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        batch_losses(model, batch, head_only)[0].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - wall, time.process_time() - cpu

    counts = [int(n) for n in args.threads.split(",")]
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for n in counts:
        torch.set_num_threads(n)
        step()  # warm-up at each count
    for rep in range(args.reps):
        for n in counts if rep % 2 == 0 else list(reversed(counts)):
            torch.set_num_threads(n)
            for _ in range(args.steps):
                wall, cpu = step()
                runs[n].append({"seconds": wall, "cpu_seconds": cpu, "loadavg": loadavg()})
                print(
                    f"[rep {rep}] {n} thread(s): {wall:6.1f} s wall, {cpu:6.1f} s CPU", flush=True
                )
    summary = {
        str(n): {
            "seconds_per_step": median([r["seconds"] for r in rs]),
            "cpu_seconds_per_step": median([r["cpu_seconds"] for r in rs]),
        }
        for n, rs in runs.items()
    }
    report = {
        "benchmark": "threads",
        "command": command_line("bench_threads.py", f"--reps {args.reps}"),
        "machine": machine(),
        "summary": summary,
        "runs": {str(n): rs for n, rs in runs.items()},
    }
    if {"1", "2"} <= set(summary):
        report["two_over_one"] = summary["2"]["seconds_per_step"] / summary["1"]["seconds_per_step"]
    write_json(args.out, report)
    print(summary, f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
