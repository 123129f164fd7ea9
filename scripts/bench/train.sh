#!/usr/bin/env bash
# Quick-start training patches/s, lits against the PyTorch reference (see train_bench.py).
#
#   scripts/bench/train.sh [--epochs N] [--rounds N] [--config FILE]
#
# Environment: LITS_BIN (a built lits binary; default: cargo build --release, then
# target/release/lits).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${LITS_BIN:-}" ]; then
  (cd "$root" && cargo build --release -q -p lits-cli)
  LITS_BIN="${CARGO_TARGET_DIR:-$root/target}/release/lits"
fi
exec "$root/.venv/bin/python" "$root/scripts/bench/train_bench.py" --lits "$LITS_BIN" "$@"
