"""Every registered technique trains, saves and reloads; what differs per technique is checked."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import pytest
import torch

from whichlora.errors import WhichloraError
from whichlora.techniques import REGISTRY, AdapterSettings, Technique, get_technique

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TECHNIQUES = sorted(REGISTRY)
REWRITING = sorted(name for name, t in REGISTRY.items() if t.rewrites_base)
# Adapters that start as (or near) the identity need a push to move the logits in 3 steps.
LEARNING_RATES = {"vera": 2e-2, "adalora": 1e-2, "hira": 1e-2}
ATOL = 1e-4
# EVA reads batches until its components converge; a loose threshold keeps the tiny test short.
# CorDA and LoRA-GA read a fixed number of batches: two are enough for the tiny model.
OPTIONS = {"eva": {"tau": 0.3}, "corda": {"batches": 2}, "loraga": {"batches": 2}}


def peft_model(
    base: Any, technique: str, settings: AdapterSettings, batch: dict[str, Any] | None = None
) -> Any:
    """The adapter as peft builds it; CorDA/LoRA-GA first read `batch` (repeated) as the loop
    feeds them the run's batches."""
    import itertools

    from peft import get_peft_model

    entry = REGISTRY[technique]
    config = entry.build_config(settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if entry.preprocess is not None:
            assert batch is not None, f"{technique} needs batches before the adapter"
            options = entry.parse_options({"batches": 2})
            entry.preprocess(base, config, itertools.repeat(batch), options)
        return get_peft_model(base, config)


def adapted_modules(model: Any) -> dict[str, Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)}


# --------------------------------------------------------------------------- the registry


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_entry_builds_a_config_from_the_settings(technique: str) -> None:
    from peft import PeftConfig

    entry = REGISTRY[technique]
    assert entry.name == technique and entry.description
    assert "arXiv:" in entry.paper or "https://" in entry.paper or "peft " in entry.paper
    assert isinstance(entry, Technique)
    settings = AdapterSettings(rank=6, target_modules=["q_proj", "v_proj"], total_steps=50)
    config = entry.build_config(settings)
    assert isinstance(config, PeftConfig)
    assert type(config).__module__.startswith("peft."), "adapters come from peft"
    assert config.task_type == "CAUSAL_LM"
    assert set(config.target_modules) == {"q_proj", "v_proj"}
    if entry.uses_rank:
        # AdaLoRA's rank budget is its target rank; every other entry takes the rank as `r`.
        assert getattr(config, "target_r", None) == 6 or config.r == 6
    else:
        assert entry.knob.name != "rank"
    # The knob a budget solves reaches the config under its own name.
    if entry.knob.name != "rank":
        default = entry.knob_value(settings)
        assert getattr(config, entry.knob.name) == default


def test_registry_covers_the_lora_family() -> None:
    assert len(REGISTRY) >= 24


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_options_are_typed_with_defaults_and_help(technique: str) -> None:
    from whichlora.techniques.options import describe_options

    entry = REGISTRY[technique]
    defaults = entry.parse_options({})
    for row in describe_options(entry.options):
        assert row["help"], f"{technique}.{row['name']} has no help text"
        assert getattr(defaults, row["name"]) == row["default"]
    with pytest.raises(WhichloraError, match=f"unknown option 'warp' for {technique}"):
        entry.parse_options({"warp": 1})


@pytest.mark.parametrize(
    ("technique", "options", "says"),
    [
        ("loraplus", {"loraplus_lr_ratio": -1}, "option 'loraplus_lr_ratio' of loraplus"),
        ("loraplus", {"loraplus_lr_ratio": "fast"}, "option 'loraplus_lr_ratio' of loraplus"),
        ("adalora", {"init_r": 0}, "option 'init_r' of adalora: .*greater than or equal to 1"),
        ("pissa", {"init": "svd"}, "option 'init' of pissa"),
        ("fourierft", {"n_frequency": 2.5}, "option 'n_frequency' of fourierft"),
        ("eva", {"rho": 0.5}, "option 'rho' of eva"),
    ],
)
def test_bad_option_value_names_technique_and_option(
    technique: str, options: dict[str, Any], says: str
) -> None:
    with pytest.raises(WhichloraError, match=says):
        REGISTRY[technique].build_config(AdapterSettings(options=options))


