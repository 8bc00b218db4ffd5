"""Training faults: a run whose loss really becomes NaN fails with its reason, the study goes on,
and the report shows the failure.

The fault is real, not mocked. A huge learning rate alone does not do it in float32: Adam's steps
are bounded by the rate and RMSNorm rescales every layer, so the loss stays finite (about 6.5 at
lr 0.9 after three steps on the tiny model). In float16 it does: with lr 0.9 and clipping disabled
(max_grad_norm 1e9), after two updates the adapter's outputs overflow float16's range and the loss
at step 3 is NaN -- while the same study's run at a sane rate trains normally in float16.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_runner import tiny_study, write_study

from whichlora.cli import main
from whichlora.store import Store

DIVERGED = re.compile(r"^training diverged: loss became (nan|inf|-inf) at step [0-9]+$")


def test_diverging_run_fails_and_the_study_goes_on(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tiny_study(
        tiny_model_dir,
        model={"id": str(tiny_model_dir), "dtype": "float16", "device": "cpu"},
        techniques=["lora", {"name": "lora", "label": "hot", "learning_rates": [0.9]}],
        evaluation={
            "languages": ["en", "de"],
            "items_per_language": 4,
            "generation_items": 1,
            "max_new_tokens": 4,
        },
        analysis={"sentences_per_language": 4, "bootstrap_resamples": 100},
    )
    study["training"].update(max_grad_norm=1e9, warmup_ratio=0.0)
    out = tmp_path / "out"

    code = main(["run", str(write_study(tmp_path, study)), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.out + captured.err
    assert re.search(r"run hot-s0 failed: training diverged: loss became", captured.err)

    with Store(out / "results.sqlite") as store:
        rows = store.query("SELECT run_id, stage, status, error FROM units")
        units = {(run_id, stage): (status, error) for run_id, stage, status, error in rows}
        status, error = units[("hot-s0", "train")]
        assert status == "failed"
        assert DIVERGED.match(error or ""), error
        # the other run trained (finite losses) and was evaluated and analysed
        assert units[("lora-s0", "train")] == ("done", None)
        assert units[("lora-s0", "evaluate:de")] == ("done", None)
        losses = [row[0] for row in store.query("SELECT loss FROM training WHERE run_id='lora-s0'")]
        assert len(losses) == 3 and all(abs(x) < 1e4 for x in losses)
        # later stages skip the failed run: no scores, no training rows, no costs
        assert not [u for u in units if u[0] == "hot-s0" and u[1].startswith("evaluate")]
        for table in ("metrics", "examples", "generations", "training", "costs", "analysis"):
            rows = store.query(f"SELECT COUNT(*) FROM {table} WHERE run_id LIKE 'hot-s0%'")
            assert rows[0][0] == 0, table
        assert "hot-s0" not in (store.get_kv("selected_runs") or [])
        assert units[("study", "analyze")][0] == "done"
    assert not (out / "runs" / "hot-s0").exists()  # no half-trained adapter
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-") or p.suffix == ".tmp"]

    report = (out / "report" / "report.html").read_text(encoding="utf-8")
    assert "hot-s0" in report
    assert "failed" in report
    assert "training diverged" in report
