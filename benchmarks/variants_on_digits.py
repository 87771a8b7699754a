"""Do precision and compiling change what DINO learns? The demo recipe on digits, in variants.

Trains ``sparsam.recipes.DIGITS_RECIPE`` (same seed) once per variant, ``precision`` fp32 or
bf16 and ``compile`` off or on, and prints per variant the training minutes, the few-shot
table's means (SVC on the teacher's features, as ``sparsam demo``) and the largest relative
difference of its per-epoch loss from the first variant's. Issue 19 asks that compiled and
eager runs agree within 0.01 at every N and in their loss curves up to float rounding, and
that a bf16 run agrees with the fp32 run within 0.01.

    python benchmarks/variants_on_digits.py --epochs 20 fp32-eager fp32-compiled
    python benchmarks/variants_on_digits.py --device cuda fp32-eager bf16-eager bf16-compiled
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from sparsam import DinoFeaturizer
from sparsam.datasets import load_demo
from sparsam.model_selection import few_shot_scores
from sparsam.recipes import DIGITS_RECIPE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="PRECISION-MODE, e.g. fp32-eager")
    parser.add_argument("--epochs", type=int, default=DIGITS_RECIPE["epochs"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    images, labels, _ = load_demo()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device={name} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"epochs={args.epochs} seed={args.seed}"
    )
    print("| variant | minutes | N=1 | N=5 | N=10 | N=25 | loss vs first (max rel. diff) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    first_loss = None
    for variant in args.variants:
        precision, mode = variant.split("-")
        params = {
            **DIGITS_RECIPE,
            "epochs": args.epochs,
            "precision": precision,
            "compile": mode == "compiled",
            "device": args.device,
            "random_state": args.seed,
            "verbose": 0,
        }
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            featurizer = DinoFeaturizer(**params).fit(images)
        minutes = (time.perf_counter() - started) / 60
        scores = few_shot_scores(featurizer.transform(images), labels)
        loss = np.asarray(featurizer.history_["loss"])
        first_loss = loss if first_loss is None else first_loss
        difference = np.max(np.abs(loss - first_loss) / np.abs(first_loss))
        means = " | ".join(f"{scores[n].mean():.3f}" for n in (1, 5, 10, 25))
        print(f"| {variant} | {minutes:.1f} | {means} | {difference:.1e} |", flush=True)


if __name__ == "__main__":
    main()
