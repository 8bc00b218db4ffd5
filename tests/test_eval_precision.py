"""Scoring precision: bf16 agrees with fp32 within a stated tolerance, `auto` is pinned per study,
and the shared scoring loader hands out exactly the model a fresh load gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from whichlora.config.study import dump_study, parse_study
from whichlora.models.precision import cpu_flags, resolve_precision, scoring_dtype
from whichlora.models.scoring import ScoringModels, load_scoring_model

# bf16 keeps 8 mantissa bits: each hidden state is rounded to ~0.4%. On the tiny model that moves
# a token's log-probability by at most ~3e-4 nats (a request's total by < 0.008); the stated
# tolerance leaves a wide margin (SmolLM2-135M on real text: see the README, evaluation.precision).
TOKEN_LOGPROB_TOL = 0.01  # nats per scored token, mean over a request's tokens
ACC_MARGIN = 0.1  # an item whose fp32 best choice leads by more than this must not flip


def _study(model_dir: Path, **evaluation: Any) -> Any:
    return parse_study(
        {
            "model": {"id": str(model_dir), "device": "cpu"},
            "techniques": ["lora"],
            "evaluation": {"languages": ["en", "de"], "items_per_language": 6, **evaluation},
        }
    )


@pytest.mark.usefixtures("one_torch_thread")
def test_bf16_scores_agree_with_fp32_within_the_stated_tolerance(tiny_model_dir: Path) -> None:
    from whichlora.data.knowledge import context, continuations
    from whichlora.evaluate.scoring import (
        MultipleChoiceItem,
        _LmEvalTokenizer,
        response_nll,
        score_multiple_choice,
    )
    from whichlora.evaluate.suite import _prompt_pairs
    from whichlora.study.datasets import evaluation_set, training_data

    study = _study(tiny_model_dir)
    evalset = evaluation_set(study, training_data(study)[1])
    items = [i for group in evalset.knowledge.values() for i in group]
    mc = [
        MultipleChoiceItem(context(i), [c.lstrip() for c in continuations(i)], i.answer)
        for i in items
    ]
    records = [r for group in evalset.heldout.values() for r in group]
    scores, nlls = {}, {}
    for precision in ("fp32", "bf16"):
        model, tokenizer = load_scoring_model(study.model, None, True, precision)
        assert model.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
        scores[precision] = score_multiple_choice(model, tokenizer, mc)
        nlls[precision] = response_nll(model, tokenizer, _prompt_pairs(tokenizer, records))
    assert len(mc) >= 8 and len(records) >= 8
    encoder = _LmEvalTokenizer(tokenizer)
    tokens = [len(encoder.encode_pair(m.context, " " + c)[1]) for m in mc for c in m.choices]
    full = [ll for s in scores["fp32"] for ll in s.loglikelihoods]
    half = [ll for s in scores["bf16"] for ll in s.loglikelihoods]
    for a, b, n in zip(full, half, tokens, strict=True):
        assert abs(a - b) <= TOKEN_LOGPROB_TOL * max(n, 1), (a, b, n)
    for (total, count), (total16, count16) in zip(nlls["fp32"], nlls["bf16"], strict=True):
        assert count == count16 and count > 0
        assert abs(total - total16) / count <= TOKEN_LOGPROB_TOL, (total, total16, count)
    decided = 0
    for s32, s16 in zip(scores["fp32"], scores["bf16"], strict=True):
        ranked = sorted(s32.loglikelihoods, reverse=True)
        if len(ranked) < 2 or ranked[0] - ranked[1] > ACC_MARGIN:
            decided += 1
            assert s16.acc == s32.acc and s16.pred == s32.pred
    assert decided >= len(mc) // 2  # the check above ran on most items


def test_auto_is_pinned_per_study_folder(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A new folder pins what this machine runs fast; a folder from before the setting (its
    resolved.yaml has no precision) stays fp32; a pinned folder keeps its value."""
    from whichlora.study.context import pin_precision

    study = _study(tiny_model_dir, precision="auto")
    machine = resolve_precision("auto", "cpu")
    assert pin_precision(study, tmp_path / "new").evaluation.precision == machine
    old = tmp_path / "old"
    old.mkdir()
    held = yaml.safe_load(dump_study(_study(tiny_model_dir)))
    del held["evaluation"]["precision"]
    (old / "resolved.yaml").write_text(yaml.safe_dump(held), encoding="utf-8")
    assert pin_precision(study, old).evaluation.precision == "fp32"
    held["evaluation"]["precision"] = "bf16"
    (old / "resolved.yaml").write_text(yaml.safe_dump(held), encoding="utf-8")
    assert pin_precision(study, old).evaluation.precision == "bf16"
    explicit = _study(tiny_model_dir, precision="fp32")
    assert pin_precision(explicit, old).evaluation is explicit.evaluation  # left as written


