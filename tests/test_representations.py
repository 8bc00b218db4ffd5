"""Layer representations: pooling ignores padding, layers are all there, and the cache works."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from whichlora.analyze.representations import (
    cached_representations,
    layer_representations,
    representations_path,
)
from whichlora.errors import WhichloraError

TEXTS = {
    "en": ["Hello there, my friend!", "Cold.", "The sky is blue.", "Paris is the capital."],
    "de": ["Hallo, mein Freund!", "Kalt.", "Der Himmel ist blau.", "Die Hauptstadt ist Berlin."],
    "fr": ["Bonjour, mon ami !", "Froid.", "Le ciel est bleu.", "La capitale est Paris."],
}


@pytest.fixture
def model(fresh_model: Callable[[], Any]) -> Any:
    return fresh_model().model


def _direct(model: Any, tokenizer: Any, text: str) -> tuple[list[torch.Tensor], int]:
    """Unpadded hidden states of one sentence, the reference for both poolings."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    return [h[0].float() for h in out.hidden_states], ids.shape[1]


def test_shape_layers_and_language_order(model: Any, tokenizer: Any) -> None:
    reps = layer_representations(model, tokenizer, TEXTS, batch_size=5)
    n_layers = model.config.num_hidden_layers
    assert reps.languages == ["en", "de", "fr"]
    assert reps.n_per_language == 4
    assert reps.n_layers == n_layers + 1
    for pooling in ("mean", "last"):
        assert reps.pooled[pooling].shape == (n_layers + 1, 12, model.config.hidden_size)
        assert reps.pooled[pooling].dtype == np.float32
    assert list(reps.labels) == ["en"] * 4 + ["de"] * 4 + ["fr"] * 4
    assert np.array_equal(reps.by_language("mean", 1)["de"], reps.pooled["mean"][1, 4:8])


def test_mean_pooling_ignores_padding(model: Any, tokenizer: Any) -> None:
    # "Cold." is the shortest sentence, so in a batch it carries the most padding.
    alone = layer_representations(model, tokenizer, {"en": ["Cold."]})
    batched = layer_representations(model, tokenizer, TEXTS, batch_size=12)
    for pooling in ("mean", "last"):
        np.testing.assert_allclose(
            alone.pooled[pooling][:, 0], batched.pooled[pooling][:, 1], atol=1e-5
        )
    hidden, _ = _direct(model, tokenizer, "Cold.")
    expected = np.stack([h.mean(dim=0).numpy() for h in hidden])
    np.testing.assert_allclose(batched.pooled["mean"][:, 1], expected, atol=1e-5)


def test_last_pooling_takes_last_real_token(model: Any, tokenizer: Any) -> None:
    reps = layer_representations(model, tokenizer, TEXTS, batch_size=4)
    for row, text in enumerate(TEXTS["fr"], start=8):
        hidden, length = _direct(model, tokenizer, text)
        expected = np.stack([h[length - 1].numpy() for h in hidden])
        np.testing.assert_allclose(reps.pooled["last"][:, row], expected, atol=1e-5)
    # and it is not the mean: pooling choices differ beyond the embedding layer
    assert not np.allclose(reps.pooled["last"][-1], reps.pooled["mean"][-1])


def test_batch_size_does_not_change_results(model: Any, tokenizer: Any) -> None:
    a = layer_representations(model, tokenizer, TEXTS, batch_size=1)
    b = layer_representations(model, tokenizer, TEXTS, batch_size=7)
    for pooling in ("mean", "last"):
        np.testing.assert_allclose(a.pooled[pooling], b.pooled[pooling], atol=1e-5)


def test_peft_model_and_single_pooling(model: Any, tokenizer: Any) -> None:
    from peft import LoraConfig, get_peft_model

    base = layer_representations(model, tokenizer, TEXTS, poolings=("last",))
    assert set(base.pooled) == {"last"}
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    tuned = layer_representations(peft_model, tokenizer, TEXTS, poolings=("last",))
    assert tuned.pooled["last"].shape == base.pooled["last"].shape
    np.testing.assert_allclose(tuned.pooled["last"][0], base.pooled["last"][0], atol=1e-6)
    assert not np.allclose(tuned.pooled["last"][-1], base.pooled["last"][-1], atol=1e-4)


