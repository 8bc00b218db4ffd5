"""Long runs: whichlora's training against HF `Trainer` + PEFT, and against the FLOP floor.

Same model (builtin:smollm2-135m), data (the bundled instructions in four languages, encoded
once by whichlora's prompting: same tokens, response-only labels), adapter (the registry's own
config at rank 8, dropout 0.05), tokens per step (8 examples of up to 256 tokens; with
packing, 8 rows as wide as the longest example), optimizer settings (AdamW, lr 2e-4, linear
schedule with 10% warm-up, clipping at 1.0) and precision (bf16 autocast) on both sides. The
Trainer gets its best settings: `train_sampling_strategy="group_by_length"`, `bf16=True`,
padding to a multiple of 8, and transformers' default fused AdamW.

Each variant trains in its own fresh process (clean peak RSS, cold caches alike), the variants
alternating with the order rotated per repetition. A step's seconds are the wall time between
consecutive step ends (the loop's `on_step` callback for ours, the Trainer's `on_step_end`), so
both include fetching and collating the batch. After the warm-up steps (which absorb
compilation), reported per variant: useful tokens/s (non-padding, and labelled), the loss curve,
peak RSS, and the fraction of the FLOP floor: the run's matmul FLOPs (models/flops.training_flops:
4 per base weight per token, the head at labelled positions, 6 per adapter weight per token)
at the bf16 GEMM speed measured at the start of the same repetition.

Loss check (`--check-steps`): ours unpacked and the Trainer fed exactly our batches (a
sequential sampler over the examples in our order), dropout 0, in float32 (`--check-precision`):
their per-step losses must agree within `LOSS_TOLERANCE[precision]`. In float32 what is left is
summation order; in bf16 our attention runs in float32 and the Trainer's in bf16, and the two
trajectories drift apart by a few hundredths within 8 steps.

Lever ablations (`--variants`): `ours-eager` (compile off), `ours-packed` (packing on),
`ours-dense-dropout` (nn.Dropout's masks, one random number per activation),
`ours-autocast` (autocast casts the frozen weights at every forward), `ours-plain` (the loop as
before these levers: unpacked, eager, weights cast at every forward, for-loop AdamW).

    python benchmarks/bench_long_run.py                                # the full benchmark
    python benchmarks/bench_long_run.py --techniques lora --warm 1 --timed 2 --check-steps 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MODEL,
    RESULTS,
    bench_records,
    command_line,
    loadavg,
    machine,
    median,
    peak_rss_mb,
    run_child,
    write_json,
)

LANGUAGES = ("de", "es", "zh", "sw")
TECHNIQUES = ("lora", "dora", "vera", "adalora", "pissa")
RANK, DROPOUT, LR, WARMUP_RATIO, MAX_GRAD_NORM = 8, 0.05, 2e-4, 0.1, 1.0
GOAL_RATIO, GOAL_FLOOR = 1.6, 0.60
LOSS_TOLERANCE = {"fp32": 1e-3, "bf16": 0.1}  # |ours - Trainer| per step, identical batches
SHAPE_TOKENS = 640  # about the non-padding tokens of a step (8 examples of ~80)
VARIANTS = (
    "ours",
    "trainer",
    "ours-eager",
    "ours-packed",
    "ours-dense-dropout",
    "ours-autocast",
    "ours-plain",
)


class StepClock:
    """Wall time between consecutive step ends, measured alike on both sides."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._last = time.perf_counter()

    def start(self) -> None:
        self._last = time.perf_counter()

    def tick(self) -> None:
        now = time.perf_counter()
        self.seconds.append(now - self._last)
        self._last = now


# --------------------------------------------------------------------------- one variant


def encoded_examples(tokenizer: Any, max_length: int) -> list[Any]:
    from whichlora.train.prompting import encode_records

    return encode_records(tokenizer, bench_records(list(LANGUAGES)), max_length)


