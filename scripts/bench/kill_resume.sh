#!/usr/bin/env bash
# Kill-and-resume stress test (not in CI; docs/reliability.md has its counts):
#   scripts/bench/kill_resume.sh N [SEED]
# Trains the quick start on 6 phantoms for 2 epochs once without interruption, noting when
# each stage ends (cases prepared, epoch 1 checkpointed, epoch 2 validated, exit). Then N
# times: a run of the same config is killed with SIGKILL at a moment drawn with SEED (by
# turns while preparing the cache from scratch, in the first step, mid-epoch, around
# validation, while writing a checkpoint, in the last epoch; wall-clock moments, with
# failpoints for the instants a clock cannot hit), resumed with `lits train --resume` from
# another working directory (absolute and relative run paths by turns; resumed again if
# the resume itself is killed by a second drawn moment), and every file of the finished run
# but timing.jsonl and env.json compared byte for byte with the uninterrupted run's.
# Prints one line per trial and the counts; exits 1 when any resume failed or differed, and
# keeps the failing runs and their logs in the folder it names.
# LITS_BIN picks the binary (default: the release build, built here).
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:?usage: kill_resume.sh N [SEED]}
seed=${2:-1}
# shellcheck source=scripts/bench/lits_bin.sh
source scripts/bench/lits_bin.sh
# The trials run from other folders.
LITS_BIN=$(realpath "$LITS_BIN")
keep="$(mktemp -d -t lits-kill-resume.XXXX)"
cache="$WORK/cache"
export LITS_CACHE_DIR="$cache"
unset LITS_FAILPOINT MLFLOW_TRACKING_URI
"$PY" - "$WORK/config.json" <<'PY'
import json, sys
c = json.load(open("configs/quickstart.json"))
c["data"]["synth"]["cases"] = 6
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
cfg="$WORK/config.json"
now() { date +%s.%N; }

# The uninterrupted run, from a cold cache, with the moments its stages end.
t0=$(now)
"$LITS_BIN" train --config "$cfg" --epochs 2 --out "$WORK/whole" >"$WORK/whole.log" 2>&1 &
pid=$!
t_prep="" t_ep1=""
while kill -0 "$pid" 2>/dev/null; do
  [ -z "$t_prep" ] && [ -f "$WORK/whole/plans.json" ] && t_prep=$(now)
  [ -z "$t_ep1" ] && [ -s "$WORK/whole/metrics.jsonl" ] && t_ep1=$(now)
  sleep 0.02
done
wait "$pid" || { cat "$WORK/whole.log"; echo "kill_resume: the uninterrupted run failed" >&2; exit 1; }
t_end=$(now)
read -r prep ep1 total < <("$PY" -c "import sys; a=[float(x) for x in sys.argv[1:]]; print(*[round(x - a[0], 3) for x in a[1:]])" "$t0" "$t_prep" "$t_ep1" "$t_end")
echo "uninterrupted: prepared at ${prep}s, epoch 1 at ${ep1}s, done at ${total}s ($LITS_BIN)"

# The trials' moments, drawn with the seed: "kind delay failpoint relative resume_delay".
"$PY" - "$n" "$seed" "$prep" "$ep1" "$total" >"$WORK/plan.txt" <<'PY'
import random, sys
n, seed = int(sys.argv[1]), int(sys.argv[2])
prep, ep1, total = map(float, sys.argv[3:])
rng = random.Random(seed)
kinds = ["prepare", "first-step", "mid-epoch", "validation", "checkpoint", "last-epoch"]
for i in range(n):
    kind = kinds[i % len(kinds)]
    fail, delay = "-", "-"
    if kind == "prepare":
        delay = rng.uniform(0.05, prep) if rng.random() < 0.75 else "-"
        if delay == "-":
            fail = "prepared"
    elif kind == "first-step":
        fail = "step:1:1"
    elif kind == "mid-epoch":
        delay = rng.uniform(prep, ep1) if rng.random() < 0.5 else "-"
        if delay == "-":
            fail = f"step:{rng.choice([1, 2])}:{rng.randint(2, 39)}"
    elif kind == "validation":
        # Epoch 2 ends with validation; its records and checkpoint follow it.
        delay = rng.uniform(ep1 + 0.6 * (total - ep1), total) if rng.random() < 0.5 else "-"
        if delay == "-":
            fail = "after-validation:2"
    elif kind == "checkpoint":
        fail = f"checkpoint-write:{rng.choice([1, 2])}" if rng.random() < 0.5 else f"epoch-end:{rng.choice([1, 2])}"
    else:
        delay = rng.uniform(ep1, total)
    # A quarter of the resumes are themselves killed, a moment into their own run.
    again = rng.uniform(0.2, total) if rng.random() < 0.25 else "-"
    rel = rng.random() < 0.5
    fmt = lambda x: x if x == "-" else f"{x:.3f}"
    print(kind, fmt(delay), fail, int(rel), fmt(again))
