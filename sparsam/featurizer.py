"""DinoFeaturizer: DINO self-supervised pretraining and CLS embeddings as a sklearn transformer."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any, ClassVar

import joblib
import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ._estimator import (
    ImageEstimator,
    batched_outputs,
    check_one_label_per_image,
    check_patch_multiples,
    draw_seed,
    seeded_torch,
)
from .backbones import backbone_data_config
from .data import ImageSource, as_image_source, load_images
from .data.cache import (
    EmbeddingStore,
    cache_location,
    cache_namespace,
    image_keys,
    subset_source,
    weights_digest,
)
from .data.skipping import SkippedImage, merge_skipped, warn_skipped
from .dino.head import DinoHead
from .dino.loss import DinoLoss
from .dino.trainer import DinoTrainer, TrainingConfig
from .evaluation.splits import check_class_labels, labeled_mask
from .readout import POOLINGS, ReadOut
from .selection import SnapshotScorer
from .training import distributed
from .training.augment import MultiCropAugmentation
from .training.callbacks import Callback
from .training.compilation import resolve_compile
from .training.precision import resolve_precision

__all__ = ["DinoFeaturizer"]


class DinoFeaturizer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ImageEstimator):
    """Vision-transformer features learned with DINO on unlabeled images.

    ``fit`` trains a timm backbone by self-distillation without labels (DINO; Caron et al.
    2021) as in Nielsen et al., "Self-Supervision for Medical Image Classification"
    (Bioengineering 2023); ``transform`` returns the teacher's CLS embeddings, ready for an
    SVC, a logistic regression or kNN.

    Parameters
    ----------
    backbone : str, default="xcit_small_12_p8_224"
        timm model name; the default is the paper's XCiT-S12/8. Ignored (with
        ``backbone_kwargs``) when ``pretrained`` names saved weights, whose ``config.json``
        defines the architecture.
    backbone_kwargs : dict, optional
        Extra ``timm.create_model`` arguments, e.g. ``{"depth": 4, "embed_dim": 96,
        "num_heads": 3, "patch_size": 4}`` for a tiny ViT.
    pretrained : str, path-like or None, default=None
        Starting weights: None (random); "imagenet" (timm's weights for ``backbone``);
        "bm", "endo" or "isic" (the paper's bone marrow, endoscopy and dermoscopy
        backbones); "hf-hub:org/name[@revision]" (a Hugging Face Hub repository in timm's
        format); or a local directory written by ``save_backbone``. All but None and
        "imagenet" are read by ``sparsam.load_backbone`` (safetensors only; honours
        ``HF_HOME`` and ``HF_HUB_OFFLINE``).
    epochs : int, default=100
        Epochs of DINO training; 0 trains nothing and only loads ``pretrained``.
    batch_size : int, default=64
        Images per step, per process in a ``torch.distributed`` process group (also per
        embedding batch in ``transform``).
    image_size : int or None, default=None
        Every image is resized to this square size; global crops have this size. None takes
        the input size from the backbone's configuration, as timm does: the ``input_size``
        of a saved or Hub backbone's ``config.json`` (a backbone saved at 16 px embeds at
        16 px, the paper's converted weights at 256), else ``backbone_kwargs["img_size"]``,
        else timm's default for ``backbone`` (224 for the paper's XCiT). Must be a multiple
        of the backbone's patch size.
    global_crops : int, default=2
        Number of global crops (the teacher sees only these).
    local_crops : int, default=5
        Number of local crops (student only); 0 disables multi-crop.
    local_crop_size : int, default=96
        Side of the local crops; a multiple of the patch size, at most ``image_size``.
    global_crop_scale, local_crop_scale : tuple of float, default=(0.5, 1.0), (0.1, 0.5)
        Range of the image area each crop covers.
    horizontal_flip, vertical_flip : float, default=0.5
        Flip probabilities. Cells and skin lesions have no up or down; digits, text or chest
        X-rays do, and flips there destroy the signal: set them to 0.
    rotation : float, default=180.0
        Maximum rotation in degrees, drawn uniformly in [-rotation, rotation].
    perspective : float, default=0.5
        Distortion scale of the random perspective (0 disables it), as in the original
        sparsam recipe.
    perspective_p : float or tuple of 3 float, default=(0.75, 0.5, 0.5)
        Perspective probability of the first global, second global and local crops (the
        original sparsam recipe); a float gives every crop the same probability.
    color_jitter : tuple of 4 float, default=(0.4, 0.4, 0.2, 0.1)
        Brightness, contrast, saturation, hue, applied with probability 0.8.
    grayscale : float, default=0.2
        Probability of turning a crop gray.
    blur : float or tuple of 3 float, default=(1.0, 0.1, 0.5)
        Gaussian blur probability of the first global, second global and local crops; a
        float gives every crop the same probability.
    solarization : float, default=0.2
        Solarisation probability of the second global crop.
    out_dim : int, default=4096
        Prototypes of the DINO head. The paper used 65536; small data sets collapse less with
        fewer (DINO's issue tracker; docs/small_data_recipe.md).
    head_hidden_dim, head_bottleneck_dim, head_layers : int, default=2048, 256, 3
        Shape of the DINO head's MLP.
    student_temperature : float, default=0.1
    teacher_temperature : float, default=0.04
        Teacher softmax temperature after warm-up (the paper warms up from 0.02 to 0.04).
    warmup_teacher_temperature : float, default=0.04
    warmup_teacher_temperature_epochs : int, default=0
    teacher_momentum : float, default=0.99
        EMA momentum of the teacher at the start; a cosine schedule takes it to 1. DINO uses
        0.996 and the paper 0.9995 for long runs; a small data set gives few steps, and the
        teacher must follow the student within them.
    center_momentum : float, default=0.9
        EMA momentum of the centre of the teacher's output.
    lr : float, default=5e-4
        Base learning rate for a batch of 256 (scaled linearly with ``batch_size``).
    min_lr : float, default=1e-6
        Learning rate at the end of the cosine decay.
    warmup_epochs : int, default=10
        Epochs of linear learning-rate warm-up.
    weight_decay, weight_decay_end : float, default=0.04, 0.4
        Cosine weight-decay schedule (not on biases and normalisation layers).
    clip_grad : float or None, default=3.0
        Gradient-norm clipping of the student; None switches it off.
    clip_grad_mode : {"per_parameter", "global"}, default="per_parameter"
        "per_parameter" clips every parameter's gradient norm to ``clip_grad`` separately,
        as DINO and the paper do; "global" clips the norm of all gradients together
        (``torch.nn.utils.clip_grad_norm_``).
    freeze_last_layer_epochs : int, default=1
        Epochs during which the head's last layer is not trained.
    head_warmup_epochs : int or "auto", default="auto"
        Epochs during which the backbone stays frozen and only the new DINO head trains,
        so that a fresh head does not damage pretrained features. "auto": 0 without
        ``pretrained`` weights, otherwise a tenth of ``epochs`` (at least 1).
    koleo_weight : float, default=0.1
        Weight of the KoLeo regulariser that spreads the student's CLS embeddings over the
        sphere. As in DINOv2 (same weight, same reduction), it multiplies the sum of one KoLeo
        term per global crop, each over the batch's embeddings of that crop. On digits it
        keeps DINO from collapsing to uniform outputs (benchmarks/RESULTS.md and
        docs/small_data_recipe.md). 0 gives the paper's objective exactly. Needs at least 2
        images per batch.
    drop_path_rate : float, default=0.1
        Stochastic depth of the student; the teacher runs without it, as in DINO.
    pooling : {"cls", "mean", "cls+mean"}, default="cls"
        What ``transform`` reads from a block's tokens: the class token (timm's own
        output), the mean of the patch tokens, or both (`sparsam.readout.ReadOut`).
    n_last_blocks : int, default=1
        From how many of the last blocks, concatenated earliest first, each through the
        backbone's final norm (DINO's evaluation read-out: 4 blocks for ViT-S). For XCiT the
        blocks are its class-attention blocks (2 in the paper's XCiT-S12/8). The width is
        ``n_last_blocks`` x parts x the backbone's embedding width. Read by ``transform``
        only: ``set_params`` changes the read-out of a fitted featurizer without training
        it again.
    device : str, default="auto"
        "auto" (CUDA when available), "cpu", "cuda", "cuda:1", … ``fit`` refuses a device
        torch does not know or this machine lacks.
    precision : {"auto", "fp32", "bf16"}, default="auto"
        "auto": bf16 autocast on CUDA devices that support it, fp32 on the CPU (bf16
        autocast ran 1.5-2.4x slower than fp32 even on a CPU with AMX and AVX512-BF16;
        ``benchmarks/RESULTS.md``). "bf16" forces autocast anywhere.
    compile : bool or "auto", default="auto"
        Compile the training forward with ``torch.compile`` (the attention, MLP and XCiT
        patch-interaction parts of every block and the head, student and teacher; one
        compiled graph serves all blocks). "auto" compiles only where it was measured to
        pay, so far nowhere: on 2 CPU cores a step ran 1.01x as fast after 26 s of
        compiling, and the GPU measurement is pending (``benchmarks/RESULTS.md``). The
        compiled run draws the same random numbers and follows the eager run's loss curve up
        to float rounding; if compiling fails, training continues uncompiled with one
        ``CompileFallbackWarning``.
    num_workers : int, default=0
        DataLoader worker processes that decode and resize image files (in ``fit`` and
        ``transform``), so that decoding overlaps training on the GPU. 0 decodes in this
        process.
    in_memory : bool or "auto", default="auto"
        True decodes all training images once into one uint8 tensor of
        ``n x 3 x image_size²`` bytes; False streams them: every batch is read, decoded and
        resized when it is needed (in ``num_workers`` processes, pinned memory and two
        batches of prefetching per worker on a GPU), so memory stays bounded by workers x
        prefetch x batch whatever the number of images. "auto" keeps the decoded set in
        memory up to 1 GiB (``sparsam.data.training.IN_MEMORY_LIMIT_BYTES``; 85,000 images
        at 64 px, 7,000 at 224 px) and streams above. Both give the same batches, bit for
        bit. Stream with ``num_workers >= 1``: decoding in this process runs in series with
        training (a 64 px PNG took 0.5 ms to decode and resize on a 2-core AMD EPYC, and
        streaming with ``num_workers=0`` trained a tiny ViT at 0.71x the in-memory rate, with
        one worker at 0.91x; ``benchmarks/RESULTS.md``).
    checkpoint_dir : path-like, optional
        Training writes checkpoints ``dino_checkpoint_<step>.pt`` there (atomically) after
        every epoch and every ``checkpoint_every`` steps, keeps the newest three, and
        resumes from the newest after an interruption, mid-epoch included; a newest file
        that cannot be read (truncated) is skipped, with a warning, for the one before.
        Ctrl-C during ``fit`` finishes the current step, writes a checkpoint and says how to
        resume. A checkpoint records what identifies the run (seed, the images, the starting
        weights, the number of processes and every training setting); ``fit`` refuses one
        written by another run with an error naming what differs, and refuses an unwritable
        directory before training. In a process group only rank 0 writes, and every rank
        reads the same directory (a shared file system across nodes).
    checkpoint_every : int or None, default=1000
        Steps between mid-epoch checkpoints (with ``checkpoint_dir``); None checkpoints at
        epoch ends only.
    memory : str, path-like, joblib.Memory or None, default=None
        Directory in which ``transform`` caches embeddings, one file per image below
        ``<memory>/sparsam-embeddings/``; a ``joblib.Memory`` stands for its ``location``
        (None there, like ``memory=None``, caches nothing). An image's entry is keyed by the
        fitted weights (``weights_digest_``), the device type and precision, and the image
        itself: the bytes of an array or PIL image, or a file's resolved path, size and
        modification time (files are not read to key them). Each image is thus embedded once
        across splits, repeats, parameter settings and processes, and a refit or an edited
        file is embedded anew. With a featurizer fitted once,
        ``GridSearchCV(make_pipeline(FrozenEstimator(fitted), SVC()), param_grid,
        cv=FewShotSplit(...))`` embeds every image once, however many splits and settings
        it tries. Stale entries are never removed: delete the directory to reclaim space.
    random_state : int, RandomState instance or None, default=None
        Seeds weights, batch order, augmentations and drop-path (torch's global CPU and
        CUDA generators are seeded for the fit and restored afterwards): the same value on
        the CPU gives the same embeddings bit for bit, and a run resumed from
        ``checkpoint_dir`` the same as an uninterrupted one.
    verbose : int, default=1
        What ``fit`` and ``transform`` print to stderr. 0: nothing. 1: progress bars (the
        decoding of the training images when they are held in memory, the DINO epochs with
        loss and teacher entropy, the embedding batches). 2 and above: also every record
        of the ``"sparsam"`` logger from level INFO during training (one line per epoch
        with loss, teacher entropy and KL, resumption from a checkpoint, collapse
        warnings), printed without configuring ``logging``; the logger's level and handlers
        are restored after ``fit``. If your ``logging`` configuration already shows INFO
        records of ``"sparsam"``, use 1, or they appear twice.
    callbacks : list of Callback or None, default=None
        `sparsam.training.callbacks.Callback` objects whose ``on_epoch_start`` and
        ``on_epoch_end`` the DINO loop calls at every epoch's start and end, with the trainer
        (``trainer.backbone`` is the teacher's backbone, ``trainer.history`` the epochs so
        far). For watching training (snapshots, logging); they are not part of a
        checkpoint's run identity and must not change the training.
    on_error : {"raise", "skip"}, default="raise"
        What an image file that cannot be decoded (unreadable, truncated, not an image,
        larger than ``PIL.Image.MAX_IMAGE_PIXELS``, deleted since) does. "raise": ``fit``
        and ``transform`` stop with a ValueError naming its index and path. "skip": ``fit``
        trains without it (and scores snapshots without it, given labels), records it in
        ``skipped_files_``; ``transform`` gives it a row of NaN (never cached). Either way a
        `sparsam.data.skipping.SkippedImagesWarning` counts and names the skipped images
        (its ``skipped`` attribute lists them): nothing is dropped silently. Streamed
        training (``in_memory=False``) then decodes every file once before the first epoch
        to find the bad ones, so that every epoch, and a resumed run, sees the same images.
        Downstream scikit-learn estimators refuse NaN: drop those rows first
        (``np.isnan(embeddings).any(axis=1)``).

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The teacher backbone, in eval mode. Its BatchNorm statistics (XCiT) are running
        averages over the teacher's training batches, as in DINO.
    n_features_out_ : int
        Width of the embeddings with the read-out (``pooling``, ``n_last_blocks``) at the
        end of ``fit``; ``get_feature_names_out`` follows the current read-out.
    history_ : dict of list
        Per-epoch ``loss``, ``teacher_entropy``, ``teacher_mean_entropy``, ``kl``, ``lr``,
        ``weight_decay``, ``teacher_momentum``, ``teacher_temperature``, ``seconds``,
        ``rankme`` and, when ``koleo_weight > 0``, ``koleo``; empty when ``epochs=0``. A
        teacher entropy near ln(out_dim) means collapse. ``rankme`` is
        `sparsam.model_selection.rankme` of what ``transform`` would return, at the end of
        the epoch, for up to 512 (``sparsam.dino.trainer.QUALITY_IMAGES``) training images
        at evenly spaced indices: the effective number of dimensions the embeddings spread
        over (1 to the smaller of the image count and ``n_features_out_``), a label-free
        measure that went with downstream accuracy in Garrido et al. (ICML 2023). Measuring
        it changes neither the weights nor any random draw. With labels (``fit(X, y)``, see
        ``y``), also ``selection_score`` and ``knn_accuracy``: the leave-one-out accuracy of
        DINO's weighted 20-nearest-neighbour classifier (cosine similarity, temperature 0.07;
        `sparsam.selection.knn_accuracy`) on the labeled images' features, the number DINO,
        lightly and solo-learn log per epoch; computed from the features the snapshot choice
        embeds anyway, it changes neither the weights nor any random draw.
    initial_rankme_ : float
        The same measure of the starting backbone on the same images, before any training
        step (also in a run resumed from ``checkpoint_dir``). Higher means embeddings spread
        over more dimensions; ``history_["rankme"]`` falling below ``initial_rankme_`` is a
        sign that training made the features less diverse (dimensional collapse). NaN when
        ``epochs=0``, whose ``fit`` decodes no images.
    data_config_ : dict
        ``mean``, ``std``, ``image_size`` and ``interpolation`` used by ``transform``.
    skipped_files_ : list of SkippedImage
        The images ``fit`` left out because they could not be decoded (``on_error="skip"``):
        ``(index, path, reason)`` tuples (`sparsam.data.skipping.SkippedImage`), by index;
        empty when none was (always with ``on_error="raise"``).
    weights_digest_ : str
        SHA-256 of ``backbone_`` (architecture and state dict) and ``data_config_`` at the
        end of ``fit``; it keys the cache of ``memory``. Delete it after changing
        ``backbone_`` in place, and ``transform`` computes it afresh (every call, without
        storing it: ``transform`` changes no attribute).

    Notes
    -----
    ``fit`` called in every process of an initialised ``torch.distributed`` process group
    (``torchrun``; ``sparsam pretrain`` joins it for you) trains one model together: the
    student in DistributedDataParallel, each image once per epoch across the processes,
    ``batch_size`` per process and ``lr`` scaled from the global batch, SyncBatchNorm on
    GPUs, checkpoints written by rank 0 only. Every process ends with the same
    ``backbone_``. Pass the same images and ``random_state`` to every process.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.svm import SVC
    >>> from sparsam import DinoFeaturizer
    >>> featurizer = DinoFeaturizer(
    ...     backbone="vit_tiny_patch16_224", image_size=16, local_crop_size=8,
    ...     backbone_kwargs={"patch_size": 4, "depth": 2}, out_dim=256, epochs=1,
    ...     verbose=0, random_state=0)
    >>> clf = make_pipeline(featurizer, SVC())  # clf.fit(images, labels)
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **ImageEstimator._parameter_constraints,
        "pretrained": [str, os.PathLike, None],
        "epochs": [Interval(Integral, 0, None, closed="left")],
        "global_crops": [Interval(Integral, 2, None, closed="left")],
        "local_crops": [Interval(Integral, 0, None, closed="left")],
        "local_crop_size": [Interval(Integral, 1, None, closed="left")],
        "global_crop_scale": [tuple, list],
        "local_crop_scale": [tuple, list],
        "solarization": [Interval(Real, 0, 1, closed="both")],
        "out_dim": [Interval(Integral, 1, None, closed="left")],
        "head_hidden_dim": [Interval(Integral, 1, None, closed="left")],
        "head_bottleneck_dim": [Interval(Integral, 1, None, closed="left")],
        "pooling": [StrOptions(set(POOLINGS))],
        "n_last_blocks": [Interval(Integral, 1, None, closed="left")],
        "head_layers": [Interval(Integral, 1, None, closed="left")],
        "student_temperature": [Interval(Real, 0, None, closed="neither")],
        "teacher_temperature": [Interval(Real, 0, None, closed="neither")],
        "warmup_teacher_temperature": [Interval(Real, 0, None, closed="neither")],
        "warmup_teacher_temperature_epochs": [Interval(Integral, 0, None, closed="left")],
        "teacher_momentum": [Interval(Real, 0, 1, closed="both")],
        "center_momentum": [Interval(Real, 0, 1, closed="both")],
        "weight_decay_end": [Interval(Real, 0, None, closed="left")],
        "clip_grad": [Interval(Real, 0, None, closed="neither"), None],
        "clip_grad_mode": [StrOptions({"per_parameter", "global"})],
        "freeze_last_layer_epochs": [Interval(Integral, 0, None, closed="left")],
        "head_warmup_epochs": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "koleo_weight": [Interval(Real, 0, None, closed="left")],
        "checkpoint_every": [Interval(Integral, 1, None, closed="left"), None],
        "memory": [str, os.PathLike, joblib.Memory, None],
    }
    _crop_scale_names = ("global_crop_scale", "local_crop_scale")
    _fitted_module = "backbone_"

    def __init__(
        self,
        backbone: str = "xcit_small_12_p8_224",
        *,
        backbone_kwargs: dict[str, Any] | None = None,
        pretrained: str | os.PathLike | None = None,
        epochs: int = 100,
        batch_size: int = 64,
        image_size: int | None = None,
        global_crops: int = 2,
        local_crops: int = 5,
        local_crop_size: int = 96,
        global_crop_scale: tuple[float, float] = (0.5, 1.0),
        local_crop_scale: tuple[float, float] = (0.1, 0.5),
        horizontal_flip: float = 0.5,
        vertical_flip: float = 0.5,
        rotation: float = 180.0,
        perspective: float = 0.5,
        perspective_p: float | tuple[float, float, float] = (0.75, 0.5, 0.5),
        color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        grayscale: float = 0.2,
        blur: float | tuple[float, float, float] = (1.0, 0.1, 0.5),
        solarization: float = 0.2,
        out_dim: int = 4096,
        head_hidden_dim: int = 2048,
        head_bottleneck_dim: int = 256,
        head_layers: int = 3,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.04,
        warmup_teacher_temperature: float = 0.04,
        warmup_teacher_temperature_epochs: int = 0,
        teacher_momentum: float = 0.99,
        center_momentum: float = 0.9,
        lr: float = 5e-4,
        min_lr: float = 1e-6,
        warmup_epochs: int = 10,
        weight_decay: float = 0.04,
        weight_decay_end: float = 0.4,
        clip_grad: float | None = 3.0,
        clip_grad_mode: str = "per_parameter",
        freeze_last_layer_epochs: int = 1,
        head_warmup_epochs: int | str = "auto",
        koleo_weight: float = 0.1,
        drop_path_rate: float = 0.1,
        pooling: str = "cls",
        n_last_blocks: int = 1,
        device: str | torch.device = "auto",
        precision: str = "auto",
        compile: bool | str = "auto",
        num_workers: int = 0,
        in_memory: bool | str = "auto",
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int | None = 1000,
        memory: str | os.PathLike | joblib.Memory | None = None,
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 1,
        callbacks: list[Callback] | None = None,
        on_error: str = "raise",
    ) -> None:
        self._store_parameters(locals())

    def fit(self, X: Any, y: Any = None) -> DinoFeaturizer:
        """Train the backbone with DINO on ``X``; labels, if any, only choose the snapshot.

        Parameters
        ----------
        X : array, torch tensor, pandas Series or DataFrame, or list
            The images: an array ``(n, H, W)`` or ``(n, H, W, C)``, or a list of arrays, PIL
            images or file paths; uint8, uint16 or float in [0, 1]; grayscale, RGB or RGBA.
            A torch tensor may also be channels first, ``(n, C, H, W)`` with C in 1, 3; a
            Series or one-column DataFrame (a ``ColumnTransformer``'s column) holds paths,
            arrays or PIL images. See ``sparsam.data.as_image_source``.
        y : array-like of shape (n,) or None, default=None
            Class labels of some images, ``-1`` for the unlabeled ones; the DINO loss never
            sees them. With at least 2 classes of at least 2 labeled images each, the teacher
            is scored on the labeled images as the starting weights and after every epoch
            (`sparsam.selection.labeled_score`: cross-validated balanced accuracy of an SVC on
            the features ``transform`` returns), and ``fit`` keeps the best-scoring snapshot
            (ties to the later epoch; ``history_["selection_score"]``,
            ``initial_selection_score_``, ``selected_epoch_``): the features are never worse,
            by that score, than the starting weights. In a ``Pipeline``, ``fit(X, y)`` passes
            the labels, and inside ``cross_validate`` or a grid search only the training
            folds' labels reach it. ``None`` or all ``-1``: the labels change nothing.

        Returns
        -------
        self : DinoFeaturizer
        """
        device = self._check_parameters()
        cache_location(self.memory)
        source = as_image_source(X)
        labeled = self._labeled_images(source, y)
        seed = draw_seed(check_random_state(self.random_state))
        with seeded_torch(seed):
            backbone = self._build_backbone(self.pretrained)
            head = DinoHead(
                backbone.num_features,
                out_dim=self.out_dim,
                hidden_dim=self.head_hidden_dim,
                bottleneck_dim=self.head_bottleneck_dim,
                n_layers=self.head_layers,
            )
        data_config = backbone_data_config(backbone, self.image_size)
        self._validate_sizes(backbone, data_config)
        # Before training: a read-out the backbone cannot give fails now, not after hours.
        width = self._readout(backbone).width
        if self.epochs == 0:
            if self.pretrained is None:
                warnings.warn(
                    "epochs=0 with pretrained=None: the backbone keeps its random weights, and "
                    "untrained features are weak. Train (epochs > 0) or load pretrained weights.",
                    UserWarning,
                    stacklevel=2,
                )
            teacher = backbone
            training = {
                "history_": {},
                "initial_rankme_": math.nan,
                "initial_selection_score_": math.nan,
                "selected_epoch_": 0,
                "skipped_files_": [],
            }
        else:
            teacher, training = self._train(
                backbone, head, source, labeled, data_config, device, seed
            )
        teacher = teacher.eval().requires_grad_(False)
        self._set_fitted(
            backbone_=teacher,
            data_config_=data_config,
            n_features_out_=width,
            weights_digest_=weights_digest(teacher, data_config),
            **training,
        )
        return self

    def _train(
        self,
        backbone: torch.nn.Module,
        head: DinoHead,
        source: ImageSource,
        labeled: tuple[np.ndarray, np.ndarray] | None,
        data_config: dict[str, Any],
        device: torch.device,
        seed: int,
    ) -> tuple[torch.nn.Module, dict[str, Any]]:
        """DINO on ``source``: the teacher backbone (the best snapshot, given labels) and the
        fitted attributes of training (``history_``, ``initial_rankme_``, …)."""
        skipped = self._skipped_list()
        scorer = self._snapshot_scorer(source, labeled, data_config, device, skipped)
        # Built before decoding: an unwritable checkpoint_dir fails here, not hours later.
        trainer = DinoTrainer(
            backbone,
            head,
            self._augmentation(data_config),
            DinoLoss(self.out_dim, self.student_temperature, self.center_momentum),
            self._training_config(),
            device,
            resolve_precision(self.precision, device),
            self.checkpoint_dir,
            self.checkpoint_every,
            compile=resolve_compile(self.compile, device),
            select=scorer,
            select_key=scorer.key if scorer is not None else "",
            callbacks=self.callbacks or (),
        )
        images = self._decode_training_images(source, data_config["image_size"], device, skipped)
        skipped = merge_skipped(skipped or [])
        warn_skipped(skipped, len(source), "DinoFeaturizer.fit")
        generator = torch.Generator().manual_seed(seed)
        with self._training_progress("DINO") as progress:
            history = trainer.fit(images, generator, progress)
        return trainer.teacher.backbone, {
            "history_": history,
            "initial_rankme_": trainer.initial_rankme,
            "initial_selection_score_": trainer.initial_selection_score,
            "selected_epoch_": trainer.selected_epoch,
            "skipped_files_": skipped,
        }

    def _epoch_postfix(self, row: dict[str, float]) -> dict[str, str]:
        return {
            **super()._epoch_postfix(row),
            "entropy": f"{row['teacher_entropy']:.2f}",
            "rankme": f"{row['rankme']:.1f}",
            **({"knn": f"{row['knn_accuracy']:.2f}"} if "knn_accuracy" in row else {}),
        }

    def _labeled_images(self, source: ImageSource, y: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """Indices and labels of the labeled images that can choose a snapshot, or None."""
        if y is None:
            return None
        y = column_or_1d(y, warn=True)
        check_one_label_per_image(source, y, "one label per image (-1 for unlabeled ones)")
        check_class_labels(y)
        indices = np.flatnonzero(labeled_mask(y))
        if len(indices) == 0:
            return None
        _, counts = np.unique(y[indices], return_counts=True)
        if len(counts) < 2 or counts.min() < 2:
            warnings.warn(
                f"y labels {len(indices)} image(s) in {len(counts)} class(es), the smallest "
                f"with {counts.min()}: choosing the DINO snapshot by the labels needs at least "
                "2 classes of at least 2 labeled images each, so the last epoch is kept.",
                UserWarning,
                stacklevel=3,
            )
            return None
        return indices, y[indices]

    def _snapshot_scorer(
        self,
        source: ImageSource,
        labeled: tuple[np.ndarray, np.ndarray] | None,
        data_config: dict[str, Any],
        device: torch.device,
        skipped: list[SkippedImage] | None,
    ) -> SnapshotScorer | None:
        """The scorer of snapshots on the labeled images (those that decode, with ``skipped``)."""
        if labeled is None:
            return None
        indices, labels = labeled
        # Decoded once at the training size: every snapshot embeds the same pixels.
        failed: list[SkippedImage] | None = None if skipped is None else []
        pixels = load_images(
            subset_source(source, indices.tolist()), data_config["image_size"], skipped=failed
        )
        if failed:
            # Recorded by their index in X; training finds them again and merge_skipped
            # keeps one record each.
            skipped.extend(image._replace(index=int(indices[image.index])) for image in failed)
            good = np.setdiff1d(np.arange(len(indices)), [image.index for image in failed])
            pixels, labels = pixels[good], labels[good]
        return SnapshotScorer(
            as_image_source(pixels),
            labels,
            data_config,
            {"pooling": self.pooling, "n_last_blocks": int(self.n_last_blocks)},
            self.batch_size,
            device,
            self.precision,
        )

    def transform(self, X: Any) -> np.ndarray:
        """Embeddings of the teacher backbone: its CLS tokens and/or mean patch tokens.

        Parameters
        ----------
        X : array, torch tensor, pandas Series or DataFrame, or list
            The images, in any form ``fit`` accepts.

        Returns
        -------
        embeddings : ndarray of shape (n, width), float32
            ``width`` is ``n_features_out_`` unless ``pooling`` or ``n_last_blocks`` changed
            since ``fit``. With ``memory`` set, images embedded before (with the same
            read-out) are read from the cache and the others are embedded and stored.

        Notes
        -----
        Called in every process of an initialised ``torch.distributed`` process group of
        more than one process (``torchrun``), with the same ``X`` in each, every process
        embeds one contiguous block of the images (with ``memory``: reads its block from the
        cache and embeds and stores only the images missing there) and every process returns
        all ``n`` rows, in input order. Each process embeds on its own ``device``; with
        ``"auto"``, the current CUDA device, which
        ``sparsam.training.distributed.init_from_environment`` sets to the GPU of its
        ``LOCAL_RANK``. Inside ``sparsam.training.distributed.no_sharding()`` each process embeds
        all of its own ``X``.
        """
        check_is_fitted(self, "backbone_")
        location = cache_location(self.memory)
        source = as_image_source(X)
        skipped = self._skipped_list()
        if distributed.sharding_active():
            # Each process warns about the skipped images of its own shard.
            embeddings = distributed.shard_and_gather(
                lambda shard: self._cached_embeddings(
                    subset_source(source, shard), location, skipped, shard
                ),
                len(source),
            )
        else:
            embeddings = self._cached_embeddings(source, location, skipped, range(len(source)))
        warn_skipped(merge_skipped(skipped or []), len(source), "DinoFeaturizer.transform")
        return embeddings

    def _cached_embeddings(
        self,
        source: ImageSource,
        location: Path | None,
        skipped: list[SkippedImage] | None,
        positions: Sequence[int],
    ) -> np.ndarray:
        """Embeddings of ``source``, whose images are ``X[positions]``; undecodable images
        are recorded in ``skipped`` by their index in X (with ``on_error="skip"``)."""
        if location is None:
            return self._embed(source, skipped, positions)
        device = self._resolve_device()
        namespace = cache_namespace(
            self._weights_digest(),
            device.type,
            resolve_precision(self.precision, device),
            readout=f"{self.pooling}/{self.n_last_blocks}",
        )
        store = EmbeddingStore(location, namespace)
        rows: dict[str, list[int]] = {}
        for index, key in enumerate(image_keys(source)):
            rows.setdefault(key, []).append(index)
        width = self._n_features_out
        embeddings = np.empty((len(source), width), dtype=np.float32)
        missing = []
        for key, indices in rows.items():
            cached = store.load(key, width)
            if cached is None:
                missing.append(key)
            else:
                embeddings[indices] = cached
        if missing:
            firsts = [rows[key][0] for key in missing]
            computed = self._embed(
                subset_source(source, firsts), skipped, [positions[index] for index in firsts]
            )
            reasons = {image.index: image for image in skipped or []}
            for key, embedding in zip(missing, computed, strict=True):
                embeddings[rows[key]] = embedding
                bad = reasons.get(positions[rows[key][0]])
                if bad is None:
                    store.save(key, embedding)
                    continue
                # A skipped image's NaN row is not stored (it is tried again next time), and
                # every row of the same file is recorded.
                skipped.extend(bad._replace(index=positions[row]) for row in rows[key][1:])
        return embeddings

    def _embed(
        self,
        source: ImageSource,
        skipped: list[SkippedImage] | None = None,
        positions: Sequence[int] | None = None,
    ) -> np.ndarray:
        """The read-out of ``source``; images that cannot be decoded go to ``skipped`` (by
        their index in ``positions``) with a row of NaN, or raise when it is None."""
        readout = self._readout(self.backbone_)
        failed: list[SkippedImage] | None = None if skipped is None else []
        embeddings = batched_outputs(
            readout,
            source,
            self.data_config_,
            readout.width,
            description="embedding",
            skipped=failed,
            **self._inference_options(),
        )
        if failed:
            skipped.extend(image._replace(index=int(positions[image.index])) for image in failed)
        return embeddings

    @property
    def _n_features_out(self) -> int:
        return self._readout(self.backbone_).width

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns.

        ``dinofeaturizer0``, ``dinofeaturizer1``, … for the default read-out (the last
        block's CLS token); otherwise ``dinofeaturizer_<blocks><i>_<part><j>``, which says
        the block (its index in ``blocks``, or XCiT's ``clsattnblocks``), the part (``cls``
        or ``mean``) and the column within it, e.g. ``dinofeaturizer_blocks11_mean0``.

        Parameters
        ----------
        input_features : ignored
            Images have no input feature names; accepted for scikit-learn's API.

        Returns
        -------
        ndarray of str
        """
        check_is_fitted(self, "backbone_")
        readout = self._readout(self.backbone_)
        if readout.pooling == "cls" and readout.n_last_blocks == 1:
            return super().get_feature_names_out(input_features)
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}_{name}" for name in readout.feature_names()], dtype=object)

    def _readout(self, backbone: torch.nn.Module) -> ReadOut:
        return ReadOut(backbone, self.pooling, int(self.n_last_blocks))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Featurizers pickled before the memory parameter existed did not cache.
        super().__setstate__({"memory": None, **state})

    def _weights_digest(self) -> str:
        # Featurizers pickled before weights_digest_ existed lack it; transform computes it
        # and does not store it, for transform changes no attribute.
        digest = getattr(self, "weights_digest_", None)
        if digest is None:
            digest = weights_digest(self.backbone_, self.data_config_)
        return digest

    def _validate_sizes(self, backbone: torch.nn.Module, data_config: dict[str, Any]) -> None:
        """Refuse crop sizes the backbone cannot tile, before any image is decoded."""
        image_size = data_config["image_size"]
        sizes = {"image_size": image_size}
        if self.epochs > 0 and self.local_crops > 0:
            sizes["local_crop_size"] = self.local_crop_size
            if self.local_crop_size > image_size:
                raise ValueError(
                    f"local_crop_size={self.local_crop_size} is larger than image_size="
                    f"{image_size}; local crops are the small views (DINO: 96 and 224)."
                )
        check_patch_multiples(backbone, sizes, self.image_size is not None)

    def _augmentation(self, data_config: dict[str, Any]) -> MultiCropAugmentation:
        return super()._augmentation(
            data_config,
            global_crops=self.global_crops,
            local_crops=self.local_crops,
            local_crop_size=self.local_crop_size,
            global_crop_scale=tuple(self.global_crop_scale),
            local_crop_scale=tuple(self.local_crop_scale),
            solarization_p=self.solarization,
        )

    def _training_config(self) -> TrainingConfig:
        return TrainingConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            min_lr=self.min_lr,
            warmup_epochs=self.warmup_epochs,
            weight_decay=self.weight_decay,
            weight_decay_end=self.weight_decay_end,
            teacher_momentum=self.teacher_momentum,
            teacher_temperature=self.teacher_temperature,
            warmup_teacher_temperature=self.warmup_teacher_temperature,
            warmup_teacher_temperature_epochs=self.warmup_teacher_temperature_epochs,
            clip_grad=self.clip_grad,
            clip_grad_mode=self.clip_grad_mode,
            freeze_last_layer_epochs=self.freeze_last_layer_epochs,
            koleo_weight=self.koleo_weight,
            head_warmup_epochs=self._resolved_head_warmup_epochs(),
        )

    def _resolved_head_warmup_epochs(self) -> int:
        if self.head_warmup_epochs != "auto":
            return int(self.head_warmup_epochs)
        if self.pretrained is None:
            return 0
        return max(1, round(0.1 * self.epochs))
