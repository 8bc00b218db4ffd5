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

from whichlora.errors import WhichloraError
from whichlora.models.scoring import release_scoring_models
from whichlora.store import BASE
from whichlora.study.context import StudyContext, best_rate, register_runs, validation_nll
from whichlora.study.executors import Executor, apply_threads, get_executor
from whichlora.study.keys import TRAIN, VALIDATE
from whichlora.study.plan import RunSpec
from whichlora.study.units import is_lost_worker

log = logging.getLogger("whichlora")
STAGES = ("train", "evaluate", "analyze", "report")


# ---------------------------------------------------------------------------------- train
def pending_training(ctx: StudyContext, retry_failed: bool = False) -> list[RunSpec]:
    """Runs never trained, or trained with other inputs (stale), or failed when retrying; a run
    whose worker was lost is always retried (its inputs may be fine)."""
    out = []
    for run in ctx.runs:
        status = ctx.unit_status(run.run_id, TRAIN)
        if status in (None, "stale") or (
            status == "failed"
            and (retry_failed or is_lost_worker(ctx.store.unit_error(run.run_id, TRAIN)))
        ):
            out.append(run)
    return out


def train_stage(
    ctx: StudyContext,
    *,
    progress: bool = True,
    retry_failed: bool = False,
    executor: Executor | None = None,
) -> None:
    pending = pending_training(ctx, retry_failed)
    if not pending:
        return
    records, _ = ctx.data()
    executor = executor or get_executor(ctx.study.executor)
    executor.train(ctx, pending, records, progress=progress)


# ------------------------------------------------------------------------------- evaluate
def _pending_units(ctx: StudyContext, run_id: str, stages: list[str]) -> list[str]:
    return [s for s in stages if ctx.unit_status(run_id, s) != "done"]


def select_learning_rates(ctx: StudyContext) -> list[str]:
    """Per technique label, the rate with the lowest mean validation NLL over seeds; every run
    of the label at that rate counts (with `training.sweep_seeds`, the seeds run at it after
    the sweep too)."""
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
        scores = validation_nll(ctx.store, [r for runs in rates.values() for r in runs])
        if scores:
            chosen.extend(r.run_id for r in rates[best_rate(scores)])
    ctx.store.set_kv("selected_runs", sorted(chosen))
    ctx.store.set_kv("lr_selection_metric", "validation nll (lower is better)")
    return chosen


def evaluate_stage(
    ctx: StudyContext,
    *,
    only: str | None = None,
    progress: bool = True,
    executor: Executor | None = None,
) -> None:
    """Score the base and the runs: first the base's test units and the sweep's validation
    (which choose learning rates), then the test units of the selected runs. The executor
    decides where each model is scored; every unit is recorded here."""
    apply_threads(ctx.study)
    executor = executor or get_executor(ctx.study.executor)
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
    first = [
        (run_id, _pending_units(ctx, run_id, stages))
        for run_id, stages in models
        if only in (None, run_id)
    ]
    executor.evaluate(ctx, [job for job in first if job[1]], progress=progress, embed={BASE})
    if all(ctx.unit_status(r.run_id, TRAIN) in ("done", "failed") for r in ctx.runs):
        select_learning_rates(ctx)
    selected = {r.run_id for r in ctx.selected_runs()}
    second = [
        (run.run_id, _pending_units(ctx, run.run_id, ctx.test_stages()))
        for run in trained
        if run.run_id in selected and only in (None, run.run_id)
    ]
    executor.evaluate(ctx, [job for job in second if job[1]], progress=progress, embed=selected)


def analyze_step(ctx: StudyContext, *, progress: bool = True, executor: Executor) -> None:
    """Embed the models where the executor runs them, then analyse here. A model that could not
    be embedded fails the analysis unit (with the reason) instead of the study; the next call
    redoes it."""
    from whichlora.analyze.stage import STAGE, analyze_stage

    key = ctx.analysis_key()
    lost = executor.embed(ctx, key, progress=progress)
    if lost:
        reason = "; ".join(f"embedding {model}: {why}" for model, why in lost.items())
        log.error("analysis skipped: %s", reason)
        ctx.store.finish_unit("study", STAGE, {}, status="failed", error=reason, key=key)
        return
    analyze_stage(ctx, progress=progress, key=key)


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
    apply_threads(ctx.study)
    executor = get_executor(ctx.study.executor)
    if {"train", "evaluate"} & set(stages):
        measure_machine(ctx)
    if "train" in stages:
        train_stage(ctx, progress=progress, retry_failed=retry_failed, executor=executor)
    try:
        if "evaluate" in stages:
            evaluate_stage(ctx, progress=progress, executor=executor)
            added = ctx.replan()  # training.sweep_seeds: the seeds at the chosen rates
            if added and "train" in stages:
                register_runs(ctx.store, added)
                train_stage(ctx, progress=progress, retry_failed=retry_failed, executor=executor)
                evaluate_stage(ctx, progress=progress, executor=executor)
        if "analyze" in stages:
            analyze_step(ctx, progress=progress, executor=executor)
    finally:
        release_scoring_models()
    if "report" in stages:
        from whichlora.report.build import build_report

        build_report(ctx.store, ctx.study, ctx.study_dir, ctx.current_runs())
