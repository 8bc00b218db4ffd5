"""Run a study: every unit of work once, in order, resumable at any point.

Units: evaluate the base model; per run, train then evaluate; choose learning rates; analyse;
report. A unit's results land in the store in one transaction together with its "done" mark, and
files appear whole (atomic rename), so a study killed at any moment resumes where it stopped and
ends exactly as an uninterrupted run would. Evaluation always loads the adapter from disk onto a
freshly loaded base, so a resumed study scores the same weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from whichlora.errors import WhichloraError
from whichlora.models.scoring import load_scoring_model
from whichlora.store import BASE
from whichlora.store.names import ADAPTER_DIR
from whichlora.study.context import StudyContext
from whichlora.study.executors import get_executor
from whichlora.study.plan import RunSpec
from whichlora.study.units import progress_bar

log = logging.getLogger("whichlora")
STAGES = ("train", "evaluate", "analyze", "report")


def apply_threads(ctx: StudyContext) -> None:
    """`training.threads` holds for the whole process, not only inside training: CPU reductions
    depend on the thread count, so a resumed process that skips training must score with the same
    threads as an uninterrupted one, or its metrics differ in the last digits."""
    if ctx.study.training.threads:
        import torch

        torch.set_num_threads(ctx.study.training.threads)


def scoring_model(ctx: StudyContext, run_id: str) -> tuple[Any, Any]:
    """The model `run_id` is scored as: a fresh base, plus the run's adapter from disk."""
    adapter = None if run_id == BASE else ctx.run_dir(run_id) / ADAPTER_DIR
    return load_scoring_model(ctx.study.model, adapter, ctx.study.evaluation.merge_adapters)


# ---------------------------------------------------------------------------------- train
def pending_training(ctx: StudyContext, retry_failed: bool = False) -> list[RunSpec]:
    out = []
    for run in ctx.runs:
        status = ctx.store.unit_status(run.run_id, "train")
        if status is None or (status == "failed" and retry_failed):
            out.append(run)
    return out


def train_stage(ctx: StudyContext, *, progress: bool = True, retry_failed: bool = False) -> None:
    pending = pending_training(ctx, retry_failed)
    if not pending:
        return
    records, _ = ctx.data()
    get_executor(ctx.study.executor).train(ctx, pending, records, progress=progress)


# ------------------------------------------------------------------------------- evaluate
def _evaluate_unit(ctx: StudyContext, run_id: str, split: str) -> None:
    from whichlora.evaluate.suite import evaluate_model, evaluate_validation

    stage = "evaluate" if split == "test" else "validate"
    if ctx.store.unit_status(run_id, stage) == "done":
        return
    _, evalset = ctx.data()
    started = time.perf_counter()
    model, tokenizer = scoring_model(ctx, run_id)
    spec = ctx.study.evaluation
    if split == "test":
        result = evaluate_model(
            model,
            tokenizer,
            evalset,
            run_id,
            batch_size=spec.batch_size,
            max_new_tokens=spec.max_new_tokens,
        )
    else:
        result = evaluate_validation(
            model, tokenizer, evalset.validation, run_id, batch_size=spec.batch_size
        )
    if split == "test" and spec.harness_tasks:
        from whichlora.evaluate.harness import run_harness

        metrics, examples = run_harness(
            model,
            tokenizer,
            list(spec.harness_tasks),
            include_path=(
                str(Path(spec.harness_include_path).resolve())
                if spec.harness_include_path
                else None
            ),
            limit=spec.harness_limit,
            batch_size=spec.batch_size,
            run_id=run_id,
        )
        result.metrics += metrics
        result.examples += examples
    rows = {"metrics": result.metrics, "examples": result.examples}
    clear = [(t, "run_id=? AND split=?", (run_id, split)) for t in ("metrics", "examples")]
    if split == "test":
        rows["generations"] = result.generations
        clear.append(("generations", "run_id=?", (run_id,)))
    ctx.store.finish_unit(run_id, stage, rows, clear=clear, seconds=time.perf_counter() - started)


def select_learning_rates(ctx: StudyContext) -> list[str]:
    """Per technique label, the rate with the lowest mean validation NLL over seeds."""
    chosen: list[str] = []
    by_label: dict[str, dict[float, list[RunSpec]]] = {}
    for run in ctx.runs:
        if ctx.store.unit_status(run.run_id, "train") != "done":
            continue
        by_label.setdefault(run.label, {}).setdefault(run.learning_rate, []).append(run)
    for _label, rates in by_label.items():
        if not any(r.sweep for runs in rates.values() for r in runs):
            chosen.extend(r.run_id for runs in rates.values() for r in runs)
            continue
        scores = {}
        for lr, runs in rates.items():
            values = [
                row[0]
                for run in runs
                for row in ctx.store.query(
                    "SELECT AVG(value) FROM examples WHERE run_id=? AND split='validation' "
                    "AND metric='nll'",
                    (run.run_id,),
                )
                if row[0] is not None
            ]
            if values:
                scores[lr] = sum(values) / len(values)
        if scores:
            best = min(scores, key=lambda lr: (scores[lr], lr))
            chosen.extend(r.run_id for r in rates[best])
    ctx.store.set_kv("selected_runs", sorted(chosen))
    ctx.store.set_kv("lr_selection_metric", "validation nll (lower is better)")
    return chosen


def evaluate_stage(ctx: StudyContext, *, only: str | None = None, progress: bool = True) -> None:
    apply_threads(ctx)
    trained = [r for r in ctx.runs if ctx.store.unit_status(r.run_id, "train") == "done"]
    if only is not None:
        if only != BASE and only not in {r.run_id for r in ctx.runs}:
            raise WhichloraError(
                f"Run '{only}' is not part of this study. Fix: use one of "
                f"{', '.join([BASE] + [r.run_id for r in ctx.runs])}."
            )
        if only != BASE and only not in {r.run_id for r in trained}:
            raise WhichloraError(
                f"Run '{only}' has not been trained. Fix: `whichlora train` first."
            )
    sweep = [r for r in trained if r.sweep]
    units: list[tuple[str, str]] = [(BASE, "test")]
    units += [(r.run_id, "validation") for r in sweep]
    bar = progress_bar(len(units) + len(trained), "evaluate", progress)
    for run_id, split in units:
        if only in (None, run_id):
            _evaluate_unit(ctx, run_id, split)
        bar.update(1)
    if all(ctx.store.unit_status(r.run_id, "train") is not None for r in ctx.runs):
        select_learning_rates(ctx)
    selected = {r.run_id for r in ctx.selected_runs()}
    for run in trained:
        if run.run_id in selected and only in (None, run.run_id):
            _evaluate_unit(ctx, run.run_id, "test")
        bar.update(1)
    bar.close()


# ------------------------------------------------------------------------------ whole run
def run_all(
    ctx: StudyContext,
    *,
    stages: tuple[str, ...] = STAGES,
    progress: bool = True,
    retry_failed: bool = False,
) -> None:
    apply_threads(ctx)
    if "train" in stages:
        train_stage(ctx, progress=progress, retry_failed=retry_failed)
    if "evaluate" in stages:
        evaluate_stage(ctx, progress=progress)
    if "analyze" in stages:
        from whichlora.analyze.stage import analyze_stage

        analyze_stage(ctx, progress=progress)
    if "report" in stages:
        from whichlora.report.build import build_report

        build_report(ctx.store, ctx.study, ctx.study_dir, ctx.runs)
