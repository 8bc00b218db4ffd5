"""Run a study: every unit of work once, in order, resumable at any point.

Units: evaluate the base model (one unit per evaluation language and per harness task); per run,
train, then validate (in a learning-rate sweep) and evaluate (per language and task); choose
learning rates; analyse; report. Each unit is keyed by its inputs (study/keys.py): a unit done
for its current key is reused, so a study that gains seeds, techniques, rates, languages or tasks
computes only the new units. A unit's results land in the store in one transaction together with
its "done" mark and key, and files appear whole (atomic rename), so a study killed at any moment
resumes where it stopped and ends exactly as an uninterrupted run would. Evaluation always loads
the adapter from disk onto an untouched copy of the base (read from disk once per process), so a
resumed study scores the same weights as an uninterrupted one; it then embeds that same model for
the analysis (one load and one merge per model).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from whichlora.errors import WhichloraError
from whichlora.evaluate.suite import EvalSet
from whichlora.models.flops import counting
from whichlora.models.scoring import release_scoring_models, shared_scoring_models
from whichlora.store import BASE
from whichlora.store.names import ADAPTER_DIR
from whichlora.study.context import StudyContext
from whichlora.study.executors import get_executor
from whichlora.study.keys import HARNESS, TRAIN, VALIDATE
from whichlora.study.plan import RunSpec
from whichlora.study.units import progress_bar, unit_rows

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
    """The model `run_id` is scored as: a copy of the base (read from disk once per process),
    plus the run's adapter from disk, in the study's pinned precision."""
    adapter = None if run_id == BASE else ctx.run_dir(run_id) / ADAPTER_DIR
    spec = ctx.study.evaluation
    models = shared_scoring_models(ctx.study.model, spec.merge_adapters, spec.precision)
    return models.get(adapter)


# ---------------------------------------------------------------------------------- train
def pending_training(ctx: StudyContext, retry_failed: bool = False) -> list[RunSpec]:
    """Runs never trained, or trained with other inputs (stale), or failed when retrying."""
    out = []
    for run in ctx.runs:
        status = ctx.unit_status(run.run_id, TRAIN)
        if status in (None, "stale") or (status == "failed" and retry_failed):
            out.append(run)
    return out


def train_stage(ctx: StudyContext, *, progress: bool = True, retry_failed: bool = False) -> None:
    pending = pending_training(ctx, retry_failed)
    if not pending:
        return
    records, _ = ctx.data()
    get_executor(ctx.study.executor).train(ctx, pending, records, progress=progress)


# ------------------------------------------------------------------------------- evaluate
def _only_language(evalset: EvalSet, language: str) -> EvalSet:
    return EvalSet(
        knowledge={k: v for k, v in evalset.knowledge.items() if k == language},
        heldout={k: v for k, v in evalset.heldout.items() if k == language},
        generation={k: v for k, v in evalset.generation.items() if k == language},
        validation=[],
    )


def _score_unit(
    ctx: StudyContext, model: Any, tokenizer: Any, run_id: str, stage: str
) -> tuple[dict[str, list[dict[str, Any]]], list[tuple[str, str, tuple[Any, ...]]]]:
    """One scoring unit's rows and what it wrote before (to replace): one evaluation language of
    the built-in suite, one harness task, or the validation split."""
    from whichlora.evaluate.suite import evaluate_model, evaluate_validation

    _, evalset = ctx.data()
    spec = ctx.study.evaluation
    kind, _, name = stage.partition(":")
    if kind == VALIDATE:
        result = evaluate_validation(
            model, tokenizer, evalset.validation, run_id, batch_size=spec.batch_size
        )
        return {"metrics": result.metrics, "examples": result.examples}, unit_rows(run_id, stage)
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
        return {"metrics": metrics, "examples": examples}, unit_rows(run_id, stage)
    result = evaluate_model(
        model,
        tokenizer,
        _only_language(evalset, name),
        run_id,
        batch_size=spec.batch_size,
        max_new_tokens=spec.max_new_tokens,
    )
    rows = {"metrics": result.metrics, "examples": result.examples}
    rows["generations"] = result.generations
    return rows, unit_rows(run_id, stage)


def _embedding(ctx: StudyContext, run_id: str) -> Any:
    """A callable that embeds `run_id` with a given (model, tokenizer) into the analysis's
    representation cache, or None when the cache holds them already."""
    from whichlora.analyze.representations import cached_representations, representations_cached
    from whichlora.analyze.stage import parallel_texts

    texts = parallel_texts(ctx.study)
    if representations_cached(ctx, run_id, texts):
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


def _evaluate_units(ctx: StudyContext, run_id: str, stages: list[str], embed: bool) -> None:
    """Every unfinished unit in `stages` of one model, each in its own transaction, then (with
    `embed`) its representations for the analysis: one copy of the base and one merge serve
    both, made only when something is left to do."""
    pending = [s for s in stages if ctx.unit_status(run_id, s) != "done"]
    embedding = _embedding(ctx, run_id) if embed else None
    if not pending and embedding is None:
        return
    model, tokenizer = scoring_model(ctx, run_id)
    try:
        for stage in pending:
            started = time.perf_counter()
            with counting() as work:
                rows, clear = _score_unit(ctx, model, tokenizer, run_id, stage)
            ctx.store.finish_unit(
                run_id,
                stage,
                rows,
                clear=clear,
                seconds=time.perf_counter() - started,
                key=ctx.key(run_id, stage),
                tokens=work.tokens or None,  # lm-eval's forwards are not counted
                flops=work.flops or None,
            )
        if embedding is not None:
            embedding(model, tokenizer)
    finally:
        del model


def select_learning_rates(ctx: StudyContext) -> list[str]:
    """Per technique label, the rate with the lowest mean validation NLL over seeds."""
    chosen: list[str] = []
    by_label: dict[str, dict[float, list[RunSpec]]] = {}
    for run in ctx.runs:
        if ctx.unit_status(run.run_id, TRAIN) != "done":
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
    trained = [r for r in ctx.runs if ctx.unit_status(r.run_id, TRAIN) == "done"]
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
    models: list[tuple[str, list[str]]] = [(BASE, ctx.test_stages())]
    models += [(r.run_id, [VALIDATE]) for r in sweep]
    bar = progress_bar(len(models) + len(trained), "evaluate", progress)
    for run_id, stages in models:
        if only in (None, run_id):
            _evaluate_units(ctx, run_id, stages, embed=run_id == BASE)
        bar.update(1)
    if all(ctx.unit_status(r.run_id, TRAIN) in ("done", "failed") for r in ctx.runs):
        select_learning_rates(ctx)
    selected = {r.run_id for r in ctx.selected_runs()}
    for run in trained:
        if run.run_id in selected and only in (None, run.run_id):
            _evaluate_units(ctx, run.run_id, ctx.test_stages(), embed=True)
        bar.update(1)
    bar.close()


# ------------------------------------------------------------------------------ whole run
def measure_machine(ctx: StudyContext) -> None:
    """This machine's float32 and bfloat16 GEMM speed, stored before new work runs: the
    report's FLOP floors are computed from it (report/efficiency.py). Small GEMMs (1024^3,
    best of 3: ~0.1 s) so a study pays almost nothing; benchmarks measure at 2048^3."""
    if all(ctx.unit_status(run_id, stage) == "done" for run_id, stage in ctx.keys):
        return
    from whichlora.models.flops import machine_throughput
    from whichlora.models.loading import resolve_device
    from whichlora.report.efficiency import MATMUL_KV

    spec = ctx.study.model
    device = "cuda" if spec.device_map else resolve_device(spec.device)
    ctx.store.set_kv(MATMUL_KV, machine_throughput(device, size=1024, repeats=3))


def run_all(
    ctx: StudyContext,
    *,
    stages: tuple[str, ...] = STAGES,
    progress: bool = True,
    retry_failed: bool = False,
) -> None:
    apply_threads(ctx)
    if {"train", "evaluate"} & set(stages):
        measure_machine(ctx)
    if "train" in stages:
        train_stage(ctx, progress=progress, retry_failed=retry_failed)
    try:
        if "evaluate" in stages:
            evaluate_stage(ctx, progress=progress)
        if "analyze" in stages:
            from whichlora.analyze.stage import analyze_stage

            analyze_stage(ctx, progress=progress, key=ctx.analysis_key())
    finally:
        release_scoring_models()
    if "report" in stages:
        from whichlora.report.build import build_report

        build_report(ctx.store, ctx.study, ctx.study_dir, ctx.current_runs())
