"""Useful training throughput on real data: non-padding tokens per second.

Contenders, all LoRA rank 8 on builtin:smollm2-135m, fp32, batch 8, max_length 256, on the
bundled variable-length instruction data (every bundled language):

- ours: whichlora's train_adapter (length-grouped batches from train/batching.py, padded to the
  batch's longest example; LM head only at labelled positions);
- ours_full_head: the same loop with the LM head over every position (the loop before the
  head change; `head_on_label_positions` patched to False) -- the before/after of that change;
- peer: a naive padded PEFT loop: random order, every batch padded to max_length, full logits.

The three alternate within each repetition (the order rotates), each on a fresh copy of the
same base. Tokens/s = non-padding tokens of the timed steps / their seconds; median over
repetitions. Every repetition also measures the machine's fp32 matmul peak, so the
"fraction of the floor" (the speed a frozen-base step would reach if its forward and
input-gradient matmuls, 4 x params x tokens FLOPs, ran at that peak) uses the peak of the same
moment.

    python benchmarks/bench_throughput.py --reps 3
"""

from __future__ import annotations

import argparse
import copy
import random
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
    matmul_peak_gflops,
    median,
    write_json,
)

GOAL_RATIO = 1.3
GOAL_FLOOR_FRACTION = 0.60
RANK, DROPOUT, LR = 8, 0.05, 2e-4


def fresh(base: Any) -> Any:
    """A new LoadedModel around a deep copy of the base (adapters are injected in place)."""
    from whichlora.models.loading import LoadedModel

    return LoadedModel(model=copy.deepcopy(base.model), tokenizer=base.tokenizer, path=base.path)


def run_ours(base: Any, records: list[Any], args: argparse.Namespace, seed: int) -> dict:
    from whichlora.train.loop import TrainRequest, train_adapter

    request = TrainRequest(
        model=MODEL,
        technique="lora",
        seed=seed,
        steps=args.warm + args.timed,
        batch_size=args.batch,
        learning_rate=LR,
        max_length=args.max_length,
        rank=RANK,
        dropout=DROPOUT,
        threads=args.threads,
    )
    with tempfile.TemporaryDirectory(prefix="wl-tput-") as tmp:
        log = train_adapter(request, records, Path(tmp) / "run", loaded=fresh(base))
    timed = log["steps"][args.warm :]
    return {
        "tokens": [s["tokens"] for s in timed],
        "seconds": [s["seconds"] for s in timed],
        "padded_tokens": None,
    }


def run_ours_full_head(base: Any, records: list[Any], args: argparse.Namespace, seed: int) -> dict:
    """The loop as it was before the LM head was restricted to labelled positions."""
    from whichlora.train import loop

    original = loop.head_on_label_positions
    loop.head_on_label_positions = lambda model: False
    try:
        return run_ours(base, records, args, seed)
    finally:
        loop.head_on_label_positions = original


