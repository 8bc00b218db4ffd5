"""FLOP floors: what a forward needed is counted exactly, and efficiency is floor / seconds."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from whichlora.models.flops import add_forward, counting, matmul_params, training_flops
from whichlora.report.efficiency import MATMUL_KV, efficiency_rows
from whichlora.store import Store


def test_matmul_params_count_the_body_and_the_head(fresh_model: Any) -> None:
    model = fresh_model().model
    config = model.config
    hidden, inter, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    kv = config.num_key_value_heads * (hidden // config.num_attention_heads)
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter
    assert matmul_params(model) == (config.num_hidden_layers * per_layer, vocab * hidden)


@pytest.mark.usefixtures("one_torch_thread")
def test_scoring_counts_real_tokens_and_read_logits(fresh_model: Any) -> None:
    """Response NLL: every context once plus the response but its last token through the body,
    the head at each response token; padding is not counted."""
    from whichlora.evaluate.scoring import _LmEvalTokenizer, response_nll

    loaded = fresh_model()
    pairs = [("Name a colour of the sky.", "The sky is blue."), ("Say hello.", "Hello there!")]
    with counting() as work:
        response_nll(loaded.model, loaded.tokenizer, pairs, batch_size=2)
    encoder = _LmEvalTokenizer(loaded.tokenizer)
    requests = [
        (encoder.encode_prompt(p), encoder.encode(r, add_special_tokens=False)) for p, r in pairs
    ]
    tokens = sum(len(c) + len(r) - 1 for c, r in requests)
    read = sum(len(r) for _, r in requests)
    body, head = matmul_params(loaded.model)
    assert work.tokens == tokens
    assert work.flops == pytest.approx(2 * body * tokens + 2 * head * read)
    add_forward(loaded.model, 10, 1)  # outside a counting block: recorded nowhere
    assert work.tokens == tokens


def test_training_flops_formula() -> None:
    assert training_flops(10, body=100, head=50, trainable=4, labelled=3) == 4000 + 600 + 240


def test_efficiency_is_the_floor_over_the_measured_seconds(tmp_path: Path) -> None:
    with Store(tmp_path / "results.sqlite") as store:
        store.set_kv(MATMUL_KV, {"fp32_gflops": 100.0, "bf16_gflops": 400.0})
        store.finish_unit("lora-s0", "train", seconds=10.0, tokens=1000, flops=5e11)
        store.finish_unit("base", "evaluate:en", seconds=4.0, tokens=500, flops=8e11)
        store.finish_unit("study", "embed:base", seconds=1.0, tokens=100, flops=2e11)
        store.finish_unit("base", "harness:xcopa", seconds=3.0)  # not counted: left out
        store.replace_table("analysis", [], "analyze-measures", seconds=2.0)
        rows = {r["stage"]: r for r in efficiency_rows(store, {"evaluation": "bf16"})}
    assert rows["training"]["floor_seconds"] == pytest.approx(5.0)
    assert rows["training"]["efficiency"] == pytest.approx(0.5)
    assert rows["evaluation"]["precision"] == "bf16"
    assert rows["evaluation"]["efficiency"] == pytest.approx(2.0 / 4.0)
    assert rows["embedding"]["efficiency"] == pytest.approx(2.0)  # fp32 unless told
    assert rows["study"]["seconds"] == pytest.approx(20.0)
    assert rows["study"]["efficiency"] == pytest.approx((5.0 + 2.0 + 2.0) / 20.0)
    assert rows["evaluation"]["fp32_efficiency"] == pytest.approx(8.0 / 4.0)  # at 100 GFLOP/s
    assert rows["training"]["fp32_efficiency"] == rows["training"]["efficiency"]
    assert rows["study"]["fp32_efficiency"] == pytest.approx((5.0 + 8.0 + 2.0) / 20.0)


def test_a_store_from_before_floors_gains_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE units (run_id TEXT, stage TEXT, status TEXT, key TEXT, error TEXT, "
            "seconds REAL, finished_at TEXT, PRIMARY KEY (run_id, stage))"
        )
        db.execute("INSERT INTO units VALUES ('base', 'evaluate:en', 'done', 'k', NULL, 1, '')")
    with Store(path) as store:
        assert store.unit_status("base", "evaluate:en", "k") == "done"
        store.finish_unit("base", "evaluate:de", seconds=1.0, tokens=5, flops=6.0)
        assert store.query("SELECT tokens, flops FROM units WHERE stage='evaluate:de'") == [
            (5, 6.0)
        ]
        assert efficiency_rows(store, {}) == []  # no machine measurement: nothing to show
