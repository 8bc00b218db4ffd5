"""Multiple-choice scoring on the bundled model and knowledge items, via bench_scoring.py.

bench_scoring.py (whichlora's scorer vs lm-eval's HFLM, interleaved, identical-accuracy check)
is called as is; this script only prepares its inputs from the bundled data -- the converted
builtin:smollm2-135m folder and the bundled knowledge items as JSONL, round-robin over the
languages so that --limit keeps every language -- and wraps its JSON with the goal.

    python benchmarks/bench_mc.py --limit 130
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    BENCH_DIR,
    MODEL,
    PYTHON,
    REPO,
    RESULTS,
    command_line,
    loadavg,
    machine,
    write_json,
)

GOAL_RATIO = 2.0


def write_items(path: Path) -> int:
    """Every bundled knowledge item, interleaved by language (item 1 of each, item 2 of each...)."""
    from whichlora.data.knowledge import load_knowledge

    by_lang = load_knowledge()
    rows = []
    depth = max(len(items) for items in by_lang.values())
    for i in range(depth):
        for items in by_lang.values():
            if i < len(items):
                item = items[i]
                rows.append(
                    {
                        "question": item.question,
                        "choices": list(item.choices),
                        "answer": item.answer,
                    }
                )
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=130, help="items (0: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "mc_scoring.json")
    args = parser.parse_args(argv)

    from whichlora.models.loading import resolve_model_path

    model_dir = resolve_model_path(MODEL)
    with tempfile.TemporaryDirectory(prefix="wl-mc-") as tmp:
        items = Path(tmp) / "knowledge.jsonl"
        total = write_items(items)
        raw = Path(tmp) / "bench_scoring.json"
        cmd = [
            PYTHON,
            str(BENCH_DIR / "bench_scoring.py"),
            "--model",
            model_dir,
            "--items",
            str(items),
            "--threads",
            str(args.threads),
            "--repeats",
            str(args.repeats),
            "--batch-size",
            str(args.batch_size),
            "--out",
            str(raw),
        ]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        load_before = loadavg()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
        load_after = loadavg()
        if not raw.is_file():
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode or 1
        result = json.loads(raw.read_text(encoding="utf-8"))
    ours, theirs = result["whichlora"], result["lm_eval_hflm"]
    same = (ours["acc"], ours["acc_norm"]) == (theirs["acc"], theirs["acc_norm"])
    report = {
        "benchmark": "mc_scoring",
        "command": command_line("bench_mc.py", f"--limit {args.limit}"),
        "scoring_command": " ".join(["bench_scoring.py", *cmd[2:]]),
        "bench_scoring_exit": proc.returncode,
        "items_available": total,
        "ratio": result["ratio"],
        "cpu_ratio": result["cpu_ratio"],
        "identical_accuracies": same,
        "goal": {"ratio_min": GOAL_RATIO},
        "met": same and result["ratio"] >= GOAL_RATIO,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "machine": machine(),
        "bench_scoring": result,
    }
    write_json(args.out, report)
    print(
        f"items/s ours {ours['items_per_s']:.2f} vs lm-eval {theirs['items_per_s']:.2f}: "
        f"{result['ratio']:.2f}x (CPU {result['cpu_ratio']:.2f}x), same acc: {same}; "
        f"wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
