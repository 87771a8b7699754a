"""Training speed: sparsam's DINO loop against lightly's, same backbone, crops, head and batch.

Prints images per second of each and the ratio, measured in the same run (the machine is
noisy; absolute numbers mean little). The peer is ``../shared/bench/lightly_dino_ref.py``
(needs ``pip install lightly``); without it only sparsam's numbers are printed.

    python benchmarks/speed.py [--img 16] [--patch 4] [--epochs 2] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import torch

from sparsam import DinoFeaturizer
from sparsam.datasets import load_demo
from sparsam.dino.trainer import resolve_precision
from sparsam.recipes import DIGITS_RECIPE

DEFAULT_PEER = Path(__file__).resolve().parents[1].parent / "shared/bench/lightly_dino_ref.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img", type=int, default=DIGITS_RECIPE["image_size"])
    parser.add_argument("--patch", type=int, default=4)
    parser.add_argument("--batch", type=int, default=DIGITS_RECIPE["batch_size"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--lightly", type=Path, default=DEFAULT_PEER)
    args = parser.parse_args()

    images, _, _ = load_demo()
    model_kwargs = {k: v for k, v in DIGITS_RECIPE["backbone_kwargs"].items() if k != "patch_size"}
    params = {
        **DIGITS_RECIPE,
        "backbone_kwargs": {**model_kwargs, "patch_size": args.patch},
        "image_size": args.img,
        "local_crop_size": args.img // 2,
        "batch_size": args.batch,
        "epochs": args.epochs,
        "device": args.device,
        "precision": args.precision,
        "random_state": 0,
        "verbose": 0,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        featurizer = DinoFeaturizer(**params).fit(images)
    # The first epoch includes one-off costs (allocation, kernel selection): time the rest.
    seconds = featurizer.history_["seconds"][1:] or featurizer.history_["seconds"]
    steps_per_epoch = len(images) // args.batch
    ours = steps_per_epoch * args.batch * len(seconds) / sum(seconds)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu")
    if args.device not in ("auto",):
        device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    dtype = resolve_precision(args.precision, device)
    print(
        f"device={name} threads={torch.get_num_threads()} precision={dtype or torch.float32} "
        f"img={args.img} patch={args.patch} batch={args.batch} local_crops={params['local_crops']}"
    )
    print(f"sparsam       images_per_s={ours:9.1f}")
    if not args.lightly.exists() or device.type != "cpu":
        print("lightly peer not run (script missing or not a CPU run)")
        return
    command = [
        sys.executable, str(args.lightly),
        "--arch", params["backbone"], "--model-kwargs", json.dumps(model_kwargs),
        "--img", str(args.img), "--patch", str(args.patch), "--batch", str(args.batch),
        "--local-views", str(params["local_crops"]), "--out-dim", str(params["out_dim"]),
        "--hf-prob", "0", "--vf-prob", "0", "--rr-prob", "0", "--epochs", str(args.epochs),
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    peer = float(re.search(r"images_per_s=([\d.]+)", output).group(1))
    print(f"lightly-dino  images_per_s={peer:9.1f}")
    print(f"ratio sparsam / lightly = {ours / peer:.2f}")


if __name__ == "__main__":
    main()
