"""Where runs execute: here, one after another (default), or as Ray tasks on a cluster.

An executor only decides where `train_one` runs; the driver records every outcome in the store,
so results never depend on the executor.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from whichlora.config.study import ExecutorSpec
from whichlora.errors import WhichloraError
from whichlora.study.context import StudyContext
from whichlora.study.keys import TRAIN
from whichlora.study.plan import RunSpec
from whichlora.study.units import describe_failure, progress_bar, record_training, train_one

log = logging.getLogger("whichlora")


class Executor(Protocol):
    def train(
        self, ctx: StudyContext, runs: list[RunSpec], records: list[Any], *, progress: bool
    ) -> None: ...


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


class RayExecutor:
    """Each run is one Ray task; adapters are written to the study folder, which must be on a
    file system every node sees (as on any shared-storage cluster)."""

    def __init__(self, spec: ExecutorSpec) -> None:
        self.spec = spec

    def train(
        self, ctx: StudyContext, runs: list[RunSpec], records: list[Any], *, progress: bool
    ) -> None:
        try:
            import ray
        except ImportError:
            raise WhichloraError(
                "executor.kind is 'ray' but Ray is not installed. Fix: pip install 'whichlora[ray]'"
                " (or `pip install ray`), or use executor: {kind: local}."
            ) from None
        if not ray.is_initialized():
            ray.init(
                address=self.spec.address,
                include_dashboard=False,
                log_to_driver=False,
                ignore_reinit_error=True,
            )
        task = ray.remote(num_cpus=self.spec.cpus_per_run, num_gpus=self.spec.gpus_per_run)(
            _train_task
        )
        records_ref = ray.put(records)
        pending = {
            task.remote(
                run, records_ref, str(ctx.run_dir(run.run_id)), ctx.key(run.run_id, TRAIN)
            ): run
            for run in runs
        }
        bar = progress_bar(len(runs), "train runs (ray)", progress)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                run = pending.pop(ref)
                outcome, seconds = ray.get(ref)
                record_training(ctx, run, outcome, seconds=seconds)
                bar.update(1)
        bar.close()


def _train_task(
    run: RunSpec, records: list[Any], run_dir: str, key: str
) -> tuple[dict[str, Any], float]:
    from pathlib import Path

    started = time.perf_counter()
    try:
        outcome = train_one(run, records, Path(run_dir), key=key)
    except Exception as exc:
        outcome = {"status": "failed", "error": describe_failure(exc)}
    return outcome, time.perf_counter() - started


def get_executor(spec: ExecutorSpec) -> Executor:
    return RayExecutor(spec) if spec.kind == "ray" else LocalExecutor()
