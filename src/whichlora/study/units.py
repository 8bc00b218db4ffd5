"""The unit of work "train one run", shared by every executor.

`train_one` takes plain values and returns plain values, so it runs in this process or as a Ray
task alike; `record_training` is the driver's half: the run's rows and its done mark in one
transaction.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from whichlora.evaluate.atlas import ATLAS_PREFIX
from whichlora.paths import write_text_atomic
from whichlora.study.context import StudyContext
from whichlora.study.keys import ATLAS, EVALUATE, HARNESS, TRAIN, VALIDATE
from whichlora.study.plan import RunSpec

log = logging.getLogger("whichlora")
STALE_DIR = ".stale"  # runs/.stale/<run>-<old key>: adapters of changed runs, until gc


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def describe_failure(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


# A unit whose worker died (killed for memory, node lost, SIGKILL) after its retries, or whose
# processes stalled (train/distributed.py): the inputs may be fine, so a resumed study retries
# it without --retry-failed.
WORKER_LOST = "worker lost"


def lost_worker(reason: str) -> str:
    return f"{WORKER_LOST}: {reason}"


def is_lost_worker(error: str | None) -> bool:
    return bool(error) and str(error).startswith(WORKER_LOST)


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
            "validation_nll": s.get("validation_nll"),
        }
        for s in train_log["steps"]
    ]
    seconds_per_step, tokens_per_second = steady_speed(train_log["steps"])
    cost = {
        "run_id": run_id,
        "rank": budget["rank"],
        "trainable_params": budget["trainable_params"],
        "trainable_fraction": budget["trainable_fraction"],
        "seconds_per_step": seconds_per_step,
        "tokens_per_second": tokens_per_second,
        "first_step_seconds": train_log["steps"][0]["seconds"],
        "peak_rss_mb": summary["peak_rss_mb"],
        "peak_gpu_mb": summary.get("peak_gpu_mb"),  # a log from before per-run peaks has none
        "adapter_bytes": summary["adapter_bytes"],
        "wall_seconds": summary["wall_seconds"],
    }
    return {"training": steps, "costs": [cost]}


def steady_speed(steps: list[dict[str, Any]]) -> tuple[float, float]:
    """(seconds per step, tokens per second) over the steps after the first: the first step
    pays one-off costs (kernel selection, allocator growth, lazy imports) that say nothing about
    the technique; a one-step run has only its first step."""
    steady = steps[1:] or steps
    seconds = sum(s["seconds"] for s in steady)
    tokens = sum(s["tokens"] for s in steady)
    return seconds / len(steady), (tokens / seconds if seconds > 0 else 0.0)


def key_file(run_dir: Path) -> Path:
    """Beside the run folder: the key of the inputs the folder is (being) trained for."""
    return run_dir.parent / f"{run_dir.name}.key"


def stale_dir(run_dir: Path, key: str) -> Path:
    return run_dir.parent / STALE_DIR / f"{run_dir.name}-{key[:12] or 'unkeyed'}"


def _claim_folder(run_dir: Path, key: str) -> None:
    """Make `run_dir` belong to `key`: a folder trained for other inputs moves to
    runs/.stale/ (kept until `whichlora gc`), then the key file names the new inputs. In that
    order, so a kill between the steps never leaves an old adapter under the new key."""
    marker = key_file(run_dir)
    held = marker.read_text(encoding="utf-8").strip() if marker.is_file() else ""
    if held == key:
        return
    if run_dir.exists():
        target = stale_dir(run_dir, held)
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(run_dir, target)
    write_text_atomic(marker, key + "\n")


def train_one(
    run: RunSpec,
    records: list[Any],
    run_dir: Path,
    on_step: Callable[[int, float], None] | None = None,
    key: str = "",
    validation: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train a run unless its folder already holds an adapter for `key`; return its log (or
    the failure).

    Plain values in and out, so it can run in this process or as a Ray task.
    """
    from whichlora.errors import TrainingDiverged
    from whichlora.store.names import LOG_FILE
    from whichlora.train.distributed import TrainingStalled
    from whichlora.train.loop import train_adapter

    _claim_folder(run_dir, key)
    log_path = run_dir / LOG_FILE
    if log_path.is_file():  # trained before a crash, not yet recorded
        return {"status": "done", "log": json.loads(log_path.read_text(encoding="utf-8"))}
    handler = _run_logger(run_dir.parent / f"{run_dir.name}.log")
    try:
        log.info(
            "training %s (%s, seed %s, lr %g) in process %d",
            run.run_id,
            run.technique,
            run.seed,
            run.learning_rate,
            os.getpid(),  # which worker to look at (or kill) on a cluster
        )
        train_log = train_adapter(
            run.request, records, run_dir, on_step=on_step, validation=validation
        )
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
    except TrainingStalled as exc:  # its inputs may be fine: the next call retries it
        log.error("run %s failed: %s", run.run_id, exc)
        return {"status": "failed", "error": lost_worker(str(exc))}
    finally:
        log.removeHandler(handler)
        handler.close()


