"""Run every benchmark and write BENCHMARKS.md from their JSON results.

    python benchmarks/run_all.py                   # run all, then write BENCHMARKS.md
    python benchmarks/run_all.py --only mc,study   # run some, report from all results on disk
    python benchmarks/run_all.py --report-only     # rewrite BENCHMARKS.md from results/*.json

Each benchmark writes benchmarks/results/<name>.json; the report reads whatever is there, so a
long benchmark can be rerun alone and the report rebuilt.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, REPO, loadavg  # noqa: E402
from report import write_report  # noqa: E402

# name -> script and arguments, in the order they run (cheap first, the long quickstart last).
BENCHMARKS: dict[str, list[str]] = {
    "study": ["bench_study_work.py"],
    "mc": ["bench_mc.py", "--limit", "130", "--repeats", "3"],
    "train_step": ["bench_train_step.py", "--reps", "2", "--warm", "2", "--timed", "3"],
    "throughput": ["bench_throughput.py", "--reps", "3"],
    "profile": ["bench_profile.py", "--technique", "lora", "--steps", "6", "--reps", "3"],
    "threads": ["bench_threads.py", "--reps", "3"],
    "techniques": ["bench_techniques.py", "--repeats", "3"],
    "run_scoring": ["bench_run_scoring.py", "--reps", "3", "--conversion"],
    "train_precision": ["bench_train_precision.py", "--reps", "2"],
    "long_run": ["bench_long_run.py", "--reps", "2"],
    "long_run_levers": [
        "bench_long_run.py",
        "--techniques",
        "lora",
        "--variants",
        "ours,ours-eager,ours-dense-dropout,ours-autocast,ours-plain",
        "--reps",
        "2",
        "--timed",
        "20",
        "--check-steps",
        "0",
        "--out",
        "benchmarks/results/long_run_levers.json",
    ],
    "quickstart": ["bench_quickstart.py"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help=f"comma list among {', '.join(BENCHMARKS)}")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    names = [] if args.report_only else (args.only.split(",") if args.only else list(BENCHMARKS))
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose among {list(BENCHMARKS)}")
    failed = []
    for name in names:
        script, *rest = BENCHMARKS[name]
        cmd = [PYTHON, str(Path(__file__).resolve().parent / script), *rest]
        print(f"== {name}: {' '.join(cmd[1:])}  (load {loadavg()})", flush=True)
        started = time.perf_counter()
        code = subprocess.run(cmd, cwd=REPO, check=False).returncode
        print(f"== {name}: exit {code} after {time.perf_counter() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    write_report(args.out)
    print(f"wrote {args.out}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
