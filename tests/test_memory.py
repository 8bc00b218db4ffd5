"""Each run's peak memory is its own: a run after a hungry one does not inherit its peak."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from whichlora.study.units import steady_speed
from whichlora.train import memory
from whichlora.train.memory import PeakMemory

BIG = 200 * 1024 * 1024  # bytes: far above the noise of a Python process's RSS


def _unit(nbytes: int) -> dict[str, float | None]:
    """A unit of work that touches `nbytes` of memory, frees it, and reports its peaks."""
    meter = PeakMemory()
    buffer = np.ones(nbytes // 8)  # written, so resident
    del buffer
    return meter.read()


def test_a_second_run_does_not_report_the_first_runs_peak() -> None:
    if not PeakMemory().resettable:
        pytest.skip("no /proc/self/clear_refs here: the ru_maxrss fallback is tested below")
    first = _unit(BIG)
    second = _unit(8 * 1024 * 1024)
    assert first["peak_rss_mb"] is not None and second["peak_rss_mb"] is not None
    assert first["peak_rss_mb"] - second["peak_rss_mb"] > 0.8 * BIG / 2**20
    assert first["peak_gpu_mb"] is None  # a CPU run has no accelerator peak


def test_without_clear_refs_a_run_below_an_earlier_peak_is_unknown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ru_maxrss never goes down: a run that did not raise it has an unknown peak (None),
    not the earlier run's; a run that raised it has exactly that peak."""
    monkeypatch.setattr(memory, "CLEAR_REFS", tmp_path / "missing" / "clear_refs")
    _unit(BIG)  # the process's peak is now at least BIG
    small = _unit(8 * 1024 * 1024)
    assert small["peak_rss_mb"] is None
    raised = PeakMemory()
    buffer = np.ones(2 * BIG // 8)  # above the earlier peak of about BIG over the baseline
    del buffer
    peak = raised.peak_rss_mb()
    assert peak is not None and peak > raised.rss_before


def test_time_per_step_leaves_out_the_warm_up_step() -> None:
    steps = [
        {"seconds": 5.0, "tokens": 100},  # first step: one-off costs
        {"seconds": 1.0, "tokens": 100},
        {"seconds": 3.0, "tokens": 300},
    ]
    assert steady_speed(steps) == (2.0, 100.0)
    assert steady_speed(steps[:1]) == (5.0, 20.0)