def ours_request(args: argparse.Namespace, variant: str, check: bool) -> Any:
    from whichlora.train.request import TrainRequest

    packing = (args.packing or variant == "ours-packed") and variant != "ours-plain" and not check
    compiled = args.compile if variant not in ("ours-eager", "ours-plain") else "false"
    return TrainRequest(
        model=MODEL,
        technique=args.technique,
        seed=args.seed,
        steps=args.steps,
        batch_size=args.batch,
        learning_rate=LR,
        warmup_ratio=WARMUP_RATIO,
        max_grad_norm=MAX_GRAD_NORM,
        max_length=args.max_length,
        rank=RANK,
        dropout=0.0 if check else DROPOUT,
        threads=args.threads,
        precision=args.check_precision if check else args.precision,
        checkpoint_every=None,
        packing=packing,
        sparse_dropout=args.sparse_dropout and variant not in ("ours-dense-dropout", "ours-plain"),
        compile={"true": True, "false": False}.get(compiled, compiled),
    )


def _without_levers(variant: str) -> None:
    """Switch off the levers that have no request field, for the ablations."""
    import contextlib

    import torch

    from whichlora.train import loop

    def plain_adamw(model: Any, lr: float, weight_decay: float) -> Any:
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=False)

    if variant in ("ours-autocast", "ours-plain"):  # autocast casts every weight every forward
        loop.half_frozen_linears = lambda model, precision: contextlib.nullcontext(0)  # type: ignore[assignment]
    if variant == "ours-plain":
        loop._default_optimizer = plain_adamw  # type: ignore[attr-defined]


def run_ours(args: argparse.Namespace, variant: str, check: bool) -> dict[str, Any]:
    from whichlora.models.loading import load_model
    from whichlora.train.loop import train_adapter

    _without_levers(variant)
    loaded = load_model(MODEL)
    request = ours_request(args, variant, check)
    records = bench_records(list(LANGUAGES))
    clock = StepClock()
    with tempfile.TemporaryDirectory(prefix="wl-long-") as tmp:
        clock.start()
        log = train_adapter(
            request, records, Path(tmp) / "run", loaded=loaded, on_step=lambda *_: clock.tick()
        )
    steps = log["steps"]
    return {
        "step_seconds": clock.seconds,
        "tokens": [s["tokens"] for s in steps],
        "labelled": [s["labelled"] for s in steps],
        "losses": [s["objective"] for s in steps],  # what the Trainer logs (AdaLoRA: + orth reg)
        "cross_entropy": [s["loss"] for s in steps],
        "trainable_params": log["budget"]["trainable_params_measured"],
        "compiled": log["summary"].get("compiled"),
        "packing": request.packing,
    }


class _Recorder:
    """The Trainer's collator: pads to a multiple of 8 and counts each batch's tokens."""

    def __init__(self, tokenizer: Any) -> None:
        from transformers import DataCollatorForSeq2Seq

        self.collate = DataCollatorForSeq2Seq(
            tokenizer, padding=True, pad_to_multiple_of=8, label_pad_token_id=-100
        )
        self.tokens: list[int] = []
        self.labelled: list[int] = []

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collate(features)
        self.tokens.append(int(batch["attention_mask"].sum()))
        self.labelled.append(int((batch["labels"][:, 1:] != -100).sum()))
        return batch


