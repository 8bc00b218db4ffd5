"""The unit of work "score one model", shared by every executor.

`score_units` loads a model once (a fresh base plus the run's adapter from disk) and yields one
`ScoredUnit` per unit: one evaluation language of the built-in suite, one harness task, or the
validation split. It writes nothing, so it runs in this process or as a Ray task alike;
`record_scored` is the driver's half: the unit's rows and its done mark in one transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whichlora.evaluate.suite import EvalSet
from whichlora.models.flops import counting
from whichlora.models.scoring import run_scoring_model
from whichlora.store import Store
from whichlora.study.context import StudyContext
from whichlora.study.keys import ATLAS, HARNESS, VALIDATE
from whichlora.study.units import unit_rows

log = logging.getLogger("whichlora")


@dataclass
class ScoredUnit:
    """One finished scoring unit: its rows, what it replaces, and how long it took."""

    stage: str
    rows: dict[str, list[dict[str, Any]]]
    clear: list[tuple[str, str, tuple[Any, ...]]]
    seconds: float
    tokens: int | None = None  # what the unit's forwards read (lm-eval's are not counted)
    flops: float | None = None  # their matmul FLOPs (models/flops.py), for the FLOP floors


def _embedding(ctx: StudyContext, run_id: str) -> Callable[[Any, Any], None] | None:
    """A callable that embeds `run_id` with a given (model, tokenizer) into the analysis's
    representation cache (in the study folder), or None when the cache holds it already."""
    from whichlora.analyze.representations import cached_representations, is_cached
    from whichlora.analyze.stage import parallel_texts

    texts = parallel_texts(ctx.study)
    if is_cached(ctx, run_id, texts):
        return None

    def embed(model: Any, tokenizer: Any) -> None:
        cached_representations(
            ctx,
            run_id,
            texts,
            batch_size=ctx.study.evaluation.batch_size,
            loader=lambda _ctx, _run: (model, tokenizer),
        )

    return embed


def _only_language(evalset: EvalSet, language: str) -> EvalSet:
    return EvalSet(
        knowledge={k: v for k, v in evalset.knowledge.items() if k == language},
        heldout={k: v for k, v in evalset.heldout.items() if k == language},
        generation={k: v for k, v in evalset.generation.items() if k == language},
        validation=[],
    )


def _score_unit(
    ctx: StudyContext, model: Any, tokenizer: Any, run_id: str, stage: str
) -> dict[str, list[dict[str, Any]]]:
    from whichlora.evaluate.suite import evaluate_model, evaluate_validation

    _, evalset = ctx.data()
    spec = ctx.study.evaluation
    kind, _, name = stage.partition(":")
    if kind == VALIDATE:
        result = evaluate_validation(
            model, tokenizer, evalset.validation, run_id, batch_size=spec.batch_size
        )
        return {"metrics": result.metrics, "examples": result.examples}
    if kind == ATLAS:
        from whichlora.evaluate.atlas import score_atlas

        result, tokens = score_atlas(
            model, tokenizer, ctx.atlas_texts(), run_id, batch_size=spec.batch_size
        )
        log.info("atlas of %s: %d tokens scored", run_id, tokens)
        return {"metrics": result.metrics, "examples": result.examples}
    if kind == HARNESS:
        from whichlora.evaluate.harness import run_harness

        metrics, examples = run_harness(
            model,
            tokenizer,
            [name],
            include_path=(
                str(Path(spec.harness_include_path).resolve())
                if spec.harness_include_path
                else None
            ),
            limit=spec.harness_limit,
            batch_size=spec.batch_size,
            run_id=run_id,
        )
        return {"metrics": metrics, "examples": examples}
    result = evaluate_model(
        model,
        tokenizer,
        _only_language(evalset, name),
        run_id,
        batch_size=spec.batch_size,
        max_new_tokens=spec.max_new_tokens,
    )
    return {
        "metrics": result.metrics,
        "examples": result.examples,
        "generations": result.generations,
    }


def score_units(
    ctx: StudyContext, run_id: str, stages: list[str], *, embed: bool = False
) -> Iterator[ScoredUnit]:
    """Score `stages` of one model, loading it once (and only when there is work), then with
    `embed` its representations for the analysis from the same model: one copy of the base and
    one merge serve both. The embedding lands in the study folder's cache (atomic file)."""
    embedding = _embedding(ctx, run_id) if embed else None
    if not stages and embedding is None:
        return
    model, tokenizer = run_scoring_model(ctx, run_id)
    try:
        for stage in stages:
            started = time.perf_counter()
            with counting() as work:
                rows = _score_unit(ctx, model, tokenizer, run_id, stage)
            yield ScoredUnit(
                stage,
                rows,
                unit_rows(run_id, stage),
                time.perf_counter() - started,
                tokens=work.tokens or None,
                flops=work.flops or None,
            )
        if embedding is not None:
            embedding(model, tokenizer)
    finally:
        del model


def record_scored(ctx: StudyContext, run_id: str, unit: ScoredUnit) -> None:
    ctx.store.finish_unit(
        run_id,
        unit.stage,
        unit.rows,
        clear=unit.clear,
        seconds=unit.seconds,
        key=ctx.key(run_id, unit.stage),
        tokens=unit.tokens,
        flops=unit.flops,
    )


def record_failed(ctx: StudyContext, run_id: str, stage: str, error: str) -> None:
    """A unit that could not be computed: failed for its current inputs, retried on the next
    call (only done units are reused)."""
    ctx.store.finish_unit(
        run_id, stage, {}, status="failed", error=error, key=ctx.key(run_id, stage)
    )


def detached(ctx: StudyContext) -> dict[str, Any]:
    """What a worker process needs to score or embed models of this study: plain values
    (no database, no lock), the evaluation set included so workers do not rebuild it."""
    _, evalset = ctx.data()
    return {
        "study": ctx.study,
        "study_dir": str(ctx.study_dir),
        "runs": ctx.runs,
        "keys": ctx.keys,
        "evalset": evalset,
    }


def attach(values: dict[str, Any]) -> StudyContext:
    """A worker's context from `detached` values: an empty in-memory store, since workers never
    write results (the driver records them)."""
    return StudyContext(
        study=values["study"],
        study_dir=Path(values["study_dir"]),
        store=Store.empty(),
        runs=values["runs"],
        keys=values["keys"],
        # scoring reads only the evaluation set; training records stay with the driver
        cache={"train": [], "evalset": values["evalset"]},
    )
