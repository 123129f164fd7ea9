#!/usr/bin/env bash
# End-to-end quality gate: synthesise the quick-start dataset, train the quick-start config,
# segment the run's held-out cases with `lits predict`, score them with `lits evaluate`,
# and fail when liver Dice per case < 0.90 or tumor Dice per case < 0.50.
#
# Usage: scripts/evaluate_ci.sh [WORK_DIR]   (default: a fresh temporary folder)
# Environment: LITS (the binary; default target/release/lits, built if missing).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python="$root/.venv/bin/python"
work=${1:-$(mktemp -d -t lits-evaluate-ci.XXXXXX)}
mkdir -p "$work"
lits=${LITS:-$root/target/release/lits}
if [ ! -x "$lits" ]; then
  (cd "$root" && cargo build --release -p lits-cli)
fi

data="$work/data"
run="$work/run"
held="$work/held_out"
pred="$work/pred"
# Keep the run's own cache (synthetic phantoms, preprocessed cases) inside the work folder.
export LITS_CACHE_DIR="$work/cache"

# The quick start's data: 24 phantoms, seed 0 (as configs/quickstart.json makes them).
rm -rf "$data" "$run" "$held" "$pred"
"$lits" synth --out "$data" --cases 24 --seed 0
"$lits" train --data "$data" --out "$run"

# The held-out scans and their references, as the run's split.json names them.
mkdir -p "$held/scans" "$held/ref"
"$python" - "$run/split.json" "$data" "$held" <<'EOF'
import json, os, sys
split, data, held = sys.argv[1:]
val = json.load(open(split))["val"]
assert val, "the run holds out no case"
for i in val:
    for kind, sub in (("volume", "scans"), ("segmentation", "ref")):
        name = f"{kind}-{i}.nii.gz"
        os.symlink(os.path.join(data, name), os.path.join(held, sub, name))
print(f"held-out cases: {val}")
EOF

"$lits" predict --run "$run" "$held/scans" --out "$pred"
"$lits" evaluate --pred "$pred" --ref "$held/ref" --json "$work/evaluate.json"

"$python" - "$work/evaluate.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
s = report["summary"]
liver, tumor = s["liver"]["dice_per_case"]["mean"], s["tumor"]["dice_per_case"]["mean"]
print(f"liver Dice per case {liver:.4f} (gate 0.90), tumor Dice per case {tumor:.4f} (gate 0.50)")
failed = []
if s["cases_failed"]:
    failed.append(f"{s['cases_failed']} case(s) not scored")
if liver is None or liver < 0.90:
    failed.append("liver Dice per case below 0.90")
if tumor is None or tumor < 0.50:
    failed.append("tumor Dice per case below 0.50")
if failed:
    sys.exit("evaluate_ci: FAILED: " + "; ".join(failed))
print("evaluate_ci: passed")
EOF
