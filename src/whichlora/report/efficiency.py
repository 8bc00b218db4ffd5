"""How close each stage ran to its FLOP floor: the FLOPs it needed at the machine's matmul speed.

Units record their seconds and, where counted, the tokens and matmul FLOPs their forwards needed
(models/flops.py); the study records the machine's float32 and bfloat16 GEMM throughput when it
starts work (kv `matmul`). Floor time = FLOPs / GEMM throughput of the precision the stage ran
in; efficiency = floor time / measured time. Times are noisy on shared machines, this ratio
much less so: it says which stage is far from what its arithmetic allows.
"""

from __future__ import annotations

from typing import Any

MATMUL_KV = "matmul"
STAGES = ("training", "evaluation", "embedding")


def _stage_of(run_id: str, stage: str) -> str | None:
    kind = stage.partition(":")[0]
    if kind == "train":
        return "training"
    if kind in ("evaluate", "validate"):
        return "evaluation"
    if run_id == "study" and kind == "embed":
        return "embedding"
    return None


def efficiency_rows(
    store: Any, precisions: dict[str, str], throughput: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One row per stage (and 'study'): seconds, tokens, FLOPs, floor seconds, efficiency.

    `precisions` maps stage -> fp32|bf16 (the GEMM speed its floor uses); `throughput` the
    measured GFLOP/s (default: what the study stored). Units without a FLOP count (lm-eval
    tasks, units from before counting) are left out of their stage; the study row divides
    every stage's floor by every unit's seconds, analysis included."""
    throughput = throughput or store.get_kv(MATMUL_KV)
    if not throughput:
        return []
    totals: dict[str, list[float]] = {s: [0.0, 0.0, 0.0] for s in STAGES}
    all_seconds = 0.0
    rows = store.query(
        "SELECT run_id, stage, seconds, tokens, flops FROM units WHERE status='done'"
    )
    for run_id, stage, seconds, tokens, flops in rows:
        all_seconds += seconds or 0.0
        name = _stage_of(run_id, stage)
        if name is None or not flops or not seconds:
            continue
        totals[name][0] += seconds
        totals[name][1] += tokens or 0
        totals[name][2] += flops
    out = []
    floor_total = fp32_total = 0.0
    for name in STAGES:
        seconds, tokens, flops = totals[name]
        if not seconds:
            continue
        precision = precisions.get(name, "fp32")
        floor = flops / (throughput[f"{precision}_gflops"] * 1e9)
        fp32_floor = flops / (throughput["fp32_gflops"] * 1e9)
        floor_total += floor
        fp32_total += fp32_floor
        out.append(
            {
                "stage": name,
                "precision": precision,
                "seconds": seconds,
                "tokens": int(tokens),
                "flops": flops,
                "floor_seconds": floor,
                "efficiency": floor / seconds,
                # the same FLOPs at float32 GEMM speed: what bf16 gains over float32 work
                "fp32_floor_seconds": fp32_floor,
                "fp32_efficiency": fp32_floor / seconds,
            }
        )
    if out and all_seconds:
        out.append(
            {
                "stage": "study",
                "precision": "",
                "seconds": all_seconds,
                "tokens": sum(r["tokens"] for r in out),
                "flops": sum(r["flops"] for r in out),
                "floor_seconds": floor_total,
                "efficiency": floor_total / all_seconds,
                "fp32_floor_seconds": fp32_total,
                "fp32_efficiency": fp32_total / all_seconds,
            }
        )
    return out


def study_precisions(study: Any) -> dict[str, str]:
    """The precision each stage ran in, for its floor."""
    scoring = study.evaluation.precision if study.evaluation.precision != "auto" else "fp32"
    training = getattr(study.training, "precision", "fp32")  # pinned in a study's resolved.yaml
    return {
        "training": "bf16" if training == "bf16" else "fp32",
        "evaluation": scoring,
        "embedding": scoring,
    }
