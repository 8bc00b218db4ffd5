"""DoRA's factored weight norm against PEFT's own DoRA layer: same outputs, same gradients, the
same trained run; layers it does not cover keep PEFT's forward."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.dora import DoraLinearLayer

from whichlora.techniques.methods.dora import factored_weight_norm, use_factored_dora_norm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _dora_pair(fresh_model: Any) -> tuple[Any, Any]:
    """Two identical DoRA models with random B (so BA is not zero); the second factored."""
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", use_dora=True)
    peft_model = get_peft_model(fresh_model().model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    ours = copy.deepcopy(peft_model)
    assert use_factored_dora_norm(ours) > 0
    return peft_model, ours


def test_factored_norm_is_the_norm_of_the_updated_weight() -> None:
    """Independent reference: the row norms of W + s·BA built in float64."""
    torch.manual_seed(1)
    base = torch.nn.Linear(48, 80, bias=False)
    a, b = torch.nn.Linear(48, 6, bias=False), torch.nn.Linear(6, 80, bias=False)
    torch.nn.init.normal_(b.weight, std=0.3)
    layer = DoraLinearLayer(fan_in_fan_out=False)
    ours = factored_weight_norm(layer, base, a, b, scaling=1.7)
    updated = base.weight.double() + 1.7 * b.weight.double() @ a.weight.double()
    torch.testing.assert_close(ours.double(), updated.norm(dim=1), rtol=1e-6, atol=0)
    with torch.no_grad():
        base.weight.mul_(2.0)  # changed in place (a merge): the cached ||W_i||² is stale
    updated = base.weight.double() + 1.7 * b.weight.double() @ a.weight.double()
    again = factored_weight_norm(layer, base, a, b, scaling=1.7)
    torch.testing.assert_close(again.double(), updated.norm(dim=1), rtol=1e-6, atol=0)


def test_factored_dora_gives_peft_dora_outputs_and_gradients(
    fresh_model: Any, probe_batch: dict[str, Any]
) -> None:
    peft_model, ours = _dora_pair(fresh_model)
    for model in (peft_model, ours):
        model.train()
        model(**copy.copy(probe_batch)).loss.backward()
    grads = {n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad}
    ours_grads = {n: p.grad for n, p in ours.named_parameters() if p.requires_grad}
    assert grads.keys() == ours_grads.keys() and any("magnitude" in n for n in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(ours_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    peft_model.eval()
    ours.eval()
    with torch.no_grad():
        expected = peft_model(**copy.copy(probe_batch)).logits
        torch.testing.assert_close(
            ours(**copy.copy(probe_batch)).logits, expected, rtol=0, atol=1e-4
        )
    assert ours.state_dict().keys() == peft_model.state_dict().keys()


def test_layers_it_does_not_cover_keep_peft_forward(fresh_model: Any) -> None:
    """fan_in_fan_out (GPT-2's Conv1D layout), embeddings and other base layers are not covered:
    those DoRA layers keep PEFT's class (checked once, when the factored one is given)."""
    from whichlora.techniques.methods import dora as dora_module

    peft_model, ours = _dora_pair(fresh_model)
    layer = next(m for m in ours.modules() if isinstance(m, DoraLinearLayer))
    assert type(layer) is not DoraLinearLayer
    assert not dora_module._covered(
        type("Layer", (), {"fan_in_fan_out": True})(), torch.nn.Linear(2, 2)
    )
    assert not dora_module._covered(layer, torch.nn.Embedding(3, 2))
    plain = get_peft_model(fresh_model().model, LoraConfig(r=2, target_modules="all-linear"))
    assert use_factored_dora_norm(plain) == 0
    assert use_factored_dora_norm(ours) == 0  # given once: nothing left to swap
    fan_in_fan_out = copy.deepcopy(peft_model)
    for dora in fan_in_fan_out.modules():
        if type(dora) is DoraLinearLayer:
            dora.fan_in_fan_out = True
    assert use_factored_dora_norm(fan_in_fan_out) == 0


def test_a_dora_run_trains_as_with_peft_dora(
    train_tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from whichlora.techniques import REGISTRY

    ours = train_tiny("dora", run_name="ours", steps=3)
    monkeypatch.setitem(REGISTRY, "dora", dataclasses.replace(REGISTRY["dora"], after_build=None))
    peft_run = train_tiny("dora", run_name="peft", steps=3)
    # float32 rounding of the norm (~1e-7 relative) reaches the next loss as ~1e-5 through
    # Adam's first steps, which divide each gradient by its own magnitude
    assert ours.losses[0] == pytest.approx(peft_run.losses[0], rel=1e-6)
    assert ours.losses == pytest.approx(peft_run.losses, rel=1e-4)
    assert any(type(m).__name__ == "FactoredNormDoraLinearLayer" for m in ours.model.modules())
    assert not any(
        type(m).__name__ == "FactoredNormDoraLinearLayer" for m in peft_run.model.modules()
    )
