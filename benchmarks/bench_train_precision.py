"""The quickstart's training runs in float32 and in bf16 autocast, side by side.

Each of the quickstart's techniques trains its first run (its exact TrainRequest and training
records, all its steps) three ways on a fresh copy of the same base, the order rotating per
repetition:

- fp32: float32 throughout (what `training.precision: auto` gave on every CPU before);
- bf16-sdpa: bf16 autocast everywhere, attention included (CPU autocast casts SDPA to bf16);
- bf16: bf16 autocast with attention kept in float32 (`train/precision.float32_attention`),
  what `auto` gives now on a CPU with AMX or AVX512-BF16;
- for DoRA also fp32-peft-norm: fp32 with PEFT's own DoRA weight norm, against fp32 with the
  factored one (`techniques/methods/dora.py`), which every other variant uses.

Reported per technique: the run's seconds (median, min), the ratio fp32 / bf16, and the largest
difference of a step's loss from fp32's. The FLOPs of a run (models/flops.training_flops) put
each variant against the float32 GEMM floor measured at the start of every repetition.

    python benchmarks/bench_train_precision.py --reps 2
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, RESULTS, command_line, loadavg, machine, median, write_json  # noqa: E402

VARIANTS = ("fp32", "bf16-sdpa", "bf16")
PEFT_NORM = "fp32-peft-norm"


def variants_of(technique: str) -> tuple[str, ...]:
    return (*VARIANTS, PEFT_NORM) if technique == "dora" else VARIANTS


def train_once(base: Any, run: Any, records: list[Any], variant: str) -> dict[str, Any]:
    from whichlora.models.loading import LoadedModel
    from whichlora.techniques import REGISTRY
    from whichlora.train import loop

    loaded = LoadedModel(model=copy.deepcopy(base.model), tokenizer=base.tokenizer, path=base.path)
    request = dataclasses.replace(run.request, precision=variant.split("-")[0])
    kept, kept_entry = loop.float32_attention, REGISTRY[run.request.technique]
    if variant == "bf16-sdpa":  # the loop as it would be without the float32 attention
        loop.float32_attention = lambda model, precision, device: _plain()
    if variant == PEFT_NORM:  # the entry without its factored weight norm: PEFT's own
        REGISTRY[kept_entry.name] = dataclasses.replace(kept_entry, after_build=None)
    try:
        with tempfile.TemporaryDirectory(prefix="wl-prec-") as tmp:
            started = time.perf_counter()
            log = loop.train_adapter(request, records, Path(tmp) / "run", loaded=loaded)
            seconds = time.perf_counter() - started
    finally:
        loop.float32_attention, REGISTRY[kept_entry.name] = kept, kept_entry
    return {
        "seconds": seconds,
        "losses": [s["loss"] for s in log["steps"]],
        "tokens": sum(s["tokens"] for s in log["steps"]),
        "trainable": log["budget"]["trainable_params"],
    }


def _plain() -> Any:
    import contextlib

    return contextlib.nullcontext(False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="examples/quickstart.yaml")
    parser.add_argument("--techniques", default="", help="comma list (default: the study's)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "train_precision.json")
    args = parser.parse_args(argv)

    import torch

    from whichlora.config.study import load_study
    from whichlora.models.flops import config_matmul_params, machine_throughput, training_flops
    from whichlora.models.loading import load_model
    from whichlora.study.datasets import training_data
    from whichlora.study.plan import plan_study

    study = load_study(REPO / args.study)
    runs: dict[str, Any] = {}
    for run in plan_study(study):
        runs.setdefault(run.technique, run)
    if args.techniques:
        runs = {t: runs[t] for t in args.techniques.split(",")}
    first = next(iter(runs.values()))
    torch.set_num_threads(first.request.threads or 2)
    records, _ = training_data(study)
    base = load_model(first.request.model, dtype=first.request.dtype)
    body, head = config_matmul_params(base.model.config)
    reps: list[dict[str, Any]] = []
    started = time.perf_counter()
    for rep in range(args.reps):
        gemm = machine_throughput("cpu")
        for index, (technique, run) in enumerate(runs.items()):
            names = variants_of(technique)
            shift = (rep + index) % len(names)
            for variant in names[shift:] + names[:shift]:
                one = train_once(base, run, records, variant)
                flops = training_flops(one["tokens"], body, head, one["trainable"], labelled=0)
                one.update(
                    rep=rep,
                    technique=technique,
                    variant=variant,
                    flops=flops,
                    fp32_efficiency=flops / (gemm["fp32_gflops"] * 1e9) / one["seconds"],
                    matmul=gemm,
                    loadavg=loadavg(),
                )
                reps.append(one)
                print(
                    f"[rep {rep}] {technique:8s} {variant:9s} {one['seconds']:6.1f} s, "
                    f"{one['fp32_efficiency']:.0%} of the fp32 floor",
                    flush=True,
                )
    summary: dict[str, Any] = {}
    for technique in runs:
        names = variants_of(technique)
        rows = {
            v: [r for r in reps if r["technique"] == technique and r["variant"] == v] for v in names
        }
        seconds = {v: [r["seconds"] for r in rows[v]] for v in names}
        fp32_losses = rows["fp32"][0]["losses"]
        summary[technique] = {
            "seconds": {v: {"median": median(s), "min": min(s)} for v, s in seconds.items()},
            "fp32_efficiency": {v: median([r["fp32_efficiency"] for r in rows[v]]) for v in names},
            "speedup": median(seconds["fp32"]) / median(seconds["bf16"]),
            "speedup_over_bf16_sdpa": median(seconds["bf16-sdpa"]) / median(seconds["bf16"]),
            "max_loss_difference": {
                v: max(abs(a - b) for a, b in zip(rows[v][0]["losses"], fp32_losses, strict=True))
                for v in names[1:]
            },
        }
        if PEFT_NORM in seconds:
            summary[technique]["speedup_factored_norm"] = median(seconds[PEFT_NORM]) / median(
                seconds["fp32"]
            )
            print(f"dora: factored norm {summary[technique]['speedup_factored_norm']:.2f}x PEFT's")
        s = summary[technique]
        print(
            f"{technique}: fp32/bf16 {s['speedup']:.2f}x, bf16-sdpa/bf16 "
            f"{s['speedup_over_bf16_sdpa']:.2f}x, max |loss - fp32| {s['max_loss_difference']}"
        )
    totals = {v: sum(summary[t]["seconds"][v]["median"] for t in runs) for v in VARIANTS}
    write_json(
        args.out,
        {
            "benchmark": "train_precision",
            "command": command_line("bench_train_precision.py", f"--reps {args.reps}"),
            "study": args.study,
            "techniques": list(runs),
            "summary": summary,
            "totals": totals,
            "speedup_total": totals["fp32"] / totals["bf16"],
            "reps": reps,
            "machine": machine(),
            "wall_seconds": time.perf_counter() - started,
        },
    )
    print(
        f"all techniques: fp32 {totals['fp32']:.1f} s, bf16 {totals['bf16']:.1f} s "
        f"({totals['fp32'] / totals['bf16']:.2f}x); wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
