"""The transfer atlas in a whole study on the tiny model (slow: trains two runs): its own unit
per model, per-example scores, the verdict's unseen family, the report section and its CSV, and
a finished atlas reused on a second run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from test_growth import small_study, units_of
from test_runner import write_study

from whichlora.data.udhr import udhr_available
from whichlora.store import Store
from whichlora.study.api import run_study

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not udhr_available(), reason="run `whichlora data fetch udhr` first"),
]
LANGUAGES = ["de", "sw", "zu", "is", "hi", "am", "qu"]  # de, sw trained; en is the source
STAGES = ("train", "evaluate", "analyze", "report")


def atlas_study(model_dir: Path, **atlas: Any) -> dict[str, Any]:
    study = small_study(model_dir, techniques=["lora", "rslora"])
    study["evaluation"]["atlas"] = {"languages": LANGUAGES, "articles": 2, **atlas}
    return study


def test_atlas_study_end_to_end(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = write_study(tmp_path, atlas_study(tiny_model_dir))
    out = tmp_path / "out"
    run_study(path, out, stages=STAGES)
    with Store(out / "results.sqlite") as store:
        atlas_units = store.query("SELECT run_id, status FROM units WHERE stage='atlas'")
        examples = store.query(
            "SELECT run_id, language, metric, example_id FROM examples WHERE metric LIKE 'atlas_%'"
        )
        verdicts = store.frame("verdicts")
    assert sorted(atlas_units) == [("base", "done"), ("lora-s0", "done"), ("rslora-s0", "done")]
    assert len(examples) == 3 * len(LANGUAGES) * 2 * 2  # models x languages x articles x metrics
    unseen = verdicts[(verdicts["family"] == "transfer_unseen")]
    assert set(unseen["metric"]) >= {"atlas_nll_byte", "atlas_nll_token"}
    row = unseen[unseen["metric"] == "atlas_nll_byte"].iloc[0]
    assert '"n_languages": 5' in row["payload"]  # zu, is, hi, am, qu: never trained on
    table = pd.read_csv(out / "report" / "tables" / "atlas.csv")
    assert len(table) == 2 * len(LANGUAGES) and set(table["technique"]) == {"lora", "rslora"}
    assert set(table["language"]) == set(LANGUAGES)
    assert set(table.loc[table["language"].isin(["de", "sw"]), "group"]) == {"seen"}
    assert table["delta_nll_byte"].notna().all() and table["family"].notna().all()
    report = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Transfer atlas" in report and "figures/atlas_distance.png" in report
    assert (out / "report" / "figures" / "atlas_distance.png").stat().st_size > 1000
    assert "atlas_cost.csv" in report and "atlas_slopes.csv" in report

    before = units_of(out)
    run_study(path, out, stages=STAGES)  # everything done: nothing is redone
    assert units_of(out) == before

