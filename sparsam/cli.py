"""The ``sparsam`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .backbones import PRETRAINED_BACKBONES, convert_checkpoint, push_backbone

__all__ = ["DIGITS_RECIPE", "compare_on_digits", "load_digits_images", "main", "run_demo"]

# The small-data recipe found on digits; benchmarks/RESULTS.md has the measurements behind
# each choice and docs/small_data_recipe.md explains them.
DIGITS_RECIPE: dict[str, Any] = {
    "backbone": "vit_small_patch16_224",
    # 4 blocks, 96 wide, patch 4 at 16 px: 16 tokens, ~0.15 s per step of 64 images on 2 cores.
    "backbone_kwargs": {"embed_dim": 96, "depth": 4, "num_heads": 3, "patch_size": 4},
    "image_size": 16,
    "local_crop_size": 8,
    "local_crops": 6,
    "batch_size": 64,
    "epochs": 60,
    "global_crop_scale": (0.4, 1.0),
    "local_crop_scale": (0.1, 0.4),
    # Digits have an up and a down: flips and large rotations would destroy the label.
    "horizontal_flip": 0.0,
    "vertical_flip": 0.0,
    "rotation": 15.0,
    "perspective": 0.0,
    "out_dim": 256,
    "head_hidden_dim": 512,
    "head_bottleneck_dim": 64,
    "koleo_weight": 0.1,
    "lr": 2e-3,
    "warmup_epochs": 10,
    "teacher_momentum": 0.99,
    "teacher_temperature": 0.04,
    "precision": "fp32",
}


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real 8x8 digits as float images in [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target


def compare_on_digits(
    params: dict[str, Any],
) -> tuple[dict[str, dict[int, np.ndarray]], Any, float]:
    """Few-shot scores on digits of DINO features, the untrained backbone and raw pixels.

    Parameters
    ----------
    params : dict
        ``DinoFeaturizer`` parameters, e.g. ``DIGITS_RECIPE`` plus ``random_state``.

    Returns
    -------
    rows : dict
        Method name to ``{labels per class: balanced accuracy per draw}``.
    trained : DinoFeaturizer
        The fitted featurizer (its ``history_`` holds the training curve).
    minutes : float
        Wall-clock minutes of DINO training.
    """
    from .featurizer import DinoFeaturizer
    from .model_selection import few_shot_scores

    images, labels = load_digits_images()
    started = time.perf_counter()
    trained = DinoFeaturizer(**params).fit(images)
    minutes = (time.perf_counter() - started) / 60
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        untrained = DinoFeaturizer(**{**params, "epochs": 0}).fit(images)
    rows = {
        "DINO features + SVC": few_shot_scores(trained.transform(images), labels),
        "untrained backbone + SVC": few_shot_scores(untrained.transform(images), labels),
        "raw pixels + SVC": few_shot_scores(images.reshape(len(images), -1), labels),
    }
    return rows, trained, minutes


def run_demo(
    epochs: int | None = None, random_state: int = 0, verbose: int = 1
) -> dict[str, dict[int, np.ndarray]]:
    """Pretrain on digits with DINO and print few-shot accuracy against two baselines.

    Returns
    -------
    rows : dict
        Method name to ``{labels per class: balanced accuracy per draw}``.
    """
    from .model_selection import format_few_shot_table

    params = {**DIGITS_RECIPE, "random_state": random_state, "verbose": verbose}
    if epochs is not None:
        params["epochs"] = epochs
    rows, trained, minutes = compare_on_digits(params)
    history = trained.history_
    print(
        f"\nDINO on digits: {params['epochs']} epochs in {minutes:.1f} min; final loss "
        f"{history['loss'][-1]:.3f}, teacher entropy {history['teacher_entropy'][-1]:.2f} "
        f"(ln(out_dim) = {np.log(params['out_dim']):.2f})"
    )
    print("Balanced accuracy, mean ± std over 5 draws, N labeled images per class:\n")
    print(format_few_shot_table(rows))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sparsam`` console script."""
    parser = argparse.ArgumentParser(prog="sparsam", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="pretrain a small ViT with DINO on the bundled digits and print a few-shot table",
    )
    demo.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    demo.add_argument("--seed", type=int, default=0, help="random_state of the featurizer")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    convert = commands.add_parser(
        "convert",
        help="convert one of the paper's original .pt checkpoints to timm's Hub format",
        description=(
            "Convert a checkpoint of Nielsen et al. 2023 (pretrained_bm.pt, pretrained_endo.pt, "
            "pretrained_isic.pt; Zenodo record 10391339) to a directory with config.json, "
            "model.safetensors and a model card, loadable with sparsam.load_backbone and "
            "timm.create_model('local-dir:OUTDIR', pretrained=True)."
        ),
    )
    convert.add_argument("checkpoint", help="the original .pt file (read with weights_only=True)")
    convert.add_argument("outdir", help="output directory (replaced if it holds a saved model)")
    convert.add_argument(
        "--name",
        choices=sorted(PRETRAINED_BACKBONES),
        default=None,
        help="which of the paper's backbones it is (names its training data in the card)",
    )
    convert.add_argument(
        "--architecture",
        default="xcit_small_12_p8_224",
        help="timm model name (default: the paper's xcit_small_12_p8_224)",
    )
    convert.add_argument(
        "--image-size", type=int, default=256, help="training image size (default: 256)"
    )
    push = commands.add_parser(
        "push",
        help="upload a saved backbone (config.json + model.safetensors) to the Hugging Face Hub",
    )
    push.add_argument("directory", help="written by save_backbone or sparsam convert")
    push.add_argument("repo_id", help="Hub repository, org/name (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--revision", default=None, help="branch to commit to (created if missing)")
    push.add_argument(
        "--token",
        default=None,
        help="Hub token with write access (default: HF_TOKEN or the `hf auth login` token)",
    )
    push.add_argument("--message", default=None, help="commit message")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        run_demo(epochs=args.epochs, random_state=args.seed, verbose=0 if args.quiet else 1)
    elif args.command == "convert":
        try:
            path = convert_checkpoint(
                args.checkpoint,
                args.outdir,
                name=args.name,
                architecture=args.architecture,
                image_size=args.image_size,
            )
        except (ValueError, OSError) as error:
            print(f"sparsam convert: error: {error}", file=sys.stderr)
            return 1
        print(f"Converted {args.checkpoint} to {path}")
    elif args.command == "push":
        options = {"commit_message": args.message} if args.message else {}
        try:
            url = push_backbone(
                args.directory,
                args.repo_id,
                private=args.private,
                token=args.token,
                revision=args.revision,
                **options,
            )
        except (ValueError, OSError) as error:
            print(f"sparsam push: error: {error}", file=sys.stderr)
            return 1
        print(f"Pushed {args.directory} to {args.repo_id}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
