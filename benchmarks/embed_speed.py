"""Embedding speed: ``DinoFeaturizer.transform`` against a bare forward of the same backbone.

The bare forward is the limit: the backbone alone on ready, normalised tensors already on the
device, same batch and precision. ``transform`` is timed on uint8 arrays larger than the
model's input (resized on the way), on PNG files and on JPEG files, each measured in the same
run, and reported as images per second and as a ratio to the bare forward. Also prints what one
file's decoding costs in this process, the other physical limit of the file rows.

    python benchmarks/embed_speed.py                       # CPU: the small-data recipe's ViT
    python benchmarks/embed_speed.py --device cuda --backbone xcit_small_12_p8_224 \
        --backbone-kwargs '{}' --image-size 224 --source-size 256 --batch 256 --workers 14
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sparsam import DinoFeaturizer
from sparsam.recipes import small_data_recipe
from sparsam.training.precision import resolve_precision

RECIPE = small_data_recipe(image_size=32, n_images=2400)


def synthetic_images(n: int, side: int) -> np.ndarray:
    """Smooth seeded colour images (n, side, side, 3) uint8: cheap to make, not constant."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (n, side // 8, side // 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)


def write_files(images: np.ndarray, folder: Path, suffix: str) -> list[str]:
    paths = []
    for index, image in enumerate(images):
        path = folder / f"{index:06d}{suffix}"
        options = {"quality": 90} if suffix == ".jpg" else {}
        Image.fromarray(image).save(path, **options)
        paths.append(str(path))
    return paths


def decode_microseconds(paths: list[str], count: int = 200) -> float:
    started = time.perf_counter()
    for path in paths[:count]:
        with Image.open(path) as image:
            np.asarray(image.convert("RGB"))
    return (time.perf_counter() - started) / min(count, len(paths)) * 1e6


def best_rates(rows: list, device: torch.device, rounds: int) -> list[float]:
    """Images per second of every row's ``work()``, the best of ``rounds`` interleaved rounds.

    Each round times every row once, in turn (after one warm-up of each), so that a machine
    whose speed drifts (shared or throttled cores) slows all rows alike rather than the ones
    measured last.
    """
    for _, _, work, _ in rows:
        work()
    best = [float("inf")] * len(rows)
    for _ in range(rounds):
        for index, (_, _, work, _) in enumerate(rows):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            work()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best[index] = min(best[index], time.perf_counter() - started)
    return [n / seconds for (_, n, _, _), seconds in zip(rows, best, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=RECIPE["backbone"])
    parser.add_argument("--backbone-kwargs", default=json.dumps(RECIPE["backbone_kwargs"]))
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--source-size", type=int, default=64, help="side of the stored images")
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args()
    device = torch.device(args.device)

    featurizer = DinoFeaturizer(
        backbone=args.backbone,
        backbone_kwargs=json.loads(args.backbone_kwargs),
        image_size=args.image_size,
        epochs=0,
        batch_size=args.batch,
        num_workers=args.workers,
        device=args.device,
        precision=args.precision,
        random_state=0,
        verbose=0,
    )
    images = synthetic_images(args.n, args.source_size)
    featurizer.fit(images[:8])
    model = featurizer.backbone_.to(device)
    dtype = resolve_precision(args.precision, device)
    ready = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    n_bare = args.n // args.batch * args.batch

    def bare_forward() -> None:
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype or torch.float32, enabled=dtype is not None),
        ):
            for _ in range(n_bare // args.batch):
                model(ready)

    rows = [("bare forward (normalised tensors on the device)", n_bare, bare_forward, None)]
    with tempfile.TemporaryDirectory() as folder:
        rows.append(("transform, uint8 arrays", args.n, lambda: featurizer.transform(images), None))
        for suffix in (".png", ".jpg"):
            paths = write_files(images, Path(folder), suffix)
            label = f"transform, {suffix[1:].upper()} files"
            work = partial(featurizer.transform, paths)
            rows.append((label, args.n, work, decode_microseconds(paths)))
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(
            f"device={name} threads={torch.get_num_threads()} torch={torch.__version__} "
            f"precision={dtype or torch.float32} backbone={args.backbone} {args.backbone_kwargs} "
            f"image_size={args.image_size} source={args.source_size} px n={args.n} "
            f"batch={args.batch} num_workers={args.workers}"
        )
        print("| input | images/s | ratio to bare forward | decode of one file |")
        print("| --- | --- | --- | --- |")
        rates = best_rates(rows, device, args.repeats)
        bare = rates[0]
        for (label, _, _, decode), rate in zip(rows, rates, strict=True):
            cost = f"{decode:.0f} µs" if decode is not None else ""
            print(f"| {label} | {rate:,.0f} | {rate / bare:.2f} | {cost} |")


if __name__ == "__main__":
    main()
