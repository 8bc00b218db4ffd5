"""Multiple-choice scoring speed: whichlora's shared-context scorer vs lm-eval's HFLM.

Both score the same items (context "Question: {question}\\nAnswer:", continuations " {choice}")
with the same model, batch size and CPU threads; the script reports items/s (median of
--repeats), the ratio, and both accuracies, and fails if acc or acc_norm differ.

    python benchmarks/bench_scoring.py --model PATH --items items.jsonl --threads 2

A random toy model folder and items for a smoke run (no download):

    python benchmarks/bench_scoring.py --make-toy /tmp/toy --toy-size smollm2
    python benchmarks/bench_scoring.py --model /tmp/toy --items /tmp/toy/items.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from whichlora.errors import WhichloraError
from whichlora.evaluate.scoring import MultipleChoiceItem, score_multiple_choice

if TYPE_CHECKING:
    from transformers import LlamaConfig, PreTrainedModel
    from transformers import PreTrainedTokenizerBase as Tokenizer

CONTEXT = "Question: {question}\nAnswer:"
ScoreResult = tuple[list[float], list[tuple[int, int]]]  # loglikelihoods, (pred, pred_norm)
Scorer = Callable[[int | None], ScoreResult]  # scores the first N items (all when None)
WARM_UP_ITEMS = 8


# --------------------------------------------------------------------------- items


def _gold_index(row: dict, line_no: int) -> int:
    answer, choices = row["answer"], row["choices"]
    if isinstance(answer, int) and 0 <= answer < len(choices):
        return answer
    if isinstance(answer, str) and answer in choices:
        return choices.index(answer)
    raise WhichloraError(
        f"Line {line_no}: answer {answer!r} is neither a choice index nor one of the choices; "
        "fix the items file."
    )


def load_items(path: Path, limit: int | None) -> list[MultipleChoiceItem]:
    """Read {"question", "choices", "answer"} lines into lm-eval-style items."""
    items = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        gold = _gold_index(row, line_no)
        items.append(
            MultipleChoiceItem(CONTEXT.format(question=row["question"]), row["choices"], gold)
        )
    if not items:
        raise WhichloraError(f"No items found in {path}; give a JSONL file with one item a line.")
    return items[:limit] if limit else items


# --------------------------------------------------------------------------- runners


def _lm_eval_metrics(items: list[MultipleChoiceItem], lls: list[float]) -> list[tuple[int, int]]:
    """(pred, pred_norm) per item, exactly as lm-eval's multiple_choice process_results."""
    preds, pos = [], 0
    for item in items:
        chunk = np.array(lls[pos : pos + len(item.choices)])
        pos += len(item.choices)
        lengths = np.array([float(len(choice)) for choice in item.choices])
        preds.append((int(np.argmax(chunk)), int(np.argmax(chunk / lengths))))
    return preds


