#!/usr/bin/env bash
# kill -9 a real study twice (by default once in training, once in evaluation), resume it, and
# compare its results with an uninterrupted run of the same study, table by table.
#
#   scripts/check_resume.sh STUDY.yaml REFERENCE_STUDY_FOLDER [FIRST_KILL_S] [SECOND_KILL_S]
#   scripts/check_resume.sh examples/quickstart.yaml studies/quickstart 130 330
#
# REFERENCE_STUDY_FOLDER is a finished, uninterrupted run of STUDY.yaml (e.g. from `make demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
study=$1 reference=$2 first=${3:-130} second=${4:-330}
out=$(mktemp -d /tmp/wl-resume.XXXXXX)/study
log=${out%/study}/run.log
start() { .venv/bin/whichlora run "$study" --out "$out" --quiet >>"$log" 2>&1 & echo $!; }
units() { .venv/bin/python -c "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT run_id, stage FROM units').fetchall())" "$out/results.sqlite"; }
pid=$(start); sleep "$first"; kill -9 "$pid"; wait "$pid" 2>/dev/null || true
echo "killed after ${first} s; finished units: $(units)"
pid=$(start); sleep "$second"; kill -9 "$pid"; wait "$pid" 2>/dev/null || true
echo "killed after ${second} s; finished units: $(units)"
.venv/bin/whichlora run "$study" --out "$out" --quiet >>"$log" 2>&1
.venv/bin/python - "$out" "$reference" <<'PY'
import sys
from whichlora.store import Store
with Store(f"{sys.argv[1]}/results.sqlite") as a, Store(f"{sys.argv[2]}/results.sqlite") as b:
    resumed, reference = a.dump(), b.dump()
print("rows per table:", {t: len(v) for t, v in resumed.items()})
differ = [t for t in sorted(set(resumed) | set(reference)) if resumed.get(t) != reference.get(t)]
print("identical to the uninterrupted run" if not differ else f"DIFFERENT tables: {differ}")
sys.exit(1 if differ else 0)
PY
leftovers=$(find "$out" -name '*.tmp*' | head -5)
[ -z "$leftovers" ] || { echo "left-over temporary files: $leftovers"; exit 1; }
echo "no temporary files left; resumed study in $out"
