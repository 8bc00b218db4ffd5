"""One run's model scored at quickstart settings: before and after this round's scoring changes,
and the bundled model's first-use conversion before and after parsing its GGUF once.

A run's model is a copy of the base with a LoRA adapter merged in (rank 8 on every linear
layer, random B so the merge changes the weights), in bfloat16 as the quickstart scores it.
Side by side in one process, the order alternating per repetition:

- before: the LM head fed transformers' sliced hidden states (PEFT leaves a run's merged
  weights frozen, so torch.matmul runs the head as a batched matmul that copies its weight once
  per row), at the aligned suffix of scored positions;
- fold: the head's input made contiguous (`models/scoring.fold_head_matmul`), same positions;
- mask: fold, and the head only at the scored positions (boolean `logits_to_keep`), the
  log-softmax at the targets over all of a forward's targets at once;
- after: mask, the log-softmax at the targets a few rows at a time
  (`evaluate/scoring.TARGET_CHUNK_ROWS`; the whole array: 1 << 30 rows).

Each part (knowledge, held-out NLL, generation, embedding) reports min/median seconds, the ratio
before/after, and efficiency against the bf16 GEMM speed measured at each repetition's start.
With --conversion, the GGUF conversion runs twice per repetition into scratch folders, with and
without `_gguf_parsed_once`, alternating.

    python benchmarks/bench_run_scoring.py --reps 3 --conversion
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO,
    RESULTS,
    command_line,
    machine,
    median,
    quickstart_parts,
    time_embedding,
    time_parts,
    write_json,
)

VARIANTS = ("before", "fold", "mask", "after")
WHOLE = 1 << 30  # one chunk of every target: the log-softmax as it was before chunking
PARTS = ("knowledge", "heldout", "generation", "embed")


def make_adapter(study: Any, out: Path) -> Path:
    """A rank-8 LoRA on every linear layer of the base, B random: a stand-in trained run."""
    import torch
    from peft import LoraConfig, get_peft_model

    from whichlora.models.scoring import _load_base

    torch.manual_seed(0)
    model = _load_base(study.model, device="cpu").model
    config = LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return out


def time_conversion(reps: int) -> dict[str, list[float]]:
    from whichlora.models import builtin

    model = builtin.BUILTIN_MODELS["smollm2-135m"]
    seconds: dict[str, list[float]] = {"plain": [], "parsed-once": []}
    original = builtin._gguf_parsed_once
    for rep in range(reps):
        order = ["plain", "parsed-once"] if rep % 2 == 0 else ["parsed-once", "plain"]
        for variant in order:
            builtin._gguf_parsed_once = (
                original if variant == "parsed-once" else contextlib.nullcontext
            )
            with tempfile.TemporaryDirectory() as scratch:
                started = time.perf_counter()
                builtin._convert(model, Path(scratch))
                seconds[variant].append(time.perf_counter() - started)
            print("conversion", rep, variant, f"{seconds[variant][-1]:.1f} s", flush=True)
    builtin._gguf_parsed_once = original
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--conversion", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "run_scoring.json")
    args = parser.parse_args(argv)

    import torch

    from whichlora.analyze.stage import parallel_texts
    from whichlora.config.study import load_study
    from whichlora.evaluate import scoring
    from whichlora.models import scoring as scoring_models
    from whichlora.models.flops import machine_throughput
    from whichlora.study.datasets import evaluation_set, training_data

    torch.set_num_threads(args.threads)
    study = load_study(REPO / "examples/quickstart.yaml")
    spec = study.evaluation
    evalset = evaluation_set(study, training_data(study)[1])
    texts = parallel_texts(study)
    parts = quickstart_parts(evalset)
    fold, position_mask = scoring_models.fold_head_matmul, scoring.head_takes_position_mask
    chunk_rows = scoring.TARGET_CHUNK_ROWS
    scratch = Path(tempfile.mkdtemp())
    adapter = make_adapter(study, scratch / "adapter")
    shared = scoring_models.ScoringModels(study.model, True, "bf16")

    def one(variant: str) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
        scoring_models.fold_head_matmul = fold if variant != "before" else (lambda _m: None)
        scoring.head_takes_position_mask = (
            position_mask if variant in ("mask", "after") else (lambda _m: False)
        )
        scoring.TARGET_CHUNK_ROWS = chunk_rows if variant == "after" else WHOLE
        model, tokenizer = shared.get(adapter)  # the copy and merge, outside the timings
        seconds, flops, metrics = time_parts(model, tokenizer, parts, spec, "run")
        seconds["embed"], flops["embed"] = time_embedding(model, tokenizer, texts, spec)
        return seconds, flops, metrics

    reps: list[dict[str, Any]] = []
    metrics: dict[str, dict[str, Any]] = {}
    try:
        for rep in range(args.reps):
            gemm = machine_throughput("cpu")
            order = VARIANTS if rep % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                seconds, flops, metrics[variant] = one(variant)
                floor = gemm["bf16_gflops"] * 1e9
                eff = {k: flops[k] / floor / seconds[k] for k in flops}
                reps.append(
                    {
                        "rep": rep,
                        "variant": variant,
                        "seconds": seconds,
                        "flops": flops,
                        "efficiency": eff,
                        "matmul": gemm,
                        "loadavg": os.getloadavg()[0],
                    }
                )
                print(
                    rep,
                    variant,
                    {k: round(v, 2) for k, v in seconds.items()},
                    {k: f"{v:.0%}" for k, v in eff.items()},
                    f"(bf16 GEMM {gemm['bf16_gflops']:.0f} GFLOP/s)",
                    flush=True,
                )
    finally:
        scoring_models.fold_head_matmul, scoring.head_takes_position_mask = fold, position_mask
        scoring.TARGET_CHUNK_ROWS = chunk_rows

    summary: dict[str, Any] = {}
    for variant in VARIANTS:
        rows = [r for r in reps if r["variant"] == variant]
        summary[variant] = {
            part: {
                "min": min(r["seconds"][part] for r in rows),
                "median": median([r["seconds"][part] for r in rows]),
                "efficiency_median": median([r["efficiency"][part] for r in rows]),
            }
            for part in PARTS
        }
        total = [sum(r["seconds"][p] for p in PARTS) for r in rows]
        summary[variant]["total"] = {"min": min(total), "median": median(total)}
    differences = {
        variant: max(
            abs(metrics[variant][k] - metrics["before"][k])
            for k in metrics["before"]
            if metrics["before"][k] is not None
        )
        for variant in VARIANTS[1:]
    }
    for variant in VARIANTS[1:]:
        ratio = summary["before"]["total"]["median"] / summary[variant]["total"]["median"]
        print(f"{variant}: {ratio:.2f}x faster than before (median of the whole model)")
    print("max |metric difference| from before:", differences)
    conversion = time_conversion(max(2, args.reps - 1)) if args.conversion else None
    extra = " --conversion" if args.conversion else ""
    write_json(
        args.out,
        {
            "benchmark": "run_scoring",
            "command": command_line("bench_run_scoring.py") + f" --reps {args.reps}{extra}",
            "reps": reps,
            "summary": summary,
            "max_abs_metric_difference": differences,
            "conversion": conversion,
            "machine": machine(),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
