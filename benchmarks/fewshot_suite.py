"""Few-shot accuracy of DINO features on three unlike data sets: does training help?

For each data set of the suite (digits; synthetic cytology, where the class is morphology;
synthetic tissue textures, where it is texture and stain colour together; see
``sparsam.datasets.make_cytology`` and ``make_tissue_textures``) this trains sparsam's
small-data recipe (``sparsam.recipes.small_data_recipe``, chosen by image size and number of
images only) on all images without labels, then gives lightly's DINO loop the same backbone,
image size, crops, head, batch size, flips and rotation and the same wall-clock minutes, and
scores raw pixels, the untrained backbone, sparsam and the peer with one protocol: an SVC on
the features, a stratified half of the images as test set (random_state=0), 5 draws of N
labeled images per class, balanced accuracy, mean ± std.

Label-free signal: every run also records RankMe (``sparsam.model_selection.rankme``) of its
embeddings of 512 evenly spaced training images, at ``--snapshots`` points during training
(benchmark-side snapshots of the teacher; their time is not counted as training time). The
Spearman correlation between RankMe and the few-shot accuracy at N=10, per data set and pooled
over every run recorded in ``--log``, ends the output.

Every run appends one JSON line per scored embedding to ``--log``, so runs with other settings
(``--set name=value``, e.g. ``--set epochs=40 --set koleo_weight=0.2``) are kept, compared and
correlated, the losing ones included. Needs ``pip install lightly`` for the peer.

    python benchmarks/fewshot_suite.py [--datasets digits cytology textures] [--no-peer]
        [--set name=value ...] [--tag NAME] [--snapshots 4] [--log FILE] [--correlation-only]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

# benchmarks/memory.py (this folder is on sys.path when a script here runs); stdlib only.
from memory import cpu_model
from scipy.stats import spearmanr

from sparsam.data.cache import weights_digest
from sparsam.datasets import load_demo, make_cytology, make_tissue_textures
from sparsam.featurizer import DinoFeaturizer
from sparsam.model_selection import few_shot_scores, format_few_shot_table, rankme
from sparsam.recipes import small_data_recipe
from sparsam.training.callbacks import Callback

N_PER_CLASS = (1, 5, 10, 25)
RANKME_IMAGES = 512
DEFAULT_LOG = Path(__file__).with_name("fewshot_suite_runs.jsonl")


def load_suite_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, H, W, 3) and labels of one data set of the suite."""
    if name == "digits":
        images, labels, _ = load_demo()
        images = np.repeat(np.round(images * 255).astype(np.uint8)[..., None], 3, axis=-1)
        return images, labels
    make = {"cytology": make_cytology, "textures": make_tissue_textures}[name]
    images, labels, _ = make(2400, image_size=32, random_state=0)
    return images, labels


def rankme_subset(n_images: int) -> np.ndarray:
    """Evenly spaced indices: the same images for every run, without a random draw."""
    count = min(n_images, RANKME_IMAGES)
    return np.unique(np.round(np.linspace(0, n_images - 1, count)).astype(int))


def alpha_req(embeddings: np.ndarray) -> float:
    """α-ReQ (Agrawal et al., NeurIPS 2022): decay α of the covariance eigenspectrum, λ_i ~ i^-α.

    Fitted by least squares in log-log over the eigenvalues above 1e-10 of the largest; the
    paper found downstream accuracy best near α = 1, so ``-abs(α - 1)`` is the score ranked.
    """
    centred = embeddings - embeddings.mean(axis=0)
    eigenvalues = np.linalg.svd(centred.astype(np.float64), compute_uv=False) ** 2
    eigenvalues = eigenvalues[eigenvalues > 1e-10 * eigenvalues[0]]
    ranks = np.arange(1, len(eigenvalues) + 1)
    slope, _ = np.polyfit(np.log(ranks), np.log(eigenvalues), 1)
    return float(-slope)


def label_free(features: np.ndarray, subset: np.ndarray) -> dict:
    """RankMe and α-ReQ of the embeddings of the fixed subset."""
    return {"rankme": rankme(features[subset]), "alpha_req": alpha_req(features[subset])}


class Snapshots(Callback):
    """Keeps a CPU copy of the teacher backbone's weights after chosen epochs (1-based)."""

    def __init__(self, epochs: frozenset[int]) -> None:
        self.epochs = epochs
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_epoch_end(self, trainer, epoch, row):
        if epoch + 1 in self.epochs:
            state = trainer.backbone.state_dict()
            self.weights[epoch + 1] = {
                name: value.to("cpu", copy=True) for name, value in state.items()
            }


