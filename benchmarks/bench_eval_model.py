"""One model's evaluation and embedding at quickstart settings: the old path against the new one.

Side by side in one process, alternating, per repetition: the machine's GEMM speed (2048^3,
best of 5), then

- before: a fresh load in float32, multiple-choice forwards of at most `batch_size`
  continuations, and a second fresh load for the embedding (what the analysis did);
- after-bf16 / after-fp32: the shared `ScoringModels` base, packed rows batched by lm-eval's
  token budget, the same model embedded, in bfloat16 / float32.

Each part (knowledge, held-out NLL, generation, embedding) reports seconds and its efficiency
against the FLOP floor of its precision; the last lines compare bf16 with fp32 metrics on the
real model (per language) and the new fp32 path with the old one.

    python benchmarks/bench_eval_model.py --reps 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO,
    RESULTS,
    command_line,
    machine,
    quickstart_parts,
    time_embedding,
    time_parts,
    write_json,
)

VARIANTS = ("before", "after-bf16", "after-fp32")


def old_batches(rows: list[Any], batch_size: int) -> Any:
    """The batching before: at most `batch_size` continuations per forward, packed or not."""
    batch: list[Any] = []
    count = 0
    for row in rows:
        if batch and count + len(row.members) > batch_size:
            yield batch
            batch, count = [], 0
        batch.append(row)
        count += len(row.members)
    if batch:
        yield batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "eval_model.json")
    args = parser.parse_args(argv)

    import torch

    from whichlora.analyze.stage import parallel_texts
    from whichlora.config.study import load_study
    from whichlora.evaluate import scoring
    from whichlora.models.flops import machine_throughput
    from whichlora.models.scoring import ScoringModels, load_scoring_model
    from whichlora.study.datasets import evaluation_set, training_data

    torch.set_num_threads(args.threads)
    study = load_study(REPO / "examples/quickstart.yaml")
    spec = study.evaluation
    evalset = evaluation_set(study, training_data(study)[1])
    texts = parallel_texts(study)
    parts = quickstart_parts(evalset)
    new_batches = scoring._batches
    shared = {p: ScoringModels(study.model, True, p) for p in ("fp32", "bf16")}
    for models in shared.values():
        models.get(None)  # the one read from disk, outside the timings

    def one(variant: str) -> tuple[dict[str, float], dict[str, float], dict[Any, Any]]:
        seconds: dict[str, float] = {}
        scoring._batches = old_batches if variant == "before" else new_batches
        started = time.perf_counter()
        if variant == "before":
            model, tokenizer = load_scoring_model(study.model, None, True)
        else:
            model, tokenizer = shared[variant.split("-")[1]].get(None)
        seconds["load"] = time.perf_counter() - started
        timed, flops, metrics = time_parts(model, tokenizer, parts, spec, "base")
        seconds.update(timed)
        if variant == "before":  # the analysis loaded the model again
            started = time.perf_counter()
            model, tokenizer = load_scoring_model(study.model, None, True)
            seconds["load"] += time.perf_counter() - started
        seconds["embed"], flops["embed"] = time_embedding(model, tokenizer, texts, spec)
        return seconds, flops, metrics

    reps: list[dict[str, Any]] = []
    metrics: dict[str, dict[Any, Any]] = {}
    for rep in range(args.reps):
        gemm = machine_throughput("cpu")
        for variant in VARIANTS:
            seconds, flops, metrics[variant] = one(variant)
            precision = "bf16" if "bf16" in variant else "fp32"
            floor = gemm[f"{precision}_gflops"] * 1e9
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
                "efficiency",
                {k: f"{v:.0%}" for k, v in eff.items()},
                f"(GEMM {gemm['fp32_gflops']:.0f}/{gemm['bf16_gflops']:.0f} GFLOP/s fp32/bf16)",
                flush=True,
            )
    full, half, old = metrics["after-fp32"], metrics["after-bf16"], metrics["before"]
    agreement = {
        name: {k: half[k] - full[k] for k in full if k.endswith(f":{name}") and full[k] is not None}
        for name in ("nll", "mc_acc", "chrf")
    }
    for name, diffs in agreement.items():
        print(f"bf16 - fp32 {name}:", {k: round(v, 4) for k, v in diffs.items()})
    same = max(abs(full[k] - old[k]) for k in full if full[k] is not None)
    print(f"new fp32 path vs old: max |metric difference| {same:.2g}")
    write_json(
        args.out,
        {
            "benchmark": "eval_model",
            "command": command_line("bench_eval_model.py") + f" --reps {args.reps}",
            "reps": reps,
            "bf16_minus_fp32": agreement,
            "new_fp32_vs_old_max_abs": same,
            "machine": machine(),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
