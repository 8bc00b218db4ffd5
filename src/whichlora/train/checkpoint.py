"""Resume a long training run inside itself: a checkpoint every N optimizer steps.

A checkpoint is everything the rest of the run depends on, taken after optimizer step k: the
trainable adapter weights, the optimizer and LR-scheduler states, the data-order position (k
steps of batches, replayed from the seeded stream on resume), the python, numpy, torch CPU and
CUDA RNG states, what the technique's step hook keeps between steps (AdaLoRA's rank allocator),
and the training rows logged so far. Restoring it before step k + 1 makes the rest of the run
compute exactly what the uninterrupted run computes, so the final adapter and loss curve are the
same.

Checkpoints live beside the run folder, in `.<run>.ckpt/step-<k>/`. Each is written whole with
`atomic_directory` under a new name before the older one is removed, so a kill at any moment
leaves at least the previous checkpoint intact. A checkpoint is used only when its fingerprint
(the request without `checkpoint_every`, the encoded examples, library versions; for PiSSA and
OLoRA also the initial adapter the trained one is converted against) matches this run, so a
stale or foreign one never changes a result: it is ignored and the run starts from step 0.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from whichlora.paths import atomic_directory, remove_stale_scratch, write_json_atomic
from whichlora.techniques.technique import StepState

log = logging.getLogger("whichlora.train")

FORMAT = 2
STATE_FILE = "state.pt"
PROGRESS_FILE = "progress.json"
AUTO = "auto"
AUTO_LONG_RUN_SECONDS = 600.0  # "auto" checkpoints runs estimated to take longer than this
AUTO_EVERY_SECONDS = 300.0  # ... about this often
AUTO_MEASURED_STEPS = 3  # the estimate is taken after this many steps (or a minute)


def checkpoint_root(out_dir: Path) -> Path:
    """Hidden sibling of the run folder; not a `.tmp-` name, so study-level sweeps keep it."""
    return out_dir.parent / f".{out_dir.name}.ckpt"


def remove_own_scratch(out_dir: Path) -> None:
    """Drop the scratch folders a killed attempt at this very run left beside it.

    Exactly `atomic_directory`'s names for `out_dir` (`.tmp-<run>-` plus mkdtemp's 8 characters),
    so a concurrent run whose name merely starts with this one's is never touched.
    """
    pattern = re.compile(rf"\.tmp-{re.escape(out_dir.name)}-[a-z0-9_]{{8}}")
    if out_dir.parent.is_dir():
        for child in out_dir.parent.iterdir():
            if pattern.fullmatch(child.name) and child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
    remove_stale_scratch(checkpoint_root(out_dir))


def examples_digest(examples: list[Any]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.input_ids, example.labels]).encode())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Resumed:
    """What a restored checkpoint hands back to the loop."""

    step: int  # optimizer steps already taken
    rows: list[dict[str, Any]]
    wall_seconds: float  # training time of those steps, summed over earlier attempts


class Checkpointer:
    """Decides when to save, saves, and restores, for one call of `train_adapter`.

    `every` is a step interval, `"auto"` (decided from the measured time of the first steps) or
    None (never save; an existing matching checkpoint is still resumed from, which is exact).
    `fingerprint` is called only when a checkpoint is saved or found: hashing the data costs
    nothing for the runs that never checkpoint.
    """

    def __init__(
        self,
        out_dir: Path,
        every: int | str | None,
        total_steps: int,
        fingerprint: Callable[[], dict[str, Any]],
        step_state: StepState | None = None,
    ):
        self.root = checkpoint_root(out_dir)
        self.total_steps = total_steps
        self._fingerprint = fingerprint
        self.step_state = step_state
        self.initial_digest: str | None = None  # PiSSA/OLoRA: the saved initial adapter
        self.auto = every == AUTO
        self.interval: int | None = None if self.auto else (int(every) if every else None)
        self._first_step = 0

    @cached_property
    def fingerprint(self) -> dict[str, Any]:
        return self._fingerprint()

    # ------------------------------------------------------------------ when
    def due(self, step: int, attempt_seconds: float) -> bool:
        """True when a checkpoint is to be taken after optimizer step `step` (1-based).

        `attempt_seconds` is the training time of this attempt's steps, for `"auto"`.
        """
        if self.auto:
            self._decide(step, attempt_seconds)
        if not self.interval or step >= self.total_steps:  # the final adapter follows anyway
            return False
        return step % self.interval == 0

    def _decide(self, step: int, attempt_seconds: float) -> None:
        done = step - self._first_step
        if done < min(AUTO_MEASURED_STEPS, self.total_steps) and attempt_seconds < 60:
            return
        self.auto = False
        per_step = attempt_seconds / max(1, done)
        if per_step * self.total_steps > AUTO_LONG_RUN_SECONDS:
            self.interval = max(1, int(AUTO_EVERY_SECONDS / max(per_step, 1e-9)))
            log.info(
                "checkpointing every %d steps (%.1f s per step, %d steps)",
                self.interval,
                per_step,
                self.total_steps,
            )

    # ------------------------------------------------------------------ save
    def save(
        self,
        step: int,
        model: Any,
        optimizer: Any,
        scheduler: Any,
        rows: list[dict[str, Any]],
        wall_seconds: float,
        scaler: Any = None,
    ) -> None:
        import torch

        state = {
            "format": FORMAT,
            "step": step,
            "params": {
                name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad
            },
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
            "step_state": self.step_state.save(model) if self.step_state is not None else None,
            # fp16's loss scale: a resumed run goes on with the scale it had reached
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        }
        progress = {
            "format": FORMAT,
            "step": step,
            "fingerprint": self.fingerprint,
            "initial_digest": self.initial_digest,
            "interval": self.interval,
            "wall_seconds": wall_seconds,
            "rows": rows,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_directory(self.root / f"step-{step:08d}") as scratch:
            with open(scratch / STATE_FILE, "wb") as handle:
                torch.save(state, handle)
                handle.flush()
                os.fsync(handle.fileno())
            write_json_atomic(scratch / PROGRESS_FILE, progress)
        for older in self._saved():
            if older.name != f"step-{step:08d}":
                shutil.rmtree(older, ignore_errors=True)

    def _saved(self) -> list[Path]:
        """Complete checkpoints, newest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if re.fullmatch(r"step-\d{8}", p.name)]
        return sorted(found, key=lambda p: p.name, reverse=True)

    # ------------------------------------------------------------------ restore
    def restore(
        self, model: Any, optimizer: Any, scheduler: Any, scaler: Any = None
    ) -> Resumed | None:
        """Load the newest matching checkpoint into the live objects; None to start at step 0.

        Call it last before the first step: the RNG states it restores must not be drawn from
        by anything else before training goes on.
        """
        for folder in self._saved():
            try:
                progress = json.loads((folder / PROGRESS_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # unreadable (a crash of the machine mid-write): try an older one
            reason = self._mismatch(progress)
            if reason:
                log.warning("ignoring checkpoint %s: %s", folder, reason)
                continue
            try:
                state = self._read(folder, progress, model)
            except Exception as exc:  # noqa: BLE001 - a bad checkpoint costs time, not results
                log.warning("ignoring unreadable checkpoint %s: %s", folder, exc)
                continue
            # From here on the live objects change: a failure is an error, not a fresh start.
            resumed = self._apply(state, progress, model, optimizer, scheduler, scaler)
            log.info("resuming from checkpoint %s (step %d)", folder, resumed.step)
            return resumed
        return None

    def _mismatch(self, progress: dict[str, Any]) -> str | None:
        if progress.get("format") != FORMAT:
            return "written by another version of whichlora"
        if progress.get("fingerprint") != self.fingerprint:
            return "it belongs to another request, data or library versions"
        if progress.get("initial_digest") != self.initial_digest:
            return "the initial adapter differs"
        if not 0 < int(progress.get("step", 0)) < self.total_steps:
            return "its step is outside this run"
        return None

    def _read(self, folder: Path, progress: dict[str, Any], model: Any) -> dict[str, Any]:
        """Load and check a checkpoint's state without touching the live objects."""
        import torch

        # weights_only: tensors and plain containers only, no code runs on load
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        live = {name: p for name, p in model.named_parameters() if p.requires_grad}
        saved = state["params"]
        if (
            state["format"] != FORMAT
            or state["step"] != progress["step"]
            or live.keys() != saved.keys()
            or any(saved[n].shape != p.shape or saved[n].dtype != p.dtype for n, p in live.items())
            or (state["step_state"] is None) != (self.step_state is None)
        ):
            raise ValueError("its state does not match its progress file or this adapter")
        return state

    def _apply(
        self,
        state: dict[str, Any],
        progress: dict[str, Any],
        model: Any,
        optimizer: Any,
        scheduler: Any,
        scaler: Any = None,
    ) -> Resumed:
        import torch

        step = int(state["step"])
        live = {name: p for name, p in model.named_parameters() if p.requires_grad}
        with torch.no_grad():
            for name, param in live.items():
                param.copy_(state["params"][name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if self.step_state is not None:
            self.step_state.restore(model, state["step_state"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _restore_rng(state["rng"])
        if self.interval is None and progress.get("interval"):
            self.interval, self.auto = int(progress["interval"]), False  # auto decided before
        self._first_step = step
        return Resumed(
            step=step, rows=list(progress["rows"]), wall_seconds=float(progress["wall_seconds"])
        )

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# Request fields that never change a result (when to checkpoint, where to log).
# Gradient checkpointing too: a run that ran out of memory may resume with it switched on.
RESULT_NEUTRAL = (
    "checkpoint_every",
    "report_to",
    "run_name",
    "gradient_checkpointing",
    "compile",
    "stall_timeout",
    "validate_every",
)


def request_fingerprint(request: Any, examples: list[Any], versions: dict[str, str]) -> dict:
    """What must be equal for a checkpoint to continue this run: every request field but
    `checkpoint_every` (which never changes a result), the encoded data, library versions."""
    fields = {k: v for k, v in asdict(request).items() if k not in RESULT_NEUTRAL}
    return _jsonable(
        {
            "request": fields,
            "examples": [len(examples), examples_digest(examples)],
            "versions": versions,
        }
    )


def _jsonable(value: Any) -> Any:
    """As the value reads back from JSON (tuples become lists), for comparison."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


# ---------------------------------------------------------------------------------- RNG states
def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        # Only where CUDA is already in use: querying it would initialise CUDA (and a CPU run in
        # a forked child must never do that).
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
    }


def _restore_rng(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
