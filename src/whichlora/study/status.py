"""Where each unit of a study stands (a dry run), and what `whichlora gc` may free.

States: `done` (finished for its current inputs: reused), `failed` (finished with an error;
`--retry-failed` trains again; a run whose Ray worker was lost, and any other failed unit, is
retried anyway), `new` (never computed), `stale` (finished for other inputs:
redone, replacing the old results, only with `--yes`), and `unused` (in the store but no longer
asked for by the study: left out of the analysis and report, kept until `whichlora gc`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whichlora.store import BASE
from whichlora.store.names import RUNS_DIR
from whichlora.study.context import StudyContext
from whichlora.study.keys import TRAIN, VALIDATE
from whichlora.study.units import STALE_DIR, key_file, unit_rows

STUDY_UNITS = "study"  # run id of study-level units (analysis), rebuilt whole when inputs change


@dataclass(frozen=True)
class UnitState:
    run_id: str
    stage: str
    state: str


def unit_states(ctx: StudyContext) -> list[UnitState]:
    """Every planned unit with its state, then every unused unit the store holds."""
    out = []
    chosen = ctx.store.get_kv("selected_runs")
    sweep = {r.run_id for r in ctx.runs if r.sweep}
    for (run_id, stage), _key in ctx.keys.items():
        unchosen = chosen is not None and run_id in sweep and run_id not in chosen
        if unchosen and stage not in (TRAIN, VALIDATE):  # a rate the sweep did not keep
            continue
        status = ctx.unit_status(run_id, stage)
        out.append(UnitState(run_id, stage, status or "new"))
    held = ctx.store.units()
    for run_id, stage in sorted(held):
        if run_id != STUDY_UNITS and (run_id, stage) not in ctx.keys:
            out.append(UnitState(run_id, stage, "unused"))
    return out


def _measured(ctx: StudyContext) -> tuple[float | None, dict[str, float]]:
    """This study's own finished units: seconds per training step, and mean seconds per
    evaluation stage (one per language or harness task). A measured figure beats the FLOP
    estimate, which can be several times off on a busy or unusual machine."""
    steps = {r.run_id: r.request.steps for r in ctx.runs}
    per_step: list[float] = []
    per_stage: dict[str, list[float]] = {}
    rows = ctx.store.query("SELECT run_id, stage, seconds FROM units WHERE status='done'")
    for run_id, stage, seconds in rows:
        if seconds is None or run_id == STUDY_UNITS:
            continue
        if stage == TRAIN and steps.get(run_id):
            per_step.append(seconds / steps[run_id])
        elif stage != TRAIN:
            per_stage.setdefault(stage, []).append(seconds)
    mean_step = sum(per_step) / len(per_step) if per_step else None
    return mean_step, {k: sum(v) / len(v) for k, v in per_stage.items()}


def unit_estimates(ctx: StudyContext, states: list[UnitState]) -> dict[tuple[str, str], float]:
    """Estimated seconds of every unit: from this study's finished units of the same kind where
    there are any, else from study/estimate.py's FLOP-based per-run figures."""
    from whichlora.study.estimate import summarize_plan

    frame, totals = summarize_plan(ctx)
    per_run = {row["run_id"]: row for row in frame.to_dict("records")}
    steps = {r.run_id: r.request.steps for r in ctx.runs}
    per_step, per_stage = _measured(ctx)
    n_test = max(1, len(ctx.test_stages()))
    out = {}
    for unit in states:
        if unit.state == "unused":
            continue
        key = (unit.run_id, unit.stage)
        if unit.stage == TRAIN:
            measured = per_step * steps[unit.run_id] if per_step is not None else None
            out[key] = measured if measured is not None else per_run[unit.run_id]["train_seconds"]
        elif unit.stage in per_stage:
            out[key] = per_stage[unit.stage]
        elif unit.run_id == BASE:
            out[key] = totals["base_evaluate_seconds"] / n_test
        else:
            out[key] = per_run[unit.run_id]["evaluate_seconds"] / n_test
    return out


# ---------------------------------------------------------------------------------- gc
@dataclass
class Garbage:
    rows: list[tuple[str, str, tuple[Any, ...]]]
    units: list[tuple[str, str]]
    run_ids: list[str]  # runs the study no longer plans
    paths: list[Path]

    def n_files(self) -> int:
        return sum(len(_files(p)) for p in self.paths)

    def n_bytes(self) -> int:
        return sum(f.stat().st_size for p in self.paths for f in _files(p))


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else []


def find_garbage(ctx: StudyContext) -> Garbage:
    """Results that no longer belong to the study: unused and stale units' rows, runs no
    longer planned (rows and folders), and adapters of changed runs under runs/.stale/."""
    planned = {r.run_id for r in ctx.runs} | {BASE}
    held = ctx.store.units()
    units = sorted(
        unit
        for unit, (_status, key) in held.items()
        if unit[0] != STUDY_UNITS
        and unit[0] in planned
        and (unit not in ctx.keys or ctx.keys[unit] != key)
    )
    rows = [clause for run_id, stage in units for clause in unit_rows(run_id, stage)]
    gone = sorted(
        {r[0] for r in ctx.store.query("SELECT run_id FROM runs")}
        | {u[0] for u in held if u[0] != STUDY_UNITS}
    )
    gone = [run_id for run_id in gone if run_id not in planned]
    for run_id in gone:
        for table in ("metrics", "examples", "training", "costs", "generations", "units", "runs"):
            rows.append((table, "run_id=?", (run_id,)))
        # the cost row of its embedding (analyze/representations.py), kept with the study's
        rows.append(("units", "run_id=? AND stage=?", (STUDY_UNITS, f"embed:{run_id}")))
    root = ctx.study_dir / RUNS_DIR
    paths = [root / STALE_DIR] if (root / STALE_DIR).exists() else []
    for run_id in gone:
        run_dir = root / run_id
        for path in (run_dir, key_file(run_dir), root / f"{run_id}.log"):
            if path.exists():
                paths.append(path)
        reps = ctx.study_dir / "analysis" / "reps" / f"{run_id}.npz"
        if reps.exists():
            paths.append(reps)
    return Garbage(rows=rows, units=units, run_ids=gone, paths=paths)


def garbage_rows(ctx: StudyContext, garbage: Garbage) -> int:
    units = [("units", "run_id=? AND stage=?", unit) for unit in garbage.units]
    return ctx.store.count([*garbage.rows, *units])


def collect_garbage(ctx: StudyContext, garbage: Garbage) -> int:
    """Delete what `find_garbage` found (rows in one transaction, then files); return the
    number of rows deleted."""
    units = [("units", "run_id=? AND stage=?", unit) for unit in garbage.units]
    deleted = ctx.store.forget([*garbage.rows, *units])
    ctx.store.vacuum()
    for path in garbage.paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return deleted
