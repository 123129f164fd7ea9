#!/usr/bin/env python3
"""lits-model against PyTorch and MONAI: forward pass, training step, sliding window.

  model_bench.py run --bin BENCH_MODEL [--rounds 3] [--threads 2]
      Writes the default model's seeded weights, then alternates the lits harness
      (crates/lits-model/examples/bench_model.rs) and this script's PyTorch side, each in
      a fresh process, and prints a Markdown table of medians, ratios, GFLOP/s, the
      machine's sgemm rate and peak memory.
  model_bench.py forward|train|sliding --weights W [...]
      The PyTorch side of one measurement (one JSON line), as the harness prints it.

The PyTorch model is the re-statement in scripts/reference/unet.py, the training step
Adam (lr 1e-4) on the original's focal loss, the sliding window MONAI's
sliding_window_inference of softmax(model) with the same window, overlap, Gaussian
blending and windows per forward.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def timed(iters, f):
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return out


def load_model(args):
    import torch
    from safetensors.torch import load_file
    from unet import UNet3d

    m = UNet3d()
    m.load_state_dict(load_file(args.weights), strict=True)
    return m


def side(args):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    m = load_model(args).to(dev)
    s = args.size

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    if args.what == "forward":
        m.eval()
        x = torch.randn(1, 1, s, s, s, device=dev)
        with torch.no_grad():
            m(x)
            times = timed(args.iters, lambda: (m(x), sync()))
    elif args.what == "train":
        from focal_loss import focal_loss

        m.train()
        x = torch.randn(1, 1, s, s, s, device=dev)
        y = torch.randint(0, 3, (1, s, s, s), device=dev)
        opt = torch.optim.Adam(m.parameters(), lr=1e-4)

        def step():
            opt.zero_grad()
            focal_loss(m(x), y, (0.2, 1.0, 2.5), gamma=2.0).backward()
            opt.step()
            sync()

        step()
        times = timed(args.iters, step)
    else:
        from monai.inferers import sliding_window_inference

        m.eval()
        d, h, w = (int(v) for v in args.volume.split(","))
        vol = torch.randn(1, 1, d, h, w)

        def run():
            with torch.no_grad():
                p = sliding_window_inference(vol, [args.patch] * 3, args.batch, lambda x: torch.softmax(m(x), 1),
                                             overlap=0.5, mode="gaussian", sigma_scale=0.125)
            assert tuple(p.shape) == (1, 3, d, h, w)

        times = timed(args.iters, run)
    print(json.dumps({"impl": "pytorch", "what": args.what, "times": times, "peak_rss_mib": peak_rss_mib()}))


def forward_flops(size):
    """Multiply-adds × 2 of every convolution of the default model at size³, batch 1."""
    import torch
    from unet import UNet3d

    m = UNet3d().eval()
    total = [0]

    def hook(mod, inp, out):
        k = mod.weight.shape[1] * mod.weight[0, 0].numel()
        total[0] += 2 * k * out.numel()

    for mod in m.modules():
        if isinstance(mod, torch.nn.Conv3d):
            mod.register_forward_hook(hook)
    with torch.no_grad():
        m(torch.zeros(1, 1, size, size, size))
    return total[0]


def sgemm_gflops(threads, n=2048, iters=5):
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(timed(iters, lambda: a @ b))
    return 2 * n ** 3 / best / 1e9


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run(args):
    import torch
    from safetensors.torch import save_file
    from unet import UNet3d

    tmp = args.workdir
    os.makedirs(tmp, exist_ok=True)
    weights = os.path.join(tmp, "default.safetensors")
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in UNet3d().state_dict().items()}, weights)

    common = ["--weights", weights, "--threads", str(args.threads), "--device", args.device]
    jobs = [
        ("forward", ["--size", str(args.size), "--iters", str(args.iters)]),
        ("train", ["--size", str(args.size), "--iters", str(args.iters)]),
        ("sliding", ["--volume", args.volume, "--patch", str(args.patch), "--batch", str(args.batch),
                     "--iters", str(args.sliding_iters)]),
    ]
    jobs = [j for j in jobs if j[0] in args.only.split(",")]
    results = {}
    for r in range(args.rounds):
        for what, extra in jobs:
            for impl, cmd in [("lits", [args.bin, what]), ("pytorch", [sys.executable, __file__, what])]:
                out = subprocess.run(cmd + common + extra, check=True, capture_output=True, text=True).stdout
                rec = json.loads(out.strip().splitlines()[-1])
                results.setdefault((what, impl), []).append(rec)
                print("round %d %-7s %-7s median %.3f s, peak %.0f MiB" % (
                    r + 1, what, impl, statistics.median(rec["times"]), rec["peak_rss_mib"]), file=sys.stderr)

    gemm = sgemm_gflops(args.threads)
    flops = forward_flops(args.size)
    print("Machine: %s, %d logical CPUs, %.0f GiB; %d threads; torch %s; sgemm (2048², torch.mm) %.1f GFLOP/s" % (
        cpu_name(), os.cpu_count(), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30,
        args.threads, torch.__version__, gemm))
    print()
    print("| benchmark | lits (s) | PyTorch (s) | lits / PyTorch | lits GFLOP/s | PyTorch GFLOP/s "
          "| peak RSS lits (MiB) | peak RSS PyTorch (MiB) | RSS ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    names = {"forward": "forward %d³, batch 1, eval" % args.size,
             "train": "training step %d³, batch 1 (focal + Adam)" % args.size,
             "sliding": "sliding window %s, patch %d³, overlap 0.5, Gaussian, %d window(s)/forward (MONAI)"
                        % (args.volume.replace(",", "×"), args.patch, args.batch)}
    for what, _ in jobs:
        # Median over all timed iterations of all rounds of each side.
        med = {impl: statistics.median([t for rec in results[(what, impl)] for t in rec["times"]])
               for impl in ("lits", "pytorch")}
        rss = {impl: max(rec["peak_rss_mib"] for rec in results[(what, impl)]) for impl in ("lits", "pytorch")}
        if what == "forward":
            fl = flops
        elif what == "train":
            fl = 3 * flops  # forward + backward for inputs and weights
        else:
            d, h, w = (int(v) for v in args.volume.split(","))
            from monai.data.utils import dense_patch_slices
            n = len(dense_patch_slices((d, h, w), [args.patch] * 3, [args.patch // 2] * 3))
            fl = n * forward_flops(args.patch)
        g = {impl: fl / med[impl] / 1e9 for impl in med}
        print("| %s | %.3f | %.3f | %.2f | %.1f | %.1f | %.0f | %.0f | %.2f |" % (
            names[what], med["lits"], med["pytorch"], med["lits"] / med["pytorch"], g["lits"], g["pytorch"],
            rss["lits"], rss["pytorch"], rss["lits"] / rss["pytorch"]))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["run", "forward", "train", "sliding"])
    p.add_argument("--bin", help="run: the bench_model example binary")
    p.add_argument("--workdir", default="/tmp/lits-model-bench")
    p.add_argument("--only", default="forward,train,sliding")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--weights")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (forward and train)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--sliding-iters", type=int, default=1)
    p.add_argument("--volume", default="128,128,96")
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args()
    if args.what == "run":
        run(args)
    else:
        side(args)


if __name__ == "__main__":
    main()
