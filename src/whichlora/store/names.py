"""Names every layer shares: the base model's run id and the files of a study folder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

BASE = "base"  # the run id of the untuned base model, evaluated and embedded once per study
RESOLVED = "resolved.yaml"
DATABASE = "results.sqlite"
LOCK = ".whichlora.lock"
RUNS_DIR = "runs"
ADAPTER_DIR = "adapter"  # a run folder's saved PEFT adapter
LOG_FILE = "train_log.json"  # ... and its training log


def selected(runs: Sequence[Any], chosen: Sequence[str] | None) -> list[Any]:
    """Runs whose results count: all outside a sweep, or (once chosen) the best rate's runs."""
    if chosen is None:
        return [r for r in runs if not r.sweep]
    keep = set(chosen)
    return [r for r in runs if r.run_id in keep]
