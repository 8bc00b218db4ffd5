"""Seconds per training step of every registered technique at one matched budget, against LoRA.

Each technique's capacity knob is solved for the same trainable count (`--fraction` of the
model's parameters, 0.005 by default, counted exactly on the meta device as a study does); a
technique that cannot come within 10% still runs, at its nearest knob value, and is marked.
Every run is whichlora's own `train_adapter` (the path a study takes) on batches of exactly
BATCH x SEQ tokens, in its own fresh process. Techniques alternate: the order is reversed on
every other repetition, so a slow spell of a shared machine does not land on one technique.
Seconds per step (the training log's own per-step clock): median of the timed steps after the
warm-up steps of one process; over the repetitions, min and median. Data-driven initialisations
(EVA, CorDA, LoRA-GA) report their preparation time apart from the step time; a study counts it
in the run's cost.

    python benchmarks/bench_techniques.py                      # every technique, bundled model
    python benchmarks/bench_techniques.py --techniques lora,dora,hira --repeats 3
    python benchmarks/bench_techniques.py --model /path/to/tiny --seq 16 --batch 2 \\
        --warm 0 --steps 2 --repeats 1 --out /tmp/t.json       # a quick check that it works
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
    command_line,
    loadavg,
    machine,
    median,
    peak_rss_mb,
    run_child,
    write_json,
)
from bench_train_step import full_length_records  # noqa: E402

DROPOUT, LR = 0.05, 2e-4
DEFAULTS = {"fraction": 0.005, "warm": 1, "steps": 4, "repeats": 3, "batch": 8, "seq": 128}


def matched_knobs(model: str, techniques: list[str], fraction: float) -> dict[str, dict[str, Any]]:
    """Each technique's knob value nearest `fraction` of the model's parameters, and its count."""
    from transformers import AutoConfig

    from whichlora.models.loading import resolve_model_path
    from whichlora.techniques import REGISTRY, AdapterSettings
    from whichlora.techniques.budget import WITHIN, base_param_count, solve_knob

    config = AutoConfig.from_pretrained(resolve_model_path(model))
    target = round(fraction * base_param_count(config))
    solved = {}
    for name in techniques:
        technique = REGISTRY[name]
        settings = AdapterSettings(dropout=DROPOUT)
        value, count = solve_knob(config, technique, settings, target)
        solved[name] = {
            "knob": technique.knob.name,
            "knob_value": value,
            "trainable_params": count,
            "target": target,
            "within_10pct": abs(count - target) <= WITHIN * target,
        }
    return solved


# --------------------------------------------------------------------------- one run


def child(args: argparse.Namespace) -> int:
    import json

    import torch

    from whichlora.models.loading import load_model
    from whichlora.train.loop import TrainRequest, train_adapter

    torch.set_num_threads(args.threads)
    load_before = loadavg()
    loaded = load_model(args.model)
    records = full_length_records(loaded.tokenizer, args.seq)
    knob, value = args.knob.split("=")
    request = TrainRequest(
        model=args.model,
        technique=args.technique,
        steps=args.warm + args.steps,
        batch_size=args.batch,
        learning_rate=LR,
        max_length=args.seq,
        rank=int(value) if knob == "rank" else 8,
        options={} if knob == "rank" else {knob: int(value)},
        dropout=DROPOUT,
        threads=args.threads,
        checkpoint_every=None,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wl-tech-") as tmp:
        log = train_adapter(request, records, Path(tmp) / "run", loaded=loaded)
    steps = log["steps"]
    assert all(s["tokens"] == args.batch * args.seq for s in steps), "batches must be full"
    # The loop's own clock per optimizer step: forward, backward, clip, step, hooks; not the
    # data-driven init (prepare_seconds), the adapter's construction or saving.
    wall = [s["seconds"] for s in steps]
    prepare = log["summary"]["prepare_seconds"]
    result = {
        "technique": args.technique,
        "step_seconds": wall,
        "seconds_per_step": median(wall[args.warm :]),
        "prepare_seconds": prepare,
        "trainable_params": log["budget"]["trainable_params_measured"],
        "knob": log["budget"]["knob"],
        "knob_value": log["budget"]["knob_value"],
        "losses": [s["loss"] for s in steps],
        "peak_rss_mb": peak_rss_mb(),
        "total_seconds": time.perf_counter() - started,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")
    return 0


# --------------------------------------------------------------------------- orchestration


def child_args(args: argparse.Namespace, technique: str, knob: str) -> list[str]:
    return [
        __file__,
        "--technique",
        technique,
        "--knob",
        knob,
        "--model",
        args.model,
        "--warm",
        str(args.warm),
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--seq",
        str(args.seq),
        "--threads",
        str(args.threads),
    ]


def summarise(
    techniques: list[str],
    knobs: dict[str, dict[str, Any]],
    runs: dict[str, list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """One row per technique: min/median seconds per step over repetitions, ratios to LoRA."""
    lora = runs.get("lora")
    lora_median = median([r["seconds_per_step"] for r in lora]) if lora else None
    rows = []
    for name in techniques:
        per_rep = [r["seconds_per_step"] for r in runs[name]]
        row = {
            "technique": name,
            **knobs[name],
            "trainable_params_measured": runs[name][0]["trainable_params"],
            "seconds_per_step_min": min(per_rep),
            "seconds_per_step_median": median(per_rep),
            "prepare_seconds_median": median([r["prepare_seconds"] for r in runs[name]]),
            "peak_rss_mb_median": median([r["peak_rss_mb"] for r in runs[name]]),
            "ratio_to_lora": None,
            "ratio_to_lora_paired_median": None,
            "runs": runs[name],
        }
        if lora and lora_median:
            row["ratio_to_lora"] = row["seconds_per_step_median"] / lora_median
            # Paired per repetition: this technique and LoRA ran in the same pass.
            row["ratio_to_lora_paired_median"] = median(
                [t / l_["seconds_per_step"] for t, l_ in zip(per_rep, lora, strict=True)]
            )
        rows.append(row)
    return rows


def parent(args: argparse.Namespace) -> int:
    from whichlora.techniques import REGISTRY

    techniques = args.techniques.split(",") if args.techniques else list(REGISTRY)
    unknown = [t for t in techniques if t not in REGISTRY]
    if unknown:
        raise SystemExit(f"unknown technique(s) {unknown}; choose among {list(REGISTRY)}")
    if "lora" not in techniques:
        techniques.insert(0, "lora")  # every ratio is to LoRA, measured in the same passes
    knobs = matched_knobs(args.model, techniques, args.fraction)
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in techniques}
    started = time.perf_counter()
    for rep in range(args.repeats):
        order = techniques if rep % 2 == 0 else techniques[::-1]
        for name in order:
            knob = f"{knobs[name]['knob']}={knobs[name]['knob_value']}"
            data = run_child(child_args(args, name, knob))
            runs[name].append(data)
            print(
                f"[rep {rep}] {name:11s} {knob:18s} {data['trainable_params']:>10,}  "
                f"{data['seconds_per_step']:7.3f} s/step  prepare {data['prepare_seconds']:6.1f} s"
                f"  rss {data['peak_rss_mb']:6.0f} MB  load {data['loadavg_after'][0]}",
                flush=True,
            )
    rows = summarise(techniques, knobs, runs)
    cmd_args = []
    if args.techniques:
        cmd_args.append(f"--techniques {args.techniques}")
    if args.model != MODEL:
        cmd_args.append(f"--model {args.model}")
    for key, default in DEFAULTS.items():
        if getattr(args, key) != default:
            cmd_args.append(f"--{key} {getattr(args, key)}")
    report = {
        "benchmark": "techniques",
        "command": command_line("bench_techniques.py", *cmd_args),
        "settings": {
            "model": args.model,
            "fraction": args.fraction,
            "target_trainable_params": next(iter(knobs.values()))["target"],
            "batch": args.batch,
            "seq": args.seq,
            "threads": args.threads,
            "warm_steps": args.warm,
            "timed_steps": args.steps,
            "repeats": args.repeats,
            "dropout": DROPOUT,
            "learning_rate": LR,
            "dtype": "float32",
        },
        "machine": machine(),
        "wall_seconds": time.perf_counter() - started,
        "rows": rows,
    }
    write_json(args.out, report)
    for row in rows:
        ratio = row["ratio_to_lora"]
        print(
            f"{row['technique']:11s} {row['knob'] + '=' + str(row['knob_value']):18s} "
            f"{row['trainable_params_measured']:>10,}{'' if row['within_10pct'] else ' (>10%)'}  "
            f"min {row['seconds_per_step_min']:.3f}  median {row['seconds_per_step_median']:.3f} "
            "s/step" + (f"  x{ratio:.2f} LoRA" if ratio is not None else "")
        )
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--techniques", default="", help="comma list; default: all registered")
    parser.add_argument("--model", default=MODEL, help="any model spec whichlora loads")
    parser.add_argument("--fraction", type=float, default=DEFAULTS["fraction"])
    parser.add_argument("--warm", type=int, default=DEFAULTS["warm"], help="untimed first steps")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="timed steps")
    parser.add_argument("--repeats", type=int, default=DEFAULTS["repeats"])
    parser.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    parser.add_argument("--seq", type=int, default=DEFAULTS["seq"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "techniques.json")
    parser.add_argument("--technique", help=argparse.SUPPRESS)  # child: one run
    parser.add_argument("--knob", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warm < 0 or args.repeats < 1:
        parser.error("--steps and --repeats must be at least 1, --warm at least 0")
    return child(args) if args.technique else parent(args)


if __name__ == "__main__":
    sys.exit(main())
