"""Study-level work: how often a study loads a model and runs the base model, per stage.

Runs a tiny study (a random 2-layer Llama and a locally trained tokenizer, as tests/conftest.py
builds them) with N techniques for two values of N, and counts, by patching in this process
only:

- model loads (`whichlora.models.loading.load_model`, also as imported by the training loop);
- forward passes of the decoder (`LlamaModel.forward`), split into the plain base model and a
  model carrying an adapter, and by stage (train, evaluate, analyze, report).

Goal: the base is evaluated and embedded once per study, whatever N: its forward count and
load count do not grow with N.

    python benchmarks/bench_study_work.py --techniques lora,dora --more-techniques loha,rslora
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, command_line, machine, write_json  # noqa: E402

STAGE_FUNCTIONS = {
    "train": ("whichlora.study.runner", "train_stage"),
    "evaluate": ("whichlora.study.runner", "evaluate_stage"),
    "analyze": ("whichlora.analyze.stage", "analyze_stage"),
    "report": ("whichlora.report.build", "build_report"),
}


def tiny_model(folder: Path) -> Path:
    """The conftest tiny Llama: 2 layers, 64 wide, BPE tokenizer trained on the samples."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import build_tokenizer

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(1234)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def study_dict(model_dir: Path, techniques: list[str]) -> dict[str, Any]:
    """tests/test_runner.py's tiny study, with the given techniques."""
    return {
        "name": "tiny",
        "model": str(model_dir),
        "techniques": techniques,
        "budget": {"rank": 4},
        "data": {"languages": ["de", "sw"], "items_per_language": 24},
        "training": {"steps": 3, "batch_size": 4, "max_length": 64, "seeds": [0], "threads": 1},
        "evaluation": {
            "languages": ["en", "de", "sw", "yo"],
            "items_per_language": 6,
            "generation_items": 2,
            "max_new_tokens": 6,
        },
        "analysis": {"sentences_per_language": 8, "bootstrap_resamples": 200},
    }


class Counts:
    def __init__(self) -> None:
        self.stage = "setup"
        self.run_id: str | None = None  # the run whose model an evaluate/embed unit scores
        self.loads: Counter[str] = Counter()
        self.forwards: Counter[tuple[str, str]] = Counter()  # (stage, base|adapted)
        self.base_units: Counter[tuple[str, str]] = Counter()  # (stage, unit) touching the base

    def as_dict(self) -> dict[str, Any]:
        stages = sorted({s for s, _ in self.forwards} | set(self.loads))
        return {
            "loads": dict(self.loads),
            "loads_total": sum(self.loads.values()),
            "forwards": {
                stage: {
                    "base": self.forwards[(stage, "base")],
                    "adapted": self.forwards[(stage, "adapted")],
                }
                for stage in stages
            },
            "base_forwards_total": sum(
                v for (_, kind), v in self.forwards.items() if kind == "base"
            ),
            "base_units": {f"{s}:{u}": n for (s, u), n in self.base_units.items()},
        }