def test_misaligned_or_bad_input_is_refused(model: Any, tokenizer: Any) -> None:
    with pytest.raises(WhichloraError, match="same number of sentences"):
        layer_representations(model, tokenizer, {"en": ["a", "b"], "de": ["a"]})
    with pytest.raises(WhichloraError, match="poolings"):
        layer_representations(model, tokenizer, TEXTS, poolings=("max",))


# --------------------------------------------------------------------------- cache


def _ctx(tmp_path: Path, model_dir: Path) -> SimpleNamespace:
    spec = SimpleNamespace(id=str(model_dir), dtype="float32")
    return SimpleNamespace(
        study=SimpleNamespace(model=spec, evaluation=SimpleNamespace(merge_adapters=True)),
        study_dir=tmp_path,
        run_dir=lambda run_id: tmp_path / "runs" / run_id,
    )


class CountingLoader:
    """Stands in for load_scoring_model and counts loads: a load means a recomputation."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.calls: list[str] = []

    def __call__(self, ctx: Any, run_id: str) -> tuple[Any, Any]:
        self.calls.append(run_id)
        loaded = self.factory()
        return loaded.model, loaded.tokenizer


def test_cache_hit_skips_recomputation(
    tmp_path: Path, tiny_model_dir: Path, fresh_model: Callable[[], Any]
) -> None:
    ctx = _ctx(tmp_path, tiny_model_dir)
    loader = CountingLoader(fresh_model)
    first = cached_representations(ctx, "base", TEXTS, loader=loader)
    path = representations_path(tmp_path, "base")
    assert path == tmp_path / "analysis" / "reps" / "base.npz"
    assert path.is_file() and loader.calls == ["base"]
    mtime = path.stat().st_mtime_ns
    again = cached_representations(ctx, "base", TEXTS, loader=loader)
    assert loader.calls == ["base"] and path.stat().st_mtime_ns == mtime
    assert again.languages == first.languages and again.n_per_language == 4
    for pooling in ("mean", "last"):
        assert np.array_equal(again.pooled[pooling], first.pooled[pooling])
    assert not [p for p in path.parent.iterdir() if p.name != "base.npz"]  # no temp files left

    changed = {**TEXTS, "fr": [*TEXTS["fr"][:3], "Autre phrase."]}
    cached_representations(ctx, "base", changed, loader=loader)
    assert loader.calls == ["base", "base"]
    reordered = {lang: TEXTS[lang] for lang in ("de", "en", "fr")}
    cached_representations(ctx, "base", reordered, loader=loader)
    assert len(loader.calls) == 3


def test_cache_tracks_the_adapter_and_survives_a_broken_file(
    tmp_path: Path, tiny_model_dir: Path, fresh_model: Callable[[], Any]
) -> None:
    ctx = _ctx(tmp_path, tiny_model_dir)
    loader = CountingLoader(fresh_model)
    adapter = tmp_path / "runs" / "lora-s0" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(b"weights v1")
    cached_representations(ctx, "lora-s0", TEXTS, loader=loader)
    cached_representations(ctx, "lora-s0", TEXTS, loader=loader)
    assert loader.calls == ["lora-s0"]
    (adapter / "adapter_model.safetensors").write_bytes(b"weights v2")  # retrained run
    cached_representations(ctx, "lora-s0", TEXTS, loader=loader)
    assert len(loader.calls) == 2
    representations_path(tmp_path, "lora-s0").write_bytes(b"not an npz")
    reps = cached_representations(ctx, "lora-s0", TEXTS, loader=loader)
    assert len(loader.calls) == 3 and reps.pooled["mean"].shape[1] == 12
