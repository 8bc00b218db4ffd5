"""Each run's own peak memory: host RSS and accelerator memory, reset at the start of the run.

A study trains its runs one after another in one process (the local executor) or in reused Ray
workers, so the process-wide high-water marks (`ru_maxrss`, CUDA's peak counters) only grow: every
run after DoRA would report DoRA's peak. `PeakMemory` resets both marks when a run starts and reads
them when it ends, so each run reports the peak it reached itself:

- host: on Linux, writing "5" to /proc/self/clear_refs resets VmHWM (the peak RSS) to the current
  RSS, and /proc/self/status reports VmHWM afterwards (the kernel's `ru_maxrss` is the same
  counter, so it is reset too). Where that is unavailable (macOS, a locked
  /proc), `ru_maxrss` is exact only when the run raised it; otherwise the run stayed below an
  earlier peak and its own peak is unknown (None), never a number borrowed from another run.
- accelerator (CUDA): `torch.cuda.reset_peak_memory_stats` + `max_memory_allocated`, the peak of
  memory held by tensors (not the allocator's cache), the largest over the visible devices (the
  device that runs out first under `device_map`). None on a CPU run.

A fresh process per run would isolate leaks too, but costs a Python + torch start and a model load
per unit; resetting gives the same per-run peak in the process at hand. The baseline the process
held before the run (imports, a cached dataset) is part of the host peak, as it is of the memory
the run needs on that machine.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
RESET_PEAK_RSS = "5"  # proc(5): "reset the peak resident set size (VmHWM) to the current RSS"


def _vm_hwm_mb() -> float | None:
    try:
        for line in STATUS.read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _ru_maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # B vs kB


def _reset_vm_hwm() -> bool:
    try:
        CLEAR_REFS.write_text(RESET_PEAK_RSS, encoding="ascii")
    except OSError:
        return False
    return _vm_hwm_mb() is not None


def _cuda() -> Any:
    """torch.cuda when CUDA is in use in this process; None otherwise (never initialises it)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda


class PeakMemory:
    """Reset the peaks now (`PeakMemory()`); `read()` returns this run's peaks in MiB."""

    def __init__(self) -> None:
        self.resettable = _reset_vm_hwm()
        self.rss_before = _ru_maxrss_mb()
        cuda = _cuda()
        if cuda is not None:  # not yet initialised: its counters start at zero anyway
            for device in range(cuda.device_count()):
                cuda.reset_peak_memory_stats(device)

    def peak_rss_mb(self) -> float | None:
        if self.resettable:
            return _vm_hwm_mb()
        now = _ru_maxrss_mb()
        return now if now > self.rss_before else None

    @staticmethod
    def peak_gpu_mb() -> float | None:
        cuda = _cuda()
        if cuda is None:
            return None
        peak = max(cuda.max_memory_allocated(d) for d in range(cuda.device_count()))
        return peak / (1024.0 * 1024.0)

    def read(self) -> dict[str, float | None]:
        return {"peak_rss_mb": self.peak_rss_mb(), "peak_gpu_mb": self.peak_gpu_mb()}
