"""`whichlora`: plan, run and inspect studies comparing LoRA techniques.

User mistakes end with one clear message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from whichlora.errors import WhichloraError

EPILOG = """examples:
  whichlora run examples/quickstart.yaml          run (or resume) a study end to end
  whichlora plan examples/quickstart.yaml         show the runs and their estimated cost
  whichlora techniques --model builtin:smollm2-135m
  whichlora data show builtin:instructions
  whichlora report studies/quickstart --open
"""


def _study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help="study YAML file, or a study folder made by `whichlora run`")
    parser.add_argument("--out", help="study folder (default: ./studies/<study name>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whichlora",
        description="Which LoRA technique should I use to teach a model new languages, and what "
        "does it cost in what the model already knew?",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="train, evaluate, analyse and report every run (resumable)")
    _study_args(p)
    p.add_argument("--retry-failed", action="store_true", help="train failed runs again")
    p = sub.add_parser("plan", help="list the runs of a study with estimated cost")
    _study_args(p)
    p = sub.add_parser("train", help="train every run not trained yet")
    _study_args(p)
    p.add_argument("--retry-failed", action="store_true", help="train failed runs again")
    p = sub.add_parser("evaluate", help="evaluate the base model and every trained run")
    _study_args(p)
    p.add_argument("--run", help="only this run id (or 'base')")
    p = sub.add_parser("analyze", help="layer-wise representations and significance tests")
    _study_args(p)
    p = sub.add_parser("report", help="write report.html, report.md and CSV/JSON tables")
    _study_args(p)
    p.add_argument("--open", action="store_true", help="open the report in a browser")

    p = sub.add_parser("techniques", help="list techniques, with trainable counts on a model")
    p.add_argument(
        "--model", help="count trainable parameters on this model (e.g. builtin:smollm2-135m)"
    )
    p.add_argument("--rank", type=int, default=8, help="rank for the counts (default 8)")

    p = sub.add_parser("data", help="inspect data sources")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    show = data_sub.add_parser("show", help="items and token lengths per language")
    show.add_argument("source", help="builtin:instructions, builtin:heldout, a file, or hub:ID")
    show.add_argument("--languages", help="comma-separated language codes (default: all)")
    show.add_argument("--model", help="tokenizer for token lengths (default: none, characters)")

    p = sub.add_parser("verdict", help="judge any long score table: better/worse/equivalent")
    p.add_argument("scores", help="CSV or Parquet: technique, seed, language, example_id, "
                   "metric, value [, family]")  # fmt: skip
    p.add_argument("--baseline", required=True, help="technique every other one is compared to")
    p.add_argument("--source", help="source language (retention) when there is no family column")
    p.add_argument("--seen", default="", help="comma-separated languages seen in training")
    p.add_argument("--margin", action="append", default=[], metavar="METRIC=VALUE",
                   help="margin of practical equivalence in the metric's units (repeatable)")
    p.add_argument("--alpha", type=float, default=0.05, help="error rate per family (0.05)")
    p.add_argument("--lower-is-better", action="append", default=[], metavar="METRIC",
                   help="a metric whose lower values are better (repeatable)")
    p.add_argument("--higher-is-better", action="append", default=[], metavar="METRIC",
                   help="a metric whose higher values are better (repeatable)")
    p.add_argument("--json", help="write one record per comparison to this JSON file")
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def cmd_techniques(args: argparse.Namespace) -> None:
    from whichlora.techniques import REGISTRY, AdapterSettings

    counts: dict[str, int] = {}
    base = None
    if args.model:
        from transformers import AutoConfig

        from whichlora.models.loading import resolve_model_path
        from whichlora.techniques.budget import base_param_count, count_params, max_rank

        config = AutoConfig.from_pretrained(resolve_model_path(args.model))
        if args.rank < 1 or args.rank > max_rank(config, "all-linear"):
            raise WhichloraError(
                f"--rank {args.rank} is outside 1..{max_rank(config, 'all-linear')} for this "
                "model. Fix: choose a rank in that range."
            )
        base = base_param_count(config)
        for name, technique in REGISTRY.items():
            counts[name] = count_params(config, technique, AdapterSettings(rank=args.rank))
    width = max(len(n) for n in REGISTRY)
    if base:
        print(
            f"model {args.model}: {base:,} parameters; counts at rank {args.rank}, all linear "
            "layers\n"
        )
    for name, technique in REGISTRY.items():
        count = f"{counts[name]:>12,}  {100 * counts[name] / base:6.3f}%  " if base else ""
        print(f"{name:<{width}}  {count}{technique.description}")
        print(f"{'':<{width}}  {'':>{len(count)}}{technique.paper}")


def cmd_data_show(args: argparse.Namespace) -> None:
    from whichlora.data.show import describe_source, format_table

    languages = args.languages.split(",") if args.languages else None
    tokenizer = None
    if args.model:
        from whichlora.models.loading import load_tokenizer

        tokenizer = load_tokenizer(args.model)
    print(format_table(describe_source(args.source, languages, tokenizer)))


def cmd_plan(args: argparse.Namespace) -> None:
    from whichlora.study.context import open_study
    from whichlora.study.estimate import summarize_plan

    ctx = open_study(args.study, args.out, locked=False)
    try:
        frame, totals = summarize_plan(ctx)
    finally:
        ctx.close()
    print(f"study {ctx.study.name}: {len(frame)} runs, folder {ctx.study_dir}")
    print(
        f"base model {ctx.study.model.id}: {totals['base_params']:,} parameters; "
        f"{totals['train_examples']} training examples, {totals['mean_tokens']:.0f} tokens each"
    )
    shown = frame[
        [
            "run_id",
            "technique",
            "seed",
            "learning_rate",
            "rank",
            "train_seconds",
            "evaluate_seconds",
            "total_seconds",
        ]
    ]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(
        f"base evaluation ~{totals['base_evaluate_seconds']:.0f} s; estimated total "
        f"~{totals['total_seconds'] / 60:.1f} min on this machine (estimate, not a measurement)"
    )


def _stage(args: argparse.Namespace, stages: tuple[str, ...]) -> None:
    from whichlora.study.context import open_study
    from whichlora.study.runner import run_all

    # The report reads only the store: a finished study reports even if its data moved since.
    ctx = open_study(args.study, args.out, check=stages != ("report",))
    try:
        run_all(
            ctx,
            stages=stages,
            progress=not args.quiet,
            retry_failed=getattr(args, "retry_failed", False),
        )
        _print_outcome(ctx, stages)
    finally:
        ctx.close()


def _print_outcome(ctx: object, stages: tuple[str, ...]) -> None:
    from whichlora.study.context import StudyContext

    assert isinstance(ctx, StudyContext)
    failed = [
        (r.run_id, ctx.store.unit_error(r.run_id, "train"))
        for r in ctx.runs
        if ctx.store.unit_status(r.run_id, "train") == "failed"
    ]
    for run_id, error in failed:
        print(f"run {run_id} failed: {error}", file=sys.stderr)
    if "report" in stages:
        print(f"report: {ctx.study_dir / 'report' / 'report.html'}")
    print(f"study folder: {ctx.study_dir}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from whichlora.study.context import open_study
    from whichlora.study.runner import evaluate_stage

    ctx = open_study(args.study, args.out)
    try:
        evaluate_stage(ctx, only=args.run, progress=not args.quiet)
    finally:
        ctx.close()


def cmd_report(args: argparse.Namespace) -> None:
    _stage(args, ("report",))
    if args.open:
        import webbrowser

        from whichlora.study.context import open_study

        ctx = open_study(args.study, args.out, locked=False, create=False)
        ctx.close()
        webbrowser.open((ctx.study_dir / "report" / "report.html").as_uri())


def cmd_verdict(args: argparse.Namespace) -> None:
    from pathlib import Path

    from whichlora.analyze.verdict_table import run_verdict

    text = run_verdict(
        Path(args.scores),
        args.baseline,
        source=args.source,
        seen=[s.strip() for s in args.seen.split(",") if s.strip()],
        margins=args.margin,
        alpha=args.alpha,
        lower_is_better=args.lower_is_better,
        higher_is_better=args.higher_is_better,
        json_out=Path(args.json) if args.json else None,
    )
    print(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        if args.command == "techniques":
            cmd_techniques(args)
        elif args.command == "data":
            cmd_data_show(args)
        elif args.command == "plan":
            cmd_plan(args)
        elif args.command == "run":
            _stage(args, ("train", "evaluate", "analyze", "report"))
        elif args.command == "train":
            _stage(args, ("train",))
        elif args.command == "evaluate":
            cmd_evaluate(args)
        elif args.command == "analyze":
            _stage(args, ("analyze",))
        elif args.command == "report":
            cmd_report(args)
        elif args.command == "verdict":
            cmd_verdict(args)
    except WhichloraError as exc:
        print(f"whichlora: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("whichlora: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
