"""Reference values for lits-model's parity tests, computed with PyTorch and MONAI.

Each subcommand writes safetensors files into --out; the Rust tests in
crates/lits-model/tests/ run this script, then compute the same things with lits and
compare. Nothing here is stored in the repository: values are made fresh on every run.

  unet     random weights (BatchNorm statistics included) and input; logits in eval mode
           and in train mode (dropout 0), BatchNorm state after the train-mode forward,
           train-mode logits with the original's dropout from generator seed seed + 1000,
           Monte-Carlo dropout logits (BatchNorm eval, dropout on) from seed + 2000
  adam     one focal-loss Adam step (lr 1e-4) from random weights; loss and updated state
  optim    three focal-loss steps under torch.optim Adam (L2), AdamW and SGD (Nesterov)
  losses   focal loss (this re-statement) and MONAI DiceCELoss on random logits
  sliding  MONAI sliding_window_inference of softmax(model) over a random volume
  metrics  medpy Dice/Jaccard and the original's batch-wise IoU of random label volumes
  save     random weights as <out>.safetensors, <out>.pt and a Lightning <out>.ckpt
  check    load a safetensors file into the re-stated model, strict; print its size
"""

import argparse
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from focal_loss import focal_loss  # noqa: E402
from unet import UNet3d  # noqa: E402


def ints(s):
    return [int(v) for v in s.split(",")]


def floats(s):
    return [float(v) for v in s.split(",")]


def model(args, dropout=0.0):
    torch.manual_seed(args.seed)
    m = UNet3d(base_channels=args.base, num_classes=args.classes, dropout=dropout,
               updown_dropout=dropout)
    # Non-trivial BatchNorm parameters and statistics, so that eval mode tests them.
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm3d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0.0, 0.1)
                mod.running_mean.normal_(0.0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.num_batches_tracked.fill_(int(torch.randint(0, 100, ())))
    return m


def state(m):
    return {k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}


def cmd_unet(args):
    m = model(args)
    x = torch.randn(ints(args.shape))
    save_file(state(m), os.path.join(args.out, "weights.safetensors"))
    m.eval()
    with torch.no_grad():
        y_eval = m(x)
    m.train()
    with torch.no_grad():
        y_train = m(x)
    out = {"input": x, "eval": y_eval, "train": y_train}
    out.update({"after." + k: v for k, v in state(m).items()})
    # The same weights with the original's dropout, from a known generator state: channel
    # dropout draws its masks in the same order in both implementations.
    d = UNet3d(base_channels=args.base, num_classes=args.classes)
    d.load_state_dict(load_file(os.path.join(args.out, "weights.safetensors")))
    d.train()
    torch.manual_seed(args.seed + 1000)
    with torch.no_grad():
        out["train_dropout"] = d(x)
    # Monte-Carlo dropout on fresh weights: BatchNorm in eval mode, only Dropout3d in train
    # mode, from another known generator state.
    d.load_state_dict(load_file(os.path.join(args.out, "weights.safetensors")))
    d.eval()
    for mod in d.modules():
        if isinstance(mod, torch.nn.Dropout3d):
            mod.train()
    torch.manual_seed(args.seed + 2000)
    with torch.no_grad():
        out["mc_dropout"] = d(x)
    save_file(out, os.path.join(args.out, "expected.safetensors"))


def cmd_adam(args):
    m = model(args)
    save_file(state(m), os.path.join(args.out, "weights.safetensors"))
    shape = ints(args.shape)
    x = torch.randn(shape)
    target = torch.randint(0, args.classes, [shape[0]] + shape[2:])
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    opt.zero_grad()
    loss = focal_loss(m(x), target, floats(args.class_weights), gamma=2.0)
    loss.backward()
    opt.step()
    out = {"input": x, "target": target, "loss": loss.detach().reshape(1)}
    out.update({"after." + k: v for k, v in state(m).items()})
    save_file(out, os.path.join(args.out, "expected.safetensors"))


def cmd_losses(args):
    from monai.losses import DiceCELoss

    torch.manual_seed(args.seed)
    logits = torch.randn(2, 3, 5, 6, 7, dtype=torch.float64) * 3
    target = torch.randint(0, 3, (2, 5, 6, 7))
    target[1][target[1] == 2] = 1  # the second sample has no tumour
    missing = target.clone()
    missing[missing == 2] = 0  # no tumour in the whole batch
    out = {"logits": logits, "target": target, "missing": missing}
    for name, t in [("target", target), ("missing", missing)]:
        for w, g in [((0.2, 1.0, 2.5), 2.0), ((1.0, 1.0, 1.0), 0.0), ((0.3, 0.3, 3.0), 3.5)]:
            key = "focal.%s.%s.%s" % (name, ",".join(map(str, w)), g)
            out[key] = focal_loss(logits, t, w, gamma=g).reshape(1)
        for w in [None, (0.2, 1.0, 2.5)]:
            for batch in (False, True):
                for bg in (True, False):
                    weight = None if w is None else torch.tensor(w, dtype=torch.float64)
                    loss = DiceCELoss(to_onehot_y=True, softmax=True, weight=weight, batch=batch,
                                      include_background=bg)
                    key = "dicece.%s.%s.batch=%d.bg=%d" % (
                        name, "none" if w is None else ",".join(map(str, w)), batch, bg)
                    out[key] = loss(logits, t[:, None]).reshape(1)
    save_file(out, os.path.join(args.out, "expected.safetensors"))


def cmd_sliding(args):
    """One model, one or more cases "C,D,H,W;pD,pH,pW;overlap;mode;windows per forward",
    written to expected_<i>.safetensors (MONAI is slow to import: one process for all)."""
    from monai.inferers import sliding_window_inference

    m = model(args)
    m.eval()
    save_file(state(m), os.path.join(args.out, "weights.safetensors"))
    for i, case in enumerate(args.case):
        volume, patch, overlap, mode, batch = case.split(";")
        vol = torch.randn(ints(volume))
        with torch.no_grad():
            prob = sliding_window_inference(
                vol[None], ints(patch), int(batch), lambda x: torch.softmax(m(x), 1),
                overlap=float(overlap), mode=mode, sigma_scale=0.125)
        save_file({"volume": vol, "prob": prob[0].contiguous()},
                  os.path.join(args.out, "expected_%d.safetensors" % i))


def cmd_metrics(args):
    """Overlap metrics of random label volumes: medpy's dc/jc per class on the whole
    volume, and the original's batch-wise IoU and accuracy over the first axis."""
    import numpy as np
    from medpy.metric.binary import dc, jc

    rng = np.random.default_rng(args.seed)
    shape = (4, 20, 24, 16)
    ref = rng.integers(0, 3, shape).astype(np.uint8)
    pred = np.where(rng.random(shape) < 0.7, ref, rng.integers(0, 3, shape)).astype(np.uint8)
    pred[1][pred[1] == 2] = 0  # a batch where tumour is only in the reference
    ref[2][ref[2] == 2] = 1
    pred[2][pred[2] == 2] = 1  # a batch without tumour on either side
    out = {"pred": torch.from_numpy(pred), "ref": torch.from_numpy(ref)}
    out["dice"] = torch.tensor([dc(pred == k, ref == k) for k in range(3)], dtype=torch.float64)
    out["iou"] = torch.tensor([jc(pred == k, ref == k) for k in range(3)], dtype=torch.float64)
    sums, counts, accs = np.zeros(3), np.zeros(3), []
    for b in range(shape[0]):
        p, r = pred[b].ravel(), ref[b].ravel()
        accs.append((p == r).mean())
        for k in range(3):
            inter = np.sum((p == k) & (r == k))
            union = np.sum(p == k) + np.sum(r == k) - inter
            if union > 0:
                sums[k] += inter / union
                counts[k] += 1
    per_class = sums / (counts + 1e-10)
    out["batch_iou"] = torch.tensor(per_class, dtype=torch.float64)
    out["batch_mean_iou"] = torch.tensor([per_class.mean()], dtype=torch.float64)
    out["batch_acc"] = torch.tensor([np.mean(accs)], dtype=torch.float64)
    save_file(out, os.path.join(args.out, "expected.safetensors"))


def cmd_save(args):
    """Seeded weights in three forms: <out>.safetensors, <out>.pt (a plain state_dict) and
    <out>.ckpt (what a Lightning checkpoint of the original holds: prefixed weights next
    to a loss buffer and training bookkeeping)."""
    sd = state(model(args))
    save_file(sd, args.out + ".safetensors")
    torch.save(sd, args.out + ".pt")
    ckpt = {"state_dict": {"model." + k: v for k, v in sd.items()}, "epoch": 3, "global_step": 42}
    ckpt["state_dict"]["criterion.alpha"] = torch.tensor([0.2, 1.0, 2.5])
    torch.save(ckpt, args.out + ".ckpt")


OPTIMIZERS = {
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3, weight_decay=1e-3),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-2),
    "sgd": lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, nesterov=True, weight_decay=3e-5),
}


