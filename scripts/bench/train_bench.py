#!/usr/bin/env python3
"""Quick-start training throughput: `lits train` against the PyTorch reference.

  train_bench.py --lits BIN --config configs/quickstart.json [--epochs 4] [--rounds 2]

Both sides train the same model on the same preprocessed phantoms with the same thread
count, batch, patch size, loss and optimiser, their data loading included:

- lits: `lits train` on the config with `epochs` shortened and validation only at the end;
  patches/s of each epoch from the run's timing.jsonl (which counts training steps and
  their patch loading, not validation).
- PyTorch: the same phantoms, preprocessed by `lits preprocess` with the config's
  preprocessing and read back from the cache's .npy files, normalised with the same
  window; a torch DataLoader with the config's loader workers cutting patches of the
  config's shape (the same share centred on a foreground voxel of a class drawn
  uniformly, the rest anywhere, padded at the volume edge) with the config's intensity
  augmentation; the model of scripts/reference/unet.py, MONAI's DiceCELoss with the
  config's batch/background switches, torch.optim.Adam; deterministic algorithms on.

The patches are drawn from the same distribution, not bit-identical (each side uses its
own random streams); a step's cost does not depend on what a patch holds. The first epoch
of each side is warm-up and is left out. Prints a Markdown table of medians and the ratio.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

from model_bench import cpu_name  # noqa: E402


def lits_side(args, cfg, work, round_no):
    c = json.loads(json.dumps(cfg))
    c["epochs"] = args.epochs
    c["validation"]["every"] = 10 ** 6  # only after the last epoch, which timing.jsonl separates
    path = os.path.join(work, "lits-config.json")
    with open(path, "w") as f:
        json.dump(c, f)
    out = os.path.join(work, "run-%d" % round_no)
    env = dict(os.environ, LITS_CACHE_DIR=os.path.join(work, "cache"))
    subprocess.run([args.lits, "train", "--config", path, "--out", out], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(out, "timing.jsonl")) as f:
        rates = [json.loads(line)["patches_per_second"] for line in f if line.strip()]
    return rates[1:]


def preprocess_for_pytorch(args, cfg, work):
    """The config's phantoms, generated and preprocessed by lits into a .npy cache."""
    data = os.path.join(work, "data")
    cache = os.path.join(work, "npy")
    if not os.path.isdir(cache):
        synth = cfg["data"]["synth"]
        subprocess.run([args.lits, "synth", "--out", data, "--cases", str(synth["cases"]), "--seed",
                        str(synth["seed"])], check=True, stdout=subprocess.DEVNULL)
        pre = os.path.join(work, "preprocess.json")
        with open(pre, "w") as f:
            json.dump(cfg["preprocess"], f)
        subprocess.run([args.lits, "preprocess", "--data", data, "--config", pre, "--out", cache], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return sorted(glob.glob(os.path.join(cache, "cases", "case-*")))


class Patches:
    """Random training patches as the config describes them (a torch Dataset)."""

    def __init__(self, cases, cfg, steps):
        import numpy as np

        p = cfg["patches"]
        self.patch = p["patch"]
        self.fg_fraction = p.get("foreground_fraction", 1 / 3)
        aug = p.get("augment", {})
        self.scale, self.shift = aug.get("scale", 0.1), aug.get("shift", 0.1)
        self.noise_p, self.noise_std = aug.get("noise_probability", 0.15), aug.get("noise_std", 0.1)
        win = cfg["preprocess"]["intensity"]
        lo, hi = win["lower"], win["upper"]
        self.cases = []
        for d in cases:
            img = np.load(os.path.join(d, "image.npy"))
            lab = np.load(os.path.join(d, "label.npy"))
            img = (np.clip(img, lo, hi) - lo) / (hi - lo)
            fg = [np.argwhere(lab == c) for c in (1, 2)]
            self.cases.append((img.astype(np.float32), lab, [f for f in fg if len(f)]))
        self.n = steps * p["batch_size"]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        import numpy as np

        rng = np.random.default_rng(i)
        img, lab, fg = self.cases[rng.integers(len(self.cases))]
        shape, p = np.array(img.shape), np.array(self.patch)
        if rng.random() < self.fg_fraction and fg:
            cls = fg[rng.integers(len(fg))]
            centre = cls[rng.integers(len(cls))]
            start = centre - p // 2
        else:
            start = np.array([rng.integers(min(0, s - q), max(0, s - q) + 1) for s, q in zip(shape, p)])
        x = np.full(self.patch, img.min(), np.float32)
        y = np.zeros(self.patch, np.int64)
        lo = np.maximum(start, 0)
        hi = np.minimum(start + p, shape)
        src = tuple(slice(a, b) for a, b in zip(lo, hi))
        dst = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
        x[dst] = img[src]
        y[dst] = lab[src]
        x = x * (1 + rng.uniform(-self.scale, self.scale)) + rng.uniform(-self.shift, self.shift)
        if rng.random() < self.noise_p:
            x = x + rng.normal(0, rng.uniform(0, self.noise_std), x.shape).astype(np.float32)
        return x[None].astype(np.float32), y


def pytorch_side(args, cfg, cases):
    import torch
    from monai.losses import DiceCELoss
    from unet import UNet3d

    torch.manual_seed(cfg.get("seed", 0))
    torch.set_num_threads(cfg["threads"])
    torch.use_deterministic_algorithms(True)
    m = cfg["model"]
    model = UNet3d(base_channels=m["base_channels"], dropout=m.get("dropout", 0.25),
                   updown_dropout=m.get("updown_dropout", 0.001))
    loss_cfg = cfg["loss"]
    assert loss_cfg["kind"] == "dice_ce", "this harness mirrors the quick start's Dice + cross-entropy"
    weight = torch.tensor(loss_cfg["class_weights"], dtype=torch.float32)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, weight=weight, batch=loss_cfg.get("batch_dice", False),
                         include_background=loss_cfg.get("dice_background", True))
    opt_cfg = cfg["optimizer"]
    assert opt_cfg["kind"] == "adam"
    opt = torch.optim.Adam(model.parameters(), lr=opt_cfg["lr"])
    steps = cfg["steps_per_epoch"]
    batch = cfg["patches"]["batch_size"]
    data = Patches(cases, cfg, steps * args.epochs)
    workers = cfg.get("loader_workers", 1)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, num_workers=workers,
                                         persistent_workers=workers > 0)
    model.train()
    rates = []
    it = iter(loader)
    for _ in range(args.epochs):
        t = time.perf_counter()
        for _ in range(steps):
            x, y = next(it)
            opt.zero_grad()
            loss_fn(model(x), y[:, None]).backward()
            opt.step()
        rates.append(steps * batch / (time.perf_counter() - t))
    return rates[1:]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lits", required=True, help="a built lits binary")
    p.add_argument("--config", default=os.path.join(HERE, "..", "..", "configs", "quickstart.json"))
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workdir")
    args = p.parse_args()
    with open(args.config) as f:
        cfg = json.load(f)
    work = args.workdir or tempfile.mkdtemp(prefix="lits-train-bench.")
    cases = preprocess_for_pytorch(args, cfg, work)
    split = None
    rates = {"lits": [], "pytorch": []}
    for r in range(args.rounds):
        rates["lits"] += lits_side(args, cfg, work, r)
        if split is None:
            # Train only on the cases lits trains on (its split.json).
            with open(os.path.join(work, "run-0", "split.json")) as f:
                train_ids = set(json.load(f)["train"])
            split = [c for c in cases if int(os.path.basename(c).split("-")[1]) in train_ids]
        rates["pytorch"] += pytorch_side(args, cfg, split)
        print("round %d: lits %s, PyTorch %s patches/s" % (
            r + 1, ["%.2f" % v for v in rates["lits"]], ["%.2f" % v for v in rates["pytorch"]]), file=sys.stderr)
    import torch

    med = {k: statistics.median(v) for k, v in rates.items()}
    pc = cfg["patches"]
    print("Machine: %s, %d logical CPUs, %.0f GiB; %d threads; torch %s" % (
        cpu_name(), os.cpu_count(), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30,
        cfg["threads"], torch.__version__))
    print()
    print("| benchmark | lits (patches/s) | PyTorch (patches/s) | lits / PyTorch |")
    print("|---|---|---|---|")
    print("| quick-start training, %s patches, batch %d, base %d, %d loader worker(s), %d epochs x %d rounds "
          "(first epoch of each left out) | %.2f | %.2f | %.2f |" % (
              "x".join(map(str, pc["patch"])), pc["batch_size"], cfg["model"]["base_channels"],
              cfg.get("loader_workers", 1), args.epochs, args.rounds, med["lits"], med["pytorch"],
              med["lits"] / med["pytorch"]))


if __name__ == "__main__":
    main()
