"""`training.validate_every`: the learning curve, read beside the training without changing it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from whichlora.data.records import Record

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_curve_is_logged_at_every_nth_step_and_changes_nothing(
    tmp_path: Path, records: list[Record], fresh_model: Any, tiny_request: Any
) -> None:
    from whichlora.train.loop import train_adapter
    from whichlora.train.prompting import encode_records

    validation, training = records[:4], records[4:]
    request = tiny_request("lora", steps=5, validate_every=2, dropout=0.1)
    loaded = fresh_model()
    with_curve = train_adapter(
        request, training, tmp_path / "curve", loaded=loaded, validation=validation
    )
    plain = train_adapter(
        tiny_request("lora", steps=5, dropout=0.1),
        training,
        tmp_path / "plain",
        loaded=fresh_model(),
    )
    logged = [s["step"] for s in with_curve["steps"] if "validation_nll" in s]
    assert logged == [2, 4, 5]  # every 2nd step and the last
    # eval mode, no random draws: the same training to the bit
    assert [s["loss"] for s in with_curve["steps"]] == [s["loss"] for s in plain["steps"]]
    # the last point is the trained model's mean per-example response NLL, computed here one
    # example at a time by transformers' own loss
    model, tokenizer = loaded.model, loaded.tokenizer
    model.eval()
    reference = []
    with torch.no_grad():
        for example in encode_records(tokenizer, validation, request.max_length):
            ids = torch.tensor([example.input_ids])
            reference.append(
                model(input_ids=ids, labels=torch.tensor([example.labels])).loss.item()
            )
    last = with_curve["steps"][-1]["validation_nll"]
    assert last == pytest.approx(sum(reference) / len(reference), rel=1e-4)
    assert with_curve["steps"][1]["validation_nll"] != last  # the curve moves as it trains


def test_a_study_stores_and_draws_the_curve_without_changing_keys(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from test_growth import small_study
    from test_runner import write_study

    from whichlora.config.study import parse_study
    from whichlora.store import Store
    from whichlora.study.api import run_study
    from whichlora.study.keys import train_key
    from whichlora.study.plan import plan_study

    spec = small_study(tiny_model_dir)
    spec["training"].update(steps=3, validate_every=2)
    without = small_study(tiny_model_dir)
    without["training"].update(steps=3)
    assert train_key(parse_study(spec), plan_study(parse_study(spec))[0]) == train_key(
        parse_study(without), plan_study(parse_study(without))[0]
    )
    out = tmp_path / "out"
    run_study(write_study(tmp_path, spec), out, stages=("train", "evaluate", "report"))
    with Store(out / "results.sqlite") as store:
        rows = store.query("SELECT step, validation_nll FROM training ORDER BY step")
    assert [step for step, value in rows if value is not None] == [2, 3]
    report = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "learning_curve" in report