def run_hflm(
    model: PreTrainedModel, tokenizer: Tokenizer, items: list[MultipleChoiceItem], batch_size: int
) -> Scorer:
    """Build the HFLM wrapper once; return a callable that scores all items."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    requests = [(it.context, it.target_delimiter + c) for it in items for c in it.choices]
    instances = [
        Instance(request_type="loglikelihood", doc={}, arguments=req, idx=i)
        for i, req in enumerate(requests)
    ]

    def score(limit: int | None = None) -> ScoreResult:
        chosen = items[:limit]
        n_requests = sum(len(it.choices) for it in chosen)
        results = lm.loglikelihood(instances[:n_requests], disable_tqdm=True)
        lls = [ll for ll, _ in results]
        return lls, _lm_eval_metrics(chosen, lls)

    return score


def run_ours(
    model: PreTrainedModel, tokenizer: Tokenizer, items: list[MultipleChoiceItem], batch_size: int
) -> Scorer:
    """Our scorer behind the same interface as run_hflm."""

    def score(limit: int | None = None) -> ScoreResult:
        scores = score_multiple_choice(model, tokenizer, items[:limit], batch_size=batch_size)
        lls = [ll for s in scores for ll in s.loglikelihoods]
        return lls, [(s.pred, s.pred_norm) for s in scores]

    return score


@dataclass
class _Timing:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # process CPU time: steadier on a busy box


def _time_interleaved(
    scorers: dict[str, Scorer], repeats: int
) -> dict[str, tuple[_Timing, ScoreResult]]:
    """Alternate the contenders each repeat so background load hits both alike."""
    for score in scorers.values():
        score(WARM_UP_ITEMS)  # first calls pay for allocator and kernel set-up
    timings = {name: _Timing() for name in scorers}
    results: dict[str, ScoreResult] = {}
    for _ in range(repeats):
        for name, score in scorers.items():
            wall, cpu = time.perf_counter(), time.process_time()
            results[name] = score(None)
            timings[name].wall.append(time.perf_counter() - wall)
            timings[name].cpu.append(time.process_time() - cpu)
    return {name: (timings[name], results[name]) for name in scorers}


def _accuracy(items: list[MultipleChoiceItem], preds: list[tuple[int, int]]) -> dict[str, float]:
    acc = [float(p == it.gold) for it, (p, _) in zip(items, preds, strict=True)]
    acc_norm = [float(pn == it.gold) for it, (_, pn) in zip(items, preds, strict=True)]
    return {"acc": statistics.fmean(acc), "acc_norm": statistics.fmean(acc_norm)}


def benchmark(args: argparse.Namespace) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    items = load_items(args.items, args.limit)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    report: dict = {
        "model": str(args.model),
        "items": len(items),
        "requests": sum(len(it.choices) for it in items),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
    }
    scorers = {
        "lm_eval_hflm": run_hflm(model, tokenizer, items, args.batch_size),
        "whichlora": run_ours(model, tokenizer, items, args.batch_size),
    }
    runs = {}
    for name, (timing, (lls, preds)) in _time_interleaved(scorers, args.repeats).items():
        runs[name] = (lls, preds)
        report[name] = {
            "seconds": timing.wall,
            "cpu_seconds": timing.cpu,
            "items_per_s": len(items) / statistics.median(timing.wall),
            "items_per_cpu_s": len(items) / statistics.median(timing.cpu),
            **_accuracy(items, preds),
        }
    ours, theirs = report["whichlora"], report["lm_eval_hflm"]
    report["ratio"] = ours["items_per_s"] / theirs["items_per_s"]
    report["cpu_ratio"] = ours["items_per_cpu_s"] / theirs["items_per_cpu_s"]
    (their_lls, their_preds), (our_lls, our_preds) = runs["lm_eval_hflm"], runs["whichlora"]
    report["max_abs_loglik_diff"] = float(np.max(np.abs(np.array(their_lls) - np.array(our_lls))))
    report["differing_predictions"] = sum(
        a != b for a, b in zip(their_preds, our_preds, strict=True)
    )
    return report


# --------------------------------------------------------------------------- toy model

_TOY_TEXT = (
    "river mountain teacher window garden bicycle kitchen library planet ocean winter summer "
    "yellow purple quickly slowly happy ancient modern market doctor engine forest desert city "
    "village bridge castle island music painting science history language number answer"
)
_TOY_WORDS = _TOY_TEXT.split()


def _toy_tokenizer(folder: Path) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [" ".join(rng.choices(_TOY_WORDS, k=12)) for _ in range(200)]
    corpus += ["Question: What is it?\nAnswer: It is."]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,  # small on purpose: words split into several tokens like rare words do
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=2048,
    )
    wrapped.save_pretrained(folder)
    return wrapped


def _toy_config(size: str, vocab_size: int) -> LlamaConfig:
    from transformers import LlamaConfig

    if size == "smollm2":  # SmolLM2-135M's shape, random weights
        shape = dict(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            vocab_size=49152,
        )
    else:
        shape = dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=vocab_size,
        )
    return LlamaConfig(
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        rope_theta=100000.0,
        # A wide init: near-uniform random models just pick the choice with the fewest tokens,
        # which would make the "identical accuracies" check say nothing.
        initializer_range=0.2,
        **shape,
    )


def _toy_items(n: int) -> list[dict]:
    rng = random.Random(1)
    rows = []
    for _ in range(n):
        question = "Which " + " ".join(rng.choices(_TOY_WORDS, k=rng.randint(6, 14))) + "?"
        choices = [" ".join(rng.choices(_TOY_WORDS, k=rng.randint(1, 4))) for _ in range(4)]
        rows.append({"question": question, "choices": choices, "answer": rng.randrange(4)})
    return rows


def make_toy(folder: Path, size: str, n_items: int) -> None:
    """Write a random Llama, its tokenizer and items: enough to exercise the benchmark."""
    from transformers import LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _toy_tokenizer(folder)
    torch.manual_seed(0)
    LlamaForCausalLM(_toy_config(size, len(tokenizer))).save_pretrained(folder)
    lines = [json.dumps(row) for row in _toy_items(n_items)]
    (folder / "items.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {size} toy model, tokenizer and {n_items} items to {folder}")


# --------------------------------------------------------------------------- CLI


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="local Hugging Face model folder")
    parser.add_argument("--items", type=Path, help='JSONL of {"question","choices","answer"}')
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="score only the first N items")
    parser.add_argument("--out", type=Path, default=Path("bench_scoring.json"))
    parser.add_argument("--make-toy", type=Path, metavar="DIR", help="write a toy model and exit")
    parser.add_argument("--toy-size", choices=("tiny", "smollm2"), default="smollm2")
    parser.add_argument("--toy-items", type=int, default=64)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.make_toy:
        make_toy(args.make_toy, args.toy_size, args.toy_items)
        return 0
    if not (args.model and args.items):
        print("error: --model and --items are required (or --make-toy DIR)", file=sys.stderr)
        return 2
    try:
        report = benchmark(args)
    except WhichloraError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2)
    print(text)
    args.out.write_text(text + "\n", encoding="utf-8")
    ours, theirs = report["whichlora"], report["lm_eval_hflm"]
    same = (ours["acc"], ours["acc_norm"]) == (theirs["acc"], theirs["acc_norm"])
    if not same:
        print(f"FAIL: accuracies differ: whichlora {ours} vs lm-eval {theirs}", file=sys.stderr)
        return 1
    ratios = f"ratio {report['ratio']:.2f}x (CPU time {report['cpu_ratio']:.2f}x)"
    print(f"{ratios}, identical acc/acc_norm; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
