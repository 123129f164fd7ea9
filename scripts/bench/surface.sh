#!/usr/bin/env bash
# Surface distances (ASSD, RMSD, MSD, HD95) of a 512x512x200 pair: lits against medpy 0.5.2
# in the same run, on the same masks. Prints Markdown for docs/benchmarks.md.
#
# lits computes all four metrics in one call (best of 3, masks in memory, on all cores and
# on one); medpy needs one call per metric, each timed once. Two pairs: liver-sized masks
# (lits transforms only the masks' bounding box) and body-sized masks reaching the array's
# edges (nothing to crop). Wall and CPU times are both given: on a shared machine the CPU
# time is the steadier of the two.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
cargo build --release -q -p lits-eval --example surface_bench
BENCH=target/release/examples/surface_bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for kind in liver full; do
  $PY scripts/bench/surface.py "$tmp" "$kind" > "$tmp/medpy-$kind.json"
  "$BENCH" "$tmp/pred.raw" "$tmp/ref.raw" 512 512 200 0.7 0.7 2.5 3 > "$tmp/lits-$kind.json"
  RAYON_NUM_THREADS=1 "$BENCH" "$tmp/pred.raw" "$tmp/ref.raw" 512 512 200 0.7 0.7 2.5 3 > "$tmp/lits1-$kind.json"
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
$PY - "$tmp" <<'PYEOF'
import json, sys
d = sys.argv[1]
runs = [(k, json.load(open(f"{d}/medpy-{k}.json")), json.load(open(f"{d}/lits-{k}.json")),
         json.load(open(f"{d}/lits1-{k}.json"))) for k in ("liver", "full")]
print()
print("| masks | voxels (pred / ref) | metric | lits (mm) | medpy (mm) | abs. difference |")
print("|---|---|---|---|---|---|")
for k, m, l, _ in runs:
    for ours, theirs in [("assd", "assd"), ("rmsd", "rmsd"), ("hd", "hd"), ("hd95", "hd95")]:
        print(f"| {k} | {m['pred_voxels']} / {m['ref_voxels']} | {ours} | {l[ours]:.6f} | {m[theirs]:.6f} "
              f"| {abs(l[ours] - m[theirs]):.1e} |")
print()
print("| masks | lits, 4 metrics, 2 threads | lits, 1 thread | medpy hd (1 call) | medpy assd + hd + hd95 "
      "| speed-up vs 1 call | speed-up vs 3 calls |")
print("|---|---|---|---|---|---|---|")
for k, m, l, l1 in runs:
    three = sum(m[f"{x}_seconds"] for x in ("assd", "hd", "hd95"))
    three_cpu = sum(m[f"{x}_cpu_seconds"] for x in ("assd", "hd", "hd95"))
    print(f"| {k}, wall | {l['seconds']:.2f} s | {l1['seconds']:.2f} s | {m['hd_seconds']:.1f} s | {three:.1f} s "
          f"| {m['hd_seconds'] / l['seconds']:.0f}x | {three / l['seconds']:.0f}x |")
    print(f"| {k}, CPU | {l['cpu_seconds']:.2f} s | {l1['cpu_seconds']:.2f} s | {m['hd_cpu_seconds']:.1f} s "
          f"| {three_cpu:.1f} s | {m['hd_cpu_seconds'] / l['cpu_seconds']:.0f}x | {three_cpu / l['cpu_seconds']:.0f}x |")
PYEOF
