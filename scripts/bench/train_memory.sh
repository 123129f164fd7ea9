#!/usr/bin/env bash
# Peak resident memory and patches/s of training on LiTS-sized phantoms (`lits synth --size
# lits`: 512x512 slices, 100-300 of them), prepared at the recommended 0.8x0.8x1.5 mm with a
# body crop, for 8 and for 32 cases from the disk store (windowed reads of the prepared-case
# cache), and for 32 cases from the memory store (every case loaded). Each training runs 2
# epochs of 10 steps (64^3 patches, batch 2, an 8-channel U-Net) and validates case 0, the
# same for all, after the second. The cache is built by an untimed first run of each dataset,
# so the measured runs find it (and the page cache) warm. Figures come from the runs' own
# timing.jsonl: the peak resident memory of each epoch (epoch 1 trains only, epoch 2 also
# validates a whole volume) and the training patches per second.
#
# Usage: scripts/bench/train_memory.sh   (LITS_BIN=path/to/lits skips the release build;
# N_SMALL and N_LARGE change the case counts). Needs .venv (scripts/setup.sh) and about
# 20 GB of disk. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lits_bin.sh
small=${N_SMALL:-8}
large=${N_LARGE:-32}

"$LITS_BIN" synth --size lits --cases "$large" --seed 3 --out "$WORK/large" >/dev/null
mkdir "$WORK/small"
for ((i = 0; i < small; i++)); do
  ln -s "$WORK/large/volume-$i.nii.gz" "$WORK/large/segmentation-$i.nii.gz" "$WORK/small/"
done

config() {  # dataset, store
  cat > "$WORK/$1-$2.json" <<JSON
{ "name": "memory", "seed": 0, "threads": 2, "loader_workers": 1,
  "data": { "dir": "$WORK/$1", "cache_dir": "$WORK/cache", "store": "$2",
            "split": { "kind": "ids", "val": [0] } },
  "preprocess": { "mode": "spacing", "target_spacing": [0.8, 0.8, 1.5],
                  "crop": { "kind": "body", "threshold": -500, "margin_mm": [5, 5, 0] },
                  "intensity": { "kind": "window", "lower": -200, "upper": 300 } },
  "patches": { "patch": [64, 64, 64], "batch_size": 2, "foreground_fraction": 0.33,
               "augment": { "flip_probability": 0.5, "rotate90": true } },
  "model": { "base_channels": 8, "dropout": 0.0, "updown_dropout": 0.0 },
  "loss": { "kind": "dice_ce", "class_weights": [1.0, 1.0, 2.0], "batch_dice": true },
  "optimizer": { "kind": "adam", "lr": 0.001 },
  "epochs": 2, "steps_per_epoch": 10,
  "validation": { "every": 2, "sliding_window": { "patch": [128, 128, 64], "overlap": 0.25, "batch": 1 } } }
JSON
}

train() {  # dataset, store -> the run folder
  config "$1" "$2"
  rm -rf "$WORK/run"
  "$LITS_BIN" train --config "$WORK/$1-$2.json" --out "$WORK/run" >/dev/null 2>"$WORK/log" || { cat "$WORK/log"; exit 1; }
}

row() {  # label, dataset, store
  train "$2" "$3"
  "$PY" - "$WORK/run/timing.jsonl" "$1" <<'PY'
import json, sys
t = [json.loads(l) for l in open(sys.argv[1])]
mib = lambda r: r["peak_resident_bytes"] / 2**20
print(f"| {sys.argv[2]} | {mib(t[0]):.0f} | {mib(t[1]):.0f} | {sum(r['patches_per_second'] for r in t) / len(t):.2f} |")
PY
}

train small disk   # builds the cache of both datasets (the large one below), untimed
train large disk
echo "prepared-case cache: $(du -sh --apparent-size "$WORK/cache" | cut -f1) for $small + $large cases"
echo
echo "| training | peak RSS, epoch 1 (MiB) | peak RSS, epoch 2 with validation (MiB) | patches/s |"
echo "|---|---|---|---|"
row "$small cases, disk store" small disk
row "$large cases, disk store" large disk
row "$large cases, memory store" large memory
row "$large cases, disk store (again)" large disk
echo
echo "load average: $(cut -d' ' -f1 /proc/loadavg)"
