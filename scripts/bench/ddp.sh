#!/usr/bin/env bash
# Data-parallel throughput on this machine: the quick start's training (built-in config,
# phantoms) as 1 process with 2 libtorch threads against 2 processes (`--nproc 2`, Gloo)
# with 1 thread each, on the same global batch: the quick start's 2 (1 patch per rank), and
# 4 (2 per rank), with 1 process x 1 thread beside them. Each run trains EPOCHS epochs (default 4);
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

row() {  # label, config, options...
  local label=$1 config=$2
  shift 2
  rm -rf "$WORK/run"
  "$LITS_BIN" train --config "$config" --epochs "$epochs" --out "$WORK/run" "$@" >/dev/null 2>"$WORK/log" || { cat "$WORK/log"; exit 1; }
  "$PY" - "$WORK/run/timing.jsonl" "$label" <<'PY'
import json, sys
t = [json.loads(l) for l in open(sys.argv[1])][1:]
print(f"| {sys.argv[2]} | {sum(r['patches_per_second'] for r in t) / len(t):.1f} |")
PY
}

"$LITS_BIN" train --epochs 1 --out "$WORK/warm" >/dev/null 2>&1   # phantoms and cache, untimed
"$PY" - "$WORK/b4.json" <<'PY'
import json, sys
c = json.load(open("configs/quickstart.json"))
c["patches"]["batch_size"] = 4
json.dump(c, open(sys.argv[1], "w"))
PY
echo "| quick start, $epochs epochs | global batch | training patches/s |"
echo "|---|---|---|"
for b in 2 4; do
  config=configs/quickstart.json
  [ "$b" = 2 ] || config="$WORK/b$b.json"
  row "1 process x 2 threads | $b" "$config" --threads 2
  row "2 processes x 1 thread (Gloo) | $b" "$config" --nproc 2 --threads 1
  row "1 process x 1 thread | $b" "$config" --threads 1
done
echo
echo "load average: $(cut -d' ' -f1 /proc/loadavg)"
