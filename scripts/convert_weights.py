#!/usr/bin/env python3
"""Convert U-Net weights between PyTorch files and lits' safetensors files.

  to-safetensors IN OUT.safetensors
      IN is a PyTorch state_dict (.pt/.pth) of the original liver-ct-segmentation U-Net,
      or a PyTorch Lightning checkpoint (.ckpt) of it: the checkpoint's "state_dict" is
      taken and the "model." prefix Lightning adds is removed. Entries outside the network
      (e.g. loss buffers) are dropped and listed.
  to-pytorch IN.safetensors OUT.pt [--lightning]
      Writes a plain state_dict, or with --lightning a {"state_dict": ...} dictionary
      with "model."-prefixed names, as a Lightning checkpoint holds them.

Names are the original's (inc.conv_block_1.conv_1.weight, ..., BatchNorm running_mean,
running_var and num_batches_tracked included), which lits loads directly. Pickled files
are opened with torch.load(weights_only=True); pass --trust-pickle only for files whose
origin you trust, when they hold other Python objects (old Lightning hyper-parameters).
Exit status 1 with a message naming the file on any problem; no partial output is left.
"""

import argparse
import os
import sys
from collections import OrderedDict

PREFIX = "model."
# First components of the network's own entries.
MODULES = ("inc.", "down1.", "down2.", "mid.", "up1.", "up2.", "outc.")


def fail(path, msg):
    print("convert_weights: %s: %s" % (path, msg), file=sys.stderr)
    sys.exit(1)


def network_entries(path, obj):
    import torch

    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        fail(path, "holds no state_dict (expected a dict of tensors or a checkpoint with 'state_dict')")
    names = list(obj.keys())
    # A Lightning module's entries carry the prefix; anything else it holds is not the net.
    if any(isinstance(k, str) and k.startswith(PREFIX) for k in names):
        obj = OrderedDict((k[len(PREFIX):], v) for k, v in obj.items() if k.startswith(PREFIX))
        dropped = [k for k in names if not (isinstance(k, str) and k.startswith(PREFIX))]
    else:
        dropped = []
    kept = OrderedDict()
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            fail(path, "entry %r is not a tensor" % k)
        if isinstance(k, str) and k.startswith(MODULES):
            kept[k] = v.detach().cpu().contiguous()
        else:
            dropped.append(k)
    if not kept:
        fail(path, "no entry of the U-Net found (names start with %s)" % ", ".join(MODULES))
    for k in dropped:
        print("convert_weights: dropped %s (not part of the network)" % k, file=sys.stderr)
    return kept


def replace(out, write):
    """Writes through a temporary file so that a failure leaves nothing behind."""
    tmp = os.path.join(os.path.dirname(os.path.abspath(out)), "." + os.path.basename(out) + ".partial")
    try:
        write(tmp)
        os.replace(tmp, out)
    except Exception as e:  # noqa: BLE001 - reported with the file name
        if os.path.exists(tmp):
            os.remove(tmp)
        fail(out, "cannot write: %s" % e)


def to_safetensors(args):
    import torch
    from safetensors.torch import save_file

    if not os.path.isfile(args.input):
        fail(args.input, "no such file")
    try:
        obj = torch.load(args.input, map_location="cpu", weights_only=not args.trust_pickle)
    except Exception as e:  # noqa: BLE001
        hint = "" if args.trust_pickle else " (if you trust its origin, retry with --trust-pickle)"
        fail(args.input, "cannot read as a PyTorch file: %s%s" % (str(e).splitlines()[0], hint))
    tensors = network_entries(args.input, obj)
    replace(args.output, lambda p: save_file(dict(tensors), p, metadata={"format": "pt"}))
    print("wrote %d tensors to %s" % (len(tensors), args.output))


def to_pytorch(args):
    import torch
    from safetensors.torch import load_file

    if not os.path.isfile(args.input):
        fail(args.input, "no such file")
    try:
        tensors = load_file(args.input)
    except Exception as e:  # noqa: BLE001
        fail(args.input, "not a readable safetensors file: %s" % e)
    state = OrderedDict(sorted(tensors.items()))
    if args.lightning:
        obj = {"state_dict": OrderedDict((PREFIX + k, v) for k, v in state.items())}
    else:
        obj = state
    replace(args.output, lambda p: torch.save(obj, p))
    print("wrote %d tensors to %s" % (len(state), args.output))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("to-safetensors", help="PyTorch state_dict or Lightning checkpoint -> safetensors")
    a.add_argument("input")
    a.add_argument("output")
    a.add_argument("--trust-pickle", action="store_true",
                   help="allow arbitrary pickled objects (only for files you trust)")
    a.set_defaults(run=to_safetensors)
    b = sub.add_parser("to-pytorch", help="safetensors -> PyTorch state_dict")
    b.add_argument("input")
    b.add_argument("output")
    b.add_argument("--lightning", action="store_true", help="wrap as a Lightning checkpoint state_dict")
    b.set_defaults(run=to_pytorch)
    args = p.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
