"""What the Ray executor checks before any work: GPUs asked for, a study folder every node sees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from whichlora.config.study import parse_study
from whichlora.errors import WhichloraError
from whichlora.study.ray_cluster import _probe, check_gpus


def _study(device: str = "auto", **executor: Any) -> Any:
    return parse_study(
        {
            "techniques": ["lora"],
            "model": {"id": "builtin:smollm2-135m", "device": device},
            "executor": {"kind": "ray", **executor},
        }
    )


def test_a_gpu_cluster_needs_gpus_per_run() -> None:
    with pytest.raises(WhichloraError, match="gpus_per_run is not set.*train on CPUs"):
        check_gpus(_study(), cluster_gpus=8)
    with pytest.raises(WhichloraError, match="gpus_per_run is 0.*model.device: cpu"):
        check_gpus(_study(gpus_per_run=0), cluster_gpus=8)
    assert check_gpus(_study(gpus_per_run=1), cluster_gpus=8) == 1.0
    assert check_gpus(_study("cpu", gpus_per_run=0), cluster_gpus=8) == 0.0  # on purpose


def test_a_cpu_cluster_runs_without_gpus_and_refuses_to_wait_for_them() -> None:
    assert check_gpus(_study(), cluster_gpus=0) == 0.0
    with pytest.raises(WhichloraError, match="has 0 GPU.*no run could ever be scheduled"):
        check_gpus(_study(gpus_per_run=1), cluster_gpus=0)


def test_the_folder_probe_names_what_a_node_cannot_see(tmp_path: Path) -> None:
    """The task each node runs: the token must read back and a reply must be writable."""
    folder = tmp_path / "probe"
    assert "cannot read" in _probe(str(folder), "t0k", "node1")  # not mounted there
    folder.mkdir()
    (folder / "token").write_text("other", encoding="utf-8")
    assert "another study's token" in _probe(str(folder), "t0k", "node1")
    (folder / "token").write_text("t0k", encoding="utf-8")
    assert _probe(str(folder), "t0k", "node1") == ""
    assert (folder / "reply-node1").read_text(encoding="utf-8") == "t0k"
