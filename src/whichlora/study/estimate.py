"""Cost estimates before anything is trained: FLOPs from token counts and the model size, over
this machine's measured matmul speed (at a realistic efficiency)."""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

EFFICIENCY = 0.35  # share of matmul peak a small-batch LM step reaches on CPU, measured here


@lru_cache(maxsize=1)
def matmul_flops(size: int = 768, repeats: int = 8) -> float:
    """Measured fp32 matmul FLOP/s of this machine (torch, current threads)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def estimate_run_seconds(
    base_params: int, tokens_per_step: float, steps: int, eval_tokens: float
) -> dict[str, float]:
    """Training: forward plus input-gradient backward through the frozen base (4 x params FLOPs
    per token); evaluation: forward only (2 x params per token)."""
    peak = matmul_flops() * EFFICIENCY
    train = 4 * base_params * tokens_per_step * steps / peak
    evaluate = 2 * base_params * eval_tokens / peak
    return {"train_seconds": train, "evaluate_seconds": evaluate, "total_seconds": train + evaluate}


def summarize_plan(ctx: Any) -> Any:
    """A DataFrame: one row per run with its estimated seconds, plus what the base costs."""
    import pandas as pd
    from transformers import AutoConfig

    from whichlora.models.loading import load_tokenizer, resolve_model_path
    from whichlora.techniques.budget import base_param_count
    from whichlora.train.prompting import encode_records

    study = ctx.study
    config = AutoConfig.from_pretrained(
        resolve_model_path(study.model.id), trust_remote_code=study.model.trust_remote_code
    )
    params = base_param_count(config)
    tokenizer = load_tokenizer(study.model.id, study.model.trust_remote_code)
    train, evalset = ctx.data()
    sample = encode_records(tokenizer, train[:200], study.training.max_length)
    mean_len = sum(e.length for e in sample) / max(1, len(sample))
    tokens_per_step = mean_len * study.training.batch_size * study.training.grad_accum
    eval_items = sum(len(v) for v in evalset.knowledge.values()) * 5 + sum(
        len(v) for v in evalset.heldout.values()
    )
    eval_tokens = (
        eval_items * mean_len
        + sum(len(v) for v in evalset.generation.values()) * study.evaluation.max_new_tokens * 4
    )
    rows = []
    for run in ctx.runs:
        est = estimate_run_seconds(params, tokens_per_step, run.request.steps, eval_tokens)
        rows.append({**run.as_row(), "rank": run.request.rank, **est})
    frame = pd.DataFrame(rows)
    base = estimate_run_seconds(params, 0, 0, eval_tokens)["evaluate_seconds"]
    return frame, {
        "base_params": params,
        "train_examples": len(train),
        "mean_tokens": mean_len,
        "base_evaluate_seconds": base,
        "total_seconds": float(frame["total_seconds"].sum()) + base,
    }