def feeds_batchnorm(name):
    """The biases of a ConvBlock's 3x3x3 convolutions, each followed by BatchNorm."""
    return (name.endswith(".conv_1.bias") and not name.startswith("outc.")) or name.endswith(".conv_2.bias")


def cmd_optim(args):
    """Three training steps of the focal loss from the same weights under each optimiser
    of lits-train (Adam with L2, AdamW, SGD with Nesterov momentum), learning rates as in
    OPTIMIZERS; the state after the steps is written per optimiser."""
    m = model(args)
    save_file(state(m), os.path.join(args.out, "weights.safetensors"))
    shape = ints(args.shape)
    x = torch.randn(shape)
    target = torch.randint(0, args.classes, [shape[0]] + shape[2:])
    out = {"input": x, "target": target}
    for name, make in OPTIMIZERS.items():
        m.load_state_dict(load_file(os.path.join(args.out, "weights.safetensors")))
        # Convolution biases right before BatchNorm get only rounding noise as gradient
        # (zero in exact arithmetic), which Adam scales up to a full step: frozen here and
        # in the Rust test.
        for pname, p in m.named_parameters():
            p.requires_grad_(not feeds_batchnorm(pname))
        m.train()
        opt = make(m.parameters())
        for _ in range(3):
            opt.zero_grad()
            focal_loss(m(x), target, floats(args.class_weights), gamma=2.0).backward()
            opt.step()
        out.update({"%s.%s" % (name, k): v for k, v in state(m).items()})
    save_file(out, os.path.join(args.out, "expected.safetensors"))


def cmd_check(args):
    """Loads a safetensors file into the re-stated model with strict names and shapes."""
    m = UNet3d(base_channels=args.base, num_classes=args.classes)
    m.load_state_dict(load_file(args.out), strict=True)
    print("ok", sum(p.numel() for p in m.parameters()))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["unet", "adam", "optim", "losses", "sliding", "metrics", "save", "check"])
    p.add_argument("--out", required=True, help="output directory (save: file stem, check: file)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base", type=int, default=4, help="base channels")
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--shape", default="1,1,24,40,32", help="input N,C,D,H,W")
    p.add_argument("--class-weights", default="0.2,1.0,2.5")
    p.add_argument("--case", action="append", default=[],
                   help="sliding: 'C,D,H,W;pD,pH,pW;overlap;gaussian|constant;windows per forward'")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    globals()["cmd_" + args.command](args)


if __name__ == "__main__":
    main()
