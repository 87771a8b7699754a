"""The DINO training loop: student and teacher, multi-crop, EMA, schedules, checkpoints."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._progress import TrainingProgress
from ..data.cache import weights_digest
from ..data.training import TrainingImages
from ..evaluation.quality import rankme
from ..training.augment import MultiCropAugmentation
from ..training.callbacks import Callback
from ..training.checkpoints import settings_of
from ..training.compilation import compiled_regions, forward_restorer
from ..training.distributed import (
    average_batchnorm_statistics,
    gather_objects,
    is_distributed,
    is_main_process,
    mean_over_ranks,
    rank,
    to_batchnorm,
    to_sync_batchnorm,
    world_size,
)
from ..training.loop import Run, TrainingLoop
from ..training.optimization import adamw, set_step_values
from .config import TrainingConfig, dino_schedules
from .head import DinoHead, MultiCropModel
from .loss import DinoLoss, koleo_loss

__all__ = ["CollapseWarning", "DinoTrainer", "TrainingConfig"]

logger = logging.getLogger("sparsam")

# Training images RankMe is measured on after every epoch, at most: a few batches of
# inference per epoch, kept on the device as uint8 (77 MB at 224 px). RankMe cannot exceed
# the number of images, and 512 is above the width of the paper's XCiT-S12 (384).
QUALITY_IMAGES = 512


class CollapseWarning(UserWarning):
    """DINO training ended with outputs that look collapsed (see ``DinoTrainer.fit``)."""


class DinoTrainer(TrainingLoop):
    """Self-distillation without labels (Caron et al. 2021) for one backbone.

    The student sees every crop, the teacher only the global crops; the teacher is an
    exponential moving average of the student's parameters and never receives a gradient.
    As in DINO's ``main_dino.py``, the teacher runs without stochastic depth or dropout, and
    its BatchNorm layers (XCiT has them; ViT does not) normalise with the statistics of the
    teacher's own batch and update their running statistics from it, so that the features
    of the fitted teacher (eval mode) use statistics of the training images. The student is
    trained in train mode whatever mode its backbone arrived in (``load_backbone`` returns
    models in eval mode).

    Parameters
    ----------
    backbone : nn.Module
        Maps images (b, 3, H, W) to CLS embeddings (b, d) for every crop size used. It
        becomes the student; the teacher starts as a copy of it.
    head : DinoHead
        The student's projection head; the teacher's is a copy.
    augmentation : MultiCropAugmentation
        Produces the global and local crops from a uint8 batch.
    loss : DinoLoss
        The DINO loss with its centre.
    config : TrainingConfig
        Optimisation settings.
    device : torch.device
        Where training runs.
    autocast_dtype : torch.dtype or None
        bf16 autocast when given, fp32 otherwise.
    checkpoint_dir : path-like or None
        When given, checkpoints ``dino_checkpoint_<step>.pt`` are written there after every
        epoch and every ``checkpoint_every`` steps (atomically: a temporary file renamed into
        place; by rank 0 only), the newest ``checkpoint_keep`` are kept, and training resumes
        from the newest one, mid-epoch included, when it was written by the same run: same
        seed, same images, same starting weights, same number of processes and the same
        settings. A newest checkpoint that cannot be read (truncated, corrupt) is skipped
        with a `CheckpointWarning` for the one before it. The directory must be writable;
        this is checked here, before any training. Ctrl-C during ``fit`` finishes the step,
        writes a checkpoint and raises KeyboardInterrupt saying how to resume.
    checkpoint_every : int or None, default=None
        Steps between mid-epoch checkpoints; None writes them at epoch ends only.
    checkpoint_keep : int, default=3
        How many of the newest checkpoints to keep; older ones of this directory are removed.
    compile : bool, default=False
        Compile the computing parts of every block (`compiled_regions`) of student and
        teacher and both heads with ``torch.compile`` during ``fit``
        (`sparsam.training.compilation`); if compiling fails, training continues uncompiled
        with a `CompileFallbackWarning`.
    check_every : int or None, default=None
        Steps between the host's reads of the loss: a non-finite loss stops training at the
        next read, and checkpoints are written only after one. None reads every step on the
        CPU, where reading costs nothing and training stops before a non-finite step changes
        the model, and every `sparsam.training.loop.CUDA_CHECK_EVERY` steps on a GPU, where
        every read makes the CPU wait for the GPU.
    select : callable or None, default=None
        ``select(backbone) -> float``, higher is better: a score of the teacher backbone
        (given in eval mode, under ``torch.inference_mode`` and the training autocast),
        taken of the starting weights and after every epoch (``history["selection_score"]``).
        It may instead return a dict holding ``"selection_score"`` and other measurements of
        the same features (``"knn_accuracy"``), which go into the epoch's history row too.
        The teacher keeps the best-scoring weights at the end of ``fit``, ties going to the
        later epoch; the best so far is part of every checkpoint. It must not draw from
        torch's random generators. The DINO loss never sees what it scores.
    select_key : str, default=""
        Identifies what ``select`` scores (a digest of the labels): part of the run identity,
        so that a checkpoint is resumed only with the same selection.
    callbacks : sequence of Callback, default=()
        Called at the start and the end of every epoch (`sparsam.training.callbacks`); not
        part of the run identity.

    Attributes
    ----------
    student, teacher : MultiCropModel
        Backbone + head of each side; ``teacher.backbone`` is what the features come from.
    backbone : nn.Module
        ``teacher.backbone``.
    history : dict of list
        Per-epoch ``loss``, ``teacher_entropy``, ``teacher_mean_entropy``, ``kl``, ``lr``,
        ``weight_decay``, ``teacher_momentum``, ``teacher_temperature``, ``seconds`` and
        ``rankme``: the `rankme` of ``teacher.backbone``'s CLS embeddings of the quality
        images at the end of the epoch. The quality images are at most `QUALITY_IMAGES`
        training images at evenly spaced indices (no random draw), embedded as
        ``DinoFeaturizer.transform`` would (eval mode, BatchNorm on its running statistics,
        the training autocast, normalised with the augmentation's ``mean`` and ``std``);
        measuring changes neither the training nor its random draws. NaN when there are
        fewer than 2 training images. With ``select``, also what it measures of each epoch
        (``selection_score``, and ``knn_accuracy`` when it returns a dict holding it).
    initial_rankme : float
        The same measure of the starting teacher, set by ``fit`` before any training step
        and before a checkpoint is resumed, so that a resumed run reports the same value as
        an uninterrupted one; NaN before ``fit``.
    initial_selection_score : float
        ``select`` of the starting teacher backbone; NaN without ``select``.
    selected_epoch : int
        After ``fit``: how many epochs of training the teacher that ``fit`` leaves had (0: the
        starting weights); the last epoch without ``select``.
    """

    name = "DINO training"
    checkpoint_prefix = "dino"
    checkpoint_keys = (
        "epoch",
        "step",
        "order",
        "totals",
        "student",
        "teacher",
        "optimizer",
        "center",
        "generator",
        "torch_rng",
        "cuda_rng",
        "config",
        "history",
    )
    interrupt_announcement = (
        "Interrupted: DINO stops after this step and saves a checkpoint "
        "(press Ctrl-C again to stop at once, without one)."
    )
    resume_hint = " (sparsam pretrain: add --resume)"
    long_cpu_run_hint = "Try sparsam.recipes.small_data_recipe (--recipe small) or a GPU."
    shards_across_processes = True

    def __init__(
        self,
        backbone: nn.Module,
        head: DinoHead,
        augmentation: MultiCropAugmentation,
        loss: DinoLoss,
        config: TrainingConfig,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        checkpoint_keep: int = 3,
        compile: bool = False,
        check_every: int | None = None,
        select: Callable[[nn.Module], float | Mapping[str, float]] | None = None,
        select_key: str = "",
        callbacks: Sequence[Callback] = (),
    ) -> None:
        if checkpoint_every is not None and checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be None or >= 1, got {checkpoint_every!r}.")
        if config.clip_grad_mode not in ("per_parameter", "global"):
            raise ValueError(
                "clip_grad_mode must be 'per_parameter' or 'global', "
                f"got {config.clip_grad_mode!r}."
            )
        super().__init__(
            augmentation,
            config,
            device,
            autocast_dtype,
            checkpoint_dir,
            checkpoint_keep,
            compile,
            check_every,
            callbacks,
        )
        self.checkpoint_every = checkpoint_every
        self.select = select
        self.select_key = select_key
        self.initial_selection_score = math.nan
        self.selected_epoch = -1
        self._distributed_student: nn.Module | None = None
        self._average_teacher_statistics = False
        self._shard: tuple[int, int | None] = (0, None)
        self.loss = loss.to(self.device)
        self.student = MultiCropModel(backbone, head).to(self.device)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        self._set_training_modes()
        self.optimizer = adamw(self.student, self.device)
        self._steps_per_epoch: int | None = None
        self.initial_rankme = math.nan
        self._quality_images: torch.Tensor | None = None
        self._initial_weights = weights_digest(self.student, {})

    @property
    def backbone(self) -> nn.Module:
        """The teacher's backbone: what the features come from."""
        return self.teacher.backbone

    def fit(
        self,
        images: TrainingImages | torch.Tensor,
        generator: torch.Generator,
        progress: TrainingProgress | None = None,
    ) -> dict[str, list[float]]:
        """Train on the images; returns the history.

        ``images`` are uint8 images (n, 3, H, W) in one tensor, or a
        `sparsam.data.training.TrainingImages` that decodes its batches from their files as
        they are needed. ``generator`` draws every random choice (batch order and
        augmentations) and seeds torch's global CPU and CUDA generators, from which timm's
        drop-path draws, for the duration of the fit; the caller's global generator states
        are restored afterwards. The same seed on the CPU thus gives the same weights bit for
        bit, with or without drop-path, and a run resumed from a checkpoint, mid-epoch
        included, equals an uninterrupted one. ``progress`` hears of every step and epoch
        (`sparsam._progress.TrainingProgress`).

        Inside an initialised ``torch.distributed`` process group (``torchrun``), every rank
        calls ``fit`` with the same images and seed: ``batch_size`` is per rank, each epoch's
        permutation is shared and each rank trains on its own slice of every global batch
        (each image once per epoch), the learning rate scales with the global batch, the
        student runs in DistributedDataParallel, and only rank 0 writes checkpoints.
        """
        if isinstance(images, torch.Tensor):
            images = TrainingImages(None, images.shape[-1], images)
        run = self._plan(images, generator)
        images.to(self.device)
        self._quality_images = _quality_images(images).to(self.device)
        # DINO's own batch slice of this rank: augmentation draws for the whole global batch
        # and keeps this rank's part, so 2 ranks x 8 images see the crops 1 x 16 would.
        self._shard = (rank() * run.batch_size, run.global_batch)
        self._steps_per_epoch = run.steps_per_epoch
        self._train(run, progress)
        self._keep_best_snapshot()
        if is_main_process():
            self._warn_if_collapsed()
        return self.history

    def _plan(self, images: TrainingImages, generator: torch.Generator) -> _DinoRun:
        """The shape of a run on ``images``: batches per rank and in all, steps, schedules."""
        config = self.config
        ranks = world_size()
        n_images = len(images)
        batch_size = min(config.batch_size, n_images // ranks)
        if batch_size < 1:
            raise ValueError(
                f"{n_images} image(s) cannot be shared by {ranks} processes: every process "
                "needs at least one image per step. Pass more images or start fewer processes."
            )
        if config.koleo_weight > 0 and batch_size < 2:
            raise ValueError(
                f"The KoLeo term needs at least 2 images per batch, got {n_images} image(s) "
                f"and batch_size={config.batch_size}: with one image its value is constant and "
                "its gradient zero. Pass more images or set koleo_weight=0."
            )
        global_batch = batch_size * ranks
        # The last incomplete batch is dropped, as in DINO.
        steps_per_epoch = n_images // global_batch
        schedules = dino_schedules(config, global_batch, steps_per_epoch)
        # Keying the images costs a pass over them; only a checkpoint needs the identity.
        settings = (
            self._settings(images, generator, ranks) if self.checkpoint_dir is not None else {}
        )
        return _DinoRun(
            images, generator, steps_per_epoch, settings, batch_size, global_batch, schedules
        )

    def _start(self, run: _DinoRun) -> int:
        """Measure the starting teacher, resume, and set the modes DINO trains in."""
        self.initial_rankme = self._teacher_rankme()
        self._best = {}
        if self.select is not None:
            self._best = self._snapshot(0, self._teacher_score()["selection_score"])
            self.initial_selection_score = self._best["score"]
        run.position = self._resume(run.generator, run.settings)
        self._step = run.position.epoch * run.steps_per_epoch + run.position.step
        self._set_training_modes()
        self._wrap_for_distributed()
        return run.position.epoch

    def _finish(self) -> None:
        self._unwrap_for_distributed()
        self._quality_images = None

    def _teacher_score(self) -> dict[str, float]:
        """``select``'s measurements of the teacher backbone as it is now, by name."""
        backbone = self.teacher.backbone
        backbone.eval()
        try:
            with torch.inference_mode(), self._autocast(), self._compilation.eager():
                scores = self.select(backbone)
        finally:
            self._set_training_modes()
        scores = scores if isinstance(scores, Mapping) else {"selection_score": scores}
        return {name: float(value) for name, value in scores.items()}

    def _snapshot(self, epochs_trained: int, score: float) -> dict:
        """The teacher backbone's weights (a CPU copy) with its epoch and score."""
        weights = self.teacher.backbone.state_dict()
        state = {key: tensor.detach().cpu().clone() for key, tensor in weights.items()}
        return {"epoch": epochs_trained, "score": score, "state": state}

    def _keep_best_snapshot(self) -> None:
        """Give the teacher the best-scoring snapshot's weights (``select`` only)."""
        trained = len(self.history.get("loss", []))
        if not self._best:
            self.selected_epoch = trained
            return
        self.selected_epoch = int(self._best["epoch"])
        if self.selected_epoch != trained:
            self.teacher.backbone.load_state_dict(self._best["state"])

    def _run_epoch(
        self, run: _DinoRun, epoch: int, interrupted: Callable[[], bool]
    ) -> dict[str, float]:
        """Train (the rest of) epoch ``epoch``, then measure the teacher; the epoch's row."""
        position = run.position
        if position.order is None or epoch != position.epoch:
            order = torch.randperm(len(run.images), generator=run.generator)
            position = _Position(epoch, 0, order, {})
        row = self._train_epoch(run, position, interrupted)
        row["rankme"] = self._teacher_rankme()
        if self.select is not None:
            row.update(self._teacher_score())
            score = row["selection_score"]
            # Ties go to the later epoch: more training at the same score. Only a new
            # best is copied (a backbone's weights, every epoch, would be wasted).
            if score >= self._best["score"]:
                self._best = self._snapshot(epoch + 1, score)
        return row

    def _epoch_summary(self, epoch: int, row: dict[str, float]) -> tuple:
        knn = f", kNN accuracy {row['knn_accuracy']:.3f}" if "knn_accuracy" in row else ""
        return (
            "DINO epoch %d/%d: loss %.4f, teacher entropy %.3f (max %.3f), KL %.4f, RankMe %.1f"
            + knn,
            epoch + 1,
            self.config.epochs,
            row["loss"],
            row["teacher_entropy"],
            self.loss.max_entropy,
            row["kl"],
            row["rankme"],
        )

    def _save_after_epoch(self, run: _DinoRun, epochs_done: int) -> Path | None:
        return self._save_checkpoint(_Position(epochs_done, 0, None, {}), run.generator, run)

    def _interruption_point(self, run: _DinoRun, epoch: int, step: int = 0) -> str:
        return f"at epoch {epoch + 1}, step {step}/{run.steps_per_epoch}"

    def _train_epoch(
        self, run: _DinoRun, position: _Position, interrupted: Callable[[], bool]
    ) -> dict[str, float]:
        """Train the rest of an epoch from ``position``; the epoch's history row."""
        started = time.perf_counter()
        epoch = position.epoch
        # Compiling happens at a block's first call in a new mode (the head warm-up switches
        # the backbone's gradients at an epoch's start): the first step of an epoch can be
        # repeated uncompiled if compiling fails.
        self._begin_epoch(position.totals)
        offset = rank() * run.batch_size
        starts = range(
            position.step * run.global_batch,
            run.steps_per_epoch * run.global_batch,
            run.global_batch,
        )
        shards = [
            position.order[start + offset : start + offset + run.batch_size] for start in starts
        ]
        for done, batch in enumerate(run.images.batches(shards), start=position.step + 1):
            self._step = epoch * run.steps_per_epoch + done - 1
            values = {name: float(schedule[self._step]) for name, schedule in run.schedules.items()}
            self.train_step(batch.to(self.device, non_blocking=True), run.generator, epoch, values)
            self._may_compile = False
            self._step_done()
            every = self.checkpoint_every
            due = every is not None and (self._step + 1) % every == 0
            if done < run.steps_per_epoch and (due or interrupted()):
                position = _Position(epoch, done, position.order, self._statistics.totals())
                path = self._save_checkpoint(position, run.generator, run)
                if interrupted():
                    self._stop_interrupted(self._interruption_point(run, epoch, done), path)
        self._raise_if_non_finite()
        totals = self._statistics.totals()
        row = {name: total / run.steps_per_epoch for name, total in totals.items()}
        row = mean_over_ranks(row, self.device)
        row.update(values)
        row["seconds"] = time.perf_counter() - started
        return row

    def train_step(
        self,
        images: torch.Tensor,
        generator: torch.Generator,
        epoch: int,
        values: dict[str, float],
    ) -> dict[str, torch.Tensor]:
        """One DINO step on a uint8 batch; ``values`` holds this step's schedule values.

        Returns the step's DINO loss and statistics as 0-d tensors on the training device,
        also added to the epoch's sums: reading them on the host would make the CPU wait for
        the GPU (`sparsam.training.statistics`).
        """
        # DINO: no weight decay on biases and normalisation (`weight_decay_groups`).
        set_step_values(self.optimizer, values["lr"], values["weight_decay"])
        # A fresh head at full learning rate damages pretrained features (a common complaint
        # in DINO's issue tracker): the backbone stays frozen while the new head warms up.
        # DistributedDataParallel needs the same parameters to require gradients throughout,
        # so there the backbone's gradients are dropped instead.
        warming_up = epoch < self.config.head_warmup_epochs
        if self._distributed_student is None:
            self.student.backbone.requires_grad_(not warming_up)
        offset, total = self._shard
        crops = self.augmentation(images, generator, sample_offset=offset, total_samples=total)
        restore = (
            forward_restorer([self.student, self.teacher, self.loss], self.device)
            if self._may_compile
            else None
        )
        stats = self._compilation.run(lambda: self._forward_backward(crops, values), restore)
        self._statistics.add(stats)
        if warming_up and self._distributed_student is not None:
            for parameter in self.student.backbone.parameters():
                parameter.grad = None
        if self.config.clip_grad:
            self._clip_gradients(self.config.clip_grad)
        if epoch < self.config.freeze_last_layer_epochs:
            # DINO keeps the prototypes fixed at first: training them from the start is unstable.
            for parameter in self.student.head.last_layer.parameters():
                parameter.grad = None
        self.optimizer.step()
        self._update_teacher(values["teacher_momentum"])
        if self._average_teacher_statistics:
            # Every step, so that the model does not depend on when checkpoints are written,
            # and a checkpoint holds the statistics every rank has.
            average_batchnorm_statistics(self.teacher)
        return stats

    def _forward_backward(
        self, crops: list[torch.Tensor], values: dict[str, float]
    ) -> dict[str, torch.Tensor]:
        """Teacher and student on the crops, the loss and its gradients; the step's statistics."""
        n_global = self.augmentation.global_crops
        with self._autocast():
            with torch.no_grad():
                _, teacher_output = self.teacher(crops[:n_global])
            student_embeddings, student_output = (self._distributed_student or self.student)(crops)
        dino_loss, stats = self.loss(
            student_output, teacher_output, values["teacher_temperature"], len(crops)
        )
        loss = dino_loss
        if self.config.koleo_weight > 0:
            # DINOv2 sums the KoLeo terms of the global crops (never across two crops of one
            # image, whose embeddings should agree).
            global_embeddings = student_embeddings[: len(crops[0]) * n_global].chunk(n_global)
            koleo = torch.stack([koleo_loss(view) for view in global_embeddings]).sum()
            stats["koleo"] = koleo.detach()
            loss = loss + self.config.koleo_weight * koleo
        self._check_loss(loss)
        self.optimizer.zero_grad(set_to_none=True)
        if self._distributed_student is None:
            loss.backward()
        else:
            with warnings.catch_warnings():
                # DDP's note on XCiT's depthwise convolutions, whose gradients come in another
                # memory layout than its buckets: a copy per step, not an error.
                warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
                loss.backward()
        return {"loss": dino_loss.detach(), **stats}

    def _non_finite_message(self, step: int, value: float, stopped: str) -> str:
        steps_per_epoch = self._steps_per_epoch or step + 1
        where = f" in {self.checkpoint_dir}" if self.checkpoint_dir is not None else ""
        return (
            f"DINO loss is {value} at epoch {step // steps_per_epoch + 1}, step {step + 1}: "
            f"{stopped}, and the last checkpoint{where} (if any) "
            "holds the last good state. Lower lr, raise warmup_epochs, or use precision='fp32'."
        )

    def _trained_model(self) -> nn.Module:
        return self.student

    def _compiled_modules(self) -> list[nn.Module]:
        """What ``compile`` compiles: the blocks of both backbones and both heads."""
        return [
            *compiled_regions(self.student.backbone),
            *compiled_regions(self.teacher.backbone),
            self.student.head,
            self.teacher.head,
        ]

    def _wrap_for_distributed(self) -> None:
        if not is_distributed():
            return
        if self.device.type == "cuda":
            # DINO: SyncBatchNorm, so that BatchNorm sees the global batch (torch has it on
            # GPUs only; on the CPU every rank normalises with its own batch, and the teacher's
            # running statistics are averaged over the ranks after every step).
            to_sync_batchnorm(self.student)
            to_sync_batchnorm(self.teacher)
        else:
            self._average_teacher_statistics = True
        # The parameter set DistributedDataParallel reduces is fixed at construction.
        self.student.backbone.requires_grad_(True)
        self._distributed_student = nn.parallel.DistributedDataParallel(
            self.student, device_ids=[self.device.index] if self.device.type == "cuda" else None
        )

    def _unwrap_for_distributed(self) -> None:
        if self._distributed_student is None:
            return
        self._distributed_student = None
        self._average_teacher_statistics = False
        to_batchnorm(self.student)
        to_batchnorm(self.teacher)

    def _teacher_rankme(self) -> float:
        """`rankme` of the teacher backbone's embeddings of the quality images."""
        images = self._quality_images
        if images is None or len(images) < 2:
            return math.nan
        backbone = self.teacher.backbone
        # Eval mode, as transform embeds: BatchNorm reads its running statistics and leaves
        # them alone, and no drop-path draws from the generators training uses.
        backbone.eval()
        try:
            with torch.inference_mode():
                embeddings = self._infer(backbone, images.split(self.config.batch_size))
        finally:
            self._set_training_modes()
        return rankme(embeddings)

    def _set_training_modes(self) -> None:
        self.student.train()
        # DINO's teacher: no drop-path (eval mode), BatchNorm on the batch's statistics.
        self.teacher.eval()
        for module in self.teacher.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train()

    def _clip_gradients(self, max_norm: float) -> None:
        if self.config.clip_grad_mode == "global":
            nn.utils.clip_grad_norm_(self.student.parameters(), max_norm)
            return
        gradients = [p.grad for p in self.student.parameters() if p.grad is not None]
        if not gradients:
            return
        # DINO's utils.clip_gradients: every parameter's gradient norm at most max_norm.
        norms = torch.stack(torch._foreach_norm(gradients))
        scales = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(gradients, list(scales.unbind()))

    @torch.no_grad()
    def _update_teacher(self, momentum: float) -> None:
        teacher = list(self.teacher.parameters())
        student = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(teacher, momentum)
        torch._foreach_add_(teacher, student, alpha=1 - momentum)

    def _warn_if_collapsed(self) -> None:
        if not self.history:
            return
        entropy = self.history["teacher_entropy"][-1]
        mean_entropy = self.history["teacher_mean_entropy"][-1]
        if entropy > 0.95 * self.loss.max_entropy:
            warnings.warn(
                f"DINO looks collapsed to uniform outputs: teacher entropy {entropy:.3f} is "
                f"close to ln(out_dim) = {self.loss.max_entropy:.3f}. Try koleo_weight > 0, a "
                "lower teacher_temperature or a smaller out_dim, and judge the features by "
                "few-shot accuracy rather than by the loss.",
                CollapseWarning,
                stacklevel=3,
            )
        elif mean_entropy < 1.0:
            warnings.warn(
                f"DINO looks collapsed to one prototype: the batch-averaged teacher "
                f"distribution has entropy {mean_entropy:.3f} nats (every image gets the same "
                "output). Try a lower lr, a higher teacher_temperature, a lower center_momentum "
                "(a faster centre) or koleo_weight > 0.",
                CollapseWarning,
                stacklevel=3,
            )

    def _settings(self, images: TrainingImages, generator: torch.Generator, ranks: int) -> dict:
        """What identifies a run: a checkpoint is resumed only when all of it agrees."""
        return {
            **asdict(self.config),
            "augmentation": settings_of(self.augmentation),
            "loss": {
                "out_dim": self.loss.out_dim,
                "student_temperature": self.loss.student_temperature,
                "center_momentum": self.loss.center_momentum,
            },
            **self._identity(images, generator),
            "initial_weights": self._initial_weights,
            "world_size": ranks,
            **({"labels": self.select_key} if self.select is not None else {}),
        }

    def _save_checkpoint(
        self, position: _Position, generator: torch.Generator, plan: _DinoRun
    ) -> Path | None:
        """Write the state after ``position`` (rank 0; every rank takes part); its path."""
        if self.checkpoint_dir is None:
            return None
        # A checkpoint holds only a state whose losses were all read as finite.
        self._raise_if_non_finite()
        # Every rank's generators: each rank draws its own drop-path masks.
        torch_rng = gather_objects(torch.get_rng_state())
        # Each rank's sums of its own batches' statistics so far in this epoch.
        totals = gather_objects(dict(position.totals))
        cuda_rng = (
            gather_objects(torch.cuda.get_rng_state(self.device))
            if self.device.type == "cuda"
            else []
        )
        if not is_main_process():
            return None
        order = position.order if position.order is not None else torch.empty(0, dtype=torch.long)
        state = {
            "epoch": position.epoch,
            "step": position.step,
            "order": order.cpu(),
            "totals": totals,
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "center": self.loss.center,
            "generator": generator.get_state(),
            "torch_rng": [state.cpu() for state in torch_rng],
            "cuda_rng": [state.cpu() for state in cuda_rng],
            "config": plan.settings,
            "history": self.history,
            "best": self._best or None,
        }
        return self._write_checkpoint(state, position.epoch * plan.steps_per_epoch + position.step)

    def _resume(self, generator: torch.Generator, settings: dict) -> _Position:
        """Load the newest readable checkpoint of this run; where training continues."""
        path, state = self._newest_checkpoint()
        if path is None:
            return _Position(0, 0, None, {})
        # Each rank its own generators' states.
        cuda_rng = state["cuda_rng"][rank()] if state["cuda_rng"] else None
        self._restore(
            path,
            state,
            settings,
            {"student": self.student, "teacher": self.teacher},
            generator,
            (state["torch_rng"][rank()], cuda_rng),
            "backbone or head settings differ: ",
        )
        self.loss.center.copy_(state["center"])
        if state.get("best"):
            self._best = dict(state["best"])
        epoch, step = int(state["epoch"]), int(state["step"])
        if is_main_process():
            logger.info("Resuming DINO from %s (epoch %d, step %d)", path, epoch + 1, step)
        if step == 0:
            return _Position(epoch, 0, None, {})
        return _Position(epoch, step, state["order"], dict(state["totals"][rank()]))


@dataclass
class _Position:
    """Where a run stands: ``step`` steps of epoch ``epoch`` done (its order and sums)."""

    epoch: int
    step: int
    order: torch.Tensor | None
    totals: dict[str, float] = field(default_factory=dict)


@dataclass
class _DinoRun(Run):
    """A DINO run's fixed shape (batch per rank and in all, schedules) and where it stands."""

    batch_size: int
    global_batch: int
    schedules: dict[str, np.ndarray]
    position: _Position = field(default_factory=lambda: _Position(0, 0, None, {}))


def _quality_images(images: TrainingImages) -> torch.Tensor:
    """The uint8 training images RankMe is measured on: at most `QUALITY_IMAGES`, evenly spaced."""
    n_images = len(images)
    count = min(n_images, QUALITY_IMAGES)
    indices = torch.linspace(0, n_images - 1, count).round().long().unique()
    # list() drains the batch iterator, so that a streamed loader is not left mid-epoch.
    (batch,) = list(images.batches([indices]))
    return batch
