"""Scoring engine against a naive reference and against lm-eval's HFLM, on a tiny random Llama."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from whichlora.errors import WhichloraError
from whichlora.evaluate import scoring
from whichlora.evaluate.scoring import (
    MultipleChoiceItem,
    generate,
    loglikelihood,
    response_nll,
    score_multiple_choice,
)

Model = LlamaForCausalLM
Tok = PreTrainedTokenizerFast
MAX_POSITIONS = 64  # small so one test item overflows and exercises left truncation

CORPUS = [
    "Question: What colour is the sky?\nAnswer: The sky is blue.",
    "Question: How many legs does a cat have?\nAnswer: A cat has four legs.",
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France and Berlin is the capital of Germany.",
    "Water boils at one hundred degrees.",
    "<|user|> Say hello. <|assistant|> Hello there, friend!",
]

ITEMS = [
    MultipleChoiceItem("Question: What colour is the sky?\nAnswer:", ["blue", "green", "red"], 0),
    MultipleChoiceItem("Question: How many legs does a cat have?\nAnswer:", ["four", "two"], 0),
    MultipleChoiceItem("Question: What colour is the sky?\nAnswer:", ["blue sky", "grey"], 1),
    MultipleChoiceItem("The capital of France is ", ["Paris", "Berlin", "the lazy dog"], 0),
    MultipleChoiceItem("Water boils at", ["one hundred degrees", "ten", "zero degrees"], 0),
    MultipleChoiceItem("Only one choice here:", ["yes"], 0),
    MultipleChoiceItem("The fox", ["jumps over the lazy dog", "sleeps", "is quick"], 2),
    MultipleChoiceItem(
        "Question: " + "Paris Berlin France Germany capital " * 10 + "\nAnswer:",
        ["Paris", "Berlin is the capital of Germany"],
        1,
    ),
]


def _train_tokenizer(add_bos: bool) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    if add_bos:  # Llama-2 style: the tokenizer itself prepends BOS
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def _tiny_llama(vocab_size: int, attn: str = "sdpa") -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        initializer_range=0.2,  # peaked predictions, so acc is not just "fewest tokens wins"
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    config._attn_implementation = attn
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module", params=[False, True], ids=["no-bos", "bos"])
def tokenizer(request: pytest.FixtureRequest) -> PreTrainedTokenizerFast:
    return _train_tokenizer(add_bos=request.param)


@pytest.fixture(scope="module")
def model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return _tiny_llama(len(tokenizer))


# --------------------------------------------------------------------------- naive references


def _naive_pair(tokenizer: Tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's causal _encode_pair, written out plainly."""
    if context == "":
        cont = tokenizer.encode(continuation, add_special_tokens=False)
        return [tokenizer.bos_token_id], cont
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + continuation
    whole = tokenizer.encode(stripped + continuation)
    ctx = tokenizer.encode(stripped)
    return ctx, whole[len(ctx) :]


