"""training.report_to: TensorBoard / W&B logging of every step, read back offline.

The tiny model trains in about a second; W&B is a stand-in module (no package, no network).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from whichlora.config.study import parse_study
from whichlora.errors import WhichloraError
from whichlora.study.plan import plan_study
from whichlora.train.tracking import StepTrackers, step_scalars, tracking_root

TAGS = {
    "train/loss": "loss",
    "train/objective": "objective",
    "train/lr": "lr",
    "train/grad_norm": "grad_norm",
}


def _read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    events = event_accumulator.EventAccumulator(str(log_dir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


@pytest.mark.usefixtures("one_torch_thread")
def test_tensorboard_events_hold_the_training_rows_and_change_nothing(
    train_tiny: Callable[..., Any], tmp_path: Path
) -> None:
    pytest.importorskip("tensorboard")
    tracked = train_tiny("adalora", run_name="tracked", steps=4, report_to=("tensorboard",))
    plain = train_tiny("adalora", run_name="plain", steps=4)

    scalars = _read_scalars(tmp_path / "tensorboard" / "tracked")
    rows = tracked.log["steps"]
    assert set(scalars) == {*TAGS, "train/tokens_per_second"}
    for tag, key in TAGS.items():
        assert [step for step, _ in scalars[tag]] == [row["step"] for row in rows]
        assert [value for _, value in scalars[tag]] == pytest.approx(
            [row[key] for row in rows],
            rel=1e-6,  # event files store float32
        )
    assert [value for _, value in scalars["train/tokens_per_second"]] == pytest.approx(
        [row["tokens"] / row["seconds"] for row in rows], rel=1e-6
    )
    # Watching changes nothing: same curve (AdaLoRA: objective differs from loss), same keys.
    for key in ("loss", "objective", "lr", "grad_norm", "tokens"):
        assert [r[key] for r in rows] == [r[key] for r in plain.log["steps"]]
    assert tracked.log.keys() == plain.log.keys()
    assert tracked.log["summary"].keys() == plain.log["summary"].keys()
    assert not (tmp_path / "tensorboard" / "plain").exists()


def test_a_study_run_logs_to_the_study_tensorboard_folder(tmp_path: Path) -> None:
    study = tmp_path / "studies" / "demo"
    assert tracking_root(study / "runs" / "lora-s0") == study
    assert tracking_root(tmp_path / "lora") == tmp_path


def test_a_missing_package_fails_before_the_model_loads(
    tiny_request: Callable[..., Any], records: list[Any], tmp_path: Path, monkeypatch: Any
) -> None:
    from whichlora.train.loop import train_adapter

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    monkeypatch.setattr(
        "whichlora.train.loop.load_model", lambda *a, **k: pytest.fail("model loaded")
    )
    with pytest.raises(WhichloraError) as error:
        train_adapter(tiny_request(report_to=("tensorboard",)), records, tmp_path / "run")
    message = str(error.value)
    assert "training.report_to" in message and "pip install 'whichlora[track]'" in message
    assert not (tmp_path / "run").exists()

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(WhichloraError, match=r"training.report_to .*pip install wandb"):
        StepTrackers(("wandb",), tmp_path / "run")


def test_no_tracker_imports_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "wandb", None)
    with StepTrackers((), tmp_path / "run") as tracking:
        tracking.log(_row(1))
    assert not (tmp_path / "tensorboard").exists()


def _row(step: int) -> dict[str, Any]:
    return {
        "step": step,
        "loss": 2.0 / step,
        "objective": 2.1 / step,
        "lr": 1e-3,
        "grad_norm": 0.5,
        "tokens": 64,
        "seconds": 0.25,
    }


class _FakeWandb(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("wandb")
        self.inits: list[dict[str, Any]] = []
        self.logged: list[tuple[dict[str, float], int]] = []
        self.finished = 0

    def init(self, **kwargs: Any) -> Any:
        self.inits.append(kwargs)
        fake = self

        class Run:
            def log(self, data: dict[str, float], step: int) -> None:
                fake.logged.append((dict(data), step))

            def finish(self) -> None:
                fake.finished += 1

        return Run()


@pytest.fixture
def fake_wandb(monkeypatch: Any) -> _FakeWandb:
    module = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.setattr("whichlora.train.tracking._installed", lambda name: True)
    for variable in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT"):
        monkeypatch.delenv(variable, raising=False)
    return module


def test_wandb_runs_offline_unless_configured_and_always_finishes(
    fake_wandb: _FakeWandb, tmp_path: Path, monkeypatch: Any
) -> None:
    run_dir = tmp_path / "demo" / "runs" / "lora-s0"
    with pytest.raises(RuntimeError), StepTrackers(("wandb",), run_dir, "demo/lora-s0") as t:
        t.log(_row(1))
        t.log(_row(2))
        raise RuntimeError("training failed mid-run")
    (init,) = fake_wandb.inits
    assert init["mode"] == "offline" and init["name"] == "demo/lora-s0"
    assert init["group"] == "demo" and init["dir"] == str(tmp_path / "demo" / "wandb")
    assert fake_wandb.logged == [(step_scalars(_row(1)), 1), (step_scalars(_row(2)), 2)]
    assert fake_wandb.finished == 1

    for variable, value in (("WANDB_MODE", "online"), ("WANDB_API_KEY", "key")):
        monkeypatch.setenv(variable, value)
        with StepTrackers(("wandb",), run_dir, "demo/lora-s0"):
            pass
        assert fake_wandb.inits[-1]["mode"] is None  # W&B's own settings decide
        monkeypatch.delenv(variable)


def _study(**training: Any) -> Any:
    return parse_study({"name": "demo", "techniques": ["lora"], "training": training})


def test_config_names_trackers_and_plans_run_names() -> None:
    assert _study().training.report_to == []
    (run,) = plan_study(_study())
    assert run.request.report_to == () and run.request.run_name == "demo/lora-s0"
    (run,) = plan_study(_study(report_to=["tensorboard", "wandb"]))
    assert run.request.report_to == ("tensorboard", "wandb")
    with pytest.raises(WhichloraError, match=r"training\.report_to\.0.*'tensorboard' or 'wandb'"):
        _study(report_to=["mlflow"])
    with pytest.raises(WhichloraError, match=r"training\.report_to.*once"):
        _study(report_to=["tensorboard", "tensorboard"])
