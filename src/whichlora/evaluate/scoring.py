"""Log-likelihood scoring, response perplexity and greedy generation for any HF causal LM.

Loglikelihoods are tokenized exactly like lm-eval's ``HFLM`` (causal backend), and ``acc`` /
``acc_norm`` follow lm-eval's multiple-choice definitions, so our numbers can be compared with
published harness results. The speed-up comes from running each shared context once: a context
and all of its continuations are packed into one row, with a block attention mask (every
continuation sees the context and itself, never its siblings) and position ids that restart after
the context. Only the continuation positions are projected to the vocabulary.

``batch_size`` counts continuations per forward pass, as lm-eval's does; packed rows fill a
forward up to the padded tokens lm-eval would use for that many requests, so equal batch sizes
mean at most lm-eval's memory. Log-softmax runs in float32; HFLM uses the model dtype, so bf16/fp16
results may differ from it in the last digits (float32 results match to about 1e-5).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from whichlora.errors import WhichloraError
from whichlora.models.flops import add_forward
from whichlora.models.introspect import accepts_logits_to_keep, head_takes_position_mask
from whichlora.models.introspect import pad_id as _pad_id

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase as Tokenizer

CausalLM = torch.nn.Module
"""Any Hugging Face causal LM, or a PEFT wrapper around one."""

Progress = Callable[[int], None]
"""Called with how many units (requests, items, pairs or prompts) a batch just finished."""

TokenRequest = tuple[list[int], list[int]]

_DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither config nor tokenizer set one
_TOKENIZER_INFINITY = 1000000000000000019884624838656
_PACKABLE_ATTENTION = ("eager", "sdpa")  # implementations that honour a custom 4D mask


@dataclass
class MultipleChoiceItem:
    """One question; continuations are ``target_delimiter + choice`` as in lm-eval tasks."""

    context: str
    choices: list[str]
    gold: int
    target_delimiter: str = " "


@dataclass
class MultipleChoiceScore:
    """Per-item result; ``acc``/``acc_norm`` are 0.0 or 1.0 so their mean is the task metric."""

    loglikelihoods: list[float]
    is_greedy: list[bool]
    pred: int
    pred_norm: int
    acc: float
    acc_norm: float


# --------------------------------------------------------------------------- tokenization


class _LmEvalTokenizer:
    """Mirrors HFLM's tok_encode/_encode_pair so token boundaries (and scores) match lm-eval."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.prefix_token_id: int | None = bos if bos is not None else eos
        self._prefix_text = (
            None if self.prefix_token_id is None else tokenizer.decode(self.prefix_token_id)
        )
        self._contexts: dict[str, list[int]] = {}

    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        """Tokenizer defaults, but never a second BOS when the text already starts with one."""
        kwargs: dict[str, bool] = {}
        if add_special_tokens is not None:
            kwargs["add_special_tokens"] = add_special_tokens
        elif self._prefix_text is not None and text.startswith(self._prefix_text):
            kwargs["add_special_tokens"] = False
        return list(self.tokenizer.encode(text, **kwargs))

    def prefix(self) -> list[int]:
        """The stand-in context lm-eval uses for empty contexts."""
        if self.prefix_token_id is None:
            raise WhichloraError(
                "The tokenizer has neither a BOS nor an EOS token, so an empty context cannot be "
                "scored; give every request a non-empty context or set tokenizer.bos_token."
            )
        return [self.prefix_token_id]

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt's tokens; an empty prompt becomes the prefix token so there is a context."""
        return self.encode(text) if text else self.prefix()

    def encode_pair(self, context: str, continuation: str) -> TokenRequest:
        """Trailing context whitespace moves to the continuation; the whole string is split."""
        if context == "":
            cont = self.encode(continuation, add_special_tokens=False)
            prefix = self.prefix()
            if cont and cont[0] == prefix[0]:
                return cont[:1], cont[1:]
            return prefix, cont
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.encode(context + continuation)
        if context not in self._contexts:  # every choice of an item repeats its context
            self._contexts[context] = self.encode(context)
        context_enc = self._contexts[context]
        return list(context_enc), whole[len(context_enc) :]