@pytest.mark.parametrize("technique", ["loha", "lokr"])
def test_lycoris_dropout_is_module_dropout(technique: str) -> None:
    config = REGISTRY[technique].build_config(AdapterSettings(dropout=0.1))
    assert (config.module_dropout, config.rank_dropout) == (0.1, 0.0)


def test_unknown_technique_is_a_user_error() -> None:
    with pytest.raises(WhichloraError, match="Unknown technique 'lorax'.*lora, rslora"):
        get_technique("lorax")
    assert get_technique("dora") is REGISTRY["dora"]


def test_adalora_schedule_comes_from_the_run() -> None:
    config = REGISTRY["adalora"].build_config(AdapterSettings(rank=4, total_steps=40))
    assert (config.total_step, config.tinit, config.tfinal) == (40, 4, 8)
    assert (config.target_r, config.init_r) == (4, 6)
    options = {"init_r": 9, "tinit": 2, "tfinal": 0, "deltaT": 3, "orth_reg_weight": 0.1}
    config = REGISTRY["adalora"].build_config(AdapterSettings(total_steps=40, options=options))
    assert (config.init_r, config.tinit, config.tfinal, config.deltaT) == (9, 2, 0, 3)
    assert config.orth_reg_weight == pytest.approx(0.1)
    # Too short a run for the default warm-up and final phases: no pruning phase is lost.
    config = REGISTRY["adalora"].build_config(AdapterSettings(total_steps=2))
    assert (config.total_step, config.tinit, config.tfinal) == (2, 0, 0)


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_rewrites_base_flag_matches_what_peft_does(
    technique: str, fresh_model: Any, probe_batch: dict[str, Any]
) -> None:
    """A technique that rewrites base weights at init must say so (the loop converts on save)."""
    original = fresh_model().model.state_dict()
    model = peft_model(fresh_model().model, technique, AdapterSettings(rank=4), probe_batch)
    rewritten = [
        name
        for name, module in adapted_modules(model.base_model.model).items()
        if not torch.equal(module.get_base_layer().weight, original[f"{name}.weight"])
    ]
    entry = REGISTRY[technique]
    assert bool(rewritten) == (entry.rewrites_base or entry.rewrites_base_on_load), rewritten
    assert not (entry.rewrites_base and entry.rewrites_base_on_load)


