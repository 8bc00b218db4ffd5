"""Regional compilation (`training.compile`): when a run compiles, and that a compiled run trains
what the eager one trains."""

from __future__ import annotations

from typing import Any

import pytest

from whichlora.train import compiling
from whichlora.train.compiling import CompilePolicy, repeated_blocks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_true_compiles_before_the_first_step_and_false_never() -> None:
    on = CompilePolicy(True, 100, "cpu", checkpointing=False)
    assert on.due(0, 0, 0.0) and on.compiled
    assert not on.due(1, 1, 1.0)  # once
    off = CompilePolicy(False, 10_000, "cpu", checkpointing=False)
    assert not any(off.due(s, s, s * 100.0) for s in range(10))
    assert not off.compiled


def test_auto_compiles_only_runs_long_enough_to_pay_it_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compiling, "can_compile", lambda device: True)

    def decision(total_steps: int, seconds_per_step: float) -> bool:
        policy = CompilePolicy("auto", total_steps, "cpu", checkpointing=False)
        return any(policy.due(s, s, s * seconds_per_step) for s in range(total_steps))

    assert not decision(8, 3.0)  # the quickstart: 8 steps of a few seconds
    assert not decision(40, 2.0)
    assert decision(2000, 2.0)  # an hour of steps
    # gradient checkpointing or no compiler: auto stays eager
    assert not CompilePolicy("auto", 2000, "cpu", checkpointing=True).due(5, 5, 1e4)
    monkeypatch.setattr(compiling, "can_compile", lambda device: False)
    assert not decision(2000, 2.0)


def test_the_repeated_blocks_are_the_decoder_layers(fresh_model: Any) -> None:
    from peft import get_peft_model

    from whichlora.techniques import REGISTRY, AdapterSettings

    model = fresh_model().model
    layers = list(model.model.layers)
    assert repeated_blocks(model) == layers
    peft_model = get_peft_model(model, REGISTRY["lora"].build_config(AdapterSettings(rank=2)))
    assert repeated_blocks(peft_model) == layers


@pytest.mark.slow
@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-4), ("bf16", 3e-2)])
def test_a_compiled_run_trains_what_the_eager_one_does(
    precision: str, tolerance: float, train_tiny: Any
) -> None:
    """Same losses within the precision's rounding, dropout included (eager's generator draws
    the masks), and the model handed back is eager again."""
    import torch
    from safetensors.torch import load_file

    common = {"steps": 3, "precision": precision, "dropout": 0.1}
    eager = train_tiny("lora", compile=False, **common)
    compiled = train_tiny("lora", compile=True, run_name="compiled", **common)
    assert compiled.log["summary"]["compiled"] and not eager.log["summary"]["compiled"]
    for a, b in zip(compiled.losses, eager.losses, strict=True):
        assert a == pytest.approx(b, abs=tolerance)
    weights = [
        load_file(run.adapter_dir / "adapter_model.safetensors") for run in (eager, compiled)
    ]
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, atol=tolerance, rtol=tolerance)
    assert all(block._compiled_call_impl is None for block in repeated_blocks(compiled.model))
