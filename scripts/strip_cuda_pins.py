"""Drop the CUDA runtime pins from a lock compiled by `uv pip compile` (run by `make lock`).

PyPI's torch wheel for linux x86_64 is the CUDA build: it depends on nvidia-*, cuda-* and triton,
so a lock compiled against PyPI pins them. The lock is used as pip constraints, and a constraint
never installs a package by itself, but keeping those pins would still be wrong twice over: a CPU
torch (what `make install` installs) needs none of them, and a CUDA torch from PyTorch's own index
pins its own nvidia-* versions exactly, which would clash with PyPI's. So they are dropped, with
every pin that only they needed, and the lock says so in its header.

Usage: python scripts/strip_cuda_pins.py constraints.txt  (rewrites the file in place)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

CUDA_ONLY = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")
NOTE = """\
#
# nvidia-*, cuda-* and triton (the CUDA runtime that PyPI's linux torch wheel pulls in) are removed
# by scripts/strip_cuda_pins.py: `make install` installs the CPU torch, which needs none of them,
# and a CUDA torch from PyTorch's index brings its own exact nvidia-* pins. torch itself stays
# pinned (torch==2.13.0 accepts 2.13.0+cpu and 2.13.0+cu1xx alike).
"""


def _blocks(lines: list[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(header comment lines, [(normalised name, the pin line and its `# via` lines)])."""
    header: list[str] = []
    blocks: list[tuple[str, list[str]]] = []
    for line in lines:
        if line and not line[0].isspace() and not line.startswith("#"):
            name = re.split(r"[=<>!~;\[ ]", line, maxsplit=1)[0]
            blocks.append((re.sub(r"[-_.]+", "-", name).lower(), [line]))
        elif blocks:
            blocks[-1][1].append(line)
        else:
            header.append(line)
    return header, blocks


def _parents(block: list[str]) -> set[str]:
    """The packages a pin is there for, from uv's `# via` annotation."""
    text = " ".join(line.strip().lstrip("#").strip() for line in block[1:])
    text = text.removeprefix("via").strip()
    return {re.sub(r"[-_.]+", "-", word).lower() for word in text.split() if word != "via"}


def strip(text: str) -> str:
    header, blocks = _blocks(text.splitlines())
    removed = {name for name, _ in blocks if CUDA_ONLY.match(name)}
    while True:  # then every pin that only removed pins needed
        orphans = {
            name
            for name, block in blocks
            if name not in removed and (parents := _parents(block)) and parents <= removed
        }
        if not orphans:
            break
        removed |= orphans
    kept = [line for name, block in blocks if name not in removed for line in block]
    if NOTE.strip() not in "\n".join(header):
        header = [*header, *NOTE.rstrip("\n").splitlines()]
    return "\n".join([*header, *kept]) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    path = Path(argv[1])
    path.write_text(strip(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
