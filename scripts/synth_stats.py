"""Statistics of a `lits synth` dataset, for docs/synth.md: HU of the labelled tissues per
contrast phase, liver volume, lesion counts, sizes and kinds, and how far the field of view
reaches into the chest.

Usage: .venv/bin/python scripts/synth_stats.py DATASET_DIR [--json OUT]

Voxels are read back with nibabel (HU after scl_slope/scl_inter); lesions are counted both
as drawn (synth.json) and as connected components of the tumor label (26-connectivity, so
confluent lesions count once, as a reader of the mask would count them).
"""

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage


def pct(values, q):
    return float(np.percentile(values, q)) if len(values) else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    manifest_path = args.dataset / "synth.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"synth_stats: {manifest_path}: {e}")

    by_phase = {}
    liver_l, drawn_counts, component_counts, diameters, chest = [], [], [], [], []
    kinds = {}
    component_diameters = []
    for case in manifest["cases"]:
        i = case["id"]
        img = nib.load(args.dataset / f"volume-{i}.nii.gz")
        seg = np.asarray(nib.load(args.dataset / f"segmentation-{i}.nii.gz").dataobj)
        hu = np.asarray(img.get_fdata(dtype=np.float32))
        voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
        phase = by_phase.setdefault(case["phase"], {"liver": [], "tumor": [], "cases": 0})
        phase["cases"] += 1
        phase["liver"].append(float(hu[seg == 1].mean()))
        if (seg == 2).any():
            phase["tumor"].append(float(hu[seg == 2].mean() - hu[seg == 1].mean()))
        liver_l.append((seg >= 1).sum() * voxel_ml / 1000.0)
        chest.append(case["chest_mm"])
        if case["tumors"]:
            drawn_counts.append(len(case["tumors"]))
            for t in case["tumors"]:
                diameters.append(2.0 * t["radius_mm"])
                kinds[t["kind"]] = kinds.get(t["kind"], 0) + 1
            labels, n = ndimage.label(seg == 2, structure=np.ones((3, 3, 3)))
            component_counts.append(n)
            sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
            component_diameters += [float((6.0 * s * voxel_ml * 1000.0 / np.pi) ** (1 / 3)) for s in sizes]

    d = np.array(diameters)
    stats = {
        "cases": len(manifest["cases"]),
        "generator_version": manifest.get("generator_version"),
        "phases": {
            k: {
                "cases": v["cases"],
                "liver_hu_median": pct(v["liver"], 50),
                "liver_hu_range": [min(v["liver"]), max(v["liver"])],
                "tumor_minus_liver_hu_median": pct(v["tumor"], 50),
                "tumor_minus_liver_hu_range": [min(v["tumor"]), max(v["tumor"])] if v["tumor"] else None,
            }
            for k, v in sorted(by_phase.items())
        },
        "liver_litres": {"median": pct(liver_l, 50), "min": min(liver_l), "max": max(liver_l)},
        "tumor_cases": len(drawn_counts),
        "lesions_drawn_per_tumor_case": {"median": pct(drawn_counts, 50), "min": min(drawn_counts, default=0), "max": max(drawn_counts, default=0)},
        "lesions_in_mask_per_tumor_case": {"median": pct(component_counts, 50), "min": min(component_counts, default=0), "max": max(component_counts, default=0)},
        "lesion_diameter_mm": {"median": pct(d, 50), "p10": pct(d, 10), "p90": pct(d, 90), "under_20mm": float((d < 20).mean()) if len(d) else None},
        "mask_lesion_diameter_mm": {"median": pct(component_diameters, 50), "under_20mm": float((np.array(component_diameters) < 20).mean()) if component_diameters else None},
        "lesion_kinds": kinds,
        "chest_mm": {"median": pct(chest, 50), "min": min(chest), "max": max(chest), "cases_with_chest": int(sum(c > 0 for c in chest))},
    }
    text = json.dumps(stats, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
