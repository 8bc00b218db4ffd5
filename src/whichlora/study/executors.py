"""Where units execute: here, one after another (default), or as Ray tasks on a cluster.

An executor only decides where a unit runs (training a run, scoring a model, embedding a model);
the driver records every outcome in the store, so results never depend on the executor. With
Ray the driver computes nothing but the analysis and the report.

A Ray task whose worker dies (killed for memory, its node lost, SIGKILL) is retried
`executor.max_retries` times by Ray (a training run resumes from its last checkpoint); after
that its units are recorded as failed with the reason, the study goes on without them, the
report lists them, and the next call on the study retries them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Protocol

from whichlora.config.study import ExecutorSpec
from whichlora.errors import WhichloraError
from whichlora.study.context import StudyContext
from whichlora.study.keys import TRAIN
from whichlora.study.plan import RunSpec
from whichlora.study.scoring import (
    attach,
    detached,
    record_failed,
    record_scored,
    score_units,
)
from whichlora.study.units import (
    describe_failure,
    lost_worker,
    progress_bar,
    record_training,
    train_one,
)

log = logging.getLogger("whichlora")

Jobs = list[tuple[str, list[str]]]  # (model: 'base' or a run id, its pending scoring units)


class Executor(Protocol):
    def train(
        self, ctx: StudyContext, runs: list[RunSpec], records: list[Any], *, progress: bool
    ) -> None: ...

    def evaluate(
        self, ctx: StudyContext, jobs: Jobs, *, progress: bool, embed: Collection[str] = ()
    ) -> None:
        """Score each job's units; the models in `embed` are also embedded for the analysis
        while loaded (one load and one merge serve both)."""
        ...

    def embed(self, ctx: StudyContext, key: str, *, progress: bool) -> dict[str, str]:
        """Compute the analysis' missing representations (into the study folder's cache);
        return model -> reason for those that could not be."""
        ...


class LocalExecutor:
    def train(
        self, ctx: StudyContext, runs: list[RunSpec], records: list[Any], *, progress: bool
    ) -> None:
        overall = progress_bar(len(runs), "train runs", progress)
        for run in runs:
            steps = progress_bar(run.request.steps, run.run_id, progress)

            def on_step(step: int, loss: float, bar: Any = steps) -> None:
                bar.set_postfix(loss=f"{loss:.3f}")
                bar.update(1)

            started = time.perf_counter()
            try:
                outcome = train_one(
                    run,
                    records,
                    ctx.run_dir(run.run_id),
                    on_step=on_step,
                    key=ctx.key(run.run_id, TRAIN),
                    validation=ctx.validation_records(),
                )
            except WhichloraError:
                raise
            except Exception as exc:  # a bug or a resource problem: record it, go on
                log.exception("run %s failed", run.run_id)
                outcome = {"status": "failed", "error": describe_failure(exc)}
            finally:
                steps.close()
            record_training(ctx, run, outcome, seconds=time.perf_counter() - started)
            overall.update(1)
        overall.close()

    def evaluate(
        self, ctx: StudyContext, jobs: Jobs, *, progress: bool, embed: Collection[str] = ()
    ) -> None:
        """Each unit lands in the store as soon as it is scored."""
        bar = progress_bar(len(jobs), "evaluate", progress)
        for run_id, stages in jobs:
            for unit in score_units(ctx, run_id, stages, embed=run_id in embed):
                record_scored(ctx, run_id, unit)
            bar.update(1)
        bar.close()

    def embed(self, ctx: StudyContext, key: str, *, progress: bool) -> dict[str, str]:
        return {}  # the analyze stage embeds in this process, with its own progress bar


class RayExecutor:
    """Each run, and each model's scoring and embedding, is one Ray task. The study folder must
    be on a file system every node sees (checked when the executor connects)."""

    def __init__(self, spec: ExecutorSpec) -> None:
        self.spec = spec
        self._ray: Any = None
        self._gpus = 0.0

    def _connect(self, ctx: StudyContext) -> Any:
        """Connect and check the cluster once per executor, before its first task."""
        if self._ray is None:
            from whichlora.study.ray_cluster import check_gpus, check_shared_folder, connect

            ray = connect(ctx.study)
            self._gpus = check_gpus(ctx.study, float(ray.cluster_resources().get("GPU", 0)))
            check_shared_folder(ray, ctx.study_dir)
            self._ray = ray
        return self._ray

    def _task(self, ray: Any, function: Callable[..., Any]) -> Any:
        # retry_exceptions stays off: an exception inside a unit is its outcome, not bad luck
        return ray.remote(
            num_cpus=self.spec.cpus_per_run,
            num_gpus=self._gpus,
            max_retries=self.spec.max_retries,
        )(function)

    def _collect(
        self,
        ray: Any,
        pending: dict[Any, Any],
        done: Callable[[Any, Any], None],
        lost: Callable[[Any, str], None],
        desc: str,
        progress: bool,
    ) -> None:
        """Record each task as it finishes; one whose worker died (after its retries) is
        `lost`, with the reason, and the others go on."""
        bar = progress_bar(len(pending), desc, progress)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                item = pending.pop(ref)
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # raised inside the task
                    cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                    log.error("%s of %s failed: %s", desc, item, describe_failure(cause))
                    lost(item, describe_failure(cause))
                except ray.exceptions.RayError as exc:  # the worker or its node died
                    reason = lost_worker(_ray_reason(exc, self.spec.max_retries))
                    log.error("%s of %s: %s", desc, item, reason)
                    lost(item, reason)
                else:
                    done(item, value)
                bar.update(1)
        bar.close()

    def train(
        self, ctx: StudyContext, runs: list[RunSpec], records: list[Any], *, progress: bool
    ) -> None:
        ray = self._connect(ctx)
        task = self._task(ray, _train_task)
        records_ref = ray.put(records)
        validation_ref = ray.put(ctx.validation_records())
        pending = {
            task.remote(
                run,
                records_ref,
                str(ctx.run_dir(run.run_id)),
                ctx.key(run.run_id, TRAIN),
                validation_ref,
            ): run
            for run in runs
        }

        def done(run: RunSpec, value: tuple[dict[str, Any], float]) -> None:
            outcome, seconds = value
            record_training(ctx, run, outcome, seconds=seconds)

        def lost(run: RunSpec, reason: str) -> None:
            record_training(ctx, run, {"status": "failed", "error": reason})

        self._collect(ray, pending, done, lost, "train runs (ray)", progress)

    def evaluate(
        self, ctx: StudyContext, jobs: Jobs, *, progress: bool, embed: Collection[str] = ()
    ) -> None:
        if not jobs:
            return
        ray = self._connect(ctx)
        task = self._task(ray, _score_task)
        values = ray.put(detached(ctx))
        pending = {
            task.remote(values, run_id, stages, run_id in embed): (run_id, stages)
            for run_id, stages in jobs
        }

        def done(job: tuple[str, list[str]], units: list[Any]) -> None:
            for unit in units:
                record_scored(ctx, job[0], unit)

        def lost(job: tuple[str, list[str]], reason: str) -> None:
            for stage in job[1]:
                record_failed(ctx, job[0], stage, reason)

        self._collect(ray, pending, done, lost, "evaluate (ray)", progress)

    def embed(self, ctx: StudyContext, key: str, *, progress: bool) -> dict[str, str]:
        from whichlora.analyze.stage import embedding_pending

        models, texts = embedding_pending(ctx, key)
        if not models:
            return {}
        ray = self._connect(ctx)
        task = self._task(ray, _embed_task)
        values = ray.put(detached(ctx))
        batch_size = ctx.study.evaluation.batch_size
        pending = {task.remote(values, model, texts, batch_size): model for model in models}
        failed: dict[str, str] = {}
        self._collect(
            ray,
            pending,
            lambda model, _: None,  # the vectors are in the study folder's cache now
            failed.__setitem__,
            "embed (ray)",
            progress,
        )
        return failed


def _ray_reason(exc: BaseException, retries: int) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    tries = f"after {retries} retr{'y' if retries == 1 else 'ies'}"
    return f"{type(exc).__name__} {tries}" + (f" ({first})" if first else "")


def apply_threads(study: Any) -> None:
    """`training.threads` holds for the whole process (driver and workers), not only inside
    training: CPU reductions depend on the thread count, so a resumed process that skips training
    must score with the same threads as an uninterrupted one, or its metrics differ in the last
    digits."""
    if study.training.threads:
        import torch

        torch.set_num_threads(study.training.threads)


def _train_task(
    run: RunSpec, records: list[Any], run_dir: str, key: str, validation: list[Any]
) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    try:
        outcome = train_one(run, records, Path(run_dir), key=key, validation=validation)
    except Exception as exc:
        outcome = {"status": "failed", "error": describe_failure(exc)}
    return outcome, time.perf_counter() - started


def _score_task(
    values: dict[str, Any], run_id: str, stages: list[str], embed: bool = False
) -> list[Any]:
    ctx = attach(values)
    apply_threads(ctx.study)
    return list(score_units(ctx, run_id, stages, embed=embed))


def _embed_task(
    values: dict[str, Any], run_id: str, texts: dict[str, list[str]], batch_size: int
) -> None:
    from whichlora.analyze.representations import cached_representations

    ctx = attach(values)
    apply_threads(ctx.study)
    cached_representations(ctx, run_id, texts, batch_size=batch_size)


def get_executor(spec: ExecutorSpec) -> Executor:
    return RayExecutor(spec) if spec.kind == "ray" else LocalExecutor()
