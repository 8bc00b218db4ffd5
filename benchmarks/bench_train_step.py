"""Training step: whichlora's train_adapter vs a minimal hand-written PEFT loop.

Same model (builtin:smollm2-135m), fp32, same CPU threads, batches of exactly BATCH x SEQ tokens
(bundled instruction examples long enough to fill SEQ after truncation), and the same adapter
config from the registry's build_config at rank 8 / dropout 0.05 (train_adapter's defaults).
The peer uses peft's own extras where a technique needs them (LoRA+'s optimizer, AdaLoRA's
update_and_allocate) and nothing else: forward, backward, clip, step, zero_grad.

Each side runs in its own fresh process so peak RSS is clean; the two alternate (ours first on
even repetitions, the peer first on odd ones). Seconds per step: median of the timed steps after
the warm-up steps, then the median over repetitions.

    python benchmarks/bench_train_step.py                       # every registered technique
    python benchmarks/bench_train_step.py --techniques lora,dora --reps 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MODEL,
    RESULTS,
    bench_records,
    command_line,
    cpu_seconds,
    loadavg,
    machine,
    median,
    peak_rss_mb,
    run_child,
    write_json,
)

GOAL_TIME = 1.05
GOAL_RSS = 1.10
RANK, DROPOUT, LR = 8, 0.05, 2e-4


def full_length_records(tokenizer: Any, seq: int) -> list[Any]:
    """Bundled records whose encoding fills `seq` tokens and keeps a response after truncation."""
    from whichlora.train.prompting import encode_record

    chosen = []
    for record in bench_records():
        example = encode_record(tokenizer, record, seq)
        if example.length == seq and example.response_tokens > 0:
            chosen.append(record)
    if len(chosen) < 8:
        raise SystemExit(f"only {len(chosen)} bundled examples fill {seq} tokens; lower --seq")
    return chosen


# --------------------------------------------------------------------------- one side


class StepClock:
    """Wall and process CPU time between consecutive step ends, measured alike on both sides
    (train_adapter's on_step callback for ours, the loop itself for the peer)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def start(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def tick(self) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.wall.append(wall - self._wall)
        self.cpu.append(cpu - self._cpu)
        self._wall, self._cpu = wall, cpu


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from whichlora.models.loading import load_model
    from whichlora.train.loop import TrainRequest, train_adapter

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    loaded = load_model(MODEL)
    records = full_length_records(loaded.tokenizer, args.seq)
    request = TrainRequest(
        model=MODEL,
        technique=args.technique,
        steps=args.warm + args.timed,
        batch_size=args.batch,
        learning_rate=LR,
        max_length=args.seq,
        rank=RANK,
        dropout=DROPOUT,
        threads=args.threads,
    )
    clock = StepClock()
    with tempfile.TemporaryDirectory(prefix="wl-step-") as tmp:
        clock.start()
        log = train_adapter(
            request, records, Path(tmp) / "run", loaded=loaded, on_step=lambda *_: clock.tick()
        )
    steps = log["steps"]
    assert all(s["tokens"] == args.batch * args.seq for s in steps), "batches must be full"
    return {
        "step_seconds": clock.wall,
        "step_cpu_seconds": clock.cpu,
        "logged_step_seconds": [s["seconds"] for s in steps],
        "losses": [s["loss"] for s in steps],
        "trainable_params": log["budget"]["trainable_params_measured"],
        "total_seconds": time.perf_counter() - started,
    }


def _peer_batch(examples: list[Any], step: int, batch: int) -> dict[str, Any]:
    import torch

    rows = [examples[(step * batch + i) % len(examples)] for i in range(batch)]
    ids = torch.tensor([e.input_ids for e in rows])
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.tensor([e.labels for e in rows]),
    }


