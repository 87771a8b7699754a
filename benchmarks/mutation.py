"""Do the tests fail when the core is wrong? Mutation testing with the project's own mutants.

Issue 20. Each mutant is one small, plausible mistake in a core file: a sign, a missing
decay or clamp, a dropped weight, a file written in place, an off-by-one in a split. For each,
this copies ``sparsam/``, ``tests/`` and ``pyproject.toml`` to a temporary directory, applies
the mutant there (the working tree is never touched), and runs the fast test files that cover
that core file, stopping at the first failure. A mutant is *killed* when the tests fail. It
prints the killed fraction per file and every survivor; the target is at least 90 % killed in
every file, equivalent mutants (named with the reason) left out. A list of hand-written
mutants rather than a generator (mutmut): each is a mistake someone could make, so a
survivor is a missing test or an equivalent mutant, never noise.

    python benchmarks/mutation.py [--files sparsam/dino/loss.py ...] [--list]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    file: str
    original: str
    mutated: str
    what: str
    # Why no test can tell the mutant from the code, where that is so.
    equivalent: str = ""


# The fast test files that cover each core file.
TESTS: dict[str, list[str]] = {
    "sparsam/dino/loss.py": ["tests/test_dino.py", "tests/test_dino_correctness.py"],
    "sparsam/dino/trainer.py": [
        "tests/test_dino.py",
        "tests/test_dino_correctness.py",
        "tests/test_fault_tolerance.py",
        "tests/test_reproducibility.py",
    ],
    "sparsam/training/optimization.py": ["tests/test_dino.py", "tests/test_supervised.py"],
    "sparsam/training/loop.py": [
        "tests/test_dino.py",
        "tests/test_dino_correctness.py",
        "tests/test_fault_tolerance.py",
        "tests/test_reproducibility.py",
        "tests/test_supervised.py",
    ],
    "sparsam/supervised/trainer.py": ["tests/test_supervised.py"],
    "sparsam/training/checkpoints.py": [
        "tests/test_fault_tolerance.py",
        "tests/test_supervised.py",
    ],
    "sparsam/_files.py": ["tests/test_files.py", "tests/test_fault_tolerance.py"],
    "sparsam/evaluation/splits.py": ["tests/test_model_selection.py"],
}

M = Mutant
MUTANTS: list[Mutant] = [
    # --- the DINO loss, centring and KoLeo
    M(
        "sparsam/dino/loss.py",
        "self.center.mul_(self.center_momentum).add_(",
        "self.center.add_(",
        "centre update without the decay of the old centre",
    ),
    M(
        "sparsam/dino/loss.py",
        "(teacher_output.float() - self.center)",
        "(teacher_output.float() + self.center)",
        "centre added instead of subtracted",
    ),
    M(
        "sparsam/dino/loss.py",
        "self.update_center(teacher_output)",
        "self.update_center(student_output[: len(teacher_output)])",
        "centre from the student",
    ),
    M(
        "sparsam/dino/loss.py",
        "student_output.float() / self.student_temperature",
        "student_output.float()",
        "student temperature ignored",
    ),
    M(
        "sparsam/dino/loss.py",
        "self.center) / teacher_temperature",
        "self.center) * teacher_temperature",
        "teacher temperature multiplies",
    ),
    M(
        "sparsam/dino/loss.py",
        "torch.where(different_views, cross_entropy, 0.0)",
        "torch.where(different_views, cross_entropy, cross_entropy)",
        "same-view pairs counted",
    ),
    M(
        "sparsam/dino/loss.py",
        "n_global * n_crops - min(n_global, n_crops)",
        "n_global * n_crops",
        "mean over all pairs, same-view ones included",
    ),
    M(
        "sparsam/dino/loss.py",
        "similarity.fill_diagonal_(-2.0)",
        "similarity.fill_diagonal_(2.0)",
        "KoLeo's nearest neighbour is the embedding itself",
    ),
    M(
        "sparsam/dino/loss.py",
        "return -torch.log(distance + eps).mean()",
        "return torch.log(distance + eps).mean()",
        "KoLeo sign",
    ),
    M(
        "sparsam/dino/loss.py",
        "batch_sum / count, alpha",
        "batch_sum, alpha",
        "centre from the batch sum, not the mean",
    ),
    # --- the DINO step: KoLeo, clipping, EMA, freezing, weight decay
    M(
        "sparsam/dino/trainer.py",
        "loss = loss + self.config.koleo_weight * koleo",
        "loss = loss + 0.0 * koleo",
        "KoLeo reported but not in the gradient",
    ),
    M(
        "sparsam/dino/trainer.py",
        "scales = (max_norm / (norms + 1e-6)).clamp(max=1.0)",
        "scales = max_norm / (norms + 1e-6)",
        "per-parameter clip scales small gradients up",
    ),
    M(
        "sparsam/dino/trainer.py",
        "torch._foreach_add_(teacher, student, alpha=1 - momentum)",
        "torch._foreach_add_(teacher, student, alpha=momentum)",
        "EMA weight swapped",
    ),
    M(
        "sparsam/dino/trainer.py",
        "torch._foreach_mul_(teacher, momentum)",
        "torch._foreach_mul_(teacher, 1.0)",
        "EMA without the decay",
    ),
    M(
        "sparsam/dino/trainer.py",
        "if epoch < self.config.freeze_last_layer_epochs:",
        "if epoch < 0:",
        "last layer never frozen",
    ),
    M(
        "sparsam/dino/trainer.py",
        "self.student.backbone.requires_grad_(not warming_up)",
        "self.student.backbone.requires_grad_(True)",
        "backbone trains during the head warm-up",
    ),
    M(
        "sparsam/training/optimization.py",
        'group["weight_decay"] = weight_decay if i == 0 else 0.0',
        'group["weight_decay"] = weight_decay',
        "weight decay on biases and norms (both loops set it here)",
    ),
    M(
        "sparsam/dino/trainer.py",
        "nn.utils.clip_grad_norm_(self.student.parameters(), max_norm)",
        "pass",
        "global clip does nothing",
    ),
    M(
        "sparsam/dino/trainer.py",
        "for parameter in self.student.head.last_layer.parameters():",
        "for parameter in []:",
        "frozen last layer still gets gradients",
    ),
    # --- run identity: a checkpoint is resumed only by the run that wrote it
    M(
        "sparsam/training/loop.py",
        '"images": images.fingerprint(),',
        '"images": 0,',
        "a checkpoint of other images resumed",
    ),
    M(
        "sparsam/training/loop.py",
        '"seed": generator.initial_seed(),',
        '"seed": 0,',
        "a checkpoint of another random_state resumed",
    ),
    M(
        "sparsam/dino/trainer.py",
        '"initial_weights": self._initial_weights,',
        '"initial_weights": "",',
        "a checkpoint of other starting weights resumed",
    ),
    M(
        "sparsam/dino/trainer.py",
        '"center_momentum": self.loss.center_momentum,\n',
        "",
        "a checkpoint of another centre momentum resumed",
    ),
    # --- schedules
    M(
        "sparsam/training/optimization.py",
        "(1 + np.cos(np.pi * progress))",
        "(1 - np.cos(np.pi * progress))",
        "cosine runs backwards",
    ),
    M(
        "sparsam/training/optimization.py",
        "np.linspace(warmup_start, start, warmup_steps, endpoint=False)",
        "np.linspace(warmup_start, start, warmup_steps, endpoint=True)",
        "warm-up ends one step early",
    ),
    M(
        "sparsam/training/optimization.py",
        "np.full(total_steps - warmup_steps, end, dtype=float)",
        "np.full(total_steps - warmup_steps, start, dtype=float)",
        "ramp never reaches its end",
    ),
    M(
        "sparsam/training/optimization.py",
        "progress = np.arange(n_cosine) / max(n_cosine - 1, 1)",
        "progress = np.arange(n_cosine) / n_cosine",
        "cosine stops one step short of end",
    ),
    M(
        "sparsam/training/optimization.py",
        "warmup_steps = min(max(int(warmup_steps), 0), total_steps)\n    warmup = ",
        "warmup = ",
        "warm-up not clipped to the schedule",
    ),
    # --- fine-tuning
    M(
        "sparsam/supervised/trainer.py",
        "F.cross_entropy(logits.float(), labels, weight=class_weights)",
        "F.cross_entropy(logits.float(), labels)",
        "cross-entropy without class weights",
    ),
    M(
        "sparsam/supervised/trainer.py",
        "(predicted[labels == label] == label).float().mean()",
        "(predicted == labels).float().mean()",
        "plain accuracy for balanced accuracy",
    ),
    M(
        "sparsam/supervised/trainer.py",
        "nn.init.zeros_(self.head.weight)",
        "pass",
        "random head at the start",
    ),
    M(
        "sparsam/supervised/trainer.py",
        'score > tuple(self._best["score"])',
        'score >= tuple(self._best["score"])',
        "a later tie replaces the best epoch",
    ),
    M(
        "sparsam/supervised/trainer.py",
        'score = (row["validation_balanced_accuracy"], -row["validation_loss"])',
        'score = (row["validation_balanced_accuracy"], row["validation_loss"])',
        "ties broken by the higher loss",
    ),
    M(
        "sparsam/supervised/trainer.py",
        "and epochs_without_improvement >= config.patience",
        "and epochs_without_improvement > config.patience",
        "one epoch beyond the patience",
    ),
    M(
        "sparsam/supervised/trainer.py",
        'self.model.load_state_dict(self._best["state"])',
        "pass",
        "the last epoch kept, not the best",
    ),
    M(
        "sparsam/supervised/trainer.py",
        "        self.model.eval()\n        try:\n",
        "        try:\n",
        "validation in train mode (drop-path on)",
    ),
    # --- checkpoints and run identity
    M(
        "sparsam/training/checkpoints.py",
        "    if differences:\n        raise",
        "    if False:\n        raise",
        "another run's checkpoint resumed",
    ),
    M(
        "sparsam/training/checkpoints.py",
        "sorted(found, reverse=True)",
        "sorted(found)",
        "oldest checkpoint first",
    ),
    M(
        "sparsam/training/checkpoints.py",
        "if index + 1 == len(candidates):",
        "if True:",
        "no fallback to an older checkpoint",
    ),
    M(
        "sparsam/training/checkpoints.py",
        "if path.stat().st_size == 0:",
        "if False:",
        "an empty checkpoint not named as such",
    ),
    M(
        "sparsam/training/checkpoints.py",
        "        if before == now:\n            continue\n",
        "",
        "every setting reported as different",
    ),
    M(
        "sparsam/training/checkpoints.py",
        "if match and path.is_file():",
        "if match:",
        "a directory named like a checkpoint listed",
    ),
    # --- atomic files
    M(
        "sparsam/_files.py",
        "descriptor, temporary = _create_beside(path)",
        "descriptor, temporary = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), path",
        "atomic_write writes in place",
    ),
    M(
        "sparsam/_files.py",
        "        Path(temporary).unlink(missing_ok=True)\n",
        "",
        "temporary file left behind after an error",
    ),
    M(
        "sparsam/_files.py",
        "return os.open(temporary, flags, 0o666), temporary",
        "return os.open(temporary, flags, 0o600), temporary",
        "new files private, not umask",
    ),
    M(
        "sparsam/_files.py",
        "                    os.replace(backup, directory / name)",
        "                    pass",
        "replace_files does not roll back",
    ),
    M("sparsam/_files.py", "        os.unlink(probe)\n", "", "write probe left behind"),
    M(
        "sparsam/_files.py",
        'text_options = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}',
        'text_options = {} if "b" in mode else {"encoding": "utf-8"}',
        "text mode translates newlines",
        "on POSIX, where a written '\\n' stays '\\n' whatever newline= says; on Windows it is not",
    ),
    M(
        "sparsam/_files.py",
        "        os.replace(temporary, path)\n",
        "        shutil.copyfile(temporary, path)\n",
        "copied onto the file, not renamed",
    ),
    # --- the few-shot splitter
    M(
        "sparsam/evaluation/splits.py",
        "train_parts.append(np.sort(shuffled[:n]))",
        "train_parts.append(np.sort(shuffled[: n + 1]))",
        "one training image too many",
    ),
    M(
        "sparsam/evaluation/splits.py",
        "rest_parts.append(np.sort(shuffled[n:]))",
        "rest_parts.append(np.sort(shuffled[max(n - 1, 0) :]))",
        "a training image in the test set",
    ),
    M(
        "sparsam/evaluation/splits.py",
        "shuffled = rng.permutation(indices)",
        "shuffled = np.random.permutation(indices)",
        "random_state ignored",
    ),
    M(
        "sparsam/evaluation/splits.py",
        "if size >= self.n_per_class + 1:",
        "if size >= self.n_per_class:",
        "a class left without a test image",
    ),
    M(
        "sparsam/evaluation/splits.py",
        "n_train.append(max(size - 1, 1))",
        "n_train.append(size)",
        "all_available keeps no test image",
    ),
    M(
        "sparsam/evaluation/splits.py",
        "n_test = max(int(np.ceil(self.test_size * total)), 1)",
        "n_test = max(int(self.test_size * total), 1)",
        "test fraction rounded down",
    ),
    M(
        "sparsam/evaluation/splits.py",
        "members = {c: m for c, m in members.items() if len(m) >= self.min_class_size}",
        "members = {c: m for c, m in members.items() if len(m) > self.min_class_size}",
        "min_class_size off by one",
    ),
]


def copy_tree(destination: Path) -> None:
    for name in ("sparsam", "tests"):
        shutil.copytree(ROOT / name, destination / name,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy2(ROOT / "pyproject.toml", destination / "pyproject.toml")


def run_tests(directory: Path, files: list[str]) -> tuple[bool, float]:
    """True when every test passes; and the seconds it took."""
    environment = {**os.environ, "PYTHONPATH": str(directory), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *files]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=directory, env=environment, capture_output=True)
    return result.returncode == 0, time.perf_counter() - started


def apply(directory: Path, mutant: Mutant) -> str:
    """Write the mutated file into ``directory``; return the original text."""
    path = directory / mutant.file
    text = path.read_text()
    count = text.count(mutant.original)
    if count != 1:
        raise SystemExit(f"{mutant.file}: {mutant.original!r} occurs {count} times, expected 1.")
    path.write_text(text.replace(mutant.original, mutant.mutated))
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="+", default=list(TESTS), choices=list(TESTS))
    parser.add_argument("--list", action="store_true", help="print the mutants and stop")
    parser.add_argument("--target", type=float, default=0.9)
    args = parser.parse_args()
    mutants = [m for m in MUTANTS if m.file in args.files]
    if args.list:
        for mutant in mutants:
            print(f"{mutant.file:<32} {mutant.what}")
        return 0
    killed: dict[str, list[bool]] = {file: [] for file in args.files}
    survivors = []
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        copy_tree(directory)
        for file in args.files:
            passed, seconds = run_tests(directory, TESTS[file])
            if not passed:
                raise SystemExit(f"The tests of {file} fail without a mutant; fix them first.")
            print(f"{file}: unmutated tests pass in {seconds:.0f} s", flush=True)
        for mutant in mutants:
            if mutant.equivalent:
                print(f"  {'equivalent':<8}        {mutant.file}: {mutant.what}", flush=True)
                continue
            original = apply(directory, mutant)
            try:
                passed, seconds = run_tests(directory, TESTS[mutant.file])
            finally:
                (directory / mutant.file).write_text(original)
            killed[mutant.file].append(not passed)
            if passed:
                survivors.append(mutant)
            verdict = "survived" if passed else "killed"
            print(f"  {verdict:<8} {seconds:5.0f} s  {mutant.file}: {mutant.what}", flush=True)
    print(f"\n{'file':<32} {'mutants':>8} {'killed':>7} {'fraction':>9}")
    failing = False
    for file, results in killed.items():
        fraction = sum(results) / len(results) if results else float("nan")
        failing |= not fraction >= args.target
        print(f"{file:<32} {len(results):8d} {sum(results):7d} {fraction:9.0%}")
    total = [k for results in killed.values() for k in results]
    print(f"{'all':<32} {len(total):8d} {sum(total):7d} {sum(total) / len(total):9.0%}")
    if survivors:
        print("\nSurvivors:")
        for mutant in survivors:
            print(f"  {mutant.file}: {mutant.what}")
    equivalent = [m for m in mutants if m.equivalent]
    if equivalent:
        print("\nEquivalent mutants (not run, not counted):")
        for mutant in equivalent:
            print(f"  {mutant.file}: {mutant.what}: {mutant.equivalent}")
    return 1 if failing else 0


if __name__ == "__main__":
    raise SystemExit(main())
