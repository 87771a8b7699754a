"""Does a change of the code's layout change what sparsam computes? Before/after, bit for bit.

Issue 21 moved most of the package. Run this on the commit before such a move and on the
result, on the same machine: it trains DINO with a small XCiT (BatchNorm runs) and a depth-3
ViT with drop-path, fine-tunes a `SupervisedClassifier`, and saves the embeddings, the
predicted probabilities and the final weights; the second run compares its own with the saved
ones exactly (``np.array_equal``). The first run also leaves checkpoints of a DINO run whose
newest checkpoints it deletes; the second run resumes from what is left (a mid-run
checkpoint, written by the old code) and must reach the uninterrupted run's embeddings.

Float results differ between CPU models, so this is a script run twice on one machine, not a
test with stored hashes.

    python benchmarks/same_outputs.py --save /tmp/before       # on the old commit
    python benchmarks/same_outputs.py --compare /tmp/before    # on the new one
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from sparsam import DinoFeaturizer, SupervisedClassifier
from sparsam.datasets import load_demo

COMMON = {"image_size": 16, "batch_size": 16, "device": "cpu", "random_state": 0}
DINO_RUNS = {
    "xcit": {
        **COMMON,
        "backbone": "xcit_small_12_p8_224",
        "backbone_kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2},
        "drop_path_rate": 0.2,
        "local_crop_size": 8,
        "epochs": 2,
    },
    "vit": {
        **COMMON,
        "backbone": "vit_tiny_patch16_224",
        "backbone_kwargs": {
            "patch_size": 4,
            "embed_dim": 32,
            "depth": 3,
            "num_heads": 2,
        },
        "drop_path_rate": 0.2,
        "local_crop_size": 8,
        "epochs": 2,
    },
}
SUPERVISED = {
    **COMMON,
    "backbone": "vit_tiny_patch16_224",
    "backbone_kwargs": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2},
    "epochs": 2,
}
# Mid-epoch checkpoints every few steps, so that one survives deleting the newest.
RESUMED = {**DINO_RUNS["vit"], "checkpoint_every": 4}
SUPERVISED_RESUMED = {**SUPERVISED, "epochs": 3}


def data() -> tuple[np.ndarray, np.ndarray]:
    images, labels, _ = load_demo()
    return images[:96], labels[:96]


def weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: value.detach().numpy().copy() for name, value in model.state_dict().items()}


def outputs(work: Path, fresh_checkpoints: bool) -> dict[str, np.ndarray]:
    images, labels = data()
    results: dict[str, np.ndarray] = {}
    for name, params in DINO_RUNS.items():
        featurizer = DinoFeaturizer(**params).fit(images)
        results[f"{name}/embeddings"] = featurizer.transform(images)
        for key, value in weights(featurizer.backbone_).items():
            results[f"{name}/weights/{key}"] = value
    classifier = SupervisedClassifier(**SUPERVISED).fit(images, labels)
    results["supervised/proba"] = classifier.predict_proba(images)
    results["supervised/predictions"] = classifier.predict(images)
    results.update(resumed_outputs(work, images, labels, fresh_checkpoints))
    return results


def resumed_outputs(
    work: Path, images: np.ndarray, labels: np.ndarray, fresh_checkpoints: bool
) -> dict[str, np.ndarray]:
    """Write checkpoints and delete the newest (old code), or resume from what is left (new)."""
    runs = {
        "dino": lambda directory: DinoFeaturizer(**RESUMED, checkpoint_dir=directory).fit(images),
        "supervised": lambda directory: SupervisedClassifier(
            **SUPERVISED_RESUMED, checkpoint_dir=directory
        ).fit(images, labels),
    }
    results = {}
    for name, run in runs.items():
        checkpoints = work / f"{name}_checkpoints"
        if fresh_checkpoints:
            results[f"{name}_uninterrupted/outputs"] = _outputs(run(checkpoints), images)
            # Step 12 is the end; step 8 (mid-epoch) or epoch 2 of 3 is left to resume from.
            max(checkpoints.glob("*_checkpoint_*.pt"), key=_step).unlink()
            continue
        copy = work.parent / f"{work.name}_{name}_resumed"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(checkpoints, copy)
        results[f"{name}_uninterrupted/outputs"] = _outputs(run(copy), images)
    return results


def _outputs(estimator, images: np.ndarray) -> np.ndarray:
    if isinstance(estimator, DinoFeaturizer):
        return estimator.transform(images)
    return estimator.predict_proba(images)


def _step(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


class _ResumeLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path, help="directory for this commit's outputs")
    group.add_argument("--compare", type=Path, help="directory written by --save")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        np.savez(args.save / "outputs.npz", **outputs(args.save, fresh_checkpoints=True))
        print(f"saved to {args.save}")
        return 0
    log = _ResumeLog()
    logging.getLogger("sparsam").addHandler(log)
    logging.getLogger("sparsam").setLevel(logging.INFO)
    now = outputs(args.compare, fresh_checkpoints=False)
    before = np.load(args.compare / "outputs.npz")
    different = [key for key in before.files if not np.array_equal(before[key], now[key])]
    print(f"{len(before.files) - len(different)} of {len(before.files)} arrays identical")
    for key in different:
        print(f"  DIFFERENT: {key}")
    resumed_from = [message for message in log.messages if message.startswith("Resuming")]
    print("resumes of the old commit's checkpoints (each must equal its uninterrupted run):")
    for message in resumed_from:
        print(f"  {message}")
    return 0 if not different and len(resumed_from) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