def _training_work(ctx: StudyContext, train_log: dict[str, Any]) -> tuple[int, float]:
    """(tokens, FLOPs) a run's training needed: its steps' real tokens through a frozen base
    and the adapter (models/flops.py; the LM head at labelled positions is left out of the
    floor, the log does not count those)."""
    from whichlora.models.flops import config_matmul_params, training_flops
    from whichlora.models.loading import load_config

    if "matmul_params" not in ctx.cache:
        spec = ctx.study.model
        ctx.cache["matmul_params"] = config_matmul_params(
            load_config(spec.id, spec.trust_remote_code)
        )
    body, head = ctx.cache["matmul_params"]
    tokens = sum(int(s["tokens"]) for s in train_log["steps"])
    trainable = int(train_log["budget"]["trainable_params"])
    return tokens, training_flops(tokens, body, head, trainable, labelled=0)


def record_training(
    ctx: StudyContext, run: RunSpec, outcome: dict[str, Any], seconds: float | None = None
) -> None:
    key = ctx.key(run.run_id, TRAIN)
    if outcome["status"] == "done":
        rows = _training_rows(run.run_id, outcome["log"])
        tokens, flops = _training_work(ctx, outcome["log"])
        ctx.store.finish_unit(
            run.run_id, TRAIN, rows, seconds=seconds, key=key, tokens=tokens, flops=flops
        )
    else:
        ctx.store.finish_unit(
            run.run_id, TRAIN, {}, status="failed", error=outcome["error"], seconds=seconds, key=key
        )


def unit_rows(run_id: str, stage: str) -> list[tuple[str, str, tuple[Any, ...]]]:
    """(table, where, params) of every row the unit (run_id, stage) writes: what redoing it
    replaces and what `whichlora gc` frees."""
    kind, _, name = stage.partition(":")
    if kind == TRAIN:
        return [(t, "run_id=?", (run_id,)) for t in ("training", "costs")]
    if kind == VALIDATE:
        return [(t, "run_id=? AND split='validation'", (run_id,)) for t in ("metrics", "examples")]
    if kind == HARNESS:
        prefix = f"{HARNESS}:{name}:"
        where = "run_id=? AND split='test' AND substr(metric, 1, ?)=?"
        return [(t, where, (run_id, len(prefix), prefix)) for t in ("metrics", "examples")]
    if kind == ATLAS:
        where = f"run_id=? AND split='test' AND substr(metric, 1, {len(ATLAS_PREFIX)})=?"
        return [(t, where, (run_id, ATLAS_PREFIX)) for t in ("metrics", "examples")]
    if kind == EVALUATE and name:
        where = (
            "run_id=? AND split='test' AND language=? AND substr(metric, 1, 8)!='harness:' "
            f"AND substr(metric, 1, {len(ATLAS_PREFIX)})!='{ATLAS_PREFIX}'"
        )
        rows = [(t, where, (run_id, name)) for t in ("metrics", "examples")]
        return [*rows, ("generations", "run_id=? AND language=?", (run_id, name))]
    return []
