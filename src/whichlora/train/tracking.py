"""Every training step of a run, logged to TensorBoard and/or Weights & Biases.

`training.report_to: [tensorboard, wandb]` (default: none, and then nothing here imports either
package). Per step: the cross-entropy loss, the objective the optimizer minimised, the learning
rate, the gradient norm before clipping and the step's tokens per second, exactly the values of
the run's training log. Each run is named `<study>/<run_id>`.

Where: a study keeps a run's adapter in `<study>/runs/<run_id>`; TensorBoard event files go to
`<study>/tensorboard/<run_id>` (`tensorboard --logdir <study>/tensorboard` shows every run), and
W&B keeps its run files in `<study>/wandb`. W&B runs offline (nothing leaves the machine; `wandb
sync` uploads later) unless W&B is configured: WANDB_MODE or WANDB_API_KEY set.

Trackers only watch: they never change what is trained or recorded.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from whichlora.errors import WhichloraError
from whichlora.store.names import RUNS_DIR

TRACKERS = ("tensorboard", "wandb")
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}
INSTALL = {"tensorboard": "pip install 'whichlora[track]'", "wandb": "pip install wandb"}
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"


class Tracker(Protocol):
    def log(self, step: int, scalars: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def step_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The scalars of one row of the training log (`train_adapter`'s `steps`)."""
    seconds = row["seconds"]
    return {
        "train/loss": row["loss"],
        "train/objective": row["objective"],
        "train/lr": row["lr"],
        "train/grad_norm": row["grad_norm"],
        "train/tokens_per_second": row["tokens"] / seconds if seconds > 0 else 0.0,
    }


def tracking_root(out_dir: Path) -> Path:
    """The study folder for a run folder `<study>/runs/<run_id>`; else the run folder's parent."""
    return out_dir.parent.parent if out_dir.parent.name == RUNS_DIR else out_dir.parent


def check_trackers(names: tuple[str, ...] | list[str]) -> None:
    """Fail with the fix before any work when a tracker is unknown or its package is missing."""
    for name in names:
        if name not in TRACKERS:
            raise WhichloraError(
                f"training.report_to has unknown tracker '{name}'; use {' or '.join(TRACKERS)}."
            )
        if not _installed(PACKAGES[name]):
            raise WhichloraError(
                f"training.report_to lists {name}, but the package '{PACKAGES[name]}' is not "
                f"installed. Fix: {INSTALL[name]}, or remove {name} from training.report_to."
            )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class TensorBoardTracker:
    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            check_trackers(("tensorboard",))
            raise
        # A run trains from step 1 again after a crash: its old curve would mix with the new one.
        shutil.rmtree(log_dir, ignore_errors=True)
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, root: Path, run_name: str, config: dict[str, Any]) -> None:
        wandb = importlib.import_module("wandb")
        configured = "WANDB_MODE" in os.environ or "WANDB_API_KEY" in os.environ
        root.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "whichlora"),
            name=run_name,
            group=run_name.split("/")[0],
            dir=str(root),
            config=config,
            mode=None if configured else "offline",  # no network unless the user set W&B up
        )

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class StepTrackers:
    """The trackers of one run: checked when made, opened by `with`, closed however it ends.

    `StepTrackers((), ...)` is a no-op that imports nothing.
    """

    def __init__(
        self,
        names: tuple[str, ...] | list[str],
        out_dir: Path,
        run_name: str = "",
        config: dict[str, Any] | None = None,
    ) -> None:
        check_trackers(names)
        self.names = tuple(dict.fromkeys(names))
        self.root = tracking_root(out_dir)
        self.run_id = out_dir.name
        self.run_name = run_name or out_dir.name
        self.config = config or {}
        self.trackers: list[Tracker] = []

    def __enter__(self) -> StepTrackers:
        try:
            for name in self.names:
                if name == "tensorboard":
                    self.trackers.append(
                        TensorBoardTracker(self.root / TENSORBOARD_DIR / self.run_id)
                    )
                else:
                    self.trackers.append(
                        WandbTracker(self.root / WANDB_DIR, self.run_name, self.config)
                    )
        except BaseException:
            self.close()
            raise
        return self

    def log(self, row: dict[str, Any]) -> None:
        if self.trackers:
            scalars = step_scalars(row)
            for tracker in self.trackers:
                tracker.log(row["step"], scalars)

    def close(self) -> None:
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.close()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
