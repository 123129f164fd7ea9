"""Surface-distance benchmark peer: medpy 0.5.2 on a 512x512x200 mask pair.

Usage: surface.py OUT_DIR {liver|full}

Writes OUT_DIR/pred.raw and OUT_DIR/ref.raw (uint8, C order, 512x512x200) and prints JSON
with medpy's assd, hd, hd95 (and RMSD from medpy's directed distances) and the wall and
CPU time of each medpy call. Spacing 0.7 x 0.7 x 2.5 mm.

liver: two lumpy liver-sized ellipsoids (about 240 x 210 x 120 voxels) offset by a few
  voxels, as a prediction and its reference.
full: two body-sized ellipsoids that reach the array's edges, so no crop to the masks'
  bounding box helps.
"""

import json
import os
import sys
import time

import numpy as np
from medpy.metric import binary

SHAPE = (512, 512, 200)
SPACING = (0.7, 0.7, 2.5)


def ellipsoid(c, r, wobble):
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    e = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2
    # A smooth bump pattern so the surfaces are not two exact quadrics.
    e = e + wobble * np.sin(z / 17.0) * np.cos(y / 23.0) * np.sin(x / 11.0 + 1.0)
    return e < 1.0


def pair(kind):
    if kind == "liver":
        return ellipsoid((250, 240, 100), (120, 100, 60), 0.08), ellipsoid((255, 236, 102), (118, 104, 58), 0.05)
    return ellipsoid((256, 256, 100), (270, 262, 108), 0.05), ellipsoid((252, 258, 98), (268, 266, 110), 0.04)


def timed(f, *args):
    t, c = time.perf_counter(), time.process_time()
    v = f(*args)
    return float(v), time.perf_counter() - t, time.process_time() - c


def main():
    out, kind = sys.argv[1], sys.argv[2]
    pred, ref = pair(kind)
    pred.astype(np.uint8).tofile(os.path.join(out, "pred.raw"))
    ref.astype(np.uint8).tofile(os.path.join(out, "ref.raw"))
    result = {"kind": kind, "pred_voxels": int(pred.sum()), "ref_voxels": int(ref.sum())}
    for name, f in [("assd", binary.assd), ("hd", binary.hd), ("hd95", binary.hd95)]:
        result[name], result[name + "_seconds"], result[name + "_cpu_seconds"] = timed(f, pred, ref, SPACING)
    directed = getattr(binary, "__surface_distances")
    both = np.concatenate([directed(pred, ref, SPACING, 1), directed(ref, pred, SPACING, 1)])
    result["rmsd"] = float(np.sqrt(np.mean(both**2)))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
