"""Why DINO from scratch loses to raw pixels on some small data sets: one table of ablations.

Issue 18, item 4. Each arm changes one setting of `small_data_recipe` (the teacher's
temperature and centre, the colour augmentation, the crop scales, the number of steps) and
trains once on each of the five data sets of ``readout_suite.py``, without labels. It scores
the recipe's read-out (CLS and mean patch token of all 4 blocks) and the last CLS token with
the protocol of ``few_shot_scores`` (SVC, stratified test half, 5 draws, balanced accuracy)
and measures the features' effective rank (Roy & Vetterli 2007: exp of the entropy of the
normalised singular values of the centred features), the collapse that would explain a loss.

Then, leave one data set out: for each data set, the arm with the best mean N=10 on the
other four, and that arm's score on the held-out set. A change to the recipe is made on that
number only.

Arms train at half the recipe's steps unless named otherwise, so that the table fits one
session; ``--shard i/n`` splits the jobs between processes (``--threads`` each) and
``--report`` prints the table from the log alone.

    python benchmarks/recipe_ablations.py [--arms ...] [--datasets ...] [--shard 0/2]
    python benchmarks/recipe_ablations.py --report
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from memory import cpu_model
from readout_suite import MAKERS, load, scores

from sparsam import DinoFeaturizer
from sparsam.recipes import small_data_recipe

DEFAULT_LOG = Path(__file__).with_name("recipe_ablations_runs.jsonl")
DATASETS = ["digits", *MAKERS]
# name: (changes to the recipe, fraction of the recipe's steps)
ARMS: dict[str, tuple[dict, float]] = {
    "recipe": ({}, 0.5),
    "recipe, all steps": ({}, 1.0),
    "recipe, twice the steps": ({}, 2.0),
    "teacher temperature 0.07": ({"teacher_temperature": 0.07}, 0.5),
    "centre momentum 0.99": ({"center_momentum": 0.99}, 0.5),
    "DINO's colour (hue, saturation, grey)": (
        {"color_jitter": (0.4, 0.4, 0.2, 0.1), "grayscale": 0.2},
        0.5,
    ),
    "local crops (0.25, 0.6)": ({"local_crop_scale": (0.25, 0.6)}, 0.5),
    "global crops (0.7, 1.0)": ({"global_crop_scale": (0.7, 1.0)}, 0.5),
}
QUICK = ["recipe", "teacher temperature 0.07", "centre momentum 0.99",
         "DINO's colour (hue, saturation, grey)", "local crops (0.25, 0.6)",
         "global crops (0.7, 1.0)"]  # fmt: skip
READOUTS = {"cls+mean/4": ("cls+mean", 4), "cls/1": ("cls", 1)}


def effective_rank(features: np.ndarray) -> float:
    """exp(entropy) of the normalised singular values of the centred features."""
    singular = np.linalg.svd(features - features.mean(0), compute_uv=False)
    p = singular / singular.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def evaluate(featurizer: DinoFeaturizer, images: np.ndarray, labels: np.ndarray) -> dict:
    result = {}
    for name, (pooling, blocks) in READOUTS.items():
        features = featurizer.set_params(pooling=pooling, n_last_blocks=blocks).transform(images)
        result[name] = {**scores(features, labels), "rank": effective_rank(features)}
    return result


def run(arm: str, dataset: str, args: argparse.Namespace) -> dict:
    changes, fraction = ARMS[arm]
    images, labels = load(dataset)
    params = small_data_recipe(image_size=images.shape[1], n_images=len(images))
    params.update(changes, random_state=args.seed, verbose=0)
    params["epochs"] = max(1, round(params["epochs"] * fraction))
    params["warmup_epochs"] = max(1, params["epochs"] // 6)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        featurizer = DinoFeaturizer(**params).fit(images)
        minutes = (time.perf_counter() - started) / 60
        row = {"arm": arm, "dataset": dataset, "epochs": params["epochs"]}
        row.update(evaluate(featurizer, images, labels))
        if arm == "recipe":
            row["untrained"] = evaluate(DinoFeaturizer(**{**params, "epochs": 0}).fit(images),
                                        images, labels)  # fmt: skip
            flat = images.reshape(len(images), -1).astype(np.float32)
            row["raw pixels"] = {**scores(flat, labels), "rank": effective_rank(flat)}
    row.update(seed=args.seed, minutes=round(minutes, 2), threads=torch.get_num_threads(),
               cpu=cpu_model(), time=time.strftime("%Y-%m-%dT%H:%M:%S"))  # fmt: skip
    with args.log.open("a") as file:
        file.write(json.dumps(row) + "\n")
    return row


def report(log: Path, readout: str = "cls+mean/4") -> None:
    rows = {}
    for line in log.read_text().splitlines():
        row = json.loads(line)
        rows[row["arm"], row["dataset"]] = row  # the newest run of a job wins
    datasets = [d for d in DATASETS if ("recipe", d) in rows]
    arms = [a for a in ARMS if all((a, d) in rows for d in datasets)]
    print(f"Read-out {readout}; N=1 / N=10 balanced accuracy, effective rank of the features")
    print(f"{'arm':<40}" + "".join(f"{d:>24}" for d in datasets))

    def cell(values: dict) -> str:
        rank = "     -" if values["rank"] is None else f"{values['rank']:6.1f}"
        return f"{values['N=1']:7.3f} /{values['N=10']:6.3f} r{rank}"

    def line(name, get):
        print(f"{name:<40}" + "".join(cell(get(d)) for d in datasets))

    line("raw pixels", lambda d: rows["recipe", d]["raw pixels"])
    line("untrained (recipe's ViT)", lambda d: rows["recipe", d]["untrained"][readout])
    for arm in arms:
        epochs = "/".join(str(rows[arm, d]["epochs"]) for d in datasets[:2])
        line(f"{arm} ({epochs} ep.)", lambda d, a=arm: rows[a, d][readout])
    # Two choices, each among arms that differ in it alone: one change at half the steps
    # (against the recipe at half the steps), and the number of steps of the recipe itself.
    choices = {
        "one change, half the steps": [a for a in arms if ARMS[a][1] == 0.5],
        "number of steps": [a for a in arms if not ARMS[a][0]],
    }
    for choice, candidates in choices.items():
        print(f"\nLeave one data set out, {choice}: the arm with the best mean N=10 on the others")
        print(f"{'held out':<12} {'chosen':<40} {'N=1':>6} {'N=10':>6} {'recipe N=10':>12}"
              f" {'raw N=10':>9}")  # fmt: skip
        for held in datasets:
            others = [d for d in datasets if d != held]

            def mean_on_others(arm, others=others):
                return np.mean([rows[arm, d][readout]["N=10"] for d in others])

            best = max(candidates, key=mean_on_others)
            chosen = rows[best, held][readout]
            print(f"{held:<12} {best:<40} {chosen['N=1']:6.3f} {chosen['N=10']:6.3f} "
                  f"{rows['recipe', held][readout]['N=10']:12.3f} "
                  f"{rows['recipe', held]['raw pixels']['N=10']:9.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=QUICK, choices=list(ARMS))
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th job from the i-th")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=Path, default=DEFAULT_LOG)
    parser.add_argument("--report", action="store_true", help="print the table from --log")
    parser.add_argument("--readout", default="cls+mean/4", choices=list(READOUTS))
    args = parser.parse_args()
    if not args.report:
        torch.set_num_threads(args.threads)
        index, count = (int(part) for part in args.shard.split("/"))
        jobs = [(a, d) for a in args.arms for d in args.datasets][index::count]
        print(f"CPU: {cpu_model()}, {args.threads} threads, torch {torch.__version__}, "
              f"{len(jobs)} jobs")  # fmt: skip
        for arm, dataset in jobs:
            row = run(arm, dataset, args)
            print(f"{arm:<40} {dataset:<12} {row['minutes']:5.1f} min "
                  f"N=10 {row['cls+mean/4']['N=10']:.3f}", flush=True)  # fmt: skip
    report(args.log, args.readout)


if __name__ == "__main__":
    main()