PY

# Runs `lits ARGS...` in the background from folder DIR; kills it after DELAY seconds ("-":
# never) and prints how it ended: "exit:CODE" or "killed".
run_killed() {
  local dir=$1 delay=$2 fail=$3
  shift 3
  (
    cd "$dir"
    if [ "$fail" != "-" ]; then export LITS_FAILPOINT="$fail"; fi
    exec "$LITS_BIN" "$@" 1>&2
  ) &
  local p=$!
  if [ "$delay" != "-" ]; then
    ( sleep "$delay"; kill -9 "$p" 2>/dev/null ) &
    local k=$!
  fi
  local rc=0
  wait "$p" || rc=$?
  if [ "$delay" != "-" ]; then kill "$k" 2>/dev/null || true; wait "$k" 2>/dev/null || true; fi
  if [ "$rc" -eq 137 ]; then echo killed; else echo "exit:$rc"; fi
}

compare() {
  local a=$1 b=$2 f bad=""
  while IFS= read -r f; do
    case "$f" in timing.jsonl | env.json) continue ;; esac
    cmp -s "$a/$f" "$b/$f" || bad="$bad $f"
  done < <(cd "$a" && find . -type f -printf '%P\n' | sort)
  local extra
  extra=$(comm -13 <(cd "$a" && find . -type f -printf '%P\n' | sort) <(cd "$b" && find . -type f -printf '%P\n' | sort) | tr '\n' ' ')
  [ -n "$extra" ] && bad="$bad extra:[$extra]"
  echo "$bad"
}

declare -A killed_by=() total_by=()
failures=0 not_killed=0 before_run=0 i=0
mkdir -p "$WORK/elsewhere"
while read -r kind delay fail rel again; do
  i=$((i + 1))
  t="$WORK/trial-$i"
  mkdir -p "$t"
  # Preparation from scratch: the phantoms and the prepared cases are made again.
  if [ "$kind" = prepare ]; then rm -rf "$cache"; fi
  how=$(run_killed "$t" "$delay" "$fail" train --config "$cfg" --epochs 2 --out "$t/run" 2>"$t/train.log")
  total_by[$kind]=$((${total_by[$kind]:-0} + 1))
  if [ "$how" = killed ]; then killed_by[$kind]=$((${killed_by[$kind]:-0} + 1)); else not_killed=$((not_killed + 1)); fi
  result=ok
  if [ "$how" != killed ] && [ "$how" != exit:0 ]; then
    result="train failed ($how)"
  elif [ "$how" = killed ] && [ ! -e "$t/run" ]; then
    # Killed before the run folder appeared: nothing to resume, the run is started again.
    before_run=$((before_run + 1))
    again_how=$(run_killed "$t" - - train --config "$cfg" --epochs 2 --out "$t/run" 2>"$t/train2.log")
    [ "$again_how" = exit:0 ] || result="train failed ($again_how)"
  elif [ "$how" = killed ]; then
    if [ "$rel" = 1 ]; then arg="../trial-$i/run"; else arg="$t/run"; fi
    first=$(run_killed "$WORK/elsewhere" "$again" - train --resume "$arg" 2>"$t/resume.log")
    if [ "$first" = killed ]; then
      first=$(run_killed / - - train --resume "$t/run" 2>"$t/resume2.log")
    fi
    [ "$first" = exit:0 ] || result="resume failed ($first)"
  fi
  if [ "$result" = ok ]; then
    diff=$(compare "$WORK/whole" "$t/run")
    [ -z "$diff" ] || result="differs:$diff"
  fi
  printf '%3d %-11s delay %-7s failpoint %-20s %-8s %s\n' "$i" "$kind" "$delay" "$fail" "$how" "$result"
  if [ "$result" != ok ]; then
    failures=$((failures + 1))
    cp -r "$t" "$keep/"
  else
    rm -rf "$t"
  fi
done <"$WORK/plan.txt"

echo "trials: $n (seed $seed), killed: $((n - not_killed)) ($before_run before the run folder appeared), finished before the kill: $not_killed, failed or differed: $failures"
for k in prepare first-step mid-epoch validation checkpoint last-epoch; do
  echo "  $k: ${total_by[$k]:-0} trials, ${killed_by[$k]:-0} killed"
done
if [ "$failures" -gt 0 ]; then
  echo "kill_resume: $failures trial(s) failed; their runs and logs are in $keep" >&2
  exit 1
fi
rmdir "$keep"
