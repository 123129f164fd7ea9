"""Captum's Guided Grad-CAM and Grad-CAM of the reference U-Net, against `lits explain`.

The network is wrapped as the original project's feature-importance command wrapped it
(liver-ct-segmentation-package, `liver-ct-seg-feat-ggcam`): one number per class, the sum
of that class's logits over the voxels where it is the argmax. Guided Grad-CAM is Captum's
`GuidedGradCam` on that wrapper at a layer (the original: `outc.conv_1`), its absolute
value the map; Grad-CAM alone is `LayerGradCam` with `relu_attributions=True` (as
`GuidedGradCam` calls it) brought to the input's size by `LayerAttribution.interpolate`
(nearest, as `GuidedGradCam` does).

usage: captum_explain.py WEIGHTS INPUT LITS_DIR --base B --method M --layer L
Reads INPUT (a NIfTI volume of one window, used as stored), computes the map of every class
with the weights and compares it with LITS_DIR/<stem>_seg_explain_<class>.nii.gz; prints
the largest difference relative to the map's maximum per class and exits non-zero above
--tol (1e-4), or when a class has no voxel in the argmax or every map is zero (degenerate
checks); a class whose Captum map is zero must be zero in lits too.
"""

import argparse
import os
import sys

import nibabel as nib
import numpy as np
import torch
from captum.attr import GuidedGradCam, LayerAttribution, LayerGradCam
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unet import UNet3d  # noqa: E402

CLASSES = ["background", "liver", "tumor"]


class Aggregate(torch.nn.Module):
    """The original's wrapper: per class, the sum of its logits where it is the argmax."""

    def __init__(self, model):
        super().__init__()
        self._model = model

    def forward(self, x):
        out = self._model(x)
        selected = torch.zeros_like(out).scatter_(1, torch.argmax(out, dim=1, keepdim=True), 1)
        return (out * selected).sum(dim=(2, 3, 4))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("input")
    ap.add_argument("lits")
    ap.add_argument("--base", type=int, required=True)
    ap.add_argument("--method", choices=["guided-gradcam", "gradcam"], required=True)
    ap.add_argument("--layer", default="outc")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    m = UNet3d(base_channels=args.base, num_classes=len(CLASSES))
    m.load_state_dict(load_file(args.weights), strict=True)
    m.eval()
    wrapped = Aggregate(m)
    layer = m.outc.conv_1 if args.layer == "outc" else getattr(m, args.layer)
    src = nib.load(args.input)
    x = torch.from_numpy(np.asarray(src.dataobj, dtype=np.float32))[None, None]
    stem = os.path.basename(args.input).removesuffix(".gz").removesuffix(".nii")
    with torch.no_grad():
        argmax = m(x).argmax(1)
    worst, explained = 0.0, 0
    for c, name in enumerate(CLASSES):
        voxels = int((argmax == c).sum())
        if voxels == 0:
            sys.exit(f"degenerate check: no voxel of class {name} in the argmax")
        if args.method == "guided-gradcam":
            want = GuidedGradCam(wrapped, layer).attribute(x, target=c).abs()
        else:
            cam = LayerGradCam(wrapped, layer).attribute(x, target=c, relu_attributions=True)
            want = LayerAttribution.interpolate(cam, tuple(x.shape[2:]))
        want = want[0, 0].detach().numpy().astype(np.float64)
        path = os.path.join(args.lits, f"{stem}_seg_explain_{name}.nii.gz")
        out = nib.load(path)
        got = np.asarray(out.dataobj)
        assert got.dtype == np.float32 and got.shape == want.shape, (got.dtype, got.shape, want.shape)
        assert np.array_equal(out.affine, src.affine), (out.affine, src.affine)
        top = np.abs(want).max()
        if top == 0:
            # Grad-CAM's ReLU can leave nothing (a weighted sum negative everywhere).
            print(f"{args.method} at {args.layer}, {name}: Captum's map is zero, lits' max is {np.abs(got).max():.2e}")
            if np.abs(got).max() != 0:
                sys.exit(f"lits' map of {name} is not zero where Captum's is")
            continue
        explained += 1
        rel = np.abs(got - want).max() / top
        worst = max(worst, rel)
        print(f"{args.method} at {args.layer}, {name} ({voxels} voxels): max |lits - captum| / max = {rel:.2e}")
    if explained == 0:
        sys.exit("degenerate check: every class's map is zero")
    if worst > args.tol:
        sys.exit(f"lits and Captum differ by {worst:.2e} of the map's maximum (tolerance {args.tol:.0e})")


if __name__ == "__main__":
    main()
