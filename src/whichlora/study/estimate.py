"""Cost estimates before anything is trained: the matmul FLOPs each unit needs (the accounting
of models/flops.py, from the model's config and the study's own tokens) over this machine's
measured GEMM speed in the precision the unit runs in, at the share of it such work reaches.

The shares are what the quickstart's units reach (BENCHMARKS.md, sections 5 and 10): a LoRA
training step about half of the float32 GEMM floor, a bf16 scoring forward about a fifth of the
bf16 floor (elementwise work and small matrices, not the GEMMs, set the rest); greedy decoding
runs one token at a time at matrix-vector speed, far below either. Scoring is costed in its own
precision, and a multiple-choice item as the packed sequence it runs as (its context once)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

# share of the GEMM floor of its precision a small-batch training step reaches: fp32 on CPU;
# bf16 on CPU (attention in float32) a smaller one, its steps gaining far less than its GEMMs
TRAIN_EFFICIENCY = {"float32": 0.45, "bfloat16": 0.1, "float16": 0.1}
SCORE_EFFICIENCY = {"float32": 0.35, "bfloat16": 0.2, "float16": 0.2}
GEMM_SIZE = 768
PER_MODEL_SECONDS = 1.5  # a run's copy of the base and its merge, before scoring starts
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@lru_cache(maxsize=8)
def matmul_flops(dtype: str = "float32", rows: int = GEMM_SIZE, width: int = GEMM_SIZE) -> float:
    """Measured matmul FLOP/s of this machine (torch, current threads): rows x width times
    width x width, best of 5."""
    from whichlora.models.flops import matmul_gflops

    return matmul_gflops(dtype, size=width, repeats=5, rows=rows) * 1e9


def estimate_run_seconds(
    matmul: tuple[int, int],
    tokens_per_step: float,
    labelled_per_step: float,
    steps: int,
    scoring: dict[str, float],
    train_dtype: str = "float32",
    score_dtype: str = "float32",
    width: int = GEMM_SIZE,
) -> dict[str, float]:
    """Training: a frozen base's forward and input gradients (4 FLOPs per body weight per token,
    the head at labelled positions); scoring: a forward (2 per weight per token, the head where
    a logit is read) plus greedy decoding, one token per forward at matrix-vector speed.

    `matmul` is (body, head) weights (models/flops.matmul_params); `scoring` holds the tokens,
    head positions and decoded tokens of one model's evaluation."""
    body, head = matmul
    train_flops = (4.0 * body * tokens_per_step + 4.0 * head * labelled_per_step) * steps
    share = TRAIN_EFFICIENCY.get(train_dtype, 0.1)
    train = train_flops / (matmul_flops(train_dtype) * share) if steps else 0.0
    forward = 2.0 * body * scoring["tokens"] + 2.0 * head * scoring["head_positions"]
    score_speed = matmul_flops(score_dtype) * SCORE_EFFICIENCY.get(score_dtype, 0.2)
    decode = scoring["decoded"] * 2.0 * (body + head) / matmul_flops(score_dtype, 1, width)
    evaluate = forward / score_speed + decode
    return {"train_seconds": train, "evaluate_seconds": evaluate, "total_seconds": train + evaluate}


def scoring_tokens(tokenizer: Any, evalset: Any, max_new_tokens: int) -> dict[str, float]:
    """Tokens one model's evaluation runs through the body, the logits it reads, and the tokens
    it decodes: multiple-choice items packed (a context once, then every choice), held-out
    responses after their prompts, generation prompts then `max_new_tokens` each."""
    from whichlora.data.knowledge import context, continuations
    from whichlora.train.prompting import format_prompt, split_prompt_response, user_message

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    tokens = positions = decoded = 0.0
    for items in evalset.knowledge.values():
        for item in items:
            choices = [count(c) for c in continuations(item)]
            tokens += count(context(item)) + sum(choices)
            positions += sum(choices)
    for records in evalset.heldout.values():
        for record in records:
            prompt, response = split_prompt_response(tokenizer, record)
            n = count(response)
            tokens += count(prompt) + n
            positions += n
    for records in evalset.generation.values():
        for record in records:
            tokens += count(format_prompt(tokenizer, user_message(record)))
            positions += 1
            decoded += max_new_tokens
    return {"tokens": tokens, "head_positions": positions, "decoded": decoded}


def _dtypes(ctx: Any, run: Any) -> tuple[str, str]:
    from whichlora.models.precision import scoring_dtype
    from whichlora.study.keys import evaluation_precision

    spec = ctx.study.model
    trained = run.request.precision  # resolved when the study was planned (study/plan.py)
    scored = evaluation_precision(ctx.study)
    return DTYPES.get(trained, spec.dtype), scoring_dtype(scored, spec.dtype)


def summarize_plan(ctx: Any) -> Any:
    """A DataFrame: one row per run with its estimated seconds, plus what the base costs."""
    import pandas as pd
    from transformers import AutoConfig

    from whichlora.models.flops import config_matmul_params
    from whichlora.models.loading import load_tokenizer, resolve_model_path
    from whichlora.techniques.budget import base_param_count
    from whichlora.train.prompting import encode_records

    study = ctx.study
    config = AutoConfig.from_pretrained(
        resolve_model_path(study.model.id), trust_remote_code=study.model.trust_remote_code
    )
    matmul = config_matmul_params(config)
    width = int(getattr(getattr(config, "text_config", None) or config, "hidden_size", GEMM_SIZE))
    tokenizer = load_tokenizer(study.model.id, study.model.trust_remote_code)
    train, evalset = ctx.data()
    sample = encode_records(tokenizer, train[:200], study.training.max_length)
    mean_len = sum(e.length for e in sample) / max(1, len(sample))
    mean_labelled = sum(sum(1 for x in e.labels if x != -100) for e in sample) / max(1, len(sample))
    per_step = study.training.batch_size * study.training.grad_accum
    scoring = scoring_tokens(tokenizer, evalset, study.evaluation.max_new_tokens)
    rows = []
    dtypes = ("float32", "float32")
    for run in ctx.runs:
        dtypes = _dtypes(ctx, run)
        est = estimate_run_seconds(
            matmul,
            mean_len * per_step,
            mean_labelled * per_step,
            run.request.steps,
            scoring,
            *dtypes,
            width=width,
        )
        est["evaluate_seconds"] += PER_MODEL_SECONDS
        est["total_seconds"] += PER_MODEL_SECONDS
        rows.append({**run.as_row(), "rank": run.request.rank, **est})
    frame = pd.DataFrame(rows)
    base = estimate_run_seconds(matmul, 0, 0, 0, scoring, *dtypes, width=width)
    return frame, {
        "base_params": base_param_count(config),
        "train_examples": len(train),
        "mean_tokens": mean_len,
        "base_evaluate_seconds": base["evaluate_seconds"],
        "total_seconds": float(frame["total_seconds"].sum()) + base["evaluate_seconds"],
    }
