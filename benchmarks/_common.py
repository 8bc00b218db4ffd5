"""Shared helpers for the benchmarks: machine facts, load, child processes, JSON results.

Every benchmark measures whichlora and its peer side by side in the same run, alternating them,
and reports medians and ratios: the machine may be shared, so absolute numbers move, ratios
much less. Load averages are recorded before and after each measurement.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
MODEL = "builtin:smollm2-135m"
PYTHON = sys.executable


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": loadavg(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def run_child(args: list[str], timeout: float | None = None) -> dict[str, Any]:
    """Run `python <args> --result FILE` in a fresh process and return the JSON it wrote.

    A fresh process per measurement keeps peak RSS clean and caches cold alike for both sides.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="wl-bench-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [PYTHON, *args, "--result", str(result)]
        started = time.perf_counter()
        proc = subprocess.run(
            cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0 or not result.is_file():
            tail = (proc.stdout + proc.stderr)[-4000:]
            raise RuntimeError(f"child failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
        data = json.loads(result.read_text(encoding="utf-8"))
        data["process_wall_s"] = time.perf_counter() - started
        return data


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def matmul_peak_gflops(threads: int, repeats: int = 5) -> dict[str, Any]:
    """Measured fp32 matmul throughput: the best median over a few shapes (GFLOP/s).

    Shapes: the model's own projections at 1024 tokens, its vocabulary projection, and a large
    square product; the best is what the BLAS reaches on this machine at this moment.
    """
    import torch

    torch.set_num_threads(threads)
    shapes = [(1024, 576, 1536), (1024, 576, 49152), (2048, 2048, 2048)]
    per_shape = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(2):
            a @ b
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - started)
        per_shape[f"{m}x{k}x{n}"] = 2.0 * m * k * n / median(times) / 1e9
    return {"gflops": max(per_shape.values()), "per_shape": per_shape, "threads": threads}


def bench_records(languages: list[str] | None = None) -> list[Any]:
    """The bundled instruction records (all bundled languages unless given)."""
    from whichlora.data.languages import bundled_languages
    from whichlora.data.sources import load_instructions

    langs = languages or list(bundled_languages())
    loaded = load_instructions("builtin:instructions", langs)
    return loaded if isinstance(loaded, list) else list(loaded.records)


def command_line(script: str, *args: str) -> str:
    """The exact command that reproduces a result, from the repository root."""
    return " ".join([".venv/bin/python", f"benchmarks/{script}", *args])


def quickstart_parts(evalset: Any) -> dict[str, Any]:
    """The quickstart's evaluation set split into what is timed apart: knowledge, held-out NLL,
    generation."""
    from whichlora.evaluate.suite import EvalSet

    return {
        "knowledge": EvalSet(knowledge=evalset.knowledge),
        "heldout": EvalSet(heldout=evalset.heldout),
        "generation": EvalSet(generation=evalset.generation),
    }


def time_parts(
    model: Any, tokenizer: Any, parts: dict[str, Any], spec: Any, run_id: str
) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """(seconds, FLOPs, metrics) of scoring each part with `evaluate_model`, in order."""
    from whichlora.evaluate.suite import evaluate_model
    from whichlora.models.flops import counting

    seconds, flops, metrics = {}, {}, {}
    for name, part in parts.items():
        started = time.perf_counter()
        with counting() as work:
            result = evaluate_model(
                model,
                tokenizer,
                part,
                run_id,
                batch_size=spec.batch_size,
                max_new_tokens=spec.max_new_tokens,
            )
        seconds[name], flops[name] = time.perf_counter() - started, work.flops
        metrics.update({f"{m['language']}:{m['metric']}": m["value"] for m in result.metrics})
    return seconds, flops, metrics


def time_embedding(model: Any, tokenizer: Any, texts: Any, spec: Any) -> tuple[float, float]:
    """(seconds, FLOPs) of the analysis's layer-by-layer embedding of `texts`."""
    from whichlora.analyze.representations import layer_representations
    from whichlora.models.flops import counting

    started = time.perf_counter()
    with counting() as work:
        layer_representations(model, tokenizer, texts, batch_size=spec.batch_size)
    return time.perf_counter() - started, work.flops