@torch.no_grad()
def _naive_score(model: Model, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    """One unpadded forward per request, left-truncated to the window like HFLM."""
    inp = (ctx + cont)[-(MAX_POSITIONS + 1) :][:-1]
    logprobs = torch.log_softmax(model(torch.tensor([inp])).logits[0].float(), dim=-1)
    logprobs = logprobs[-len(cont) :]
    target = torch.tensor(cont)
    total = float(logprobs.gather(1, target[:, None]).sum())
    return total, bool((logprobs.argmax(-1) == target).all())


def _naive_loglikelihood(
    model: Model, tokenizer: Tok, requests: list[tuple[str, str]]
) -> list[tuple[float, bool]]:
    return [_naive_score(model, *_naive_pair(tokenizer, c, x)) for c, x in requests]


def _mc_requests(items: list[MultipleChoiceItem]) -> list[tuple[str, str]]:
    return [(it.context, " " + choice) for it in items for choice in it.choices]


def _lm_eval_metrics(
    items: list[MultipleChoiceItem], lls: list[float]
) -> list[tuple[float, float]]:
    """lm-eval's multiple_choice process_results (acc, acc_norm by choice characters)."""
    out, pos = [], 0
    for item in items:
        chunk = np.array(lls[pos : pos + len(item.choices)])
        pos += len(item.choices)
        lengths = np.array([float(len(c)) for c in item.choices])
        out.append(
            (
                1.0 if np.argmax(chunk) == item.gold else 0.0,
                1.0 if np.argmax(chunk / lengths) == item.gold else 0.0,
            )
        )
    return out


# --------------------------------------------------------------------------- loglikelihood


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_loglikelihood_matches_naive(model: Model, tokenizer: Tok, batch_size: int) -> None:
    requests = _mc_requests(ITEMS) + [("", "The quick brown fox"), ("Water", " boils")]
    ours = loglikelihood(model, tokenizer, requests, batch_size=batch_size)
    naive = _naive_loglikelihood(model, tokenizer, requests)
    for (ll, greedy), (ref_ll, ref_greedy) in zip(ours, naive, strict=True):
        assert ll == pytest.approx(ref_ll, abs=1e-4)
        assert greedy == ref_greedy


def test_eager_attention_matches_naive(tokenizer: Tok) -> None:
    """The additive block mask must mean the same to eager attention as to SDPA."""
    eager = _tiny_llama(len(tokenizer), attn="eager")
    requests = _mc_requests(ITEMS)
    ours = loglikelihood(eager, tokenizer, requests, batch_size=8)
    naive = _naive_loglikelihood(eager, tokenizer, requests)
    assert [ll for ll, _ in ours] == pytest.approx([ll for ll, _ in naive], abs=1e-4)


def test_greedy_flag_is_true_for_the_models_own_continuation(model: Model, tokenizer: Tok) -> None:
    ctx = tokenizer.encode("The quick brown fox")
    ids = model.generate(
        torch.tensor([ctx]), max_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=None
    )[0, len(ctx) :].tolist()
    scored = scoring._score_tokens(model, tokenizer, [(ctx, ids), (ctx, ids[:2])], batch_size=4)
    assert [greedy for _, greedy in scored] == [True, True]


def test_unpacked_fallback_matches_naive(
    model: Model, tokenizer: Tok, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flash/flex attention models take the one-request-per-row path; it must agree too."""
    monkeypatch.setattr(scoring, "_can_pack", lambda _model: False)
    requests = _mc_requests(ITEMS)
    ours = loglikelihood(model, tokenizer, requests, batch_size=5)
    naive = _naive_loglikelihood(model, tokenizer, requests)
    assert [ll for ll, _ in ours] == pytest.approx([ll for ll, _ in naive], abs=1e-4)


@pytest.mark.parametrize("packed", [True, False])
def test_suffix_logits_fallback_matches_naive(
    model: Model, tokenizer: Tok, monkeypatch: pytest.MonkeyPatch, packed: bool
) -> None:
    """Models without a boolean `logits_to_keep` mask get the LM head over the scored suffix;
    the mask path (every transformers causal LM here) and that one agree with the reference."""
    assert scoring.head_takes_position_mask(model)
    monkeypatch.setattr(scoring, "head_takes_position_mask", lambda _model: False)
    monkeypatch.setattr(scoring, "_can_pack", lambda _model: packed)
    requests = _mc_requests(ITEMS) + [("", "The quick brown fox")]
    ours = loglikelihood(model, tokenizer, requests, batch_size=5)
    naive = _naive_loglikelihood(model, tokenizer, requests)
    assert [ll for ll, _ in ours] == pytest.approx([ll for ll, _ in naive], abs=1e-4)
    assert [g for _, g in ours] == [g for _, g in naive]


@pytest.mark.parametrize("rows", [1, 3])
def test_target_log_probs_do_not_depend_on_the_chunking(
    model: Model, tokenizer: Tok, monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    """The log-softmax at the targets is taken a few rows at a time; every row's reduction is
    its own, so chunks of 1 or 3 rows give exactly what one chunk of all rows gives."""
    requests = _mc_requests(ITEMS) + [("", "The quick brown fox jumps over the lazy dog")]
    whole = loglikelihood(model, tokenizer, requests, batch_size=5)
    monkeypatch.setattr(scoring, "TARGET_CHUNK_ROWS", rows)
    chunked = loglikelihood(model, tokenizer, requests, batch_size=5)
    assert chunked == whole
    naive = _naive_loglikelihood(model, tokenizer, requests)
    assert [g for _, g in chunked] == [g for _, g in naive]


def test_peft_wrapped_model_matches_naive(tokenizer: Tok) -> None:
    peft = pytest.importorskip("peft")
    base = _tiny_llama(len(tokenizer))
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    wrapped = peft.get_peft_model(base, config).eval()
    requests = _mc_requests(ITEMS[:3])
    ours = loglikelihood(wrapped, tokenizer, requests, batch_size=4)
    naive = _naive_loglikelihood(wrapped, tokenizer, requests)
    assert [ll for ll, _ in ours] == pytest.approx([ll for ll, _ in naive], abs=1e-4)


def test_empty_continuation_is_a_clear_error(model: Model, tokenizer: Tok) -> None:
    with pytest.raises(WhichloraError, match="empty continuation"):
        loglikelihood(model, tokenizer, [("Water boils", "")])


# --------------------------------------------------------------------------- multiple choice


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_multiple_choice_matches_naive(model: Model, tokenizer: Tok, batch_size: int) -> None:
    scores = score_multiple_choice(model, tokenizer, ITEMS, batch_size=batch_size)
    naive = _naive_loglikelihood(model, tokenizer, _mc_requests(ITEMS))
    lls = [ll for s in scores for ll in s.loglikelihoods]
    assert lls == pytest.approx([ll for ll, _ in naive], abs=1e-4)
    expected = _lm_eval_metrics(ITEMS, [ll for ll, _ in naive])
    assert [(s.acc, s.acc_norm) for s in scores] == expected


def test_multiple_choice_matches_lm_eval_hflm(model: Model, tokenizer: Tok) -> None:
    hf = pytest.importorskip(
        "lm_eval.models.huggingface",
        reason="lm-eval not installed (pip install whichlora[harness])",
    )
    from lm_eval.api.instance import Instance

    requests = _mc_requests(ITEMS)
    instances = [
        Instance(request_type="loglikelihood", doc={}, arguments=req, idx=i)
        for i, req in enumerate(requests)
    ]
    lm = hf.HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4)
    theirs = lm.loglikelihood(instances, disable_tqdm=True)
    scores = score_multiple_choice(model, tokenizer, ITEMS, batch_size=4)
    ours = [(ll, g) for s in scores for ll, g in zip(s.loglikelihoods, s.is_greedy, strict=True)]
    assert [ll for ll, _ in ours] == pytest.approx([ll for ll, _ in theirs], abs=1e-4)
    assert [g for _, g in ours] == [g for _, g in theirs]
    expected = _lm_eval_metrics(ITEMS, [ll for ll, _ in theirs])
    assert [(s.acc, s.acc_norm) for s in scores] == expected


def test_acc_norm_divides_by_choice_characters(
    model: Model, tokenizer: Tok, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Choice 1 has the lower total but the better per-character score."""
    fake = [(-10.0, False), (-12.0, False)]
    monkeypatch.setattr(scoring, "_score_tokens", lambda *args, **kwargs: fake)
    item = MultipleChoiceItem("Q:", ["ab", "abcdefgh"], gold=1)
    (score,) = score_multiple_choice(model, tokenizer, [item])
    assert (score.pred, score.pred_norm, score.acc, score.acc_norm) == (0, 1, 0.0, 1.0)


def test_multiple_choice_progress_counts_items(model: Model, tokenizer: Tok) -> None:
    seen: list[int] = []
    score_multiple_choice(model, tokenizer, ITEMS, batch_size=3, progress=seen.append)
    assert sum(seen) == len(ITEMS)


def test_bad_gold_is_a_clear_error(model: Model, tokenizer: Tok) -> None:
    with pytest.raises(WhichloraError, match="gold"):
        score_multiple_choice(model, tokenizer, [MultipleChoiceItem("Q:", ["a", "b"], gold=2)])


def test_training_mode_is_restored(tokenizer: Tok) -> None:
    model = _tiny_llama(len(tokenizer)).train()
    score_multiple_choice(model, tokenizer, ITEMS[:2])
    assert model.training


# --------------------------------------------------------------------------- response NLL

PAIRS = [
    ("<|user|> Say hello. <|assistant|>", " Hello there, friend!"),
    ("Question: What colour is the sky?\nAnswer:", " The sky is blue."),
    ("Question: What colour is the sky?\nAnswer:", " blue"),
    ("", "Water boils at one hundred degrees."),
]


@torch.no_grad()
def _naive_response_nll(
    model: Model, tokenizer: Tok, prompt: str, response: str
) -> tuple[float, int]:
    prompt_ids = tokenizer.encode(prompt) if prompt else [tokenizer.bos_token_id]
    response_ids = tokenizer.encode(response, add_special_tokens=False)
    ids = prompt_ids + response_ids
    logprobs = torch.log_softmax(model(torch.tensor([ids[:-1]])).logits[0], dim=-1)
    logprobs = logprobs[-len(response_ids) :]
    nll = -float(logprobs.gather(1, torch.tensor(response_ids)[:, None]).sum())
    return nll, len(response_ids)


def test_response_nll_counts_only_response_tokens(model: Model, tokenizer: Tok) -> None:
    ours = response_nll(model, tokenizer, PAIRS, batch_size=3)
    for (nll, n), (prompt, response) in zip(ours, PAIRS, strict=True):
        ref_nll, ref_n = _naive_response_nll(model, tokenizer, prompt, response)
        assert n == ref_n == len(tokenizer.encode(response, add_special_tokens=False))
        assert nll == pytest.approx(ref_nll, abs=1e-4)
        assert math.isfinite(math.exp(nll / n))
    # a longer prompt changes the NLL but never the number of scored tokens
    longer = response_nll(model, tokenizer, [("A much longer " + PAIRS[0][0], PAIRS[0][1])])
    assert longer[0][1] == ours[0][1]


def test_response_nll_empty_response(model: Model, tokenizer: Tok) -> None:
    assert response_nll(model, tokenizer, [("Say something:", "")]) == [(0.0, 0)]


# --------------------------------------------------------------------------- generation

PROMPTS = [
    "Question: What colour is the sky?\nAnswer:",
    "The quick",
    "<|user|> Say hello. <|assistant|>",
    "Paris is the capital of France and Berlin is",
    "Water",
]


def test_generate_batched_equals_unbatched(model: Model, tokenizer: Tok) -> None:
    one = generate(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=1)
    four = generate(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=4)
    assert one == four
    assert all(isinstance(text, str) and text == text.strip() for text in one)


def test_generate_stops_at_eos(tokenizer: Tok) -> None:
    """Force EOS on the third step: the text is exactly the first two tokens' text."""
    model = _tiny_llama(len(tokenizer))
    two_tokens = generate(model, tokenizer, PROMPTS[:1], max_new_tokens=2)
    calls = []

    def force_eos(_module: torch.nn.Module, _inputs: tuple, logits: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) >= 3:
            logits = logits.clone()
            logits[..., tokenizer.eos_token_id] = 1e4
        return logits

    model.lm_head.register_forward_hook(force_eos)
    assert generate(model, tokenizer, PROMPTS[:1], max_new_tokens=8) == two_tokens
    assert len(calls) == 3
