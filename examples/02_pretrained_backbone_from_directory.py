"""Save a backbone to a directory and load it again: with sparsam and with plain timm.

A ``DinoFeaturizer`` is trained briefly on the bundled digits (``--epochs 0``: left untrained)
and its teacher backbone is written with ``sparsam.save_backbone`` in timm's Hugging Face Hub
format: ``config.json`` (architecture, the arguments that rebuild it, normalisation and input
size), ``model.safetensors`` and a ``README.md`` model card with the training recipe. The same
directory is then read three ways:

- ``DinoFeaturizer(pretrained=DIR, epochs=0)``: a featurizer that only loads, then embeds;
  its embeddings equal those of the featurizer that was saved;
- ``sparsam.load_backbone(DIR)``: the timm model itself (safetensors only, loaded strictly);
- ``timm.create_model("local-dir:DIR", pretrained=True)``: plain timm (checked with timm
  1.0.31), no sparsam needed, e.g. on a colleague's machine.

``sparsam push DIR org/name`` uploads the directory, after which ``"hf-hub:org/name"`` works
in all three.

Run it from the repository root::

    python examples/02_pretrained_backbone_from_directory.py                  # temporary DIR
    python examples/02_pretrained_backbone_from_directory.py --out backbones/digits

Under a minute on 2 CPU cores with the default 2 epochs.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import timm
import torch

import sparsam
from sparsam import DinoFeaturizer
from sparsam.datasets import load_demo
from sparsam.dino import CollapseWarning
from sparsam.recipes import DIGITS_RECIPE


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Save a backbone with sparsam.save_backbone and load it with "
        "DinoFeaturizer(pretrained=DIR), sparsam.load_backbone and timm (under a minute)."
    )
    parser.add_argument(
        "--epochs", type=int, default=2, help="DINO epochs before saving; 0: untrained (default: 2)"
    )
    parser.add_argument(
        "--n-images",
        type=int,
        default=None,
        help="train on the first N digits only (default: all 1,797)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory to save the backbone in (default: a temporary one, deleted at the end)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random state (default: 0)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    images, _, _ = load_demo()
    images = images[: args.n_images]
    recipe = {
        **DIGITS_RECIPE,
        "epochs": args.epochs,
        "warmup_epochs": min(DIGITS_RECIPE["warmup_epochs"], args.epochs // 4),
        "random_state": args.seed,
        "verbose": 0,
    }
    with tempfile.TemporaryDirectory(prefix="sparsam-backbone-") as scratch:
        directory = args.out if args.out is not None else Path(scratch, "digits-dino")
        with warnings.catch_warnings():
            # with --epochs 0, fit warns that random weights make weak features
            warnings.filterwarnings("ignore", message="epochs=0 with pretrained=None")
            # two epochs are too few to learn, as the warning would rightly say; what
            # matters here is that the weights travel to disk and back unchanged
            warnings.filterwarnings("ignore", category=CollapseWarning)
            trained = DinoFeaturizer(**recipe).fit(images)
        sparsam.save_backbone(trained, directory)
        print(f"saved to {directory}: {', '.join(sorted(p.name for p in directory.iterdir()))}")

        # 1. A featurizer that only loads: the input size comes from config.json; the
        # read-out (which tokens of which blocks) is a featurizer setting, given again.
        readout = {name: recipe[name] for name in ("pooling", "n_last_blocks")}
        loaded = DinoFeaturizer(pretrained=str(directory), epochs=0, verbose=0, **readout)
        loaded.fit(images)
        features = loaded.transform(images)
        same = np.array_equal(features, trained.transform(images))
        print(
            f"DinoFeaturizer(pretrained=DIR): {features.shape[0]} images -> {features.shape[1]} "
            f"features each, input {loaded.data_config_['image_size']} px; "
            f"{'the same' if same else 'NOT the same'} embeddings as the saved featurizer"
        )

        # 2. The timm model itself, e.g. to fine-tune it or to build your own preprocessing.
        backbone = sparsam.load_backbone(directory).eval()
        config = backbone.pretrained_cfg
        print(
            f"load_backbone(DIR): {type(backbone).__name__}, {backbone.num_features} features, "
            f"input_size {tuple(config['input_size'])}, mean {tuple(config['mean'])}, "
            f"std {tuple(config['std'])}"
        )

        # 3. Plain timm reads the same directory.
        batch = torch.rand(4, *config["input_size"], generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = backbone(batch)
        plain = timm.create_model(f"local-dir:{directory}", pretrained=True).eval()
        with torch.no_grad():
            agrees = torch.equal(plain(batch), expected)
        print(
            f'timm.create_model("local-dir:DIR", pretrained=True): {type(plain).__name__}, '
            f"{'the same' if agrees else 'NOT the same'} output as load_backbone"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
