"""Connecting to a Ray cluster and checking, before any work, what the Ray executor assumes.

Two assumptions would otherwise fail late and quietly:
- GPUs: a Ray task gets only the GPUs it asks for (Ray hides the others through
  CUDA_VISIBLE_DEVICES), so on a cluster with GPUs a study without `gpus_per_run` would train
  every run on CPUs, hours slower, without a word. It is refused; `gpus_per_run: 0` is accepted
  only together with `model.device: cpu` (CPUs on purpose). Asking for more GPUs per run than the
  cluster has would leave the tasks pending forever: refused too.
- One file system: workers write adapters and representation caches into the study folder and
  read each other's adapters, so every node must see the study folder at the same path (NFS,
  Lustre, a cloud file system). Each alive node runs one probe task that reads a token file the
  driver wrote and writes one back; a node that cannot is named in the error.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Any

from whichlora.config.study import Study
from whichlora.errors import WhichloraError

PROBE_PREFIX = ".fs-probe-"
PROBE_TIMEOUT_S = 120.0


def connect(study: Study) -> Any:
    """The `ray` module, connected (to `executor.address`, or a local Ray when none)."""
    try:
        import ray
    except ImportError:
        raise WhichloraError(
            "executor.kind is 'ray' but Ray is not installed. Fix: pip install 'whichlora[ray]'"
            " (or `pip install ray`), or use executor: {kind: local}."
        ) from None
    if not ray.is_initialized():
        ray.init(
            address=study.executor.address,
            include_dashboard=False,
            log_to_driver=False,
            ignore_reinit_error=True,
        )
    return ray


def check_gpus(study: Study, cluster_gpus: float) -> float:
    """The GPUs each task asks for, or the reason the study may not run on this cluster."""
    wanted = study.executor.gpus_per_run
    device = study.model.device
    if cluster_gpus > 0 and wanted is None:
        raise WhichloraError(
            f"The Ray cluster has {cluster_gpus:g} GPU(s), but executor.gpus_per_run is not set: "
            "Ray would give each run no GPU and every run would train on CPUs. Fix: set "
            "executor.gpus_per_run (1 = one GPU per run), or gpus_per_run: 0 together with "
            "model.device: cpu to train on CPUs on purpose."
        )
    if cluster_gpus > 0 and wanted == 0 and device != "cpu":
        raise WhichloraError(
            f"executor.gpus_per_run is 0 on a Ray cluster with {cluster_gpus:g} GPU(s), so runs "
            f"would train on CPUs although model.device is '{device}'. Fix: set "
            "executor.gpus_per_run (1 = one GPU per run), or model.device: cpu to train on CPUs "
            "on purpose."
        )
    if wanted and wanted > cluster_gpus:
        raise WhichloraError(
            f"executor.gpus_per_run is {wanted:g}, but the Ray cluster has "
            f"{cluster_gpus:g} GPU(s): no run could ever be scheduled. Fix: lower "
            "executor.gpus_per_run, or connect to a cluster with GPUs (executor.address)."
        )
    return float(wanted or 0)


def _probe(folder: str, token: str, node: str) -> str:
    """Runs on one node: '' when the token file reads back and a reply can be written."""
    path = Path(folder)
    try:
        seen = (path / "token").read_text(encoding="utf-8")
    except OSError as exc:
        return f"cannot read {path / 'token'} ({exc.strerror or exc})"
    if seen != token:
        return f"{path / 'token'} holds another study's token (a different folder at that path)"
    try:
        (path / f"reply-{node}").write_text(token, encoding="utf-8")
    except OSError as exc:
        return f"cannot write into {path} ({exc.strerror or exc})"
    return ""


def check_shared_folder(ray: Any, study_dir: Path) -> None:
    """Every alive node reads and writes the study folder at the driver's path, or an error
    names the nodes that cannot."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    for debris in study_dir.glob(f"{PROBE_PREFIX}*"):  # a killed driver's (the folder is locked)
        shutil.rmtree(debris, ignore_errors=True)
    token = secrets.token_hex(16)
    folder = study_dir / f"{PROBE_PREFIX}{token[:12]}"
    folder.mkdir(parents=True)
    try:
        (folder / "token").write_text(token, encoding="utf-8")
        probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = {
            probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(folder), token, n["NodeID"]): n
            for n in nodes
        }
        problems = []
        for ref, node in refs.items():
            where = f"node {node.get('NodeManagerAddress', '?')} ({node['NodeID'][:8]})"
            try:
                problem = ray.get(ref, timeout=PROBE_TIMEOUT_S)
            except ray.exceptions.GetTimeoutError:
                problem = f"no answer within {PROBE_TIMEOUT_S:g} s"
            except ray.exceptions.RayError as exc:
                problem = f"the probe task failed ({type(exc).__name__})"
            if not problem and not (folder / f"reply-{node['NodeID']}").is_file():
                problem = "its reply file is not visible here (a local folder at the same path)"
            if problem:
                problems.append(f"{where}: {problem}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if problems:
        raise WhichloraError(
            f"The study folder {study_dir} is not shared with every Ray node: "
            f"{'; '.join(problems)}. Ray workers write adapters and caches into the study folder "
            "and read each other's, so every node must see it at the same path. Fix: put the "
            "study folder on a file system every node mounts (NFS, Lustre, a cloud file system) "
            "and pass it as --out, or use executor: {kind: local}."
        )
