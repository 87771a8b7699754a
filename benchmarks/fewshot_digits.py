"""Few-shot accuracy of DINO features on digits: sparsam against lightly's DINO loop.

Trains sparsam's demo recipe (``sparsam.recipes.DIGITS_RECIPE``) on the 1,797 digits, then gives
lightly's DINO loop (``../shared/bench/lightly_dino_ref.py``) the same backbone, image size,
crops, head, batch size and wall-clock minutes, and prints one table with the same protocol
(SVC on the teacher's features; train/test = stratified halves, random_state=0; 5 draws of N
labeled images per class; balanced accuracy). Also prints sparsam's loss and teacher-entropy
curve. Needs ``pip install lightly`` for the peer (skipped with a note when missing).

    python benchmarks/fewshot_digits.py [--epochs N] [--seed S] [--lightly PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from sparsam.datasets import load_demo
from sparsam.experiments import compare_on_digits
from sparsam.model_selection import format_few_shot_table
from sparsam.recipes import DIGITS_RECIPE

DEFAULT_PEER = Path(__file__).resolve().parents[1].parent / "shared/bench/lightly_dino_ref.py"


def run_lightly(script: Path, minutes: float) -> dict[str, dict[int, np.ndarray]]:
    """Run the peer for ``minutes`` and parse its two few-shot rows (means only)."""
    kwargs = dict(DIGITS_RECIPE["backbone_kwargs"])
    patch = kwargs.pop("patch_size")
    command = [
        sys.executable,
        str(script),
        "--arch", DIGITS_RECIPE["backbone"],
        "--model-kwargs", json.dumps(kwargs),
        "--img", str(DIGITS_RECIPE["image_size"]),
        "--patch", str(patch),
        "--local-views", str(DIGITS_RECIPE["local_crops"]),
        "--batch", str(DIGITS_RECIPE["batch_size"]),
        "--out-dim", str(DIGITS_RECIPE["out_dim"]),
        "--hf-prob", "0", "--vf-prob", "0", "--rr-prob", "0",
        "--epochs", "100000", "--minutes", f"{minutes:.2f}", "--eval",
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    print(output.strip().splitlines()[-1])
    rows = {}
    for label, name in (
        ("untrained", "lightly: untrained + SVC"),
        ("lightly DINO", "lightly DINO + SVC"),
    ):
        match = re.search(rf"^{label}\s+N=1/5/10/25: ([\d. ]+?)\s*(\(|$)", output, re.MULTILINE)
        means = [float(value) for value in match.group(1).split()]
        rows[name] = {n: np.array([m]) for n, m in zip((1, 5, 10, 25), means, strict=True)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lightly", type=Path, default=DEFAULT_PEER, help="peer script")
    args = parser.parse_args()

    params = {**DIGITS_RECIPE, "random_state": args.seed, "verbose": 0}
    if args.epochs is not None:
        params["epochs"] = args.epochs
    rows, trained, minutes = compare_on_digits(params)
    n_images = len(load_demo()[1])
    steps = params["epochs"] * (n_images // params["batch_size"])
    print(f"sparsam: {params['epochs']} epochs = {steps} steps in {minutes:.1f} min")
    if args.lightly.exists():
        rows.update(run_lightly(args.lightly, minutes))
    else:
        print(f"peer not run: {args.lightly} not found")
    print("\nBalanced accuracy, mean ± std over 5 draws, N labeled images per class:\n")
    print(format_few_shot_table(rows))
    gain = rows["DINO features + SVC"][10].mean() - rows["untrained backbone + SVC"][10].mean()
    print(f"\nN=10: DINO - untrained = {gain:+.3f}")
    if "lightly DINO + SVC" in rows:
        peer = rows["lightly DINO + SVC"][10].mean()
        print(f"N=10: sparsam - lightly = {rows['DINO features + SVC'][10].mean() - peer:+.3f}")
    history = trained.history_
    print("\nsparsam training curve (every 5th epoch):")
    columns = ("loss", "teacher_entropy", "teacher_mean_entropy", "kl")
    print("epoch" + "".join(f"{name:>22}" for name in columns))
    for epoch in range(0, len(history["loss"]), 5):
        print(f"{epoch + 1:5d}" + "".join(f"{history[name][epoch]:22.3f}" for name in columns))
    print(f"ln(out_dim) = {np.log(params['out_dim']):.3f}")


if __name__ == "__main__":
    main()