# --------------------------------------------------------------------------- train, save, reload


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_trains_saves_and_reloads_with_plain_peft(
    technique: str,
    train_tiny: Any,
    load_adapter: Any,
    fresh_model: Any,
    probe_batch: Any,
    logits_on: Any,
) -> None:
    run = train_tiny(
        technique,
        learning_rate=LEARNING_RATES.get(technique, 1e-3),
        options=OPTIONS.get(technique, {}),
    )

    assert len(run.losses) == 3
    assert all(math.isfinite(loss) for loss in run.losses)
    assert run.losses[-1] <= run.losses[0] * 1.5
    on_disk = json.loads((run.out_dir / "train_log.json").read_text())
    assert on_disk["technique"] == technique
    assert [s["loss"] for s in on_disk["steps"]] == run.losses
    budget = run.log["budget"]
    assert budget["trainable_params"] == budget["trainable_params_measured"] > 0
    assert (run.adapter_dir / "adapter_config.json").is_file()
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    assert not list(run.out_dir.parent.glob(".tmp-*")), "scratch folder left behind"

    trained = logits_on(run.model, probe_batch)
    base = logits_on(fresh_model().model, probe_batch)
    assert (trained - base).abs().max() > 10 * ATOL, "adapter did not move the model"
    reloaded = logits_on(load_adapter(run.adapter_dir), probe_batch)
    torch.testing.assert_close(reloaded, trained, atol=ATOL, rtol=0)
    merged = logits_on(load_adapter(run.adapter_dir).merge_and_unload(), probe_batch)
    torch.testing.assert_close(merged, trained, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------- per technique


@pytest.mark.parametrize(
    ("steps", "options"),
    [
        (3, {}),  # default schedule: warm-up 1 step, pruning, final phase 1 step
        (4, {"tinit": 1, "tfinal": 0}),  # no final phase: the budget is met on the last step
    ],
)
def test_adalora_reallocates_rank_to_the_target_budget(
    steps: int, options: dict[str, Any], train_tiny: Any
) -> None:
    from peft.tuners.adalora import AdaLoraLayer

    init_r, target_r = 4, 2
    run = train_tiny(
        "adalora",
        steps=steps,
        rank=target_r,
        learning_rate=1e-2,
        options={"init_r": init_r, **options},
    )
    config = json.loads((run.adapter_dir / "adapter_config.json").read_text())
    assert config["total_step"] == steps
    assert config["init_r"] == init_r and config["target_r"] == target_r

    modules = {n: m for n, m in run.model.named_modules() if isinstance(m, AdaLoraLayer)}
    pattern = config["rank_pattern"]
    assert pattern, "update_and_allocate never produced a rank pattern"
    assert len(pattern) == len(modules) == 14
    assert all(len(mask) == init_r for mask in pattern.values())
    kept = sum(sum(mask) for mask in pattern.values())
    # Pruned from init_r to the target budget in total, reallocated across modules.
    assert kept == target_r * len(modules)
    # The masked singular values really are zero in the trained model.
    nonzero = sum(int(torch.count_nonzero(m.lora_E["default"])) for m in modules.values())
    assert nonzero == kept


@pytest.mark.parametrize(("options", "ratio"), [({}, 16.0), ({"loraplus_lr_ratio": 4}, 4.0)])
def test_loraplus_optimizer_scales_b_learning_rate(
    options: dict[str, Any], ratio: float, fresh_model: Any
) -> None:
    technique = REGISTRY["loraplus"]
    model = peft_model(fresh_model().model, "loraplus", AdapterSettings(rank=4))
    optimizer = technique.make_optimizer(model, 1e-3, 0.01, options)
    assert isinstance(optimizer, torch.optim.AdamW)

    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(group_of) == len(trainable)  # every trainable parameter, each once
    b_groups = [group_of[id(p)] for n, p in trainable.items() if "lora_B" in n]
    a_groups = [group_of[id(p)] for n, p in trainable.items() if "lora_A" in n]
    assert b_groups and a_groups
    for group in b_groups:
        assert group["lr"] == pytest.approx(ratio * 1e-3)
        assert group["weight_decay"] == 0.01
    for group in a_groups:
        assert group["lr"] == pytest.approx(1e-3)
        assert group["weight_decay"] == 0.01


@pytest.mark.parametrize("technique", REWRITING)
def test_rewritten_base_adapter_loads_on_untouched_base(
    technique: str, train_tiny: Any, fresh_model: Any, probe_batch: Any, logits_on: Any
) -> None:
    original = fresh_model().model.state_dict()
    run = train_tiny(technique)
    modules = adapted_modules(run.model)
    assert len(modules) == 14
    for name, module in modules.items():
        base_weight = module.get_base_layer().weight
        assert not base_weight.requires_grad  # so it changed at init, not in training
        # LoRA-GA's shift is gradient-sized (~1e-4 here): changed at all is the claim.
        assert not torch.equal(base_weight, original[f"{name}.weight"]), name

    config = json.loads((run.adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == 2 * 4  # converted to plain LoRA: [A | A0], [B | -B0]
    assert config["init_lora_weights"] is True
    # The log records the technique as trained, not the converted form.
    trained_init = REGISTRY[technique].build_config(AdapterSettings(rank=4)).init_lora_weights
    assert run.log["adapter_config"]["init_lora_weights"] == trained_init
    assert run.log["adapter_config"]["r"] == 4
    assert not (run.out_dir / "initial").exists()

    untouched = fresh_model().model
    assert all(torch.equal(t, original[k]) for k, t in untouched.state_dict().items())
    from peft import PeftModel

    reloaded = PeftModel.from_pretrained(untouched, run.adapter_dir)
    torch.testing.assert_close(
        logits_on(reloaded, probe_batch), logits_on(run.model, probe_batch), atol=ATOL, rtol=0
    )


def test_kasa_trains_with_its_regularisers_in_the_objective(train_tiny: Any) -> None:
    run = train_tiny("kasa")
    # The curve stays cross-entropy; what the optimizer minimised adds KaSA's two penalties
    # (at init ||B^T B - I|| is sqrt(r) per layer: B starts at zero).
    assert all(s["objective"] > s["loss"] + 1e-3 for s in run.log["steps"])
