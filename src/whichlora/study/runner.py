"""Run a study: every unit of work once, in order, resumable at any point.

Units: evaluate the base model; per run, train then evaluate; choose learning rates; analyse;
report. A unit's results land in the store in one transaction together with its "done" mark, and
files appear whole (atomic rename), so a study killed at any moment resumes where it stopped and
ends exactly as an uninterrupted run would. Evaluation always loads the adapter from disk onto a
freshly loaded base, so a resumed study scores the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from whichlora.errors import WhichloraError
from whichlora.study.context import StudyContext
from whichlora.study.plan import RunSpec

log = logging.getLogger("whichlora")

BASE = "base"
STAGES = ("train", "evaluate", "analyze", "report")


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def _run_logger(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def apply_threads(ctx: StudyContext) -> None:
    """`training.threads` holds for the whole process, not only inside training: CPU reductions
    depend on the thread count, so a resumed process that skips training must score with the same
    threads as an uninterrupted one, or its metrics differ in the last digits."""
    if ctx.study.training.threads:
        import torch

        torch.set_num_threads(ctx.study.training.threads)


def load_scoring_model(ctx: StudyContext, run_id: str) -> tuple[Any, Any]:
    """A fresh base (never `disable_adapter()`: PiSSA/OLoRA rewrite base weights), plus the
    run's adapter from disk when `run_id` is a run, merged into the weights unless
    `evaluation.merge_adapters` is off.

    Merging computes the same function up to float rounding (~1e-6 relative in float32) and
    makes every technique score at the base model's speed: unmerged, DoRA renormalises its
    weights and VeRA rebuilds its scaled matrices at every forward (DoRA's evaluation took
    2.5x the base's on the quickstart)."""
    from whichlora.models.loading import load_model

    spec = ctx.study.model
    loaded = load_model(
        spec.id,
        dtype=spec.dtype,
        trust_remote_code=spec.trust_remote_code,
        allow_pickle=spec.allow_pickle,
        device=spec.device,
        device_map=spec.device_map,
    )
    model = loaded.model
    if run_id != BASE:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, ctx.run_dir(run_id) / "adapter")
        if ctx.study.evaluation.merge_adapters:
            model = model.merge_and_unload()
        model.eval()
    return model, loaded.tokenizer


def _data(ctx: StudyContext) -> tuple[list[Any], Any]:
    if "train" not in ctx.cache:
        from whichlora.study.datasets import evaluation_set, training_data

        train, validation = training_data(ctx.study)
        ctx.cache["train"] = train
        ctx.cache["evalset"] = evaluation_set(ctx.study, validation)
    return ctx.cache["train"], ctx.cache["evalset"]


# ---------------------------------------------------------------------------------- train
def _training_rows(run_id: str, train_log: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    summary, budget = train_log["summary"], train_log["budget"]
    steps = [
        {
            "run_id": run_id,
            "step": s["step"],
            "loss": s["loss"],
            "lr": s["lr"],
            "grad_norm": s["grad_norm"],
            "tokens": s["tokens"],
            "seconds": s["seconds"],
        }
        for s in train_log["steps"]
    ]
    cost = {
        "run_id": run_id,
        "rank": budget["rank"],
        "trainable_params": budget["trainable_params"],
        "trainable_fraction": budget["trainable_fraction"],
        "seconds_per_step": summary["seconds_per_step"],
        "tokens_per_second": summary["tokens_per_second"],
        "peak_rss_mb": summary["peak_rss_mb"],
        "adapter_bytes": summary["adapter_bytes"],
        "wall_seconds": summary["wall_seconds"],
    }
    return {"training": steps, "costs": [cost]}


def train_one(
    run: RunSpec,
    records: list[Any],
    run_dir: Path,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train a run unless its adapter folder already exists; return its log (or the failure).

    Plain values in and out, so it can run in this process or as a Ray task.
    """
    from whichlora.train.loop import LOG_FILE, TrainingDiverged, train_adapter

    log_path = run_dir / LOG_FILE
    if log_path.is_file():  # trained before a crash, not yet recorded
        return {"status": "done", "log": json.loads(log_path.read_text(encoding="utf-8"))}
    handler = _run_logger(run_dir.parent / f"{run_dir.name}.log")
    try:
        log.info(
            "training %s (%s, seed %s, lr %g)",
            run.run_id,
            run.technique,
            run.seed,
            run.learning_rate,
        )
        train_log = train_adapter(run.request, records, run_dir, on_step=on_step)
        summary = train_log["summary"]
        log.info(
            "trained %s: loss %.4f -> %.4f (mean of the first and last quarter of steps: "
            "%.4f -> %.4f)",
            run.run_id,
            summary["first_loss"],
            summary["final_loss"],
            summary.get("start_loss", summary["first_loss"]),
            summary.get("end_loss", summary["final_loss"]),
        )
        return {"status": "done", "log": train_log}
    except TrainingDiverged as exc:
        log.error("run %s failed: %s", run.run_id, exc)
        return {"status": "failed", "error": f"training diverged: {exc}"}
    finally:
        log.removeHandler(handler)
        handler.close()


def record_training(
    ctx: StudyContext, run: RunSpec, outcome: dict[str, Any], seconds: float | None = None
) -> None:
    if outcome["status"] == "done":
        ctx.store.finish_unit(
            run.run_id, "train", _training_rows(run.run_id, outcome["log"]), seconds=seconds
        )
    else:
        ctx.store.finish_unit(
            run.run_id, "train", {}, status="failed", error=outcome["error"], seconds=seconds
        )


def pending_training(ctx: StudyContext, retry_failed: bool = False) -> list[RunSpec]:
    out = []
    for run in ctx.runs:
        status = ctx.store.unit_status(run.run_id, "train")
        if status is None or (status == "failed" and retry_failed):
            out.append(run)
    return out


def train_stage(ctx: StudyContext, *, progress: bool = True, retry_failed: bool = False) -> None:
    from whichlora.study.executors import get_executor

    pending = pending_training(ctx, retry_failed)
    if not pending:
        return
    records, _ = _data(ctx)
    get_executor(ctx.study.executor).train(ctx, pending, records, progress=progress)


# ------------------------------------------------------------------------------- evaluate
def _evaluate_unit(ctx: StudyContext, run_id: str, split: str) -> None:
    from whichlora.evaluate.suite import evaluate_model, evaluate_validation

    stage = "evaluate" if split == "test" else "validate"
    if ctx.store.unit_status(run_id, stage) == "done":
        return
    _, evalset = _data(ctx)
    started = time.perf_counter()
    model, tokenizer = load_scoring_model(ctx, run_id)
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
    bar = _progress_bar(len(units) + len(trained), "evaluate", progress)
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

        build_report(ctx)


def describe_failure(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
