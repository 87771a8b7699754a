"""Kill a ``torchrun ... -m sparsam pretrain`` run mid-epoch, resume it, compare the weights.

Writes a seeded archive of PNG files, then trains the same run three ways, each streamed from
the files with DataLoader workers under torchrun (NCCL and SyncBatchNorm on CUDA, gloo on the
CPU): once uninterrupted, once killed with SIGKILL as soon as its first mid-epoch checkpoint
exists and then resumed with ``--resume``, and (``--repeat``) once more uninterrupted, which
shows how far two uninterrupted runs differ on this device (cuDNN and atomics may make them
differ on a GPU; on the CPU they are equal bit for bit). Prints one table; exits 1 when the
resumed weights differ from the uninterrupted ones by more than ``--tolerance``.

    python benchmarks/resume_check.py --device cuda --out /tmp/resume
    python benchmarks/resume_check.py --device cpu --backbone xcit_nano_12_p8_224 --image-size 32
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from sparsam.training.checkpoints import checkpoint_name


def write_archive(root: Path, n_images: int, side: int) -> None:
    """Seeded smooth colour images in 4 folders (the labels are never read)."""
    rng = np.random.default_rng(0)
    for index in range(n_images):
        folder = root / str(index % 4)
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((side, side), Image.BILINEAR)
        image.save(folder / f"{index:05d}.png")


def pretrain_command(args: argparse.Namespace, archive: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(args.nproc), "-m", "sparsam", "-v", "pretrain", str(archive),
        "--out", str(out), "--backbone", args.backbone,
        "--backbone-kwargs", args.backbone_kwargs, "--image-size", str(args.image_size),
        "--local-crop-size", str(args.image_size // 2), "--local-crops", "2",
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--out-dim", "1024", "--in-memory", "no", "--num-workers", str(args.num_workers),
        "--checkpoint-every", str(args.checkpoint_every), "--device", args.device,
        "--precision", args.precision, "--compile", args.compile, "--seed", "0", "--quiet",
    ]  # fmt: skip


def run(command: list[str], log: Path) -> str:
    with log.open("w") as file:
        subprocess.run(command, stdout=file, stderr=subprocess.STDOUT, check=True)
    return log.read_text()


def killed_mid_epoch(command: list[str], checkpoint: Path, log: Path) -> float:
    """Start the run, SIGKILL its process group once ``checkpoint`` exists; the seconds it ran."""
    started = time.perf_counter()
    with log.open("w") as file:
        process = subprocess.Popen(
            command, stdout=file, stderr=subprocess.STDOUT, start_new_session=True
        )
        while not checkpoint.exists():
            if process.poll() is not None:
                raise SystemExit(f"the run ended (code {process.returncode}) before {checkpoint}")
            time.sleep(0.001)
        # torchrun's workers may run in sessions of their own: kill every descendant.
        for pid in [process.pid, *descendants(process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
    return time.perf_counter() - started


def descendants(pid: int) -> list[int]:
    """Process ids of all descendants of ``pid`` (Linux: read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def max_difference(first: Path, second: Path) -> tuple[float, int, int]:
    """Largest absolute difference, tensors compared, tensors not bit-identical."""
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    if a.keys() != b.keys():
        raise SystemExit(f"{first} and {second} hold different tensors")
    largest, unequal = 0.0, 0
    for name in a:
        if not torch.equal(a[name], b[name]):
            unequal += 1
            largest = max(largest, (a[name].double() - b[name].double()).abs().max().item())
    return largest, len(a), unequal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("resume-check"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--compile", default="auto", choices=("auto", "yes", "no"))
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--backbone", default="xcit_small_12_p8_224")
    parser.add_argument("--backbone-kwargs", default=json.dumps({"depth": 2}))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--repeat", action="store_true", help="a second uninterrupted run")
    parser.add_argument("--tolerance", type=float, default=1e-6)
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    archive = args.out / "archive"
    if not archive.exists():
        write_archive(archive, args.images, 2 * args.image_size)
    steps_per_epoch = args.images // (args.batch_size * args.nproc)
    if args.checkpoint_every >= steps_per_epoch:
        raise SystemExit("--checkpoint-every must be below the steps of an epoch")

    started = time.perf_counter()
    run(pretrain_command(args, archive, args.out / "whole"), args.out / "whole.log")
    whole_seconds = time.perf_counter() - started
    resumed = args.out / "resumed"
    command = pretrain_command(args, archive, resumed)
    first = resumed / "checkpoints" / checkpoint_name(args.checkpoint_every)
    killed_after = killed_mid_epoch(command, first, args.out / "killed.log")
    log = run([*command, "--resume"], args.out / "resumed.log")
    where = re.search(r"Resuming DINO from \S+ \(epoch (\d+), step (\d+)\)", log)
    if where is None:
        raise SystemExit(f"the resumed run did not resume; see {args.out / 'resumed.log'}")
    epoch, step = int(where.group(1)), int(where.group(2))

    device = args.device
    if device.startswith("cuda") and torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    print(
        f"device={device} torch={torch.__version__} processes={args.nproc} "
        f"backbone={args.backbone} {args.backbone_kwargs} image_size={args.image_size} "
        f"images={args.images} batch={args.batch_size} epochs={args.epochs} "
        f"steps_per_epoch={steps_per_epoch} precision={args.precision} "
        f"compile={args.compile} streamed, "
        f"num_workers={args.num_workers}"
    )
    print(f"uninterrupted run: {whole_seconds:.1f} s; killed after {killed_after:.1f} s")
    print(f"resumed from epoch {epoch}, step {step} of {steps_per_epoch} (mid-epoch: {step > 0})")
    print("| comparison | tensors | not bit-identical | max abs difference |")
    print("| --- | --- | --- | --- |")
    largest, total, unequal = max_difference(args.out / "whole", resumed)
    print(f"| killed + resumed vs uninterrupted | {total} | {unequal} | {largest:.3g} |")
    if args.repeat:
        run(pretrain_command(args, archive, args.out / "again"), args.out / "again.log")
        again, total, again_unequal = max_difference(args.out / "whole", args.out / "again")
        print(f"| uninterrupted vs uninterrupted | {total} | {again_unequal} | {again:.3g} |")
    ok = step > 0 and largest <= args.tolerance
    print(
        f"resume {'equals' if ok else 'DIFFERS FROM'} the uninterrupted run (tol {args.tolerance})"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
