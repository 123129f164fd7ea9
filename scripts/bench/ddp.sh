#!/usr/bin/env bash
# Data-parallel throughput on this machine: the quick start's training (built-in config,
# phantoms) as 1 process with 2 libtorch threads against 2 processes (`--nproc 2`, Gloo)
# with 1 thread each, on the same global batch. Each run trains EPOCHS epochs (default 4);
# patches per second are the training part of each epoch from the run's timing.jsonl
# (validation excluded), averaged over the epochs after the first.
#
# Usage: scripts/bench/ddp.sh   (LITS_BIN=path/to/lits skips the release build). Needs
# .venv (scripts/setup.sh). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lits_bin.sh
epochs=${EPOCHS:-4}
export LITS_CACHE_DIR="$WORK/cache"

row() {  # label, options...
  local label=$1
  shift
  rm -rf "$WORK/run"
  "$LITS_BIN" train --epochs "$epochs" --out "$WORK/run" "$@" >/dev/null 2>"$WORK/log" || { cat "$WORK/log"; exit 1; }
  "$PY" - "$WORK/run/timing.jsonl" "$label" <<'PY'
import json, sys
t = [json.loads(l) for l in open(sys.argv[1])][1:]
print(f"| {sys.argv[2]} | {sum(r['patches_per_second'] for r in t) / len(t):.1f} |")
PY
}

"$LITS_BIN" train --epochs 1 --out "$WORK/warm" >/dev/null 2>&1   # phantoms and cache, untimed
echo "| quick start, $epochs epochs | training patches/s |"
echo "|---|---|"
row "1 process x 2 threads" --threads 2
row "2 processes x 1 thread (Gloo)" --nproc 2 --threads 1
row "1 process x 2 threads (again)" --threads 2
echo
echo "load average: $(cut -d' ' -f1 /proc/loadavg)"
