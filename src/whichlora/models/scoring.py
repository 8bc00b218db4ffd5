"""The model that evaluation and embedding score: a fresh base, plus a run's adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_scoring_model(spec: Any, adapter_dir: Path | None, merge: bool) -> tuple[Any, Any]:
    """A fresh base (never `disable_adapter()`: PiSSA/OLoRA rewrite base weights), plus the
    adapter in `adapter_dir` when given, merged into the weights when `merge`.

    `spec` is the study's model section (id, dtype, trust_remote_code, allow_pickle, device,
    device_map). Merging computes the same function up to float rounding (~1e-6 relative in
    float32) and makes every technique score at the base model's speed: unmerged, DoRA
    renormalises its weights and VeRA rebuilds its scaled matrices at every forward (DoRA's
    evaluation took 2.5x the base's on the quickstart)."""
    from whichlora.models.loading import load_model

    loaded = load_model(
        spec.id,
        dtype=spec.dtype,
        trust_remote_code=spec.trust_remote_code,
        allow_pickle=spec.allow_pickle,
        device=spec.device,
        device_map=spec.device_map,
    )
    model = loaded.model
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
        if merge:
            model = model.merge_and_unload()
        model.eval()
    return model, loaded.tokenizer