def run_peer(args: argparse.Namespace) -> dict[str, Any]:
    """The minimal loop a user would write with transformers + peft alone."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from whichlora.models.loading import resolve_model_path
    from whichlora.techniques import REGISTRY, AdapterSettings
    from whichlora.train.prompting import encode_records

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    path = resolve_model_path(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    examples = encode_records(tokenizer, full_length_records(tokenizer, args.seq), args.seq)
    technique = REGISTRY[args.technique]
    steps = args.warm + args.timed
    settings = AdapterSettings(rank=RANK, dropout=DROPOUT, total_steps=steps)
    torch.manual_seed(0)
    model = get_peft_model(model, technique.build_config(settings))
    model.train()
    model.config.use_cache = False
    params = [p for p in model.parameters() if p.requires_grad]
    if technique.make_optimizer is not None:  # LoRA+: peft's create_loraplus_optimizer
        optimizer = technique.make_optimizer(model, LR, 0.0, {})
    else:
        optimizer = torch.optim.AdamW(params, lr=LR)
    losses = []
    clock = StepClock()
    clock.start()
    for step in range(steps):
        batch = _peer_batch(examples, step, args.batch)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if technique.after_optimizer_step is not None:  # AdaLoRA: update_and_allocate
            model.base_model.update_and_allocate(step + 1)
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        clock.tick()
    return {
        "step_seconds": clock.wall,
        "step_cpu_seconds": clock.cpu,
        "losses": losses,
        "trainable_params": sum(p.numel() for p in params),
        "total_seconds": time.perf_counter() - started,
    }


def child(args: argparse.Namespace) -> int:
    import json

    load_before = loadavg()
    cpu_before = cpu_seconds()
    result = run_ours(args) if args.side == "ours" else run_peer(args)
    timed = result["step_seconds"][args.warm :]
    result.update(
        side=args.side,
        technique=args.technique,
        seconds_per_step=median(timed),
        cpu_seconds_per_step=median(result["step_cpu_seconds"][args.warm :]),
        peak_rss_mb=peak_rss_mb(),
        cpu_seconds=cpu_seconds() - cpu_before,
        loadavg_before=load_before,
        loadavg_after=loadavg(),
    )
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")
    return 0


# --------------------------------------------------------------------------- orchestration


def child_args(args: argparse.Namespace, side: str, technique: str) -> list[str]:
    return [
        __file__,
        "--side",
        side,
        "--technique",
        technique,
        "--warm",
        str(args.warm),
        "--timed",
        str(args.timed),
        "--batch",
        str(args.batch),
        "--seq",
        str(args.seq),
        "--threads",
        str(args.threads),
    ]


def parent(args: argparse.Namespace) -> int:
    from whichlora.techniques import REGISTRY

    techniques = args.techniques.split(",") if args.techniques else list(REGISTRY)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        t: {"ours": [], "peer": []} for t in techniques
    }
    started = time.perf_counter()
    for rep in range(args.reps):
        for technique in techniques:
            order = ("ours", "peer") if rep % 2 == 0 else ("peer", "ours")
            for side in order:
                data = run_child(child_args(args, side, technique))
                runs[technique][side].append(data)
                print(
                    f"[rep {rep}] {technique:9s} {side:4s} {data['seconds_per_step']:7.2f} s/step "
                    f"({data['cpu_seconds_per_step']:6.2f} CPU s) "
                    f"rss {data['peak_rss_mb']:7.0f} MB  load {data['loadavg_after'][0]}",
                    flush=True,
                )
    rows = []
    for technique in techniques:
        ours, peer = runs[technique]["ours"], runs[technique]["peer"]
        our_s = median([r["seconds_per_step"] for r in ours])
        peer_s = median([r["seconds_per_step"] for r in peer])
        our_rss = median([r["peak_rss_mb"] for r in ours])
        peer_rss = median([r["peak_rss_mb"] for r in peer])
        # Paired per repetition too: each pair ran back to back under similar load.
        paired = [
            o["seconds_per_step"] / p["seconds_per_step"] for o, p in zip(ours, peer, strict=True)
        ]
        our_cpu = median([r["cpu_seconds_per_step"] for r in ours])
        peer_cpu = median([r["cpu_seconds_per_step"] for r in peer])
        rows.append(
            {
                "technique": technique,
                "ours_seconds_per_step": our_s,
                "peer_seconds_per_step": peer_s,
                "time_ratio": our_s / peer_s,
                "time_ratio_paired_median": median(paired),
                "ours_cpu_seconds_per_step": our_cpu,
                "peer_cpu_seconds_per_step": peer_cpu,
                "cpu_ratio": our_cpu / peer_cpu,
                "ours_peak_rss_mb": our_rss,
                "peer_peak_rss_mb": peer_rss,
                "rss_ratio": our_rss / peer_rss,
                "trainable_params": [ours[0]["trainable_params"], peer[0]["trainable_params"]],
                "time_met": our_s / peer_s <= GOAL_TIME,
                "rss_met": our_rss / peer_rss <= GOAL_RSS,
                "runs": runs[technique],
            }
        )
    cmd_args = [f"--techniques {','.join(techniques)}", f"--reps {args.reps}"]
    if (args.warm, args.timed, args.batch, args.seq) != (3, 5, 8, 128):
        cmd_args.append(
            f"--warm {args.warm} --timed {args.timed} --batch {args.batch} --seq {args.seq}"
        )
    report = {
        "benchmark": "train_step",
        "command": command_line("bench_train_step.py", *cmd_args),
        "settings": {
            "model": MODEL,
            "batch": args.batch,
            "seq": args.seq,
            "threads": args.threads,
            "warm_steps": args.warm,
            "timed_steps": args.timed,
            "reps": args.reps,
            "rank": RANK,
            "dropout": DROPOUT,
            "dtype": "float32",
        },
        "goal": {"time_ratio_max": GOAL_TIME, "rss_ratio_max": GOAL_RSS},
        "machine": machine(),
        "wall_seconds": time.perf_counter() - started,
        "rows": rows,
    }
    write_json(args.out, report)
    for row in rows:
        print(
            f"{row['technique']:9s} time {row['time_ratio']:.3f}x "
            f"(paired {row['time_ratio_paired_median']:.3f}x, CPU {row['cpu_ratio']:.3f}x)  "
            f"rss {row['rss_ratio']:.3f}x"
        )
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--techniques", default="", help="comma list; default: all registered")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--warm", type=int, default=3)
    parser.add_argument("--timed", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "train_step.json")
    parser.add_argument("--side", choices=("ours", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--technique", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return child(args) if args.side else parent(args)


if __name__ == "__main__":
    sys.exit(main())