def run_trainer(args: argparse.Namespace, check: bool) -> dict[str, Any]:
    """HF Trainer + PEFT at its best settings, on the same encoded examples."""
    import torch
    from peft import get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from whichlora.models.loading import load_model
    from whichlora.techniques import REGISTRY
    from whichlora.techniques.budget import settings_for_request
    from whichlora.train.batching import grouped_batches

    loaded = load_model(MODEL)
    model, tokenizer = loaded.model, loaded.tokenizer
    examples = encoded_examples(tokenizer, args.max_length)
    technique = REGISTRY[args.technique]
    request = ours_request(args, "ours", check)
    settings, _ = settings_for_request(model.config, technique, request)
    torch.manual_seed(args.seed)
    model = get_peft_model(model, technique.build_config(settings))
    model.config.use_cache = False
    if check:  # exactly ours batches, in ours order
        stream = grouped_batches(examples, args.batch, args.seed)
        examples = [e for _ in range(args.steps) for e in next(stream)]
    dataset = [
        {"input_ids": e.input_ids, "attention_mask": [1] * e.length, "labels": e.labels}
        for e in examples
    ]
    clock = StepClock()
    losses: list[float] = []

    class Timing(TrainerCallback):
        def on_train_begin(self, *a: Any, **k: Any) -> None:
            clock.start()

        def on_optimizer_step(self, a: Any, state: Any, control: Any, **k: Any) -> None:
            if technique.after_optimizer_step is not None:  # AdaLoRA: update_and_allocate
                technique.after_optimizer_step(model, state.global_step + 1)

        def on_step_end(self, *a: Any, **k: Any) -> None:
            clock.tick()

        def on_log(self, a: Any, state: Any, control: Any, logs: Any = None, **k: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    collator = _Recorder(tokenizer)
    with tempfile.TemporaryDirectory(prefix="wl-trainer-") as tmp:
        training_args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=args.batch,
            max_steps=args.steps,
            learning_rate=LR,
            lr_scheduler_type="linear",
            warmup_steps=round(WARMUP_RATIO * args.steps),
            weight_decay=0.0,
            max_grad_norm=MAX_GRAD_NORM,
            bf16=(args.check_precision if check else args.precision) == "bf16",
            use_cpu=True,
            train_sampling_strategy="sequential" if check else "group_by_length",
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=args.seed,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=dataset,  # type: ignore[arg-type]
            data_collator=collator,
            callbacks=[Timing()],
        )
        trainer.train()
    return {
        "step_seconds": clock.seconds,
        "tokens": collator.tokens[: args.steps],
        "labelled": collator.labelled[: args.steps],
        "losses": losses[: args.steps],
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "optimizer": training_args.optim,
    }


def child(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoConfig

    from whichlora.models.flops import config_matmul_params
    from whichlora.models.loading import resolve_model_path

    torch.set_num_threads(args.threads)
    load_before = loadavg()
    started = time.perf_counter()
    if args.variant == "trainer":
        result = run_trainer(args, args.check)
    else:
        result = run_ours(args, args.variant, args.check)
    wall = time.perf_counter() - started
    body, head = config_matmul_params(AutoConfig.from_pretrained(resolve_model_path(MODEL)))
    warm = slice(args.warm, None)
    seconds = sum(result["step_seconds"][warm])
    tokens, labelled = sum(result["tokens"][warm]), sum(result["labelled"][warm])
    result.update(
        variant=args.variant,
        technique=args.technique,
        check=args.check,
        body_params=body,
        head_params=head,
        timed_seconds=seconds,
        timed_tokens=tokens,
        timed_labelled=labelled,
        tokens_per_s=tokens / seconds if seconds else 0.0,
        labelled_per_s=labelled / seconds if seconds else 0.0,
        warm_seconds=sum(result["step_seconds"][: args.warm]),
        process_seconds=wall,
        peak_rss_mb=peak_rss_mb(),
        loadavg_before=load_before,
        loadavg_after=loadavg(),
    )
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")
    return 0


# --------------------------------------------------------------------------- orchestration


def child_args(args: argparse.Namespace, variant: str, technique: str, check: bool) -> list[str]:
    steps = args.check_steps if check else args.warm + args.timed
    return [
        __file__,
        "--variant",
        variant,
        "--technique",
        technique,
        "--steps",
        str(steps),
        "--warm",
        str(0 if check else args.warm),
        "--batch",
        str(args.batch),
        "--max-length",
        str(args.max_length),
        "--threads",
        str(args.threads),
        "--precision",
        args.precision,
        "--check-precision",
        args.check_precision,
        "--packing",
        "true" if args.packing else "false",
        "--sparse-dropout",
        "true" if args.sparse_dropout else "false",
        "--compile",
        args.compile,
        "--seed",
        str(args.seed),
        *(["--check"] if check else []),
    ]


def shape_gflops(tokens: int, repeats: int = 5) -> float:
    """bf16 GEMM GFLOP/s at the model's own shapes: each decoder linear's forward (tokens x in
    @ in x out) and input gradient (tokens x out @ out x in), best of `repeats`, weighted by
    FLOPs. The floor that this model's matmuls can reach, unlike a 2048^3 GEMM."""
    import torch
    from transformers import AutoConfig

    from whichlora.models.loading import resolve_model_path

    config = AutoConfig.from_pretrained(resolve_model_path(MODEL))
    hidden, inner = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (hidden // config.num_attention_heads)
    shapes = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden)]
    shapes += [(hidden, inner), (hidden, inner), (inner, hidden)]
    flops = seconds = 0.0
    for fan_in, fan_out in shapes:
        weight = torch.randn(fan_out, fan_in, dtype=torch.bfloat16)
        for left, right in (
            (torch.randn(tokens, fan_in, dtype=torch.bfloat16), weight.t()),
            (torch.randn(tokens, fan_out, dtype=torch.bfloat16), weight),
        ):
            left @ right
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                left @ right
                best = min(best, time.perf_counter() - start)
            flops += 2.0 * tokens * fan_in * fan_out
            seconds += best
    return flops / seconds / 1e9


