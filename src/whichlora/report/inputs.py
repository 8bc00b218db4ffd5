"""Everything the report reads, gathered once from the study folder and its store.

Sections only look at these frames, so each can check for what is missing and say so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from whichlora.config.study import Study
from whichlora.data.languages import evaluation_languages
from whichlora.evaluate.atlas import ATLAS_PREFIX
from whichlora.evaluate.atlas import TOKENS as ATLAS_TOKENS
from whichlora.report.efficiency import efficiency_rows, study_precisions
from whichlora.report.style import Palette
from whichlora.store import BASE, RESOLVED, Store, selected
from whichlora.store.names import LOG_FILE, RUNS_DIR

RUN_COLUMNS = ["run_id", "technique", "label", "seed", "learning_rate"]
ATLAS_STAGE = "atlas"  # the atlas unit's stage name (study/keys.py ATLAS; the report sits below)


@dataclass
class ReportInputs:
    study: Study
    study_dir: Path
    runs: pd.DataFrame  # selected runs: run_id, technique (registry name), label, seed, lr
    planned: pd.DataFrame  # every planned run, with its train/evaluate status and error
    labels: list[str]  # techniques as shown, in study order, only those with a selected run
    baseline: str
    source: str
    seen: list[str]  # target languages in the training data
    unseen: list[str]  # target languages evaluated but never trained on
    metrics: pd.DataFrame  # test split, base + selected runs
    examples: pd.DataFrame
    training: pd.DataFrame
    costs: pd.DataFrame
    analysis: pd.DataFrame
    significance: pd.DataFrame
    config_text: str
    versions: pd.DataFrame  # run_id + one column per library
    palette: Palette
    resamples: int
    alpha: float
    verdicts: pd.DataFrame = field(default_factory=pd.DataFrame)  # family, metric, technique, ...
    atlas: pd.DataFrame = field(default_factory=pd.DataFrame)  # atlas examples, every language
    atlas_cost: pd.DataFrame = field(default_factory=pd.DataFrame)  # run_id, seconds, tokens
    # failed units that belong to no run: the base model's evaluation, the study's analysis
    failed_shared: pd.DataFrame = field(default_factory=pd.DataFrame)  # run_id, stage, error
    efficiency: list[dict[str, Any]] = field(default_factory=list)  # report/efficiency.py rows
    alike: pd.DataFrame = field(default_factory=pd.DataFrame)  # technique, pooling, layer, ...

    @property
    def targets(self) -> list[str]:
        return self.seen + self.unseen

    def label_of(self, name: str) -> str:
        """Map a technique name as the analysis wrote it (label or registry name) to its label."""
        if name in self.labels or self.runs.empty:
            return name
        match = self.runs.loc[self.runs["technique"] == name, "label"].unique()
        return str(match[0]) if len(match) == 1 else name

    def runs_of(self, label: str) -> pd.DataFrame:
        return self.runs[self.runs["label"] == label]


def _planned(store: Store, runs: Sequence[Any], in_results: set[str]) -> pd.DataFrame:
    """Every planned run with its train/evaluate status and, if one failed, the first error."""
    units = {(u.run_id, u.stage): u for u in store.frame("units").itertuples()}
    for (run_id, stage), unit in list(units.items()):  # evaluation units, per language or task
        kind = stage.partition(":")[0]
        if kind in ("evaluate", "harness") and stage != "evaluate":
            held = units.get((run_id, "evaluate"))
            if held is None or (held.status == "done" and unit.status == "failed"):
                units[(run_id, "evaluate")] = unit
    rows = []
    for run in runs:
        row = {c: getattr(run, c) for c in RUN_COLUMNS}
        for stage in ("train", "evaluate"):
            unit = units.get((run.run_id, stage))
            row[stage] = str(unit.status) if unit else "not run"
            if unit and unit.status == "failed":
                row.setdefault("failed_stage", stage)
                error = unit.error if isinstance(unit.error, str) and unit.error else None
                row.setdefault("error", error or "(no message)")
        row["in_results"] = run.run_id in in_results
        rows.append(row)
    columns = [*RUN_COLUMNS, "train", "evaluate", "in_results", "failed_stage", "error"]
    return pd.DataFrame(rows, columns=columns)


def _versions(study_dir: Path, run_ids: list[str]) -> pd.DataFrame:
    rows = []
    for run_id in run_ids:
        path = study_dir / RUNS_DIR / run_id / LOG_FILE
        try:
            versions = json.loads(path.read_text(encoding="utf-8")).get("versions") or {}
        except (OSError, ValueError, AttributeError):
            continue
        rows.append({"run_id": run_id, **{str(k): str(v) for k, v in versions.items()}})
    return pd.DataFrame(rows)


def _languages(study: Study, metrics: pd.DataFrame) -> tuple[str, list[str], list[str]]:
    """Source, seen and unseen languages: those evaluated, or planned while nothing is."""
    source = study.evaluation.source_language
    trained = set(study.data.trained_languages)
    planned = set(study.evaluation.languages or study.data.languages)
    evaluated = sorted(set(metrics["language"]) if len(metrics) else planned)
    seen = [lang for lang in evaluated if lang in trained and lang != source]
    unseen = [lang for lang in evaluated if lang not in trained and lang != source]
    return source, seen, unseen


def _atlas_cost(store: Store, metrics: pd.DataFrame, keep: set[str]) -> pd.DataFrame:
    """Seconds and tokens of each model's atlas unit (the cost section's atlas table)."""
    columns = ["run_id", "seconds", "tokens"]
    units = store.frame("units")
    units = units[(units["stage"] == ATLAS_STAGE) & units["run_id"].isin(keep)]
    if units.empty or metrics.empty:
        return pd.DataFrame(columns=columns)
    tokens = metrics[metrics["metric"] == ATLAS_TOKENS].groupby("run_id")["value"].sum()
    frame = units[["run_id", "seconds"]].assign(tokens=units["run_id"].map(tokens))
    return frame[columns].reset_index(drop=True)


def load_inputs(store: Store, study: Study, study_dir: Path, runs: Sequence[Any]) -> ReportInputs:
    """What the report reads: `store` holds the results, `study` is the resolved study, `runs`
    its planned runs (objects with run_id, technique, label, seed, learning_rate, sweep).

    Only the planned runs and the base are read: results of runs the study no longer asks for
    stay in the store (until `whichlora gc`) but never reach the report."""
    chosen = selected(runs, store.get_kv("selected_runs"))
    keep = {BASE, *(r.run_id for r in chosen)}

    languages = set(evaluation_languages(study))

    def table(name: str, split: str | None = None) -> pd.DataFrame:
        frame = store.frame(name)
        frame = frame[frame["run_id"].isin(keep)]
        if split is not None:
            frame = frame[frame["split"] == split]
            atlas = frame["metric"].str.startswith(ATLAS_PREFIX)
            atlas_rows[name] = frame[atlas] if study.evaluation.atlas is not None else frame[:0]
            frame = frame[~atlas]  # the atlas has its own section (report/atlas.py)
            # languages dropped from the study stay in the store until gc, not in the report
            harness = frame["metric"].str.startswith("harness:")
            frame = frame[frame["language"].isin(languages) | harness]
        return frame.reset_index(drop=True)

    atlas_rows: dict[str, pd.DataFrame] = {}
    metrics, examples = table("metrics", "test"), table("examples", "test")
    training, costs = table("training"), table("costs")
    with_data = set(metrics["run_id"]) | set(training["run_id"]) | set(costs["run_id"])
    frame = pd.DataFrame(
        [{c: getattr(r, c) for c in RUN_COLUMNS} for r in chosen if r.run_id in with_data],
        columns=RUN_COLUMNS,
    )
    order = [t.run_label for t in study.techniques]
    source, seen, unseen = _languages(study, metrics)
    resolved = study_dir / RESOLVED
    inputs = ReportInputs(
        study=study,
        study_dir=study_dir,
        runs=frame,
        planned=_planned(store, runs, set(frame["run_id"])),
        labels=[label for label in order if label in set(frame["label"])],
        baseline=study.analysis.baseline,
        source=source,
        seen=seen,
        unseen=unseen,
        metrics=metrics,
        examples=examples,
        training=training,
        costs=costs,
        analysis=table("analysis"),
        significance=store.frame("significance"),
        verdicts=store.frame("verdicts"),
        config_text=resolved.read_text(encoding="utf-8") if resolved.is_file() else "",
        versions=_versions(study_dir, list(frame["run_id"])),
        palette=Palette(order),
        resamples=study.analysis.bootstrap_resamples,
        alpha=study.analysis.alpha,
        atlas=atlas_rows["examples"].reset_index(drop=True),
        atlas_cost=_atlas_cost(store, atlas_rows["metrics"], keep),
    )
    inputs.baseline = inputs.label_of(inputs.baseline)
    inputs.alike = _table_or_empty(store, "alike")
    inputs.failed_shared = _failed_shared(store)
    inputs.efficiency = efficiency_rows(store, study_precisions(study))
    return inputs


def _table_or_empty(store: Store, name: str) -> pd.DataFrame:
    """A table newer than the store (opened read-only, so its schema was never updated) is
    empty: the study was analysed before the table existed."""
    known = store.query("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,))
    return store.frame(name) if known else pd.DataFrame()


def _failed_shared(store: Store) -> pd.DataFrame:
    units = store.frame("units")
    shared = units[units["run_id"].isin([BASE, "study"]) & (units["status"] == "failed")]
    return shared[["run_id", "stage", "error"]].reset_index(drop=True)
