"""A study folder: its resolved config, its store, its planned runs, and a lock against twins."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout

from whichlora.config.study import Study, dump_study, load_study, parse_study
from whichlora.errors import WhichloraError
from whichlora.paths import write_text_atomic
from whichlora.store import Store
from whichlora.study.plan import RunSpec, plan_study

RESOLVED = "resolved.yaml"
DATABASE = "results.sqlite"
LOCK = ".whichlora.lock"


@dataclass
class StudyContext:
    study: Study
    study_dir: Path
    store: Store
    runs: list[RunSpec]
    lock: FileLock | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    def run_dir(self, run_id: str) -> Path:
        return self.study_dir / "runs" / run_id

    def selected_runs(self) -> list[RunSpec]:
        """Runs whose results count: all, or the best learning rate per technique in a sweep."""
        chosen = self.store.get_kv("selected_runs")
        if chosen is None:
            return [r for r in self.runs if not r.sweep]
        return [r for r in self.runs if r.run_id in set(chosen)]

    def close(self) -> None:
        self.store.close()
        if self.lock is not None:
            self.lock.release()


def default_study_dir(study: Study, study_file: Path) -> Path:
    return Path.cwd() / "studies" / study.name


def _read_target(target: Path, out: Path | None) -> tuple[Study, Path]:
    if target.is_dir():
        resolved = target / RESOLVED
        if not resolved.is_file():
            raise WhichloraError(
                f"Folder {target} is not a study folder (no {RESOLVED}). Fix: pass the study YAML "
                "file, or a folder made by `whichlora run`."
            )
        data = yaml.safe_load(resolved.read_text(encoding="utf-8"))
        return parse_study(data, resolved), target
    study = load_study(target)
    return study, (out or default_study_dir(study, target))


def open_study(
    target: str | Path, out: str | Path | None = None, *, locked: bool = True, create: bool = True
) -> StudyContext:
    """Open (and with `create`, initialise) the study folder for a study file or folder.

    With `locked`, a second process on the same folder is refused instead of racing this one.
    """
    study, study_dir = _read_target(Path(target), Path(out) if out else None)
    study_dir = study_dir.resolve()
    if not create and not (study_dir / DATABASE).is_file():
        raise WhichloraError(
            f"Study folder {study_dir} has no results yet. Fix: run `whichlora run` (or `whichlora "
            "train`) on the study first."
        )
    study_dir.mkdir(parents=True, exist_ok=True)
    lock = None
    if locked:
        lock = FileLock(str(study_dir / LOCK))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise WhichloraError(
                f"Study folder {study_dir} is in use by another whichlora process. Fix: wait for "
                "it to finish (or stop it), then run again; a killed run releases the lock."
            ) from None
    resolved_text = dump_study(study)
    resolved_path = study_dir / RESOLVED
    if resolved_path.is_file():
        previous = resolved_path.read_text(encoding="utf-8")
        if previous != resolved_text:
            if lock is not None:
                lock.release()
            raise WhichloraError(
                f"Study folder {study_dir} holds results of a different configuration (its "
                f"{RESOLVED} differs from this study file). Fix: give a new `name` or `--out` "
                "folder, or delete the old folder to start over."
            )
    else:
        write_text_atomic(resolved_path, resolved_text)
    store = Store(study_dir / DATABASE)
    runs = plan_study(study)
    for run in runs:
        store.add_run(
            run.run_id,
            run.technique,
            run.label,
            run.seed,
            run.learning_rate,
            run.sweep,
            run.request.__dict__,
        )
    return StudyContext(study=study, study_dir=study_dir, store=store, runs=runs, lock=lock)
