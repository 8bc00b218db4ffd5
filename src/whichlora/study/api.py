"""The Python entry point: run (or resume) a study and get its results as DataFrames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whichlora.study.context import open_study
from whichlora.study.runner import STAGES, run_all


@dataclass
class StudyResults:
    """Tables of a finished study; `transfer` and `retention` are deltas against the base."""

    study_dir: Path
    runs: Any
    metrics: Any
    examples: Any
    costs: Any
    training: Any
    analysis: Any
    significance: Any
    verdicts: Any = None  # one row per (family, metric, technique), payload columns spread out

    @property
    def report(self) -> Path:
        return self.study_dir / "report" / "report.html"

    def deltas(self, split: str = "test") -> Any:
        """Per run, language and metric: value - base value."""
        metrics = self.metrics[self.metrics["split"] == split]
        base = metrics[metrics["run_id"] == "base"][["language", "metric", "value"]]
        runs = metrics[metrics["run_id"] != "base"]
        merged = runs.merge(base, on=["language", "metric"], suffixes=("", "_base"))
        merged["delta"] = merged["value"] - merged["value_base"]
        return merged.merge(self.runs[["run_id", "technique", "label", "seed"]], on="run_id")


def _verdicts(frame: Any) -> Any:
    """The stored verdicts with every number of the comparison as its own column."""
    import json

    import pandas as pd

    if frame.empty:
        return frame
    return pd.DataFrame([json.loads(text) for text in frame["payload"]])


def load_results(study_dir: str | Path) -> StudyResults:
    """The results of the runs the study plans (and the base); results the store keeps for runs
    the study no longer asks for (until `whichlora gc`) are left out. Writes nothing."""
    ctx = open_study(study_dir, create=False, check=False, readonly=True)
    try:
        store = ctx.store
        keep = {"base", *(r.run_id for r in ctx.runs)}

        def table(name: str) -> Any:
            frame = store.frame(name)
            return frame[frame["run_id"].isin(keep)].reset_index(drop=True)

        return StudyResults(
            study_dir=ctx.study_dir,
            runs=table("runs"),
            metrics=table("metrics"),
            examples=table("examples"),
            costs=table("costs"),
            training=table("training"),
            analysis=store.frame("analysis"),
            significance=store.frame("significance"),
            verdicts=_verdicts(store.frame("verdicts")),
        )
    finally:
        ctx.close()


def run_study(
    path: str | Path,
    out: str | Path | None = None,
    *,
    progress: bool = False,
    stages: tuple[str, ...] = STAGES,
    retry_failed: bool = False,
    yes: bool = False,
) -> StudyResults:
    """Run every unfinished unit of the study at `path` (a YAML file or a study folder).

    Units done for their current inputs are reused, so a study whose file gained seeds,
    techniques, languages or tasks computes only those. With `yes`, finished units whose inputs
    changed are redone (their old results replaced); without it that raises WhichloraError."""
    ctx = open_study(path, out, discard=yes)
    try:
        run_all(ctx, stages=stages, progress=progress, retry_failed=retry_failed)
        study_dir = ctx.study_dir
    finally:
        ctx.close()
    return load_results(study_dir)
