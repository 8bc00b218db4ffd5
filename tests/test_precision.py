"""Mixed precision and gradient checkpointing: what they change in a run and what they must not.

bf16 autocast runs on CPU too, so its contract is tested here on the tiny model; fp16's loss
scaling in tests/test_checkpoint.py (its scale resumes with the run); real GPU speed and memory
are measured by scripts/gpu_check.sh on a CUDA machine.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from whichlora.config.study import parse_study
from whichlora.models.precision import resolve_precision
from whichlora.study.keys import NOT_IN_TRAIN_KEY, VERSION, data_key, digest, model_key, train_key
from whichlora.study.plan import plan_study
from whichlora.techniques import REGISTRY

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# bf16 keeps 8 bits of mantissa: over a few steps on the tiny model its cross-entropy stays
# within this of float32's (measured over 4 steps: at most 2.1e-4 per step for lora and dora).
BF16_LOSS_TOLERANCE = 5e-3


def study_dict(tiny_model_dir: Path, **training: Any) -> dict[str, Any]:
    return {
        "model": {"id": str(tiny_model_dir), "device": "cpu"},
        "techniques": ["lora"],
        "training": {"steps": 3, **training},
    }


# ------------------------------------------------------------------------------------ keys


def test_auto_precision_on_cpu_keeps_the_keys_of_studies_run_before_it(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A study from before `training.precision` (every run float32) keeps its train key:
    "auto" resolves to fp32 on CPU and fp32 is left out of the key. The reference payload is
    the key as it was computed before the field existed."""
    from whichlora.models import precision

    monkeypatch.setattr(precision, "fast_bf16", lambda device: False)  # a CPU without AMX
    study = parse_study(study_dict(tiny_model_dir))
    run = plan_study(study)[0]
    assert run.request.precision == "fp32"
    before = {
        k: v
        for k, v in asdict(run.request).items()
        if k
        not in NOT_IN_TRAIN_KEY
        | {"precision", "gradient_checkpointing", "processes", "packing", "sparse_dropout"}
    }
    expected = digest(
        {
            "unit": "train",
            "version": VERSION["train"],
            "model": model_key(study),
            "data": data_key(study),
            "request": before,
        }
    )
    assert train_key(study, run) == expected
    explicit = parse_study(study_dict(tiny_model_dir, precision="fp32"))
    assert train_key(explicit, plan_study(explicit)[0]) == expected
    checkpointed = parse_study(study_dict(tiny_model_dir, gradient_checkpointing=True))
    assert train_key(checkpointed, plan_study(checkpointed)[0]) == expected
    bf16 = parse_study(study_dict(tiny_model_dir, precision="bf16"))
    assert train_key(bf16, plan_study(bf16)[0]) != expected


def test_auto_resolves_by_where_the_run_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    from whichlora.models import precision

    for fast, expected in ((False, "fp32"), (True, "bf16")):  # a CPU without / with AMX
        monkeypatch.setattr(precision, "fast_bf16", lambda device, fast=fast: fast)
        assert resolve_precision("auto", "cpu") == expected
        assert resolve_precision("auto", "cpu", cpu_bf16=False) == "fp32"  # what auto was
    monkeypatch.setattr(precision, "fast_bf16", lambda device: False)
    assert resolve_precision("fp16", "cpu") == "fp16"  # an explicit choice is kept
    if not torch.cuda.is_available():  # a Ray cluster's GPUs, planned from a CPU driver
        assert resolve_precision("auto", "auto", gpus_per_run=1) == "bf16"
        assert resolve_precision("auto", "auto") == "fp32"