def floor_fraction(run: dict[str, Any], gflops: float) -> float:
    """The run's matmul FLOPs at `gflops` over its measured seconds."""
    from whichlora.models.flops import training_flops

    flops = training_flops(
        run["timed_tokens"],
        run["body_params"],
        run["head_params"],
        run["trainable_params"],
        run["timed_labelled"],
    )
    return flops / (gflops * 1e9) / run["timed_seconds"] if run["timed_seconds"] else 0.0


def loss_check(ours: dict[str, Any], peer: dict[str, Any], precision: str) -> dict[str, Any]:
    pairs = list(zip(ours["losses"], peer["losses"], strict=False))
    worst = max((abs(a - b) for a, b in pairs), default=float("nan"))
    return {
        "steps": len(pairs),
        "precision": precision,
        "ours": ours["losses"],
        "trainer": peer["losses"],
        "max_abs_difference": worst,
        "tolerance": LOSS_TOLERANCE[precision],
        "within": bool(pairs) and worst <= LOSS_TOLERANCE[precision],
    }


def summarize(technique: str, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant, rs in runs.items():
        out[variant] = {
            "tokens_per_s": median([r["tokens_per_s"] for r in rs]),
            "labelled_per_s": median([r["labelled_per_s"] for r in rs]),
            "bf16_floor_fraction": median([r["bf16_floor_fraction"] for r in rs]),
            "fp32_floor_fraction": median([r["fp32_floor_fraction"] for r in rs]),
            "shape_floor_fraction": median([r.get("shape_floor_fraction", 0.0) for r in rs]),
            "peak_rss_mb": median([r["peak_rss_mb"] for r in rs]),
            "warm_seconds": median([r["warm_seconds"] for r in rs]),
            "seconds_per_step": median(
                [r["timed_seconds"] / max(1, len(r["step_seconds"]) - r["warm"]) for r in rs]
            ),
        }
    ours, peer = runs.get("ours"), runs.get("trainer")
    if ours and peer:
        paired = [o["tokens_per_s"] / p["tokens_per_s"] for o, p in zip(ours, peer, strict=False)]
        ratio = out["ours"]["tokens_per_s"] / out["trainer"]["tokens_per_s"]
        out["ratio"] = ratio
        out["ratio_paired"] = median(paired)
        out["labelled_ratio"] = out["ours"]["labelled_per_s"] / out["trainer"]["labelled_per_s"]
        out["ratio_met"] = ratio >= GOAL_RATIO
    if ours:
        out["floor_met"] = out["ours"]["bf16_floor_fraction"] >= GOAL_FLOOR
    for lever in VARIANTS[2:]:
        if ours and runs.get(lever):
            out[f"speedup_over_{lever}"] = out["ours"]["tokens_per_s"] / out[lever]["tokens_per_s"]
    return out


def parent(args: argparse.Namespace) -> int:
    import torch

    from whichlora.models.flops import machine_throughput

    torch.set_num_threads(args.threads)
    techniques = args.techniques.split(",")
    variants = args.variants.split(",")
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        t: {v: [] for v in variants} for t in techniques
    }
    checks: dict[str, dict[str, Any]] = {}
    gemms = []
    started = time.perf_counter()
    for technique in techniques if args.check_steps else ():
        pair = [run_child(child_args(args, v, technique, True)) for v in ("ours", "trainer")]
        checks[technique] = loss_check(*pair, args.check_precision)
        c = checks[technique]
        print(
            f"[check] {technique:8s} max |loss diff| {c['max_abs_difference']:.4f} over "
            f"{c['steps']} steps (within {c['tolerance']}: {c['within']})",
            flush=True,
        )
    for rep in range(args.reps):
        gemm = machine_throughput("cpu")
        gemm["bf16_shape_gflops"] = shape_gflops(SHAPE_TOKENS)
        gemm["shape_tokens"] = SHAPE_TOKENS
        gemm["loadavg"] = loadavg()
        gemms.append(gemm)
        for index, technique in enumerate(techniques):
            shift = (rep + index) % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                run = run_child(child_args(args, variant, technique, False))
                run.update(
                    rep=rep,
                    warm=args.warm,
                    gemm=gemm,
                    bf16_floor_fraction=floor_fraction(run, gemm["bf16_gflops"]),
                    fp32_floor_fraction=floor_fraction(run, gemm["fp32_gflops"]),
                    shape_floor_fraction=floor_fraction(run, gemm["bf16_shape_gflops"]),
                )
                runs[technique][variant].append(run)
                print(
                    f"[rep {rep}] {technique:8s} {variant:13s} {run['tokens_per_s']:7.1f} tok/s "
                    f"({run['labelled_per_s']:6.1f} labelled) "
                    f"{run['bf16_floor_fraction']:6.1%} of bf16 floor "
                    f"({run['shape_floor_fraction']:.0%} at its shapes), warm-up "
                    f"{run['warm_seconds']:.0f} s, rss {run['peak_rss_mb']:.0f} MB, "
                    f"load {run['loadavg_after'][0]}",
                    flush=True,
                )
    summary = {t: summarize(t, runs[t]) for t in techniques}
    for t, s in summary.items():
        if "ratio" in s:
            print(
                f"{t:8s} ours/trainer {s['ratio']:.2f}x (paired {s['ratio_paired']:.2f}x), "
                f"ours {s['ours']['bf16_floor_fraction']:.1%} of the bf16 floor"
            )
    flags = [f"--techniques {args.techniques}", f"--reps {args.reps}"]
    defaults = build_parser().parse_args([])
    for name in (
        "warm",
        "timed",
        "check_steps",
        "check_precision",
        "variants",
        "batch",
        "max_length",
        "threads",
        "precision",
        "packing",
        "sparse_dropout",
        "compile",
        "seed",
    ):
        value = getattr(args, name)
        if value != getattr(defaults, name):
            text = ("true" if value else "false") if isinstance(value, bool) else value
            flags.append(f"--{name.replace('_', '-')} {text}")
    if args.out.resolve() != defaults.out.resolve():
        flags.append(f"--out {args.out}")
    write_json(
        args.out,
        {
            "benchmark": "long_run",
            "command": command_line("bench_long_run.py", *flags),
            "settings": {
                "model": MODEL,
                "languages": list(LANGUAGES),
                "batch": args.batch,
                "max_length": args.max_length,
                "rank": RANK,
                "dropout": DROPOUT,
                "learning_rate": LR,
                "precision": args.precision,
                "threads": args.threads,
                "warm_steps": args.warm,
                "timed_steps": args.timed,
                "reps": args.reps,
                "packing": args.packing,
                "sparse_dropout": args.sparse_dropout,
                "compile": args.compile,
                "variants": variants,
            },
            "goal": {"ratio": GOAL_RATIO, "floor_fraction": GOAL_FLOOR},
            "gemm": gemms,
            "loss_check": checks,
            "summary": summary,
            "runs": runs,
            "machine": machine(),
            "wall_seconds": time.perf_counter() - started,
        },
    )
    print(f"wrote {args.out}")
    return 0


def _flag(value: str) -> bool:
    return value.lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--techniques", default=",".join(TECHNIQUES))
    parser.add_argument("--variants", default="ours,trainer", help=f"among {', '.join(VARIANTS)}")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--warm", type=int, default=3)
    parser.add_argument("--timed", type=int, default=40)
    parser.add_argument("--check-steps", type=int, default=8, help="0: no loss check")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    parser.add_argument("--check-precision", default="fp32", choices=("bf16", "fp32"))
    parser.add_argument("--packing", type=_flag, default=False)
    parser.add_argument("--sparse-dropout", type=_flag, default=True)
    parser.add_argument("--compile", default="true", choices=("true", "false", "auto"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "long_run.json")
    # one variant in a child process
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--technique", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return child(args) if args.variant else parent(args)


if __name__ == "__main__":
    sys.exit(main())
