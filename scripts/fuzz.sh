#!/usr/bin/env bash
# Fuzzes every reader of user input (fuzz/: NIfTI, .npy cache arrays, training configs,
# safetensors weights, checkpoints) with libFuzzer through cargo-fuzz, one target after the
# other for SECONDS each, starting from the committed seeds (fuzz/seeds/) and the corpus
# earlier runs grew (fuzz/corpus/, not committed).
#
#   scripts/fuzz.sh SECONDS [TARGET...]
#
# Prints executions and coverage per target (the logs stay in fuzz/logs/) and fails when a
# target finds anything: a panic, a sanitizer report, a timeout or running out of memory;
# the input that did it is in fuzz/artifacts/TARGET/. Needs the nightly toolchain and
# cargo-fuzz (cargo install cargo-fuzz --version 0.13.1 --locked).
set -euo pipefail

usage() {
  echo "usage: scripts/fuzz.sh SECONDS [TARGET...]" >&2
  exit 2
}
[[ $# -ge 1 && $1 =~ ^[1-9][0-9]*$ ]] || usage
seconds=$1
shift

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "error: cargo-fuzz on the nightly toolchain is needed:" >&2
  echo "  rustup toolchain install nightly && cargo install cargo-fuzz --version 0.13.1 --locked" >&2
  exit 1
fi

if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

# One build for every target; the runs below use its binaries, so a source change made while
# they run (another build in the same tree) neither rebuilds nor changes what is fuzzed.
cargo +nightly fuzz build
bin=fuzz/target/x86_64-unknown-linux-gnu/release

# Each target writes its inputs to files; keep them out of the system's temporary folder.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p fuzz/logs
failed=()
printf '%-12s %12s %8s %8s %8s %s\n' target executions exec/s cov ft result
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="fuzz/logs/$t.log"
  result=ok
  # A unit that takes 30 s is a finding (the inputs are at most a few KiB).
  if ! TMPDIR=$scratch "$bin/$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -artifact_prefix="fuzz/artifacts/$t/" \
    -max_total_time="$seconds" -timeout=30 -print_final_stats=1 >"$log" 2>&1; then
    result="FINDING (see $log and fuzz/artifacts/$t/)"
    failed+=("$t")
  fi
  # libFuzzer's last status line: "#N DONE cov: C ft: F corp: ..."
  status=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  cov=$(grep -oE 'cov: [0-9]+' <<<"$status" | grep -oE '[0-9]+' || echo "?")
  ft=$(grep -oE 'ft: [0-9]+' <<<"$status" | grep -oE '[0-9]+' || echo "?")
  printf '%-12s %12s %8s %8s %8s %s\n' "$t" "$runs" "$rate" "$cov" "$ft" "$result"
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "findings in: ${failed[*]}" >&2
  exit 1
fi
