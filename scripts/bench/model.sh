#!/usr/bin/env bash
# lits-model against PyTorch and MONAI on this machine: forward pass and training step of
# the default U-Net at 64³ (batch 1), sliding-window inference of a 128×128×96 volume
# (64³ windows, overlap 0.5, Gaussian), 2 threads each, same weights, alternating fresh
# processes. Prints a Markdown table for docs/benchmarks.md. Extra arguments go to
# scripts/bench/model_bench.py (e.g. --rounds 1 --only forward).
set -euo pipefail
cd "$(dirname "$0")/../.."
# The dev profile builds dependencies at opt-level 2; the work itself runs in libtorch.
cargo build -q -p lits-model --example bench_model
exec .venv/bin/python scripts/bench/model_bench.py run \
    --bin "${CARGO_TARGET_DIR:-target}/debug/examples/bench_model" "$@"