def run_peer(base: Any, records: list[Any], args: argparse.Namespace, seed: int) -> dict:
    """Naive loop: shuffled examples, each batch padded to max_length, full logits."""
    import torch
    from peft import get_peft_model

    from whichlora.techniques import REGISTRY, AdapterSettings
    from whichlora.train.prompting import IGNORE_INDEX, encode_records

    tokenizer = base.tokenizer
    examples = encode_records(tokenizer, records, args.max_length)
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    steps = args.warm + args.timed
    torch.manual_seed(seed)
    settings = AdapterSettings(rank=RANK, dropout=DROPOUT, total_steps=steps)
    model = get_peft_model(fresh(base).model, REGISTRY["lora"].build_config(settings))
    model.train()
    model.config.use_cache = False
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR)
    pad = tokenizer.pad_token_id
    tokens, seconds, padded = [], [], []
    for step in range(steps):
        started = time.perf_counter()
        rows = [examples[order[(step * args.batch + i) % len(order)]] for i in range(args.batch)]
        ids = torch.full((args.batch, args.max_length), pad, dtype=torch.long)
        labels = torch.full((args.batch, args.max_length), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((args.batch, args.max_length), dtype=torch.long)
        for r, example in enumerate(rows):
            ids[r, : example.length] = torch.tensor(example.input_ids)
            labels[r, : example.length] = torch.tensor(example.labels)
            mask[r, : example.length] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= args.warm:
            tokens.append(int(mask.sum()))
            padded.append(int(mask.numel()))
            seconds.append(time.perf_counter() - started)
    return {"tokens": tokens, "seconds": seconds, "padded_tokens": padded}


CONTENDERS = {"ours": run_ours, "ours_full_head": run_ours_full_head, "peer": run_peer}


def check_same_loss(base: Any, records: list[Any], max_length: int) -> dict[str, float]:
    """The head-on-labelled-positions loss equals the full-logits loss on a real batch."""
    import torch
    from peft import get_peft_model

    from whichlora.techniques import REGISTRY, AdapterSettings
    from whichlora.train.batching import collate
    from whichlora.train.loop import batch_losses, head_on_label_positions
    from whichlora.train.prompting import encode_records

    examples = encode_records(base.tokenizer, records[:8], max_length)
    batch = collate(examples, base.tokenizer.pad_token_id)
    torch.manual_seed(0)
    settings = AdapterSettings(rank=RANK, dropout=0.0)
    model = get_peft_model(fresh(base).model, REGISTRY["lora"].build_config(settings))
    model.eval()
    with torch.no_grad():
        full = float(batch_losses(model, batch, False)[1])
        keep = float(batch_losses(model, batch, head_on_label_positions(model))[1])
    return {"full_logits_loss": full, "label_positions_loss": keep, "abs_diff": abs(full - keep)}


def _command_args(args: argparse.Namespace) -> list[str]:
    """The flags that differ from the defaults, to reproduce this result."""
    out = [f"--reps {args.reps}"]
    if args.threads != 2:
        out.append(f"--threads {args.threads}")
    if (args.warm, args.timed, args.batch, args.max_length) != (1, 5, 8, 256):
        out.append(
            f"--warm {args.warm} --timed {args.timed} --batch {args.batch} "
            f"--max-length {args.max_length}"
        )
    if args.out != RESULTS / "throughput.json":
        out.append(f"--out {args.out}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warm", type=int, default=1)
    parser.add_argument("--timed", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    args = parser.parse_args(argv)

    import torch

    from whichlora.models.loading import load_model

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    base = load_model(MODEL)
    records = bench_records()
    n_params = sum(p.numel() for p in base.model.parameters())
    same_loss = check_same_loss(base, records, args.max_length)
    print(f"loss check: {same_loss}", flush=True)
    names = args.contenders.split(",")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    peaks = []
    for rep in range(args.reps):
        peak = matmul_peak_gflops(args.threads)
        peak["loadavg"] = loadavg()
        peaks.append(peak)
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            load_before, cpu_before = loadavg(), cpu_seconds()
            data = CONTENDERS[name](base, records, args, seed=rep)
            data["cpu_seconds"] = cpu_seconds() - cpu_before
            data["tokens_per_s"] = sum(data["tokens"]) / sum(data["seconds"])
            floor_tps = peak["gflops"] * 1e9 / (4.0 * n_params)
            data["floor_tokens_per_s"] = floor_tps
            data["floor_fraction"] = data["tokens_per_s"] / floor_tps
            data["loadavg_before"], data["loadavg_after"] = load_before, loadavg()
            runs[name].append(data)
            print(
                f"[rep {rep}] {name:15s} {data['tokens_per_s']:7.1f} tok/s  "
                f"({data['floor_fraction']:.1%} of floor; peak {peak['gflops']:.0f} GFLOP/s, "
                f"load {data['loadavg_after'][0]})",
                flush=True,
            )
    summary = {
        name: {
            "tokens_per_s": median([r["tokens_per_s"] for r in rs]),
            "floor_fraction": median([r["floor_fraction"] for r in rs]),
        }
        for name, rs in runs.items()
    }
    report: dict[str, Any] = {
        "benchmark": "throughput",
        "command": command_line("bench_throughput.py", *_command_args(args)),
        "settings": {
            "model": MODEL,
            "technique": "lora",
            "rank": RANK,
            "dropout": DROPOUT,
            "batch": args.batch,
            "max_length": args.max_length,
            "threads": args.threads,
            "warm_steps": args.warm,
            "timed_steps": args.timed,
            "reps": args.reps,
            "records": len(records),
            "base_params": n_params,
            "floor_flops_per_token": 4 * n_params,
        },
        "goal": {"ratio_min": GOAL_RATIO, "floor_fraction_min": GOAL_FLOOR_FRACTION},
        "loss_check": same_loss,
        "machine": machine(),
        "matmul_peaks": peaks,
        "summary": summary,
        "runs": runs,
        "wall_seconds": time.perf_counter() - started,
    }
    if "ours" in summary and "peer" in summary:
        paired = [
            o["tokens_per_s"] / p["tokens_per_s"]
            for o, p in zip(runs["ours"], runs["peer"], strict=True)
        ]
        report["ratio"] = summary["ours"]["tokens_per_s"] / summary["peer"]["tokens_per_s"]
        report["ratio_paired_median"] = median(paired)
        report["ratio_met"] = report["ratio"] >= GOAL_RATIO
        report["floor_met"] = summary["ours"]["floor_fraction"] >= GOAL_FLOOR_FRACTION
    if "ours" in summary and "ours_full_head" in summary:
        report["head_change_speedup"] = (
            summary["ours"]["tokens_per_s"] / summary["ours_full_head"]["tokens_per_s"]
        )
    write_json(args.out, report)
    print({k: v for k, v in report.items() if k in ("ratio", "head_change_speedup", "summary")})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
