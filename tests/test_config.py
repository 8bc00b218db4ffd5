"""The study file: shorthands and defaults accepted, every mistake rejected with its key named."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from whichlora.config.study import dump_study, load_study, parse_study
from whichlora.errors import WhichloraError
from whichlora.techniques import REGISTRY

# One plausible value per declared technique option; a new option must be added here.
OPTION_VALUES: dict[str, Any] = {
    "d_initial": 0.2,
    "init_r": 12,
    "tinit": 2,
    "tfinal": 3,
    "deltaT": 2,
    "orth_reg_weight": 0.3,
    "init": "pissa",
    "loraplus_lr_ratio": 8.0,
    "reg": 0.05,
    "rho": 1.5,
    "tau": 0.9,
    "nblocks": 4,
    "num_vectors": 64,
    "vector_length": 16,
    "topk": 3,
    "variant": "bat",
    "mini_r": 2,
    "delora_lambda": 10.0,
    "gralora_k": 4,
    "u": 16,
    "block_size": 16,
    "n_frequency": 500,
    "scaling": 100.0,
    "corda_method": "kpm",
    "batches": 4,
    "direction": "ArBr",
    "scale": "unit",
    "stable_gamma": 8,
    "beta": 1e-3,
    "gamma": 1e-2,
    "wavelet_family": "sym2",
    "use_idwt": False,
}


def rejected(data: Any) -> str:
    with pytest.raises(WhichloraError) as caught:
        parse_study(data, "studies/bad.yaml")
    message = str(caught.value)
    assert "studies/bad.yaml" in message
    return message


# --------------------------------------------------------------------------- accepted


def test_minimal_study_gets_every_default() -> None:
    study = parse_study({"techniques": ["lora", "dora"]})
    assert [t.name for t in study.techniques] == ["lora", "dora"]
    assert [t.run_label for t in study.techniques] == ["lora", "dora"]
    assert study.model.id == "builtin:smollm2-135m" and study.model.dtype == "float32"
    assert study.budget.rank == 8 and study.budget.trainable_params is None
    assert study.training.steps == 30 and study.training.seeds == [0]
    assert study.executor.kind == "local"


def test_shorthands_for_model_and_techniques() -> None:
    study = parse_study(
        {
            "model": "hub:owner/name",
            "techniques": ["lora", {"name": "lora", "label": "lora-r16", "rank": 16}],
        }
    )
    assert study.model.id == "hub:owner/name"
    assert [t.run_label for t in study.techniques] == ["lora", "lora-r16"]
    assert study.techniques[1].rank == 16 and study.techniques[0].rank is None


def test_parameter_budget_replaces_the_default_rank() -> None:
    study = parse_study({"techniques": ["lora"], "budget": {"trainable_params": 500_000}})
    assert study.budget.trainable_params == 500_000 and study.budget.rank is None
    study = parse_study({"techniques": ["lora"], "budget": {"alpha": 32}})
    assert study.budget.rank == 8 and study.budget.alpha == 32  # size still defaults to rank 8


@pytest.mark.parametrize("technique", sorted(REGISTRY))
def test_every_technique_and_its_options_are_accepted(technique: str) -> None:
    names = REGISTRY[technique].option_names
    assert set(names) <= set(OPTION_VALUES), "add a value for the new option to OPTION_VALUES"
    options = {name: OPTION_VALUES[name] for name in names}
    study = parse_study({"techniques": [{"name": technique, "options": options}]})
    assert study.techniques[0].name == technique
    assert study.techniques[0].options == options


def test_load_study_round_trips_through_the_resolved_dump(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(
        "name: demo\ntechniques: [lora, {name: adalora, options: {tinit: 2}}]\n"
        "training: {steps: 5, learning_rate: 1.0e-3}\n",
        encoding="utf-8",
    )
    study = load_study(path)
    assert study.name == "demo" and study.training.steps == 5
    assert study.training.learning_rate == pytest.approx(1e-3)
    resolved = yaml.safe_load(dump_study(study))
    assert resolved["budget"]["rank"] == 8  # defaults are written back
    assert parse_study(resolved) == study


# --------------------------------------------------------------------------- rejected


@pytest.mark.parametrize(
    ("data", "key", "says"),
    [
        ({"techniques": ["lora"], "technique": ["dora"]}, "'technique'", "remove the key"),
        ({"techniques": ["lora"], "training": {"stepz": 3}}, "'training.stepz'", "remove"),
        ({"techniques": [{"name": "lora", "rnak": 4}]}, "'techniques.0.rnak'", "remove"),
        ({"techniques": ["lora"], "model": {"idd": "x"}}, "'model.idd'", "remove"),
    ],
)
def test_unknown_keys_are_rejected(data: dict, key: str, says: str) -> None:
    message = rejected(data)
    assert key in message and says in message


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"techniques": ["lora"], "training": {"steps": "many"}}, "'training.steps'"),
        ({"techniques": ["lora"], "training": {"steps": 2.5}}, "'training.steps'"),
        ({"techniques": ["lora"], "training": {"response_only_loss": "maybe"}}, "response_only"),
        ({"techniques": "lora"}, "'techniques'"),
        ({"techniques": ["lora"], "model": 5}, "'model'"),
        ({"techniques": ["lora"], "budget": {"target_modules": 7}}, "'budget.target_modules"),
        ({"techniques": [{"name": "lora", "options": ["x"]}]}, "'techniques.0.options'"),
    ],
)
def test_wrong_types_are_rejected(data: dict, key: str) -> None:
    assert key in rejected(data)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"techniques": ["lora"], "budget": {"rank": 0}}, "'budget.rank'"),
        ({"techniques": [{"name": "lora", "rank": 0}]}, "'techniques.0.rank'"),
        ({"techniques": ["lora"], "budget": {"rank": -4}}, "'budget.rank'"),
        ({"techniques": ["lora"], "budget": {"fraction": 1.5}}, "'budget.fraction'"),
        ({"techniques": ["lora"], "training": {"learning_rate": 0}}, "'training.learning_rate'"),
        ({"techniques": ["lora"], "training": {"seeds": [1, 1]}}, "'training.seeds'"),
        ({"techniques": ["lora"], "training": {"max_length": 8}}, "'training.max_length'"),
        ({"techniques": ["lora"], "training": {"stall_timeout": 0}}, "'training.stall_timeout'"),
    ],
)
def test_impossible_values_are_rejected(data: dict, key: str) -> None:
    assert key in rejected(data)


def test_rank_zero_message_says_what_is_allowed() -> None:
    message = rejected({"techniques": ["lora"], "budget": {"rank": 0}})
    assert "greater than or equal to 1" in message


def test_unknown_technique_is_rejected_with_the_known_ones() -> None:
    message = rejected({"techniques": ["lora", "lorax"]})
    assert "'techniques.1.name'" in message and "unknown technique 'lorax'" in message
    assert all(name in message for name in REGISTRY)


@pytest.mark.parametrize("technique", sorted(REGISTRY))
def test_unknown_technique_option_is_rejected(technique: str) -> None:
    message = rejected({"techniques": [{"name": technique, "options": {"warp_factor": 9}}]})
    assert "'techniques.0'" in message and "warp_factor" in message and technique in message


def test_option_of_another_technique_is_rejected() -> None:
    message = rejected({"techniques": [{"name": "lora", "options": {"init_r": 12}}]})
    assert "init_r" in message and "allowed: none" in message


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"n_frequency": 0}, "option 'n_frequency' of fourierft: .*greater than or equal to 1"),
        ({"scaling": "big"}, "option 'scaling' of fourierft"),
    ],
)
def test_option_of_wrong_type_or_range_is_rejected(options: dict, says: str) -> None:
    message = rejected({"techniques": [{"name": "fourierft", "options": options}]})
    assert "'techniques.0'" in message
    assert re.search(says, message), message


@pytest.mark.parametrize(
    "techniques",
    [["lora", "lora"], ["dora", {"name": "lora", "label": "dora"}]],
)
def test_duplicate_run_labels_are_rejected(techniques: list) -> None:
    message = rejected({"techniques": techniques})
    assert "techniques" in message and "duplicate run labels" in message and "label" in message


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"techniques": []}, "techniques: list at least one technique"),
        ({}, "'techniques': Field required"),
        ({"techniques": ["lora"], "budget": {"rank": 4, "fraction": 0.1}}, "give only one"),
        ({"techniques": [{"name": "lora", "rank": 4, "trainable_params": 9}]}, "give only one"),
        ({"techniques": [{"name": "lora", "label": "../escape"}]}, "no path separators"),
        ({"name": "my study", "techniques": ["lora"]}, "'name'"),
    ],
)
def test_inconsistent_studies_are_rejected(data: dict, says: str) -> None:
    assert says in rejected(data)


def test_a_study_must_be_a_mapping() -> None:
    with pytest.raises(WhichloraError, match="must be a YAML mapping.*not list"):
        parse_study(["lora"], "s.yaml")


def test_load_study_reports_file_problems(tmp_path: Path) -> None:
    with pytest.raises(WhichloraError, match="does not exist"):
        load_study(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("techniques: [lora\ntraining: {steps: 3}\n", encoding="utf-8")
    with pytest.raises(WhichloraError, match="not valid YAML at line"):
        load_study(broken)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(WhichloraError, match="not UTF-8"):
        load_study(binary)
    typo = tmp_path / "typo.yaml"
    typo.write_text("techniques: [lora]\ntrainig: {steps: 3}\n", encoding="utf-8")
    with pytest.raises(WhichloraError, match=r"typo\.yaml.*'trainig'"):
        load_study(typo)


def test_a_technique_can_have_its_own_seeds() -> None:
    """More seeds for the baseline and its closest rival: their seed noise is then measured."""
    from whichlora.study.plan import plan_study

    study = parse_study(
        {"techniques": ["lora", {"name": "dora", "seeds": [0, 1, 2]}], "training": {"seeds": [0]}}
    )
    assert [r.run_id for r in plan_study(study)] == ["lora-s0", "dora-s0", "dora-s1", "dora-s2"]
    with pytest.raises(WhichloraError, match="techniques.0.seeds"):
        parse_study({"techniques": [{"name": "dora", "seeds": [1, 1]}]})
