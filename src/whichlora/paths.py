"""Where whichlora keeps caches, and how it writes files so a crash never leaves half of one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import platformdirs


def cache_dir() -> Path:
    """User cache root; WHICHLORA_CACHE overrides it (CI, tests, shared clusters)."""
    root = os.environ.get("WHICHLORA_CACHE") or platformdirs.user_cache_dir("whichlora")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and rename, so readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a scratch folder that becomes `final` only if the block finishes.

    A folder is the unit for model caches and adapters: a reader either finds the whole thing or
    nothing, and a crash leaves only a `.tmp-` sibling that the next attempt removes.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    try:
        yield scratch
        scratch.chmod(0o755)  # mkdtemp makes it private; caches and adapters are shared
        if final.exists():
            shutil.rmtree(final)
        os.replace(scratch, final)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)


def remove_stale_scratch(parent: Path) -> None:
    """Drop scratch folders a killed process left behind."""
    if parent.is_dir():
        for child in parent.glob(".tmp-*"):
            shutil.rmtree(child, ignore_errors=True)


def remove_stale_temp(root: Path) -> list[Path]:
    """Drop the temp files and scratch folders a killed process left anywhere under `root`.

    Only call it while holding the study's lock: then no other process is writing there, and every
    `.tmp-*` folder (atomic_directory) or `.*.tmp` file (write_text_atomic and friends) is debris.
    Only those hidden names are touched, so a user's own files are safe even in a shared folder.
    """
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for path in sorted(root.rglob(".*"), key=lambda p: len(p.parts)):
        if any(parent in removed for parent in path.parents):
            continue
        name = path.name
        if name.startswith(".tmp-") and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif name.endswith(".tmp") or name.startswith(".tmp-"):
            if path.is_dir() and not path.is_symlink():
                continue  # not a shape whichlora writes: leave it
            path.unlink(missing_ok=True)
        else:
            continue
        removed.append(path)
    return removed
