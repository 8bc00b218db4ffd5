"""Quickstart wall time: `whichlora run examples/quickstart.yaml --out <tmp>`, end to end.

Records wall time, the CPU time of the whole process tree (steadier than wall time when other
processes share the cores), the load average sampled every 15 s during the run, and the
seconds of every unit (training runs, evaluations, analysis) from the study's store, summed by
stage, so the slowest stage is known. Goal: at most 6 minutes on 2 cores (issue 16; the README
states the cold figure, GGUF conversion included, from a fresh clone).

Every stage is also measured against its FLOP floor in the same run: before the study starts,
the machine's float32 and bfloat16 matmul throughput is measured (2048^3 GEMMs, best of 5, on the
study's thread count); the store holds the tokens and matmul FLOPs each unit needed
(models/flops.py), so efficiency = floor time / measured time per stage (training, evaluation,
embedding) and for the whole study (report/efficiency.py). Goals: training >= 60% of the
float32 floor, evaluation and embedding >= 50% of the floor of their precision, study >= 45%.

With --profile, the run is sampled with py-spy (a flame graph and raw folded stacks are written
next to the results) -- for finding what to speed up, not for timing.

    python benchmarks/bench_quickstart.py
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, RESULTS, command_line, loadavg, machine, write_json  # noqa: E402

GOAL_SECONDS = 360.0
GOAL_EFFICIENCY = {"training": 0.60, "evaluation": 0.50, "embedding": 0.50, "study": 0.45}
STUDY = "examples/quickstart.yaml"


def unit_seconds(study_dir: Path) -> dict[str, Any]:
    with sqlite3.connect(study_dir / "results.sqlite") as db:
        rows = db.execute("SELECT run_id, stage, status, seconds FROM units").fetchall()
    by_stage: dict[str, float] = {}
    for _, stage, _, seconds in rows:
        by_stage[stage] = by_stage.get(stage, 0.0) + (seconds or 0.0)
    units = [{"run_id": r, "stage": s, "status": st, "seconds": sec} for r, s, st, sec in rows]
    return {"by_stage": by_stage, "units": units}


def throughput(threads: int) -> dict[str, Any]:
    """The machine's GEMM speed now, on the study's thread count (a fresh process's torch)."""
    import torch

    from whichlora.models.flops import machine_throughput

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return machine_throughput("cpu")
    finally:
        torch.set_num_threads(before)


def efficiencies(study_dir: Path, measured: dict[str, Any]) -> list[dict[str, Any]]:
    from whichlora.config.study import load_study
    from whichlora.report.efficiency import efficiency_rows, study_precisions
    from whichlora.store import Store

    study = load_study(study_dir / "resolved.yaml")
    with Store(study_dir / "results.sqlite", readonly=True) as store:
        rows = efficiency_rows(store, study_precisions(study), measured)
    for row in rows:
        goal = GOAL_EFFICIENCY.get(row["stage"])
        # issue 16: training against the float32 floor (whatever it runs in), the other
        # stages against the floor of their own precision
        row["goal_floor"] = "fp32" if row["stage"] == "training" else "own"
        row["goal_value"] = row["fp32_efficiency" if row["goal_floor"] == "fp32" else "efficiency"]
        row["goal_min"] = goal
        row["met"] = goal is None or row["goal_value"] >= goal
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=STUDY)
    parser.add_argument("--profile", action="store_true", help="sample the run with py-spy")
    parser.add_argument("--out", type=Path, default=RESULTS / "quickstart.json")
    args = parser.parse_args(argv)

    whichlora = str(Path(sys.executable).with_name("whichlora"))
    loads: list[dict[str, Any]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            loads.append({"t": round(time.perf_counter() - started, 1), "loadavg": loadavg()})
            stop.wait(15)

    with tempfile.TemporaryDirectory(prefix="wl-quick-") as tmp:
        out = Path(tmp) / "study"
        cmd = [whichlora, "run", args.study, "--out", str(out), "--quiet"]
        if args.profile:
            spy = str(Path(sys.executable).with_name("py-spy"))
            svg = args.out.with_suffix(".svg")
            cmd = [spy, "record", "--rate", "20", "--subprocesses", "-o", str(svg), "--", *cmd]
        from whichlora.config.study import load_study

        measured = throughput(load_study(REPO / args.study).training.threads or 2)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        stop.set()
        sampler.join()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        units = unit_seconds(out)
        floors = efficiencies(out, measured)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    mean_load = sum(s["loadavg"][0] for s in loads) / max(len(loads), 1)
    report = {
        "benchmark": "quickstart",
        "command": command_line("bench_quickstart.py") + (" --profile" if args.profile else ""),
        "study_command": f".venv/bin/whichlora run {args.study} --out <tmp>",
        "profiled": args.profile,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "cpu_per_wall": cpu / wall,
        "mean_load_1min": mean_load,
        "load_samples": loads,
        "stages": units["by_stage"],
        "units": units["units"],
        "matmul": measured,
        "efficiency": floors,
        "goal": {"wall_seconds_max": GOAL_SECONDS, "efficiency_min": GOAL_EFFICIENCY},
        "met": wall <= GOAL_SECONDS,
        "efficiency_met": all(row["met"] for row in floors),
        "machine": machine(),
    }
    write_json(args.out, report)
    print(
        f"quickstart: {wall:.0f} s wall, {cpu:.0f} s CPU, mean load {mean_load:.1f}; "
        f"stages {units['by_stage']}; wrote {args.out}"
    )
    print(
        f"matmul: {measured['fp32_gflops']:.0f} GFLOP/s fp32, "
        f"{measured['bf16_gflops']:.0f} GFLOP/s bf16 ({measured['threads']} threads)"
    )
    for row in floors:
        print(
            f"  {row['stage']:<10} {row['precision'] or '-':<4} {row['seconds']:8.1f} s, "
            f"floor {row['floor_seconds']:7.1f} s: {row['efficiency']:.0%} of the floor, "
            f"{row['fp32_efficiency']:.0%} of the fp32 floor (goal >= {row['goal_min']:.0%} of "
            f"{'the fp32' if row['goal_floor'] == 'fp32' else 'its own'} floor)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
