"""`training.sweep_seeds`: rates swept on some seeds, the other seeds run at the chosen rate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from test_growth import small_study, units_of
from test_runner import write_study

from whichlora.config.study import parse_study
from whichlora.store import Store
from whichlora.study.api import run_study
from whichlora.study.plan import plan_study, waiting_for_sweep

STAGES = ("train", "evaluate", "analyze")
RATES = [1e-4, 3e-2]


def sweep_study(model_dir: Path, **training: Any) -> dict[str, Any]:
    study = small_study(model_dir)
    study["training"].update(learning_rates=RATES, seeds=[0, 1, 2], sweep_seeds=[0], **training)
    return study


def test_the_plan_waits_for_the_sweep_then_adds_the_seeds_at_the_chosen_rate(
    tiny_model_dir: Path,
) -> None:
    study = parse_study(sweep_study(tiny_model_dir))
    before = plan_study(study)
    assert [r.run_id for r in before] == ["lora-s0-lr0.0001", "lora-s0-lr0.03"]
    assert all(r.sweep for r in before)
    assert waiting_for_sweep(study, {}) == ["lora-s1", "lora-s2"]
    after = plan_study(study, {"lora": 3e-2})
    assert [r.run_id for r in after][2:] == ["lora-s1", "lora-s2"]
    assert {(r.seed, r.learning_rate, r.sweep) for r in after[2:]} == {
        (1, 3e-2, False),
        (2, 3e-2, False),
    }
    assert waiting_for_sweep(study, {"lora": 3e-2}) == []
    # without sweep_seeds every seed runs every rate, as before
    full = parse_study({**sweep_study(tiny_model_dir), "training": {"learning_rates": RATES}})
    assert len(plan_study(full)) == 2
    every = sweep_study(tiny_model_dir)
    del every["training"]["sweep_seeds"]
    assert len(plan_study(parse_study(every))) == 6


def test_a_study_sweeps_on_one_seed_and_runs_the_others_at_the_chosen_rate(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_study(write_study(tmp_path, sweep_study(tiny_model_dir)), out, stages=STAGES)
    units = units_of(out)
    trained = {run for run, stage in units if stage == "train"}
    assert trained == {"lora-s0-lr0.0001", "lora-s0-lr0.03", "lora-s1", "lora-s2"}  # 4, not 6
    with Store(out / "results.sqlite") as store:
        nll = {
            run: value
            for run, value in store.query(
                "SELECT run_id, AVG(value) FROM examples WHERE split='validation' "
                "AND metric='nll' GROUP BY run_id"
            )
        }
        rates = dict(store.query("SELECT run_id, learning_rate FROM runs"))
        selected = store.get_kv("selected_runs")
    assert set(nll) == {"lora-s0-lr0.0001", "lora-s0-lr0.03"}  # only the sweep is validated
    best = min(nll, key=lambda run: nll[run])
    assert rates["lora-s1"] == rates["lora-s2"] == rates[best]
    assert sorted(selected) == sorted([best, "lora-s1", "lora-s2"])
    for run in selected:  # the chosen runs are scored on the test split
        assert units[(run, "evaluate:de")][0] == "done"
    # run again: everything is done, nothing is redone
    again = tmp_path / "again"
    again.mkdir()
    run_study(write_study(again, sweep_study(tiny_model_dir)), out, stages=STAGES)
    assert {k: v for k, v in units_of(out).items() if k[0] != "study"} == {
        k: v for k, v in units.items() if k[0] != "study"
    }
    plan = subprocess.run(
        [sys.executable, "-m", "whichlora", "plan", str(again / "study.yaml"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plan.returncode == 0, plan.stderr
    assert " new " not in plan.stdout and "start once" not in plan.stdout
    assert "lora-s1" in plan.stdout
