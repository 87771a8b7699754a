"""Before/after few-shot accuracy on digits for the DINO training fixes of issue 7.

Each row trains sparsam's digits recipe (``sparsam.recipes.DIGITS_RECIPE``, fewer epochs) with one
change and prints balanced accuracy with N labeled images per class (SVC on the teacher's
features, the protocol of ``sparsam.model_selection.few_shot_scores``: stratified halves,
5 draws). "Before" rows restore the old behaviour of one item only:

1. teacher BatchNorm: a small XCiT (BatchNorm inside) at 32 px, with the old teacher (eval
   mode: BatchNorm on its initial running statistics) against DINO's (batch statistics),
   and DINO's weights embedded with 0/1 statistics or statistics of the clean images;
2. pretrained start: DINO continued from a saved backbone with the student left in the eval
   mode ``load_backbone`` returns (drop-path off) against train mode;
3. KoLeo: the old mean over the two global crops equals the new sum at half the weight;
4. gradient clipping: the global norm against DINO's per-parameter norms;
5. perspective: 0.2 with p=0.5 against the original sparsam recipe's 0.5 with p=(0.75, 0.5,
   0.5) (the digits recipe itself turns perspective off).

One training seed per row: differences of about 0.02 are within the noise of a seed.

    python benchmarks/training_fixes.py [--epochs 20] [--continue-epochs 6] [--rows 1 2 ...]
"""

from __future__ import annotations

import argparse
import copy
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparsam import DinoFeaturizer, save_backbone
from sparsam.data import iter_batches
from sparsam.datasets import load_demo
from sparsam.model_selection import few_shot_scores, format_few_shot_table
from sparsam.recipes import DIGITS_RECIPE
from sparsam.training.augment import normalize
from sparsam.training.callbacks import Callback

XCIT = {
    "backbone": "xcit_small_12_p8_224",
    "backbone_kwargs": {"embed_dim": 96, "depth": 4, "num_heads": 3},
    "image_size": 32,
    "local_crop_size": 16,
}


class LegacyTrainingModes(Callback):
    """sparsam <= 0.1.0.dev0: teacher wholly in eval mode, student left as it came.

    Today's loop puts the student in train mode and the teacher's BatchNorm in train mode
    whenever it sets the training modes (at the start, and after every measurement of the
    teacher); this callback restores the old modes before every epoch's first step, so every
    step trains in them. ``student_training`` is the mode the backbone came in: train for
    timm's fresh models, eval for a saved backbone (``load_backbone`` returns eval mode).
    """

    def __init__(self, student_training: bool) -> None:
        self.student_training = student_training

    def on_epoch_start(self, trainer, epoch):
        trainer.teacher.eval()
        trainer.student.backbone.train(self.student_training)


def set_batch_norm_statistics(featurizer: DinoFeaturizer, images: np.ndarray, how: str) -> None:
    """Reset the backbone's BatchNorm statistics to 0/1, or recompute them on clean images."""
    norms = [
        module
        for module in featurizer.backbone_.modules()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
    ]
    for norm in norms:
        norm.reset_running_stats()
    if how == "clean":
        config = featurizer.data_config_
        for norm in norms:
            norm.momentum = None  # a cumulative average over all batches
            norm.train()
        with torch.no_grad():
            for batch in iter_batches(images, config["image_size"], 64, 0):
                featurizer.backbone_(normalize(batch, config["mean"], config["std"]))
        for norm in norms:
            norm.momentum = 0.1
            norm.eval()
    del featurizer.weights_digest_


def train(params: dict[str, Any], images: np.ndarray) -> tuple[DinoFeaturizer, float]:
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # untrained / short-run collapse notes
        featurizer = DinoFeaturizer(**params).fit(images)
    return featurizer, (time.perf_counter() - started) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--continue-epochs", type=int, default=6)
    parser.add_argument("--rows", type=int, nargs="*", default=[1, 2, 3, 4, 5])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images, labels, _ = load_demo()
    recipe = {**DIGITS_RECIPE, "epochs": args.epochs, "random_state": args.seed, "verbose": 0}
    rows: dict[str, dict[int, np.ndarray]] = {}
    minutes: dict[str, float] = {}

    def measure(name: str, params: dict[str, Any], legacy: bool = False) -> DinoFeaturizer:
        if legacy:
            fresh = params.get("pretrained") in (None, "imagenet")
            params = {**params, "callbacks": [LegacyTrainingModes(student_training=fresh)]}
        featurizer, minutes[name] = train(params, images)
        rows[name] = few_shot_scores(featurizer.transform(images), labels)
        print(f"{name}: N=10 {rows[name][10].mean():.3f} ({minutes[name]:.1f} min)", flush=True)
        return featurizer

    print(f"CPU: {platform.processor() or platform.machine()}, torch threads "
          f"{torch.get_num_threads()}, {args.epochs} epochs per row", flush=True)  # fmt: skip
    recipe_fit = measure("ViT recipe (all fixes)", recipe)
    if 1 in args.rows:
        xcit = {**recipe, **XCIT}
        measure("1 XCiT: untrained", {**xcit, "epochs": 0})
        measure("1 XCiT: old teacher (eval BatchNorm)", xcit, legacy=True)
        fitted = measure("1 XCiT: DINO teacher (batch statistics)", xcit)
        # Same weights, other statistics at embedding time: does the row differ by training
        # or by normalisation?
        for name, statistics in (
            ("1 XCiT: same, embedded with 0/1 statistics", "reset"),
            ("1 XCiT: same, statistics of the clean images", "clean"),
        ):
            variant = copy.deepcopy(fitted)
            set_batch_norm_statistics(variant, images, statistics)
            rows[name] = few_shot_scores(variant.transform(images), labels)
            minutes[name] = 0.0
    if 2 in args.rows:
        with tempfile.TemporaryDirectory() as directory:
            saved = Path(directory) / "digits"
            save_backbone(recipe_fit, saved)
            resumed = {
                **recipe,
                "pretrained": str(saved),
                "epochs": args.continue_epochs,
                "warmup_epochs": 1,
                "backbone": DIGITS_RECIPE["backbone"],
            }
            measure("2 continued: student in eval mode (old)", resumed, legacy=True)
            measure("2 continued: student in train mode", resumed)
    if 3 in args.rows:
        measure("3 KoLeo mean over crops (old, = sum x 0.05)", {**recipe, "koleo_weight": 0.05})
    if 4 in args.rows:
        measure("4 global gradient clipping (old)", {**recipe, "clip_grad_mode": "global"})
    if 5 in args.rows:
        perspective = {"perspective": 0.2, "perspective_p": (0.5, 0.5, 0.5)}
        measure("5 perspective 0.2, p 0.5 (old default)", {**recipe, **perspective})
        perspective = {"perspective": 0.5, "perspective_p": (0.75, 0.5, 0.5)}
        measure("5 perspective 0.5, p .75/.5/.5 (new default)", {**recipe, **perspective})
    print("\nBalanced accuracy, mean ± std over 5 draws, N labeled images per class:\n")
    print(format_few_shot_table(rows))
    print("\nminutes of training per row: " + ", ".join(f"{m:.1f}" for m in minutes.values()))


if __name__ == "__main__":
    main()