def score(features: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return few_shot_scores(features, labels, n_per_class=N_PER_CLASS)


def record(log: Path, entry: dict) -> None:
    with log.open("a") as file:
        file.write(json.dumps(entry) + "\n")


def run_sparsam(images, labels, params, snapshots, entry, log):
    """Train with snapshots; returns (final scores, minutes of training)."""
    epochs = params["epochs"]
    # The final teacher is scored below, through the fitted featurizer.
    watched = frozenset(math.ceil(epochs * k / (snapshots + 1)) for k in range(1, snapshots + 1))
    snapshot = Snapshots(watched - {epochs})
    featurizer = DinoFeaturizer(**params, callbacks=[snapshot])
    started = time.perf_counter()
    featurizer.fit(images)
    minutes = (time.perf_counter() - started) / 60
    subset = rankme_subset(len(images))
    # Snapshots are scored once fit is over: the fitted featurizer's transform, with each
    # snapshot's weights (copying a few backbones costs far less time than embedding).
    for epoch, weights in sorted(snapshot.weights.items()):
        frozen = copy.deepcopy(featurizer)
        frozen.backbone_.load_state_dict(weights)
        # Other weights, another key: a memory cache must not return the final teacher's.
        frozen.weights_digest_ = weights_digest(frozen.backbone_, frozen.data_config_)
        features = frozen.transform(images)
        scores = score(features, labels)
        record(
            log,
            {**entry, "epoch": epoch, **label_free(features, subset), **_scores(scores)},
        )
    features = featurizer.transform(images)
    scores = score(features, labels)
    history = featurizer.history_
    record(
        log,
        {
            **entry,
            "epoch": epochs,
            "minutes": minutes,
            **label_free(features, subset),
            "rankme_history": history.get("rankme"),
            "initial_rankme": getattr(featurizer, "initial_rankme_", None),
            "final_loss": history["loss"][-1],
            **_scores(scores),
        },
    )
    return scores, minutes


def run_untrained(images, labels, params, entry, log):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        featurizer = DinoFeaturizer(**{**params, "epochs": 0}).fit(images)
    features = featurizer.transform(images)
    scores = score(features, labels)
    subset = rankme_subset(len(images))
    record(log, {**entry, "arm": "untrained", "epoch": 0, **label_free(features, subset),
                 **_scores(scores)})  # fmt: skip
    return scores


def run_peer(images, labels, params, minutes, entry, log):
    """lightly's DINO loop (as ../shared/bench/lightly_dino_ref.py) for ``minutes``."""
    import timm
    from lightly.loss import DINOLoss
    from lightly.models.modules import DINOProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.transforms.dino_transform import DINOTransform
    from PIL import Image

    size = params["image_size"]
    torch.manual_seed(params["random_state"])
    pil_images = [Image.fromarray(image).resize((size, size), Image.BICUBIC) for image in images]
    transform = DINOTransform(
        global_crop_size=size,
        local_crop_size=params["local_crop_size"],
        n_local_views=params["local_crops"],
        hf_prob=params["horizontal_flip"],
        vf_prob=params["vertical_flip"],
        rr_prob=0.5 if params["rotation"] >= 90 else 0.0,
        cj_prob=0.8,
        random_gray_scale=0.2,
        solarization_prob=0.2,
    )

    class Views(torch.utils.data.Dataset):
        def __len__(self):
            return len(pil_images)

        def __getitem__(self, index):
            return transform(pil_images[index])

    kwargs = dict(params["backbone_kwargs"])
    loader = torch.utils.data.DataLoader(
        Views(), batch_size=params["batch_size"], shuffle=True, drop_last=True, num_workers=1
    )
    student = timm.create_model(
        params["backbone"], img_size=size, num_classes=0, dynamic_img_size=True, **kwargs
    )
    dim = student.num_features
    head = params["head_hidden_dim"], params["head_bottleneck_dim"], params["out_dim"]
    student_head = DINOProjectionHead(dim, *head, freeze_last_layer=1)
    teacher, teacher_head = copy.deepcopy(student), DINOProjectionHead(dim, *head)
    deactivate_requires_grad(teacher)
    deactivate_requires_grad(teacher_head)
    criterion = DINOLoss(output_dim=params["out_dim"], warmup_teacher_temp_epochs=5)
    parameters = list(student.parameters()) + list(student_head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=5e-4 * params["batch_size"] / 256,
                                  weight_decay=0.04)  # fmt: skip
    started, steps, epoch = time.perf_counter(), 0, 0
    while time.perf_counter() - started < 60 * minutes:
        for views in loader:
            update_momentum(student, teacher, m=0.996)
            update_momentum(student_head, teacher_head, m=0.996)
            teacher_out = [teacher_head(teacher(view)) for view in views[:2]]
            student_out = [student_head(student(view)) for view in views]
            loss = criterion(teacher_out, student_out, epoch=epoch)
            loss.backward()
            student_head.cancel_last_layer_gradients(current_epoch=epoch)
            optimizer.step()
            optimizer.zero_grad()
            steps += 1
            if time.perf_counter() - started > 60 * minutes:
                break
        epoch += 1
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    pixels = torch.stack([torch.tensor(np.asarray(image)).permute(2, 0, 1) for image in pil_images])
    teacher.eval()
    with torch.inference_mode():
        batches = ((pixels.float() / 255 - mean) / std).split(256)
        features = torch.cat([teacher(batch) for batch in batches]).numpy()
    scores = score(features, labels)
    subset = rankme_subset(len(images))
    record(log, {**entry, "arm": "lightly", "epoch": epoch, "steps": steps, "minutes": minutes,
                 **label_free(features, subset), **_scores(scores)})  # fmt: skip
    print(f"  lightly: {steps} steps, {epoch} epochs in {minutes:.1f} min")
    return scores


def _scores(scores: dict[int, np.ndarray]) -> dict:
    return {"scores": {str(n): [float(v) for v in values] for n, values in scores.items()}}


MEASURES = {
    "RankMe": lambda entry: entry.get("rankme"),
    "α-ReQ (-|α-1|)": lambda entry: (
        -abs(entry["alpha_req"] - 1) if entry.get("alpha_req") is not None else None
    ),
}


def latest_runs(entries: list[dict]) -> list[dict]:
    """Only the newest run of each (data set, tag, seed): a rerun (e.g. to log α-ReQ) replaces
    the earlier one in the correlation tables instead of counting its points twice."""
    newest = {}
    for entry in entries:
        if entry["arm"] == "sparsam":
            newest[(entry["dataset"], entry["tag"], entry["seed"])] = entry["run"]
    return [
        entry
        for entry in entries
        if entry["arm"] != "sparsam"
        or newest[(entry["dataset"], entry["tag"], entry["seed"])] == entry["run"]
    ]


def correlation_table(log: Path, measure: str = "RankMe") -> str:
    """Spearman ρ between a label-free measure and mean accuracy at N=10 over DINO embeddings.

    Points: the untrained backbone (once per data set), every snapshot during training and
    every final teacher of sparsam's runs. Three readings: all points; final teachers and the
    untrained backbone only (does RankMe rank the settings?); and within each run over its
    epochs (does it pick the epoch?).
    """
    value = MEASURES[measure]
    entries = latest_runs(
        [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    )
    entries = [entry for entry in entries if value(entry) is not None]
    lines = [
        f"{measure}: Spearman ρ against balanced accuracy at N=10",
        "data set        points   ρ all points   ρ finals + untrained   ρ within runs (median)",
    ]
    pooled_rankme, pooled_accuracy = [], []
    for dataset in sorted({entry["dataset"] for entry in entries}):
        points, finals, untrained_seen = [], [], False
        for entry in entries:
            if entry["dataset"] != dataset or entry["arm"] not in ("sparsam", "untrained"):
                continue
            if entry["arm"] == "untrained":
                if untrained_seen:
                    continue
                untrained_seen = True
            point = (value(entry), float(np.mean(entry["scores"]["10"])), entry["run"])
            points.append(point)
            if entry["arm"] == "untrained" or "minutes" in entry:
                finals.append(point)
        if len(points) < 3:
            continue
        x, y, runs = zip(*points, strict=True)
        # Pooled over data sets, each data set's values as ranks, so that one set's higher
        # accuracy level does not count as agreement.
        pooled_rankme.extend(np.argsort(np.argsort(x)) / (len(x) - 1))
        pooled_accuracy.extend(np.argsort(np.argsort(y)) / (len(y) - 1))
        within = []
        for run in set(runs):
            run_points = [(a, b) for a, b, r in points if r == run]
            if len(run_points) >= 3:
                within.append(spearmanr(*zip(*run_points, strict=True)).statistic)
        rho = spearmanr(x, y).statistic
        final_rho = spearmanr(*zip(*[p[:2] for p in finals], strict=True)).statistic
        median = f"{np.median(within):.2f} over {len(within)} runs" if within else "-"
        lines.append(
            f"{dataset:<15} {len(x):>6}   {rho:>12.2f}   {final_rho:>14.2f} ({len(finals)} pts)"
            f"   {median:>22}"
        )
    if pooled_rankme:
        rho = spearmanr(pooled_rankme, pooled_accuracy).statistic
        lines.append(f"{'pooled (ranks)':<15} {len(pooled_rankme):>6}   {rho:>12.2f}")
    return "\n".join(lines)


def runs_table(log: Path) -> str:
    """One Markdown row per finished run in the log: data set, arm, settings, N=1/5/10/25."""
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    lines = [
        "| data set | arm | settings | minutes | RankMe | N=1 | N=5 | N=10 | N=25 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    names = {"raw": "raw pixels", "untrained": "untrained", "sparsam": "sparsam DINO",
             "lightly": "lightly DINO"}  # fmt: skip
    shown = set()
    for entry in entries:
        if entry["arm"] == "sparsam" and "minutes" not in entry:
            continue  # a snapshot during training
        # Raw pixels and the untrained backbone are the same in every run: shown once.
        key = (entry["dataset"], entry["arm"]) if entry["arm"] in ("raw", "untrained") else None
        if key is not None and key in shown:
            continue
        shown.add(key)
        settings = "" if key else entry["tag"]
        if not key and entry["overrides"]:
            settings += f" `{json.dumps(entry['overrides'])}`"
        cells = [
            f"{np.mean(entry['scores'][n]):.3f} ± {np.std(entry['scores'][n]):.3f}"
            for n in ("1", "5", "10", "25")
        ]
        minutes = f"{entry['minutes']:.1f}" if entry.get("minutes") else ""
        rank = f"{entry['rankme']:.1f}" if entry.get("rankme") is not None else ""
        lines.append(
            f"| {entry['dataset']} | {names[entry['arm']]} | {settings} | {minutes} | {rank} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def parse_settings(pairs: list[str]) -> dict:
    settings = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        settings[name] = json.loads(value)
    return settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "cytology", "textures"])
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=JSON",
                        help="override a recipe setting, e.g. --set koleo_weight=0.2")  # fmt: skip
    parser.add_argument("--tag", default="recipe", help="name of this configuration in the log")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snapshots", type=int, default=4, help="RankMe/accuracy snapshots")
    parser.add_argument("--no-peer", action="store_true", help="skip lightly's loop")
    parser.add_argument("--log", type=Path, default=DEFAULT_LOG)
    parser.add_argument(
        "--correlation-only", action="store_true", help="print the log's tables and stop"
    )
    args = parser.parse_args(argv)
    if args.correlation_only:
        print(runs_table(args.log))
        for measure in MEASURES:
            print(f"\n{correlation_table(args.log, measure)}")
        return
    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    overrides = parse_settings(args.settings)
    tables = []
    for dataset in args.datasets:
        images, labels = load_suite_dataset(dataset)
        params = {
            **small_data_recipe(image_size=images.shape[1], n_images=len(images)),
            **overrides,
            "random_state": args.seed,
            "verbose": 0,
        }
        run = f"{args.tag}/{dataset}/seed{args.seed}/{time.strftime('%Y%m%dT%H%M%S')}"
        entry = {"dataset": dataset, "tag": args.tag, "run": run, "seed": args.seed,
                 "overrides": overrides, "cpu": cpu_model()}  # fmt: skip
        print(
            f"{dataset}: {len(images)} images of {images.shape[1]} px -> "
            f"{params['image_size']} px, {params['epochs']} epochs, "
            f"settings {json.dumps(overrides)}",
            flush=True,
        )
        rows = {"raw pixels": score(images.reshape(len(images), -1).astype(np.float32), labels)}
        record(args.log, {**entry, "arm": "raw", "epoch": 0, **_scores(rows["raw pixels"])})
        rows["untrained backbone"] = run_untrained(images, labels, params, entry, args.log)
        scores, minutes = run_sparsam(
            images, labels, params, args.snapshots, {**entry, "arm": "sparsam"}, args.log
        )
        rows["sparsam DINO"] = scores
        steps = params["epochs"] * (len(images) // params["batch_size"])
        print(f"  sparsam: {steps} steps in {minutes:.1f} min", flush=True)
        if not args.no_peer:
            rows["lightly DINO (same minutes)"] = run_peer(
                images, labels, params, minutes, entry, args.log
            )
        gain = rows["sparsam DINO"][10].mean() - rows["untrained backbone"][10].mean()
        table = format_few_shot_table({f"{dataset}: {name}": row for name, row in rows.items()})
        tables.append(f"{table}\nN=10: sparsam DINO - untrained = {gain:+.3f} "
                      f"({minutes:.1f} min)")  # fmt: skip
        print(tables[-1], flush=True)
    print("\nBalanced accuracy, mean ± std over 5 draws, N labeled images per class:\n")
    print("\n\n".join(tables))
    print("\nLabel-free measures against few-shot accuracy, every run in", args.log.name)
    for measure in MEASURES:
        print(f"\n{correlation_table(args.log, measure)}")


if __name__ == "__main__":
    main()
