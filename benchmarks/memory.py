"""Memory of streaming training and of embedding: peak RSS on 2,000 and on 20,000 image files.

Writes N 64x64 RGB PNG files (seeded, structured content; kept in ``--workdir`` and reused by
later runs), then, each in a fresh Python process, measures the peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of

- ``fit``: one epoch of DINO on the N files, streamed from them (``in_memory=False``);
- ``transform``: the embeddings of the N files (a featurizer "fitted" with ``epochs=0``:
  what is measured is memory, not the quality of the weights).

Each process also reports its peak after imports, listing the files and creating the model
(``setup``), so that the data-dependent part shows. Streaming should keep memory bounded by
the batch, not by the number of files: the target is a 20,000-file peak at most 1.3x the
2,000-file peak, for ``fit`` and for ``transform``.

Then trains on the first 2,000 files with the images decoded in memory and streamed,
alternately in one process, once per ``--throughput-workers`` value of ``num_workers``, and
prints the training throughput of each (images per second of the epochs after the first; the
one-off decoding of the in-memory form is printed apart) and their ratio (target: streaming
>= 0.8x in memory). The last line reads ``memory fit_ratio=<x> transform_ratio=<y>``.

The driving process imports neither torch nor sparsam: the peak RSS a process reports includes
that of the process it was forked from, up to its ``exec`` (Linux keeps the maximum across
``execve``), so a heavy parent would inflate every measurement.

    python benchmarks/memory.py [--sizes 2000 20000] [--workdir DIR] [--num-workers 0]
        [--threads 1] [--repeats 3] [--epochs 2] [--throughput-workers 0 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# A small ViT (depth 2, 64 wide, patch 8 at 32 px: 16 tokens) so that a run takes minutes on
# two CPU cores; weights and optimizer state take a few MiB, so what grows with the data shows.
PARAMS: dict[str, Any] = {
    "backbone": "vit_tiny_patch16_224",
    "backbone_kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2},
    "image_size": 32,
    "local_crop_size": 16,
    "local_crops": 2,
    "batch_size": 64,
    "out_dim": 256,
    "head_hidden_dim": 256,
    "head_bottleneck_dim": 64,
    "epochs": 1,
    "verbose": 0,
    "random_state": 0,
}
FILE_SIZE = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[2000, 20000], metavar="N")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "sparsam-memory-benchmark",
        help="where the image files are written and reused (default: %(default)s)",
    )
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--repeats", type=int, default=3, help="throughput repetitions")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per throughput fit")
    parser.add_argument(
        "--throughput-workers",
        type=int,
        nargs="*",
        default=[0, 1],
        metavar="W",
        help="num_workers of the throughput tables, one table each (default: 0 1; none: skip)",
    )
    parser.add_argument(
        "--measure", choices=["fit", "transform", "throughput"], help=argparse.SUPPRESS
    )
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        # A child process: measure one thing, print it as one JSON line.
        measure = {"fit": measure_fit, "transform": measure_transform}.get(args.measure)
        result = measure(args) if measure else measure_throughput(args)
        print(json.dumps(result))
        return

    small, large = sorted(args.sizes)
    started = time.perf_counter()
    written = write_images(args.workdir, large)
    print(
        f"memory benchmark, {time.strftime('%Y-%m-%d')}: CPU {cpu_model()} ({os.cpu_count()} "
        f"cores), torch {torch_version()}, Python {platform.python_version()}"
    )
    print(
        f"files: {large:,} {FILE_SIZE}x{FILE_SIZE} RGB PNG in {args.workdir} ({written:,} written "
        f"now); num_workers={args.num_workers}, torch threads={args.threads}"
    )
    print(f"model: {json.dumps(PARAMS)}")
    print()

    results: dict[tuple[str, int], dict[str, float]] = {}
    print(
        f"{'phase':<10} {'files':>7} {'setup MiB':>10} {'peak MiB':>9} {'peak-setup':>11} "
        f"{'seconds':>8}"
    )
    print("-" * 60)
    for phase in ("fit", "transform"):
        for n in (small, large):
            result = run_child(args, phase, n)
            results[phase, n] = result
            print(
                f"{phase:<10} {n:>7,} {result['setup_kib'] / 1024:>10.1f} "
                f"{result['peak_kib'] / 1024:>9.1f} "
                f"{(result['peak_kib'] - result['setup_kib']) / 1024:>11.1f} "
                f"{result['seconds']:>8.1f}"
            )
            if args.num_workers > 0:
                # Forked workers count the pages they share with this process, too.
                workers = result["children_kib"] / 1024
                print(f"{'':<10} {'':>7} largest worker's peak {workers:.1f} MiB")
            if abs(result["hwm_kib"] - result["peak_kib"]) > 0.05 * result["peak_kib"]:
                print(f"  note: VmHWM {result['hwm_kib'] / 1024:.1f} MiB differs from ru_maxrss")
    print(
        "setup: peak RSS after imports, listing the files and creating the model (a fit with "
        "epochs=0);\npeak: peak RSS of the whole process (ru_maxrss), one fresh process per row"
    )
    ratios = {
        phase: results[phase, large]["peak_kib"] / results[phase, small]["peak_kib"]
        for phase in ("fit", "transform")
    }
    print()
    for phase, ratio in ratios.items():
        verdict = "ok" if ratio <= 1.3 else "ABOVE TARGET"
        print(
            f"{phase}: peak({large:,}) / peak({small:,}) = {ratio:.2f} (target <= 1.3: {verdict})"
        )

    for num_workers in args.throughput_workers:
        print()
        print_throughput(args, small, num_workers)
    print(f"whole run: {time.perf_counter() - started:.0f} s")
    print()
    print(f"memory fit_ratio={ratios['fit']:.2f} transform_ratio={ratios['transform']:.2f}")


def print_throughput(args: argparse.Namespace, n_images: int, num_workers: int) -> None:
    """Train in memory and streamed, alternately in one process; print the table and ratio."""
    throughput = run_child(
        argparse.Namespace(**{**vars(args), "num_workers": num_workers}), "throughput", n_images
    )
    print(
        f"training throughput, num_workers={num_workers}: {n_images:,} files, {args.epochs} "
        f"epoch(s) per fit (the first not timed), best of {args.repeats} alternating fits"
    )
    print(f"{'in_memory':<10} {'images/s':>9} {'runs':>30}")
    print("-" * 51)
    best = {}
    for mode in ("True", "False"):
        runs = throughput[mode]
        best[mode] = max(runs)
        print(f"{mode:<10} {best[mode]:>9.1f} {' '.join(f'{r:.1f}' for r in runs):>30}")
    ratio = best["False"] / best["True"]
    verdict = "ok" if ratio >= 0.8 else "BELOW TARGET"
    print(f"streaming / in memory = {ratio:.2f} (target >= 0.8: {verdict})")
    print(
        f"decoding the {n_images:,} files into memory once (not in the rates above): "
        f"{throughput['decode_seconds']:.2f} s"
    )


def write_images(workdir: Path, n_images: int) -> int:
    """Write the files ``image_00000.png`` … that are missing; the number written."""
    import numpy as np
    from PIL import Image

    workdir.mkdir(parents=True, exist_ok=True)
    grid = np.mgrid[0:FILE_SIZE, 0:FILE_SIZE].astype(np.float32) / FILE_SIZE
    written = 0
    for index in range(n_images):
        path = image_path(workdir, index)
        if path.exists():
            continue
        # Image i depends on i alone: a colour gradient, a few discs and some noise, so that
        # decoding and resizing work on image-like content (about 12 KB per file).
        rng = np.random.default_rng(index)
        image = np.empty((FILE_SIZE, FILE_SIZE, 3), dtype=np.float32)
        for channel in range(3):
            a, b = rng.uniform(-1, 1, size=2)
            image[..., channel] = 0.5 + 0.25 * (a * grid[0] + b * grid[1])
        for _ in range(rng.integers(1, 5)):
            y, x, radius = rng.uniform(0, 1, size=3)
            disc = (grid[0] - y) ** 2 + (grid[1] - x) ** 2 < (0.05 + 0.2 * radius) ** 2
            image[disc] = rng.uniform(0, 1, size=3)
        image += rng.normal(0, 0.03, size=image.shape)
        pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
        temporary = path.with_suffix(".tmp")
        Image.fromarray(pixels).save(temporary, format="PNG")
        temporary.replace(path)
        written += 1
    return written


def image_path(workdir: Path, index: int) -> Path:
    return workdir / f"image_{index:05d}.png"


def run_child(args: argparse.Namespace, measure: str, n_images: int) -> dict[str, Any]:
    """Run this script in a fresh process to measure one thing; its JSON result."""
    command = [
        sys.executable, __file__, "--measure", measure, "--n", str(n_images),
        "--workdir", str(args.workdir), "--num-workers", str(args.num_workers),
        "--threads", str(args.threads), "--repeats", str(args.repeats),
        "--epochs", str(args.epochs),
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, env=environment
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def torch_version() -> str:
    """torch's version, asked of a child process: this one does not import torch."""
    command = [sys.executable, "-c", "import torch; print(torch.__version__)"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# What the child processes run.


def peak_rss_kib(who: int | None = None) -> int:
    """Peak resident set size in KiB (Linux reports ``ru_maxrss`` in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF if who is None else who).ru_maxrss


def child_setup(args: argparse.Namespace) -> tuple[list[str], Any]:
    """Import, list the files and create the model as ``fit`` does: the baseline."""
    import warnings

    import torch

    from sparsam import DinoFeaturizer

    torch.set_num_threads(args.threads)
    paths = [str(image_path(args.workdir, index)) for index in range(args.n)]
    params = {**PARAMS, "num_workers": args.num_workers, "epochs": 0}
    with warnings.catch_warnings():
        # epochs=0 without pretrained weights warns that the features are untrained.
        warnings.simplefilter("ignore", UserWarning)
        featurizer = DinoFeaturizer(**params).fit(paths)
    return paths, featurizer


def measure_fit(args: argparse.Namespace) -> dict[str, float]:
    from sparsam import DinoFeaturizer

    paths, featurizer = child_setup(args)
    del featurizer
    setup = peak_rss_kib()
    started = time.perf_counter()
    params = {**PARAMS, "num_workers": args.num_workers, "in_memory": False}
    DinoFeaturizer(**params).fit(paths)
    return result(setup, started)


def measure_transform(args: argparse.Namespace) -> dict[str, float]:
    paths, featurizer = child_setup(args)
    setup = peak_rss_kib()
    started = time.perf_counter()
    embeddings = featurizer.transform(paths)
    assert embeddings.shape == (len(paths), featurizer.n_features_out_)
    return result(setup, started)


def result(setup_kib: int, started: float) -> dict[str, float]:
    import resource

    seconds = time.perf_counter() - started
    peak = peak_rss_kib()
    # VmHWM is the peak of this process's own address space since exec: a cross-check that
    # ru_maxrss did not inherit a larger parent's peak.
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    return {
        "setup_kib": setup_kib,
        "peak_kib": peak,
        "hwm_kib": hwm,
        "children_kib": peak_rss_kib(resource.RUSAGE_CHILDREN),
        "seconds": seconds,
    }


def measure_throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Images per second of training, in memory and streamed, alternately."""
    import warnings

    import torch

    from sparsam import DinoFeaturizer
    from sparsam.data.training import in_memory_images

    torch.set_num_threads(args.threads)
    paths = [str(image_path(args.workdir, index)) for index in range(args.n)]
    started = time.perf_counter()
    in_memory_images(paths, PARAMS["image_size"], PARAMS["batch_size"], args.num_workers)
    decode_seconds = time.perf_counter() - started
    runs: dict[str, Any] = {"True": [], "False": []}
    steps = args.n // PARAMS["batch_size"]
    for _ in range(args.repeats):
        for in_memory in (True, False):
            params = {
                **PARAMS,
                "epochs": args.epochs,
                "num_workers": args.num_workers,
                "in_memory": in_memory,
            }
            with warnings.catch_warnings():
                # A short fit may look collapsed; that is not what is measured.
                warnings.simplefilter("ignore", UserWarning)
                featurizer = DinoFeaturizer(**params).fit(paths)
            # The first epoch includes one-off costs (allocation, kernel selection, the
            # workers' start): time the rest, as benchmarks/speed.py does.
            seconds = featurizer.history_["seconds"][1:] or featurizer.history_["seconds"]
            runs[str(in_memory)].append(steps * PARAMS["batch_size"] * len(seconds) / sum(seconds))
    runs["decode_seconds"] = decode_seconds
    return runs


if __name__ == "__main__":
    main()
