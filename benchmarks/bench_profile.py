"""Profile of the quickstart's slowest stage, training: where a step's time goes, before/after.

Runs one quickstart training run (its exact TrainRequest and training records, only fewer
steps) under torch.profiler, for two variants of the loop, alternating:

- after:  the current loop (LM head and loss only at labelled positions);
- before: the same loop with the LM head over every position (`head_on_label_positions`
  patched to False), i.e. the loop as it was.

Self CPU time of every operator is summed into categories -- the vocabulary projection
(matmuls with a 49152-wide side), the loss (log-softmax / NLL), other matmuls, attention,
dropout, the optimizer and the rest (element-wise ops, copies) -- and reported per step.

    python benchmarks/bench_profile.py --technique lora --steps 3 --reps 2
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, RESULTS, command_line, loadavg, machine, median, write_json  # noqa: E402

LOSS_OPS = ("log_softmax", "nll_loss", "cross_entropy")
ATTENTION_OPS = ("scaled_dot_product", "flash_attention")
DROPOUT_OPS = ("bernoulli", "dropout")
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")


def category(name: str, shapes: list[Any], vocab: int) -> str:
    if any(op in name for op in LOSS_OPS):
        return "loss (log-softmax, NLL)"
    if name in MATMUL_OPS:
        flat = [d for shape in shapes if isinstance(shape, list) for d in shape]
        return "vocabulary projection (LM head)" if vocab in flat else "other matmuls"
    if any(op in name for op in ATTENTION_OPS):
        return "attention (SDPA)"
    if any(op in name for op in DROPOUT_OPS):
        return "dropout"
    if "Optimizer" in name or "adamw" in name.lower():
        return "optimizer"
    return "element-wise, copies, rest"


def profile_run(base: Any, run: Any, records: list[Any], steps: int, warm: int) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    from whichlora.models.loading import LoadedModel
    from whichlora.train.loop import train_adapter

    loaded = LoadedModel(model=copy.deepcopy(base.model), tokenizer=base.tokenizer, path=base.path)
    request = dataclasses.replace(run.request, steps=steps)
    prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
    marks: list[float] = []

    def on_step(step: int, loss: float) -> None:
        marks.append(time.perf_counter())
        if step == warm:
            prof.start()
        elif step == steps:
            prof.stop()

    with tempfile.TemporaryDirectory(prefix="wl-prof-") as tmp:
        log = train_adapter(request, records, Path(tmp) / "run", loaded=loaded, on_step=on_step)
    timed = steps - warm
    vocab = base.model.config.vocab_size
    by_category: dict[str, float] = defaultdict(float)
    by_op: dict[str, float] = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        seconds = event.self_cpu_time_total / 1e6 / timed
        by_category[category(event.key, event.input_shapes, vocab)] += seconds
        by_op[event.key] += seconds
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:15]
    return {
        "step_seconds": [b - a for a, b in zip(marks[warm - 1 :], marks[warm:], strict=False)],
        "tokens": [s["tokens"] for s in log["steps"][warm:]],
        "self_cpu_seconds_per_step": dict(by_category),
        "top_ops_seconds_per_step": dict(top),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="examples/quickstart.yaml")
    parser.add_argument("--technique", default="lora")
    parser.add_argument("--steps", type=int, default=3, help="including one warm-up step")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "profile.json")
    args = parser.parse_args(argv)

    import torch

    from whichlora.config.study import load_study
    from whichlora.models.loading import load_model
    from whichlora.study.datasets import training_data
    from whichlora.study.plan import plan_study
    from whichlora.train import loop

    study = load_study(REPO / args.study)
    run = next(r for r in plan_study(study) if r.technique == args.technique)
    if run.request.threads:
        torch.set_num_threads(run.request.threads)
    records, _ = training_data(study)
    base = load_model(run.request.model, dtype=run.request.dtype)
    original = loop.head_on_label_positions
    variants = {"after": original, "before": lambda model: False}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    started = time.perf_counter()
    for rep in range(args.reps):
        names = list(variants) if rep % 2 == 0 else list(reversed(variants))
        for name in names:
            loop.head_on_label_positions = variants[name]
            try:
                data = profile_run(base, run, records, args.steps, warm=1)
            finally:
                loop.head_on_label_positions = original
            data["loadavg"] = loadavg()
            results[name].append(data)
            print(
                f"[rep {rep}] {name:6s} {median(data['step_seconds']):6.1f} s/step "
                f"load {data['loadavg'][0]}",
                flush=True,
            )
    summary = {}
    for name, runs in results.items():
        cats = sorted({c for r in runs for c in r["self_cpu_seconds_per_step"]})
        summary[name] = {
            "seconds_per_step": median([s for r in runs for s in r["step_seconds"]]),
            "tokens_per_step": median([t for r in runs for t in r["tokens"]]),
            "self_cpu_seconds_per_step": {
                c: median([r["self_cpu_seconds_per_step"].get(c, 0.0) for r in runs]) for c in cats
            },
        }
    report = {
        "benchmark": "profile",
        "command": command_line(
            "bench_profile.py",
            f"--technique {args.technique}",
            f"--steps {args.steps}",
            f"--reps {args.reps}",
        ),
        "study": args.study,
        "run": run.run_id,
        "request": dataclasses.asdict(dataclasses.replace(run.request, steps=args.steps)),
        "machine": machine(),
        "summary": summary,
        "speedup": summary["before"]["seconds_per_step"] / summary["after"]["seconds_per_step"],
        "runs": results,
        "wall_seconds": time.perf_counter() - started,
    }
    write_json(args.out, report)
    for name, s in summary.items():
        print(name, f"{s['seconds_per_step']:.1f} s/step", s["self_cpu_seconds_per_step"])
    print(f"speedup {report['speedup']:.2f}x; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
