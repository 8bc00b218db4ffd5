"""scripts/gpu_check.sh: a clear message without CUDA, and one JSON line in its tiny CPU mode."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _module() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
def test_without_cuda_it_says_so_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WHICHLORA_GPU_CHECK_TINY", raising=False)
    assert _module().main() == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no CUDA GPU is visible" in captured.err and "WHICHLORA_GPU_CHECK_TINY=1" in captured.err


def test_architectures_are_the_real_ones() -> None:
    shapes = _module().ARCHITECTURES
    assert shapes["smollm2-135m"]["hidden_size"] == 576
    assert shapes["smollm2-135m"]["num_hidden_layers"] == 30
    assert shapes["llama-1b"]["vocab_size"] == 128256


@pytest.mark.slow
def test_tiny_mode_prints_one_json_line_per_case() -> None:
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "WHICHLORA_GPU_CHECK_TINY": "1",
        "WHICHLORA_GPU_CHECK_STEPS": "1",
    }
    done = subprocess.run(
        [str(ROOT / "scripts" / "gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    cases = {(r["model"], r["technique"], r["gradient_checkpointing"]) for r in report["results"]}
    assert len(cases) == len(report["results"]) == 8
    assert all(r["steps_per_s"] > 0 and r["tokens_per_s"] > 0 for r in report["results"])