def test_bf16_is_in_scoring_keys_only(tiny_model_dir: Path) -> None:
    from whichlora.study.keys import evaluate_key, train_key
    from whichlora.study.plan import plan_study

    keys = {}
    for precision in ("fp32", "bf16"):
        study = _study(tiny_model_dir, precision=precision)
        run = plan_study(study)[0]
        keys[precision] = (train_key(study, run), evaluate_key(study, run, "de"))
    default = _study(tiny_model_dir)
    run = plan_study(default)[0]
    assert keys["fp32"] == (train_key(default, run), evaluate_key(default, run, "de"))
    assert keys["bf16"][0] == keys["fp32"][0] and keys["bf16"][1] != keys["fp32"][1]


def test_the_cpu_bf16_override_beats_the_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    from whichlora.models.precision import CPU_BF16_ENV, fast_bf16

    for told, expected in (("1", True), ("0", False)):
        monkeypatch.setenv(CPU_BF16_ENV, told)
        fast_bf16.cache_clear()
        assert fast_bf16("cpu") is expected
        assert resolve_precision("auto", "cpu") == ("bf16" if expected else "fp32")
    fast_bf16.cache_clear()


def test_cpu_flags_and_dtypes(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n", encoding="utf-8")
    assert {"avx512_bf16", "avx512f"} <= cpu_flags(info)
    assert cpu_flags(tmp_path / "missing") == set()
    assert resolve_precision("fp32", "cuda") == "fp32"
    assert scoring_dtype("bf16", "float32") == "bfloat16"
    assert scoring_dtype("fp32", "float16") == "float16"


def test_shared_loader_reads_the_base_once_and_copies_exactly(
    tiny_model_dir: Path, train_tiny: Any
) -> None:
    """PiSSA's adapter is merged into a copy: the kept base and later copies stay untouched."""
    study = _study(tiny_model_dir)
    trained = train_tiny("pissa", learning_rate=5e-2, steps=2)
    adapter = trained.out_dir / "adapter"
    models = ScoringModels(study.model, merge=True, precision="fp32")
    merged, _ = models.get(adapter)
    base, _ = models.get(None)
    again, _ = models.get(None)
    assert models.loads == 1 and again is base
    fresh_merged, _ = load_scoring_model(study.model, adapter, True)
    fresh_base, _ = load_scoring_model(study.model, None, True)
    for ours, fresh in ((merged, fresh_merged), (base, fresh_base)):
        theirs = fresh.state_dict()
        mine = ours.state_dict()
        assert mine.keys() == theirs.keys()
        for name, tensor in mine.items():
            assert torch.equal(tensor, theirs[name]), name
    merged_state, base_state = merged.state_dict(), base.state_dict()
    assert any(not torch.equal(merged_state[n], base_state[n]) for n in base_state)
    half = ScoringModels(study.model, merge=True, precision="bf16")
    assert half.get(None)[0].dtype == torch.bfloat16  # cast once, the kept base stays fp32
    ours16 = half.get(adapter)[0].state_dict()
    fresh16 = load_scoring_model(study.model, adapter, True, "bf16")[0].state_dict()
    assert all(torch.equal(t, fresh16[n]) for n, t in ours16.items())


def test_scoring_models_give_the_lm_head_one_contiguous_input(
    tiny_model_dir: Path, train_tiny: Any
) -> None:
    """A run's weights are frozen by PEFT: without a contiguous input torch.matmul would run
    the head over a sliced (logits_to_keep) batch as a batched matmul that copies the head's
    weight once per row. Every model handed out (base and merged run) folds it into one GEMM,
    with the same logits."""
    study = _study(tiny_model_dir)
    adapter = train_tiny("lora", steps=1).out_dir / "adapter"
    models = ScoringModels(study.model, merge=True, precision="fp32")
    ids = torch.randint(0, 100, (3, 9))
    seen: list[bool] = []

    def record(_module: Any, args: tuple[Any, ...], _out: Any) -> None:
        seen.append(args[0].is_contiguous())

    for model in (models.get(None)[0], models.get(adapter)[0]):
        seen.clear()
        handle = model.get_output_embeddings().register_forward_hook(record)
        with torch.inference_mode():
            kept = model(input_ids=ids, logits_to_keep=4).logits
            full = model(input_ids=ids).logits
        handle.remove()
        assert seen == [True, True]
        assert torch.allclose(kept, full[:, -4:], atol=1e-5)
    assert not any(p.requires_grad for p in models.get(adapter)[0].parameters())
