"""Read-outs and label-chosen snapshots on five unlike data sets, judged leave-one-data-set-out.

Issue 18: a default chosen on the data sets that chose it proves little. For each data set of
the grown suite (digits; synthetic cytology, tissue textures, chest radiographs, skin lesions;
``sparsam.datasets``) this trains the small-data recipe once, with ``fit(X, y)`` given the
labels of 10 images per class drawn from the few-shot protocol's training half (draw 0; the
test half is never labeled), and epoch checkpoints. It then scores, with the protocol of
``few_shot_scores`` (an SVC on the features, a stratified test half, 5 draws of N labels per
class, balanced accuracy):

- raw pixels; the untrained backbone and DINO's last epoch (read from its last checkpoint)
  under every read-out (``pooling`` x ``n_last_blocks``);
- the snapshot ``fit`` chose with those labels (the recipe's read-out).

Then, for every read-out, its score on each data set when the read-out is chosen on the
other four (leave one data set out), and the issue's targets. Every score goes to ``--log``
(JSON lines).

    python benchmarks/readout_suite.py [--datasets ...] [--epochs-scale 1.0] [--log FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from memory import cpu_model
from sklearn.model_selection import train_test_split

from sparsam import DinoFeaturizer
from sparsam.datasets import (
    load_demo,
    make_cytology,
    make_radiographs,
    make_skin_lesions,
    make_tissue_textures,
)
from sparsam.model_selection import few_shot_scores
from sparsam.recipes import small_data_recipe
from sparsam.training.checkpoints import list_checkpoints

N_PER_CLASS = (1, 5, 10, 25)
READOUTS = [("cls", 1), ("mean", 1), ("cls+mean", 1), ("cls", 4), ("cls+mean", 4)]
DEFAULT_LOG = Path(__file__).with_name("readout_suite_runs.jsonl")
MAKERS = {
    "cytology": make_cytology,
    "textures": make_tissue_textures,
    "radiographs": make_radiographs,
    "lesions": make_skin_lesions,
}


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        images, labels, _ = load_demo()
        return np.repeat(np.round(images * 255).astype(np.uint8)[..., None], 3, axis=-1), labels
    images, labels, _ = MAKERS[name](2400, image_size=32, random_state=0)
    return images, labels


def selection_labels(labels: np.ndarray, n: int = 10) -> np.ndarray:
    """``labels`` of draw 0's ``n`` images per class from the protocol's training half; -1
    elsewhere (the test half is never labeled)."""
    train, _ = train_test_split(
        np.arange(len(labels)), test_size=0.5, stratify=labels, random_state=0
    )
    rng = np.random.default_rng(0)
    chosen = np.concatenate(
        [rng.choice(train[labels[train] == c], n, replace=False) for c in np.unique(labels)]
    )
    y = np.full(len(labels), -1)
    y[chosen] = labels[chosen]
    return y


def scores(features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = few_shot_scores(features, labels, n_per_class=N_PER_CLASS)
    return {f"N={n}": float(values.mean()) for n, values in result.items()}


def last_epoch(featurizer: DinoFeaturizer, directory: Path) -> DinoFeaturizer:
    """A copy of ``featurizer`` whose backbone holds the teacher of the newest checkpoint."""
    state = torch.load(list_checkpoints(directory)[0], weights_only=True)["teacher"]
    prefix = "backbone."
    weights = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    last = copy.deepcopy(featurizer)
    last.backbone_.load_state_dict(weights)
    return last


def run(dataset: str, args: argparse.Namespace) -> list[dict]:
    images, labels = load(dataset)
    params = {**small_data_recipe(image_size=images.shape[1], n_images=len(images))}
    params["epochs"] = max(1, round(params["epochs"] * args.epochs_scale))
    params.update(random_state=args.seed, verbose=0)
    rows = [{"arm": "raw pixels", "readout": "", **scores(images.reshape(len(images), -1), labels)}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        untrained = DinoFeaturizer(**{**params, "epochs": 0}).fit(images)
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        chosen = DinoFeaturizer(**params, checkpoint_dir=directory, checkpoint_every=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            chosen.fit(images, selection_labels(labels))
        minutes = (time.perf_counter() - started) / 60
        trained = last_epoch(chosen, Path(directory))
    for arm, featurizer in (("untrained", untrained), ("DINO last epoch", trained)):
        for pooling, blocks in READOUTS:
            featurizer.set_params(pooling=pooling, n_last_blocks=blocks)
            features = featurizer.transform(images)
            rows.append({"arm": arm, "readout": f"{pooling}/{blocks}", **scores(features, labels)})
    rows.append(
        {
            "arm": "DINO, snapshot chosen by 10 labels per class",
            # The recipe's read-out (set_params above changed only the other two featurizers).
            "readout": f"{chosen.pooling}/{chosen.n_last_blocks}",
            "selected_epoch": chosen.selected_epoch_,
            "epochs": params["epochs"],
            "selection_scores": [
                chosen.initial_selection_score_,
                *chosen.history_.get("selection_score", []),
            ],
            **scores(chosen.transform(images), labels),
        }
    )
    stamp = {"dataset": dataset, "seed": args.seed, "minutes": round(minutes, 2),
             "cpu": cpu_model(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    rows = [{**stamp, **row} for row in rows]
    with args.log.open("a") as file:
        for row in rows:
            file.write(json.dumps(row) + "\n")
    return rows


def print_dataset(rows: list[dict]) -> None:
    dataset = rows[0]["dataset"]
    print(f"\n{dataset} ({rows[0]['minutes']:.1f} min of DINO training)")
    header = "".join(f"{n:>8}" for n in ("N=1", "N=5", "N=10", "N=25"))
    print(f"{'features':<48} {'read-out':<11}{header}")
    for row in rows:
        values = "".join(f"{row[f'N={n}']:8.3f}" for n in N_PER_CLASS)
        extra = ""
        if "selected_epoch" in row:
            extra = f"  (epoch {row['selected_epoch']} of {row['epochs']})"
        print(f"{row['arm']:<48} {row['readout']:<11}{values}{extra}")


def leave_one_out(results: dict[str, list[dict]]) -> None:
    """Each data set's DINO score at N=10 with the read-out chosen on the other data sets."""

    def value(dataset, arm, readout, n="N=10"):
        return next(r[n] for r in results[dataset] if r["arm"] == arm and r["readout"] == readout)

    names = [f"{pooling}/{blocks}" for pooling, blocks in READOUTS]
    print("\nLeave one data set out: the read-out with the best mean N=10 on the others")
    print(f"{'held out':<12} {'chosen':<11} {'DINO N=1':>9} {'N=10':>7} {'untrained N=1':>14} "
          f"{'N=10':>7} {'raw N=10':>9}")  # fmt: skip
    for held in results:
        others = [d for d in results if d != held]

        def mean_on_others(name, others=others):
            return np.mean([value(d, "DINO last epoch", name) for d in others])

        best = max(names, key=mean_on_others)
        print(
            f"{held:<12} {best:<11} {value(held, 'DINO last epoch', best, 'N=1'):9.3f} "
            f"{value(held, 'DINO last epoch', best):7.3f} "
            f"{value(held, 'untrained', best, 'N=1'):14.3f} {value(held, 'untrained', best):7.3f} "
            f"{value(held, 'raw pixels', ''):9.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", *MAKERS])
    parser.add_argument("--epochs-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=Path, default=DEFAULT_LOG)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    results = {}
    for dataset in args.datasets:
        results[dataset] = run(dataset, args)
        print_dataset(results[dataset])
    if len(results) > 1:
        leave_one_out(results)


if __name__ == "__main__":
    main()
