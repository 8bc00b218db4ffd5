"""The unit of work "train one run", shared by every executor.

`train_one` takes plain values and returns plain values, so it runs in this process or as a Ray
task alike; `record_training` is the driver's half: the run's rows and its done mark in one
transaction.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from whichlora.study.context import StudyContext
from whichlora.study.plan import RunSpec

log = logging.getLogger("whichlora")


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def describe_failure(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _run_logger(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


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