def _max_length(model: CausalLM, tokenizer: Tokenizer) -> int:
    """The context window lm-eval would assume for this model."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if value is not None:
            return int(value)
    model_max = getattr(tokenizer, "model_max_length", None)
    if model_max is not None and model_max != _TOKENIZER_INFINITY:
        return int(model_max)
    return _DEFAULT_MAX_LENGTH


def context_window(model: CausalLM, tokenizer: Tokenizer) -> int:
    """The most tokens one request may hold (context plus continuation, less one)."""
    return _max_length(model, tokenizer)


def _truncate(request: TokenRequest, max_length: int, index: int) -> TokenRequest:
    """Drop context tokens from the left exactly as HFLM does when a request is too long."""
    context, continuation = request
    if not continuation:
        raise WhichloraError(
            f"Request {index} has an empty continuation after tokenization; every continuation "
            "(choice or response) must contain at least one token."
        )
    if len(continuation) > max_length:
        raise WhichloraError(
            f"Request {index} has a continuation of {len(continuation)} tokens, longer than the "
            f"model's {max_length}-token window; shorten that choice or response."
        )
    if len(context) + len(continuation) <= max_length + 1:
        return request
    kept = (context + continuation)[-(max_length + 1) :]
    return kept[: -len(continuation)], continuation


# --------------------------------------------------------------------------- packed rows


@dataclass
class _Row:
    """One context followed by the (last-token-dropped) continuations that share it."""

    context: list[int]
    members: list[tuple[int, list[int]]]  # (request index, continuation tokens)

    @property
    def length(self) -> int:
        return len(self.context) + sum(len(cont) - 1 for _, cont in self.members)

    @property
    def scored(self) -> int:
        """Positions from the last context token to the end: all that needs logits."""
        return self.length - len(self.context) + 1


def _build_rows(requests: Sequence[TokenRequest], per_row: int) -> list[_Row]:
    """Group requests by identical context tokens, at most ``per_row`` continuations a row."""
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for index, (context, continuation) in enumerate(requests):
        groups.setdefault(tuple(context), []).append((index, continuation))
    rows = []
    for context, members in groups.items():
        for start in range(0, len(members), per_row):
            rows.append(_Row(list(context), members[start : start + per_row]))
    # Longest first like lm-eval: similar lengths share a batch and OOMs surface immediately.
    rows.sort(key=lambda row: (-row.length, row.context))
    return rows


def _request_length(row: _Row) -> int:
    """The longest request of the row as lm-eval would run it: context plus one continuation."""
    return len(row.context) + max(len(cont) for _, cont in row.members)


def _batches(rows: list[_Row], batch_size: int) -> Iterator[list[_Row]]:
    """Fill each forward pass with up to ``batch_size`` continuations (lm-eval's unit), or, for
    packed rows, with up to ``batch_size`` rows while the padded batch stays within the tokens
    lm-eval would run for ``batch_size`` requests of the batch's longest request.

    Packed rows share their context, so counting continuations alone left forwards a few rows
    wide (4 four-choice items, ~100 tokens) and far from the matmuls' speed; the token budget
    keeps memory at or below lm-eval's for the same batch size. Rows come longest first, so a
    batch's width is its first row's length."""
    batch: list[_Row] = []
    count = longest = 0
    for row in rows:
        members, request = len(row.members), _request_length(row)
        if batch:
            width = batch[0].length
            by_count = count + members <= batch_size
            by_tokens = len(batch) + 1 <= batch_size and (
                len(batch) + 1
            ) * width <= batch_size * max(longest, request)
            if not (by_count or by_tokens):
                yield batch
                batch, count, longest = [], 0, 0
        batch.append(row)
        count += members
        longest = max(longest, request)
    if batch:
        yield batch


@dataclass
class _Layout:
    """Tensors for one left-padded batch plus where each request's scores live."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segments: torch.Tensor  # -1 padding, 0 context, k>0 the k-th continuation of the row
    keep: int  # logits_to_keep: the aligned suffix covering every row's scored positions
    batch_index: list[int]
    logit_index: list[int]  # position within the kept suffix
    targets: list[int]
    request_sizes: list[tuple[int, int]]  # (request index, number of continuation tokens)


def _layout(rows: list[_Row], pad_id: int) -> _Layout:
    """Left padding aligns every row's scored suffix with the end of the batch."""
    width = max(row.length for row in rows)
    keep = max(row.scored for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    seg = torch.full((len(rows), width), -1, dtype=torch.long)
    out = _Layout(ids, pos, seg, keep, [], [], [], [])
    for b, row in enumerate(rows):
        offset = width - row.length
        n_ctx = len(row.context)
        tokens, positions, segments = list(row.context), list(range(n_ctx)), [0] * n_ctx
        for k, (index, cont) in enumerate(row.members, start=1):
            start = len(tokens)
            tokens += cont[:-1]
            positions += range(n_ctx, n_ctx + len(cont) - 1)
            segments += [k] * (len(cont) - 1)
            predicting = [n_ctx - 1, *range(start, start + len(cont) - 1)]
            out.batch_index += [b] * len(cont)
            out.logit_index += [offset + p - (width - keep) for p in predicting]
            out.targets += cont
            out.request_sizes.append((index, len(cont)))
        ids[b, offset:] = torch.tensor(tokens)
        pos[b, offset:] = torch.tensor(positions)
        seg[b, offset:] = torch.tensor(segments)
    return out


def _block_mask(segments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4D mask: causal, continuations see the context and themselves, pads see self."""
    width = segments.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    query, key = segments[:, :, None], segments[:, None, :]
    allowed = causal & ((key == query) | (key == 0)) & (key >= 0)
    allowed |= torch.eye(width, dtype=torch.bool)  # keeps fully padded query rows finite
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def _padding_mask(segments: torch.Tensor) -> torch.Tensor:
    """Ordinary 2D mask for one-request rows; the model adds causality itself."""
    return (segments >= 0).long()


# --------------------------------------------------------------------------- model calls


def _can_pack(model: CausalLM) -> bool:
    """Our block mask replaces the model's own: only safe for plain full-causal attention.

    Flash/flex kernels ignore custom 4D masks and sliding-window models would lose their window,
    so those get one request per row with an ordinary padding mask instead.
    """
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", "eager") not in _PACKABLE_ATTENTION:
        return False
    uses_window = getattr(config, "use_sliding_window", True)
    return not (getattr(config, "sliding_window", None) and uses_window)


def _model_dtype(model: CausalLM) -> torch.dtype:
    dtype = getattr(model, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


@contextlib.contextmanager
def _eval_mode(model: CausalLM) -> Iterator[None]:
    """Score in eval mode, then leave the model as the caller had it (e.g. mid-training)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


@dataclass
class _Plan:
    """Per-call facts about the model, worked out once rather than per batch."""

    pad_id: int
    packed: bool
    keep_logits: bool
    dtype: torch.dtype
    keep_mask: bool = False  # the head runs at exactly the scored positions (a boolean mask)
    greedy: bool = True  # whether callers read is_greedy (an argmax over the vocabulary)


def _scored_logits(
    model: CausalLM, lay: _Layout, plan: _Plan, inputs: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, rows): the logits the head computed as one [positions, vocab] array in the
    model's dtype, and for every target the row of it that predicts the target.

    With `keep_mask` the LM head runs only at the distinct positions some target is predicted
    from (a packed row's continuations share their context's last position); otherwise at the
    aligned suffix every row's scored positions fall in, padding and contexts included there
    (on the quickstart's held-out responses 1240 positions where 743 are read)."""
    if plan.keep_mask:
        width = lay.input_ids.shape[1]
        positions = torch.tensor(lay.logit_index) + (width - lay.keep)
        rows = torch.tensor(lay.batch_index)
        keep = torch.zeros(lay.input_ids.shape, dtype=torch.bool)
        keep[rows, positions] = True
        flat = keep.flatten().cumsum(0).view_as(keep) - 1  # row-major, as the model flattens
        logits = model(**inputs, logits_to_keep=keep.to(model.device)).logits
        return logits.reshape(-1, logits.shape[-1]), flat[rows, positions]
    kwargs = {"logits_to_keep": lay.keep} if plan.keep_logits else {}
    logits = model(**inputs, **kwargs).logits  # [rows, keep or all positions, vocab]
    width = logits.shape[1]  # the kept suffix starts at width - keep
    index = torch.tensor(lay.batch_index) * width + torch.tensor(lay.logit_index)
    return logits.reshape(-1, logits.shape[-1]), index + (width - lay.keep)


TARGET_CHUNK_ROWS = 32  # 32 x 49152 float32 = 6 MB: the upcast rows stay in cache


def _target_log_probs(
    logits: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor, greedy: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(target), whether the target is the argmax) per target, in float32.

    The log-softmax is taken only at the target (logit - logsumexp), a chunk of rows at a time:
    gathering, upcasting and reducing one [targets, vocab] array at once wrote and re-read
    hundreds of MB (743 held-out targets: 150 MB in float32), 3.4x slower than chunks that stay
    in cache. Each row's values are the same either way (row-wise reductions)."""
    rows = rows.to(logits.device)
    log_probs, hits = [], []
    for row_chunk, target_chunk in zip(
        rows.split(TARGET_CHUNK_ROWS), targets.split(TARGET_CHUNK_ROWS), strict=True
    ):
        chunk = logits.index_select(0, row_chunk).float()
        picked = chunk.gather(1, target_chunk[:, None]).squeeze(1)
        log_probs.append(picked - torch.logsumexp(chunk, dim=-1))
        if greedy:
            hits.append(chunk.argmax(dim=-1) == target_chunk)
    token_lp = torch.cat(log_probs)
    greedy_hits = torch.cat(hits) if greedy else torch.zeros_like(targets, dtype=torch.bool)
    return token_lp, greedy_hits


def _score_batch(model: CausalLM, rows: list[_Row], plan: _Plan) -> list[tuple[int, float, bool]]:
    """One forward pass; returns (request index, loglikelihood, is_greedy) per request."""
    lay = _layout(rows, plan.pad_id)
    add_forward(model, sum(row.length for row in rows), len(lay.targets))
    device = model.device
    mask = _block_mask(lay.segments, plan.dtype) if plan.packed else _padding_mask(lay.segments)
    inputs = {
        "input_ids": lay.input_ids.to(device),
        "attention_mask": mask.to(device),
        "position_ids": lay.position_ids.to(device),
        "use_cache": False,
    }
    logits, at = _scored_logits(model, lay, plan, inputs)
    targets = torch.tensor(lay.targets, device=logits.device)
    token_lp, greedy = _target_log_probs(logits, at, targets, plan.greedy)
    sizes = [n for _, n in lay.request_sizes]
    return [
        (index, float(lp.sum()), bool(g.all()))
        for (index, _), lp, g in zip(
            lay.request_sizes, token_lp.split(sizes), greedy.split(sizes), strict=True
        )
    ]


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise WhichloraError(
            f"batch_size must be at least 1, got {batch_size}; pass a positive int."
        )


def _score_tokens(
    model: CausalLM,
    tokenizer: Tokenizer,
    requests: Sequence[TokenRequest],
    batch_size: int,
    on_done: Callable[[list[int]], None] | None = None,
    pack: bool = True,
    greedy: bool = True,
) -> list[tuple[float, bool]]:
    """Loglikelihood and greediness of every (context tokens, continuation tokens) request;
    `pack=False` gives each request its own row (long texts that only share a BOS: packing them
    would make one row as long as all of them, and attention quadratic in it). With
    `greedy=False` is_greedy is not computed (always False): NLLs never read it."""
    _check_batch_size(batch_size)
    max_length = _max_length(model, tokenizer)
    requests = [_truncate(req, max_length, i) for i, req in enumerate(requests)]
    plan = _Plan(
        _pad_id(tokenizer),
        _can_pack(model),
        accepts_logits_to_keep(model),
        _model_dtype(model),
        keep_mask=head_takes_position_mask(model),
        greedy=greedy,
    )
    rows = _build_rows(requests, per_row=batch_size if plan.packed and pack else 1)
    results: list[tuple[float, bool] | None] = [None] * len(requests)
    with _eval_mode(model):
        for batch in _batches(rows, batch_size):
            done = _score_batch(model, batch, plan)
            for index, loglik, greedy in done:
                results[index] = (loglik, greedy)
            if on_done is not None:
                on_done([index for index, _, _ in done])
    return results  # type: ignore[return-value]


def _count_progress(progress: Progress | None) -> Callable[[list[int]], None] | None:
    return None if progress is None else (lambda indices: progress(len(indices)))


# --------------------------------------------------------------------------- public API


def loglikelihood(
    model: CausalLM,
    tokenizer: Tokenizer,
    requests: list[tuple[str, str]],
    batch_size: int = 16,
    progress: Progress | None = None,
) -> list[tuple[float, bool]]:
    """(sum log p(continuation | context), is greedy) per request, as lm-eval's HFLM reports."""
    encoder = _LmEvalTokenizer(tokenizer)
    tokens = [encoder.encode_pair(context, cont) for context, cont in requests]
    return _score_tokens(model, tokenizer, tokens, batch_size, _count_progress(progress))


def _mc_metrics(item: MultipleChoiceItem, scored: list[tuple[float, bool]]) -> MultipleChoiceScore:
    """lm-eval's multiple_choice process_results: acc_norm divides by len(choice) in chars."""
    lls = [loglik for loglik, _ in scored]
    lengths = np.array([float(len(choice)) for choice in item.choices])
    with np.errstate(divide="ignore", invalid="ignore"):
        pred_norm = int(np.argmax(np.array(lls) / lengths))
    pred = int(np.argmax(lls))
    return MultipleChoiceScore(
        loglikelihoods=lls,
        is_greedy=[greedy for _, greedy in scored],
        pred=pred,
        pred_norm=pred_norm,
        acc=1.0 if pred == item.gold else 0.0,
        acc_norm=1.0 if pred_norm == item.gold else 0.0,
    )


def _check_item(item: MultipleChoiceItem, index: int) -> None:
    if not item.choices:
        raise WhichloraError(f"Multiple-choice item {index} has no choices; give it at least one.")
    if not 0 <= item.gold < len(item.choices):
        raise WhichloraError(
            f"Multiple-choice item {index} has gold={item.gold} but {len(item.choices)} choices; "
            "gold must be the 0-based index of the correct choice."
        )


def _item_progress(
    owners: list[int], n_items: int, progress: Progress | None
) -> Callable[[list[int]], None] | None:
    """Turn finished requests into finished items (an item is done when all choices are)."""
    if progress is None:
        return None
    remaining = [0] * n_items
    for owner in owners:
        remaining[owner] += 1

    def on_done(indices: list[int]) -> None:
        finished = 0
        for index in indices:
            remaining[owners[index]] -= 1
            finished += remaining[owners[index]] == 0
        if finished:
            progress(finished)

    return on_done


def score_multiple_choice(
    model: CausalLM,
    tokenizer: Tokenizer,
    items: list[MultipleChoiceItem],
    batch_size: int = 16,
    progress: Progress | None = None,
) -> list[MultipleChoiceScore]:
    """Score every choice of every item; each context runs once for all of its choices."""
    encoder = _LmEvalTokenizer(tokenizer)
    tokens: list[TokenRequest] = []
    owners: list[int] = []
    for i, item in enumerate(items):
        _check_item(item, i)
        for choice in item.choices:
            tokens.append(encoder.encode_pair(item.context, item.target_delimiter + choice))
            owners.append(i)
    on_done = _item_progress(owners, len(items), progress)
    scored = _score_tokens(model, tokenizer, tokens, batch_size, on_done)
    per_item: list[list[tuple[float, bool]]] = [[] for _ in items]
    for owner, result in zip(owners, scored, strict=True):
        per_item[owner].append(result)
    return [_mc_metrics(item, res) for item, res in zip(items, per_item, strict=True)]


def response_nll(
    model: CausalLM,
    tokenizer: Tokenizer,
    pairs: list[tuple[str, str]],
    batch_size: int = 16,
    progress: Progress | None = None,
    pack: bool = True,
) -> list[tuple[float, int]]:
    """(summed NLL in nats, token count) of each response given its already-formatted prompt.

    Prompt and response are tokenized separately (response without special tokens), so the
    count is the response's own tokens, as in SFT loss masking, and never absorbs a prompt
    token across the boundary. Perplexity is ``exp(nll / n)``; an empty response gives (0.0, 0).
    """
    encoder = _LmEvalTokenizer(tokenizer)
    tokens: list[TokenRequest] = []
    kept: list[int] = []
    for i, (prompt, response) in enumerate(pairs):
        response_ids = encoder.encode(response, add_special_tokens=False)
        if response_ids:
            tokens.append((encoder.encode_prompt(prompt), response_ids))
            kept.append(i)
    on_done = _count_progress(progress)
    scored = _score_tokens(model, tokenizer, tokens, batch_size, on_done, pack, greedy=False)
    results = [(0.0, 0)] * len(pairs)
    for i, (loglik, _), (_, response_ids) in zip(kept, scored, tokens, strict=True):
        results[i] = (-loglik, len(response_ids))
    if progress is not None and len(kept) < len(pairs):
        progress(len(pairs) - len(kept))
    return results


def _eos_ids(model: CausalLM, tokenizer: Tokenizer) -> list[int]:
    """Stop on the tokenizer's EOS and on any the model's generation config adds (e.g. im_end)."""
    ids: list[int] = []
    for value in (
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
        tokenizer.eos_token_id,
    ):
        if value is None:
            continue
        ids += [value] if isinstance(value, int) else list(value)
    return list(dict.fromkeys(ids))


def _left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, prompt in enumerate(prompts):
        ids[b, width - len(prompt) :] = torch.tensor(prompt)
        mask[b, width - len(prompt) :] = 1
    return ids, mask


def _until_eos(new_tokens: torch.Tensor, eos_ids: list[int]) -> int:
    """Generated tokens up to and including the first EOS: what this row needed computed."""
    tokens = new_tokens.tolist()
    return next((i + 1 for i, tok in enumerate(tokens) if tok in eos_ids), len(tokens))


def _decode_new(tokenizer: Tokenizer, new_tokens: torch.Tensor, eos_ids: list[int]) -> str:
    tokens = new_tokens.tolist()
    stops = [i for i, tok in enumerate(tokens) if tok in eos_ids]
    if stops:
        tokens = tokens[: stops[0]]
    return tokenizer.decode(tokens, skip_special_tokens=True).strip()


def generate(
    model: CausalLM,
    tokenizer: Tokenizer,
    prompts: list[str],
    max_new_tokens: int = 48,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> list[str]:
    """Greedy continuation of each prompt (new text only, stripped), stopping at EOS.

    A fresh generation config is used so model defaults (sampling, repetition penalty) never
    leak into what must be plain greedy decoding.
    """
    from transformers import GenerationConfig

    _check_batch_size(batch_size)
    encoder = _LmEvalTokenizer(tokenizer)
    room = max(_max_length(model, tokenizer) - max_new_tokens, 1)
    encoded = [encoder.encode_prompt(prompt)[-room:] for prompt in prompts]
    eos_ids, pad_id = _eos_ids(model, tokenizer), _pad_id(tokenizer)
    config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_id,
        eos_token_id=eos_ids or None,
    )
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    outputs = [""] * len(prompts)
    with _eval_mode(model):
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = _left_pad([encoded[i] for i in chunk], pad_id)
            out = model.generate(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                generation_config=config,
            )
            for i, row in zip(chunk, out[:, ids.shape[1] :], strict=True):
                outputs[i] = _decode_new(tokenizer, row, eos_ids)
                new = _until_eos(row, eos_ids)
                add_forward(model, len(encoded[i]) + new - 1, new)
            if progress is not None:
                progress(len(chunk))
    return outputs