@contextlib.contextmanager
def counting() -> Iterator[Counts]:
    """Patch loads, decoder forwards and stage entry points; undo on exit."""
    import importlib

    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers.models.llama import modeling_llama

    import whichlora.models.loading as loading
    import whichlora.study.runner as runner
    import whichlora.train.loop as loop

    counts = Counts()
    patches: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, new: Any) -> None:
        patches.append((owner, name, getattr(owner, name)))
        setattr(owner, name, new)

    real_load = loading.load_model

    def load_model(*args: Any, **kwargs: Any) -> Any:
        counts.loads[counts.stage] += 1
        return real_load(*args, **kwargs)

    patch(loading, "load_model", load_model)
    patch(loop, "load_model", load_model)

    real_forward = modeling_llama.LlamaModel.forward
    adapted_cache: dict[int, bool] = {}

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Evaluation and embedding merge adapters into the weights (a plain model), so there
        # the unit being scored says whose forward it is; in training the adapter layers do.
        if counts.run_id is not None:
            kind = "base" if counts.run_id == runner.BASE else "adapted"
        else:
            key = id(self)
            if key not in adapted_cache or counts.stage == "train":
                adapted_cache[key] = any(isinstance(m, BaseTunerLayer) for m in self.modules())
            kind = "adapted" if adapted_cache[key] else "base"
        counts.forwards[(counts.stage, kind)] += 1
        return real_forward(self, *args, **kwargs)

    patch(modeling_llama.LlamaModel, "forward", forward)

    for stage, (module_name, func_name) in STAGE_FUNCTIONS.items():
        module = importlib.import_module(module_name)
        real = getattr(module, func_name)

        def staged(*args: Any, _real: Any = real, _stage: str = stage, **kwargs: Any) -> Any:
            before, counts.stage = counts.stage, _stage
            try:
                return _real(*args, **kwargs)
            finally:
                counts.stage = before

        patch(module, func_name, staged)

    real_unit = runner._evaluate_unit

    def evaluate_unit(ctx: Any, run_id: str, split: str) -> Any:
        if run_id == runner.BASE:
            counts.base_units[(counts.stage, f"evaluate-{split}")] += 1
        counts.run_id = run_id
        try:
            return real_unit(ctx, run_id, split)
        finally:
            counts.run_id = None

    patch(runner, "_evaluate_unit", evaluate_unit)

    import whichlora.analyze.stage as analyze_stage

    real_reps = analyze_stage.cached_representations

    def cached_representations(ctx: Any, run_id: str, *args: Any, **kwargs: Any) -> Any:
        if run_id == runner.BASE:
            counts.base_units[(counts.stage, "embed")] += 1
        counts.run_id = run_id
        try:
            return real_reps(ctx, run_id, *args, **kwargs)
        finally:
            counts.run_id = None

    patch(analyze_stage, "cached_representations", cached_representations)
    try:
        yield counts
    finally:
        for owner, name, original in reversed(patches):
            setattr(owner, name, original)


def run_one(model_dir: Path, techniques: list[str], work: Path) -> dict[str, Any]:
    import yaml

    from whichlora.study.api import run_study

    folder = work / f"n{len(techniques)}"
    folder.mkdir(parents=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study_dict(model_dir, techniques)), encoding="utf-8")
    started = time.perf_counter()
    with counting() as counts:
        run_study(path, folder / "out")
    result = counts.as_dict()
    result["techniques"] = techniques
    result["wall_seconds"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--techniques", default="lora,dora")
    parser.add_argument("--more-techniques", default="loha,rslora")
    parser.add_argument("--out", type=Path, default=RESULTS / "study_work.json")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    small = args.techniques.split(",")
    large = small + args.more_techniques.split(",")
    with tempfile.TemporaryDirectory(prefix="wl-study-") as tmp:
        work = Path(tmp)
        model_dir = tiny_model(work / "tiny-llama")
        results = [run_one(model_dir, small, work), run_one(model_dir, large, work)]
    a, b = results
    base_same = a["base_forwards_total"] == b["base_forwards_total"]
    base_once = all(n == 1 for r in results for n in r["base_units"].values()) and all(
        set(r["base_units"]) == {"evaluate:evaluate-test", "analyze:embed"} for r in results
    )
    report = {
        "benchmark": "study_work",
        "command": command_line(
            "bench_study_work.py",
            f"--techniques {args.techniques}",
            f"--more-techniques {args.more_techniques}",
        ),
        "machine": machine(),
        "studies": results,
        "base_forwards_constant_in_n": base_same,
        "base_evaluated_and_embedded_once": base_once,
        "loads_per_extra_technique": (b["loads_total"] - a["loads_total"])
        / (len(large) - len(small)),
        "met": base_same and base_once,
    }
    write_json(args.out, report)
    for r in results:
        print(
            f"N={len(r['techniques'])}: loads {r['loads']} base forwards "
            f"{r['base_forwards_total']} base units {r['base_units']}"
        )
    print(f"met: {report['met']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