def test_a_study_folder_pins_what_auto_trained_in(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new folder pins this machine's choice (bf16 on a CPU with AMX) and keeps it on a
    machine without; a folder whose resolved.yaml says auto was written when auto meant fp32
    on every CPU, and one from before the setting trained fp32: both keep their fp32 keys."""
    import yaml

    from whichlora.config.study import dump_study
    from whichlora.models import precision
    from whichlora.study.context import open_study, pin_precision

    monkeypatch.setattr(precision, "fast_bf16", lambda device: True)
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(study_dict(tiny_model_dir)), encoding="utf-8")
    new = tmp_path / "new"
    ctx = open_study(study_file, new)
    try:
        assert ctx.study.training.precision == "bf16"
        assert ctx.runs[0].request.precision == "bf16"
    finally:
        ctx.close()
    held = yaml.safe_load((new / "resolved.yaml").read_text(encoding="utf-8"))
    assert held["training"]["precision"] == "bf16"
    monkeypatch.setattr(precision, "fast_bf16", lambda device: False)
    study = parse_study(study_dict(tiny_model_dir))
    assert pin_precision(study, new).training.precision == "bf16"  # another machine

    monkeypatch.setattr(precision, "fast_bf16", lambda device: True)
    old = tmp_path / "old"
    old.mkdir()
    held = yaml.safe_load(dump_study(study))
    assert held["training"]["precision"] == "auto"  # what a folder of the old code holds
    (old / "resolved.yaml").write_text(yaml.safe_dump(held), encoding="utf-8")
    assert pin_precision(study, old).training.precision == "fp32"
    del held["training"]["precision"]  # from before training.precision existed
    (old / "resolved.yaml").write_text(yaml.safe_dump(held), encoding="utf-8")
    assert pin_precision(study, old).training.precision == "fp32"
    explicit = parse_study(study_dict(tiny_model_dir, precision="fp32"))
    assert pin_precision(explicit, old).training.precision == "fp32"
    half = study_dict(tiny_model_dir)
    half["model"]["dtype"] = "float16"  # fp16 weights keep their own arithmetic on CPU
    assert pin_precision(parse_study(half), tmp_path / "half").training.precision == "fp32"
    assert plan_study(parse_study(half))[0].request.precision == "fp32"  # a plan without a folder


def test_unknown_precision_is_a_clear_error(tiny_model_dir: Path) -> None:
    from whichlora.errors import WhichloraError

    with pytest.raises(WhichloraError, match="training.precision"):
        parse_study(study_dict(tiny_model_dir, precision="fp8"))


# ------------------------------------------------------------------------------- bf16 runs


def test_bf16_autocast_tracks_fp32_and_saves_a_float32_adapter_plain_peft_loads(
    train_tiny: Any, load_adapter: Any, probe_batch: dict[str, Any], logits_on: Any
) -> None:
    fp32 = train_tiny("lora", run_name="fp32", steps=4, precision="fp32")
    bf16 = train_tiny("lora", run_name="bf16", steps=4, precision="bf16")
    assert bf16.log["request"]["precision"] == "bf16"
    assert bf16.losses != fp32.losses  # autocast really ran in bfloat16
    assert bf16.losses == pytest.approx(fp32.losses, abs=BF16_LOSS_TOLERANCE)
    weights = load_file(bf16.adapter_dir / "adapter_model.safetensors")
    assert weights and all(t.dtype == torch.float32 for t in weights.values())
    reloaded = load_adapter(bf16.adapter_dir)
    torch.testing.assert_close(
        logits_on(reloaded, probe_batch), logits_on(bf16.model, probe_batch), atol=1e-4, rtol=0
    )


class AttentionKernelDtypes:
    """Records the dtype the attention kernel really runs in: CPU autocast casts SDPA's
    inputs below the Python call (transformers' rotary embedding hands it float32 q and k),
    so the dtype is read at the dispatched aten op."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        seen: list[torch.dtype] = []

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
                if "scaled_dot_product" in str(func):
                    seen.append(args[0].dtype)
                return func(*args, **(kwargs or {}))

        self.seen, self.mode = seen, Mode


def test_bf16_on_cpu_runs_attention_in_float32_and_hands_the_model_back_as_loaded(
    train_tiny: Any,
) -> None:
    """The linear layers run in bf16 under autocast; the attention kernel in float32 (SDPA's
    CPU backward is slower in bf16). Afterwards the model is plain SDPA again, which autocast
    runs in bf16."""
    spy = AttentionKernelDtypes()
    with spy.mode():
        bf16 = train_tiny("lora", run_name="bf16", steps=2, precision="bf16")
    assert spy.seen and set(spy.seen) == {torch.float32}
    assert bf16.model.config._attn_implementation == "sdpa"
    spy.seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16), spy.mode():
        bf16.model(input_ids=torch.tensor([[1, 2, 3]]))
    assert spy.seen and set(spy.seen) == {torch.bfloat16}


def test_float32_attention_builds_the_same_padding_mask_as_sdpa(
    fresh_model: Any, probe_batch: dict[str, Any]
) -> None:
    """Registered with transformers' mask function too: with padding in the batch, the float32
    attention gives exactly plain SDPA's logits in float32 (no mask at all would differ)."""
    from whichlora.train.precision import float32_attention

    model = fresh_model().model.eval()
    batch = {k: v for k, v in probe_batch.items() if k != "labels"}
    batch["attention_mask"] = batch["attention_mask"].clone()
    batch["attention_mask"][0, : batch["attention_mask"].shape[1] // 2] = 0  # left padding
    with torch.no_grad():
        plain = model(**batch).logits
        with float32_attention(model, "bf16", "cpu") as active:
            assert active and model.config._attn_implementation != "sdpa"
            ours = model(**batch).logits
        unmasked = model(input_ids=batch["input_ids"]).logits
    torch.testing.assert_close(ours, plain, atol=0, rtol=0)
    assert not torch.allclose(unmasked[0], plain[0])
    with float32_attention(model, "fp32", "cpu") as active:
        assert not active and model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("technique", ["lora", "dora"])
def test_frozen_linears_cast_once_give_autocasts_results_to_the_bit(
    technique: str, fresh_model: Any, probe_batch: dict[str, Any]
) -> None:
    """The frozen weights' bf16 copies are what autocast would cast them to at every forward:
    same loss, same gradients, exactly (DoRA also reads the float32 weight for its norm). After
    the context the layers are plain nn.Linear again."""
    from peft import get_peft_model

    from whichlora.techniques import AdapterSettings
    from whichlora.train.loss import batch_losses
    from whichlora.train.precision import HALF_WEIGHT, half_frozen_linears

    torch.manual_seed(0)
    config = REGISTRY[technique].build_config(AdapterSettings(rank=4, dropout=0.0))
    model = get_peft_model(fresh_model().model, config)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)

    def loss_and_grads() -> tuple[Any, list[Any]]:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            objective, _ = batch_losses(model, probe_batch, True)
        objective.backward()
        return objective.detach(), [p.grad for p in model.parameters() if p.requires_grad]

    plain = loss_and_grads()
    with half_frozen_linears(model, "bf16") as patched:
        assert patched > 0
        cast_once = loss_and_grads()
        # several processes: DDP must not broadcast the copies at every forward
        copies = {n for n, _ in model.named_buffers() if n.endswith(HALF_WEIGHT)}
        assert len(copies) == patched
        assert set(model._ddp_params_and_buffers_to_ignore) == copies
    assert torch.equal(cast_once[0], plain[0])
    assert all(torch.equal(a, b) for a, b in zip(cast_once[1], plain[1], strict=True))
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    assert all("forward" not in m.__dict__ and HALF_WEIGHT not in m._buffers for m in linears)
    assert not hasattr(model, "_ddp_params_and_buffers_to_ignore")
    with half_frozen_linears(model, "fp32") as patched:
        assert patched == 0


# ------------------------------------------------------------------ gradient checkpointing

# Plain LoRA and AdaLoRA (a per-step hook, a penalty in the forward, masked ranks) here; every
# other technique (DoRA's magnitude, LoRA+'s optimizer, VeRA's shared projections, PiSSA's
# rewritten base, EVA's data-driven init, ...) in make test-slow.
REPRESENTATIVE = ["lora", "adalora"]
OTHERS = sorted(set(REGISTRY) - set(REPRESENTATIVE))


def _same_run_with_and_without_checkpointing(train_tiny: Any, technique: str) -> None:
    options = {"tau": 0.3} if technique == "eva" else {}
    plain = train_tiny(technique, run_name="plain", steps=2, options=options)
    checkpointed = train_tiny(
        technique, run_name="gc", steps=2, options=options, gradient_checkpointing=True
    )
    for a, b in zip(plain.log["steps"], checkpointed.log["steps"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-7)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5, abs=1e-8)
    weights_a = load_file(plain.adapter_dir / "adapter_model.safetensors")
    weights_b = load_file(checkpointed.adapter_dir / "adapter_model.safetensors")
    assert weights_a.keys() == weights_b.keys() and weights_a
    for key, tensor in weights_a.items():
        torch.testing.assert_close(weights_b[key], tensor, atol=1e-6, rtol=1e-5, msg=key)


@pytest.mark.parametrize("technique", REPRESENTATIVE)
def test_gradient_checkpointing_gives_the_same_losses_gradients_and_adapter(
    technique: str, train_tiny: Any
) -> None:
    _same_run_with_and_without_checkpointing(train_tiny, technique)


@pytest.mark.slow
@pytest.mark.parametrize("technique", OTHERS)
def test_gradient_checkpointing_same_run_for_every_other_technique(
    technique: str, train_tiny: Any
) -> None:
    _same_run_with_and_without_checkpointing(train_tiny, technique)


def test_checkpointing_stores_far_fewer_activations(fresh_model: Any, probe_batch: Any) -> None:
    """The flag really reaches the decoder layers: with it, the forward saves only each layer's
    input for backward (counted through autograd's saved-tensor hooks), not its activations."""
    from peft import LoraConfig, get_peft_model

    from whichlora.train.loop import enable_activation_checkpointing

    def saved_tensors(checkpointed: bool) -> int:
        model = fresh_model().model
        if checkpointed:
            enable_activation_checkpointing(model)
        peft_model = get_peft_model(model, LoraConfig(r=2, target_modules="all-linear"))
        peft_model.train()
        count = [0]

        def pack(tensor: Any) -> Any:
            count[0] += 1
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = peft_model(**copy.copy(probe_batch)).loss
        loss.backward()
        return count[0]

    assert saved_tensors(True) * 4 < saved_tensors(False)
