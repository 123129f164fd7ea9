#!/usr/bin/env bash
# Patch sampler throughput against what the quick-start training consumes, in the same run:
# lits_data's PatchSampler (configs/quickstart.json's 32x32x32 patches, batch 2, with the
# default augmentation, which costs more than the quick start's none) drawn on one thread and through a Prefetcher with 1 worker (the quick
# start's loader_workers), against the patches per second of a training step of the
# quick-start U-Net (base 8 channels, same batch) on 2 threads, timed with PyTorch from
# .venv (the same libtorch version lits links; scripts/reference/unet.py).
#
# Usage: scripts/bench/patches.sh [STEPS]   (default 200). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS="${1:-200}"
PY=.venv/bin/python
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

cargo build --release -q -p lits-data --example patch_bench
sampler=$("$TARGET_DIR/release/examples/patch_bench" 32x32x32 2 "$STEPS" 1)
step=$("$PY" - <<'PY'
import json, sys, time
sys.path.insert(0, "scripts/reference")
import torch
from unet import UNet3d
torch.manual_seed(0)
torch.set_num_threads(2)
model = UNet3d(base_channels=8, dropout=0.0, updown_dropout=0.0)
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
x = torch.randn(2, 1, 32, 32, 32)
y = torch.randint(0, 3, (2, 32, 32, 32))
def step():
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
step()
times = []
for _ in range(5):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({"step_s": times[len(times) // 2], "batch": 2}))
PY
)
"$PY" - "$sampler" "$step" <<'PY'
import json, os, sys
s, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
need = t["batch"] / t["step_s"]
print(f"1-minute load average at the end: {os.getloadavg()[0]:.2f}")
print("| what | patches/s | vs training's need |")
print("|---|---|---|")
print(f"| quick-start training step (PyTorch, 2 threads, {t['step_s']:.3f} s per batch of {t['batch']}) | {need:.1f} | 1x |")
print(f"| PatchSampler::batch, one thread | {s['sequential_patches_per_s']:.0f} | {s['sequential_patches_per_s'] / need:.0f}x |")
print(f"| Prefetcher, {s['workers']} worker | {s['prefetcher_patches_per_s']:.0f} | {s['prefetcher_patches_per_s'] / need:.0f}x |")
PY
