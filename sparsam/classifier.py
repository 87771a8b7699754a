"""SupervisedClassifier: the paper's supervised baseline, a fine-tuned timm network, as a sklearn
classifier."""

from __future__ import annotations

import copy
import os
import warnings
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
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
from .data import as_image_source
from .data.cache import subset_source
from .data.skipping import warn_skipped
from .evaluation.splits import check_class_labels, labeled_mask
from .featurizer import DinoFeaturizer
from .supervised.trainer import FineTuneConfig, FineTuneTrainer
from .training.augment import MultiCropAugmentation
from .training.callbacks import Callback
from .training.compilation import resolve_compile
from .training.precision import resolve_precision

__all__ = ["SupervisedClassifier"]


class SupervisedClassifier(ClassifierMixin, ImageEstimator):
    """A timm backbone fine-tuned end to end with a linear head: the paper's supervised baseline.

    Nielsen et al. (Bioengineering 2023) compare DINO features + SVM with a network trained
    on the same labels end to end. ``fit`` trains a backbone and a new linear layer on the
    labeled images with class-weighted cross-entropy (weights proportional to 1 / class count,
    normalised to sum to the number of classes), AdamW with weight decay on weight matrices,
    a cosine learning-rate schedule with linear warm-up and the augmentation of DINO's global
    crops (one crop per image, no multi-crop). A stratified part of the labels
    (``validation_fraction``) scores every epoch; training stops after ``n_iter_no_change``
    epochs without a better validation balanced accuracy (ties broken by the lower loss), and
    the best epoch's weights are restored. Starting from a DINO backbone (``pretrained=`` a
    fitted `DinoFeaturizer`, a directory or a Hub id) gives the third arm of the paper's
    comparison, "DINO, then fine-tune".

    Parameters
    ----------
    backbone : str, default="xcit_small_12_p8_224"
        timm model name, as for `DinoFeaturizer`; ignored (with ``backbone_kwargs``) when
        ``pretrained`` brings its own architecture.
    backbone_kwargs : dict, optional
        Extra ``timm.create_model`` arguments.
    pretrained : str, path-like, DinoFeaturizer, torch.nn.Module or None, default=None
        Starting weights: everything `DinoFeaturizer` accepts (None, "imagenet", "bm",
        "endo", "isic", "hf-hub:org/name[@revision]", a directory written by
        ``save_backbone``); a fitted `DinoFeaturizer` (its ``backbone_`` and
        ``data_config_``: normalisation and, with ``image_size=None``, its input size); or a
        backbone module (e.g. ``featurizer.backbone_``), which is copied, never changed. A
        fitted featurizer is shared, not refitted, by ``sklearn.base.clone`` (and so by
        ``GridSearchCV``, ``cross_validate`` and ``few_shot_curve``). A module's drop-path is
        kept as it was built; ``drop_path_rate`` applies to timm names and saved weights.
    epochs : int, default=100
        Most epochs of training; early stopping usually ends sooner.
    batch_size : int, default=32
        Images per step (and per batch of ``predict``); at most the number of training
        images.
    image_size : int or None, default=None
        Side of the square input; None takes the backbone's configured input size (as
        `DinoFeaturizer` does) or the fitted featurizer's.
    lr : float, default=1e-4
        AdamW learning rate after the warm-up (not scaled with the batch size).
    min_lr : float, default=1e-6
        Learning rate at the end of the cosine decay over ``epochs``.
    warmup_epochs : int, default=5
        Epochs of linear learning-rate warm-up from 0.
    weight_decay : float, default=0.05
        AdamW weight decay (not on biases and normalisation layers).
    validation_fraction : float or None, default=0.3
        Share of the labeled images, stratified by class, held out to choose the epoch (the
        paper held out 30 %): at least one image per class, and every class keeps at least
        one for training. None, or a class with a single label (1 label per class), trains
        all ``epochs`` on every label and keeps the last epoch (a ``UserWarning`` says so).
    n_iter_no_change : int or None, default=10
        Epochs without a better validation score after which training stops; None trains
        all ``epochs`` and still restores the best one.
    crop_scale : tuple of float, default=(0.5, 1.0)
        Range of the image area the training crop covers (DINO's global crops).
    horizontal_flip, vertical_flip : float, default=0.5
        Flip probabilities; 0 for images with an up and a down (digits, chest X-rays).
    rotation : float, default=180.0
        Maximum rotation in degrees.
    perspective : float, default=0.5
        Distortion scale of the random perspective (0 disables it).
    perspective_p : float or tuple of 3 float, default=0.5
        Probability of the perspective distortion. A triple, as `DinoFeaturizer` takes it
        (first global, second global, local crops), is accepted: the one training crop is a
        first global crop and uses its first entry.
    color_jitter : tuple of 4 float, default=(0.4, 0.4, 0.2, 0.1)
        Brightness, contrast, saturation, hue, applied with probability 0.8.
    grayscale : float, default=0.2
        Probability of turning a crop gray.
    blur : float or tuple of 3 float, default=0.5
        Probability of Gaussian blur; of a triple (as for ``perspective_p``), the first entry.
    drop_path_rate : float, default=0.1
        Stochastic depth during training.
    device : str, default="auto"
        "auto" (CUDA when available), "cpu", "cuda", "cuda:1", …
    precision : {"auto", "fp32", "bf16"}, default="auto"
        "auto": bf16 autocast on CUDA devices that support it, fp32 on the CPU.
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
        DataLoader worker processes that decode image files.
    in_memory : bool or "auto", default="auto"
        Decode the labeled images once into memory (True), stream them from their files
        (False), or decide by size ("auto"), as for `DinoFeaturizer`.
    checkpoint_dir : path-like, optional
        ``supervised_checkpoint_<step>.pt`` is written there after every epoch (atomically;
        the newest three kept, with the best epoch's weights), and ``fit`` resumes from the
        newest one of the same run (same seed, images, labels and settings), giving the same
        model as an uninterrupted fit. Ctrl-C during ``fit`` finishes the epoch, writes a
        checkpoint and says how to resume. A checkpoint of another run is refused with an
        error naming what differs.
    random_state : int, RandomState instance or None, default=None
        Seeds the head, the validation split, batch order, augmentations and drop-path: the
        same value on the CPU gives the same model bit for bit.
    verbose : int, default=1
        0: nothing; 1: progress bars; 2: also one log line per epoch.
    callbacks : list of Callback or None, default=None
        `sparsam.training.callbacks.Callback` objects whose ``on_epoch_start`` and
        ``on_epoch_end`` the fine-tuning loop calls at every epoch's start and end, with the
        trainer (``trainer.backbone`` is the backbone being fine-tuned, ``trainer.history``
        the epochs so far). For watching training; they are not part of a checkpoint's run
        identity and must not change the training.
    on_error : {"raise", "skip"}, default="raise"
        What an image file that cannot be decoded (unreadable, truncated, not an image,
        larger than ``PIL.Image.MAX_IMAGE_PIXELS``) does. "raise": ``fit`` and ``predict``
        stop with a ValueError naming its index and path. "skip": ``fit`` trains without
        it (its label is dropped before the validation split) and records it in
        ``skipped_files_``; ``decision_function`` and ``predict_proba`` give it a row of NaN
        and ``predict`` gives it ``None`` (the result is then an object array). Either way
        a `sparsam.data.skipping.SkippedImagesWarning` counts and names them: nothing is
        dropped silently.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted (-1, "unlabeled", is never a class).
    model_ : torch.nn.Module
        Backbone and linear head (`sparsam.supervised.ClassifierModel`) with the best
        epoch's weights, in eval mode.
    history_ : dict of list
        Per epoch ``loss`` (class-weighted, on augmented crops), ``lr``, ``seconds`` and,
        with a validation part, ``validation_loss`` and ``validation_balanced_accuracy``.
    best_epoch_ : int
        0-based epoch whose weights ``model_`` holds.
    n_iter_ : int
        Epochs trained (fewer than ``epochs`` when training stopped early).
    early_stopping_ : bool
        Whether a validation part chose the epoch (False at one label per class).
    class_weight_ : ndarray of shape (n_classes,)
        The cross-entropy weights, from the class counts of the training part.
    data_config_ : dict
        ``mean``, ``std``, ``image_size`` and ``interpolation`` of the inputs.
    skipped_files_ : list of SkippedImage
        The labeled images ``fit`` left out because they could not be decoded
        (``on_error="skip"``): ``(index, path, reason)`` with the index in ``X``; empty when
        none was.

    See Also
    --------
    DinoFeaturizer : self-supervised features for an SVM, the other side of the comparison.
    sparsam.few_shot_curve : both sides scored on the same draws.

    Examples
    --------
    >>> from sparsam import SupervisedClassifier
    >>> clf = SupervisedClassifier(
    ...     backbone="vit_tiny_patch16_224", image_size=16, epochs=2, verbose=0,
    ...     backbone_kwargs={"patch_size": 4, "depth": 2}, random_state=0)
    >>> # clf.fit(images, labels).predict(images)
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **ImageEstimator._parameter_constraints,
        "pretrained": [str, os.PathLike, DinoFeaturizer, torch.nn.Module, None],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), None],
        "crop_scale": [tuple, list],
    }
    _crop_scale_names = ("crop_scale",)
    _fitted_module = "model_"

    def __init__(
        self,
        backbone: str = "xcit_small_12_p8_224",
        *,
        backbone_kwargs: dict[str, Any] | None = None,
        pretrained: str | os.PathLike | DinoFeaturizer | torch.nn.Module | None = None,
        epochs: int = 100,
        batch_size: int = 32,
        image_size: int | None = None,
        lr: float = 1e-4,
        min_lr: float = 1e-6,
        warmup_epochs: int = 5,
        weight_decay: float = 0.05,
        validation_fraction: float | None = 0.3,
        n_iter_no_change: int | None = 10,
        crop_scale: tuple[float, float] = (0.5, 1.0),
        horizontal_flip: float = 0.5,
        vertical_flip: float = 0.5,
        rotation: float = 180.0,
        perspective: float = 0.5,
        perspective_p: float | tuple[float, float, float] = 0.5,
        color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        grayscale: float = 0.2,
        blur: float | tuple[float, float, float] = 0.5,
        drop_path_rate: float = 0.1,
        device: str | torch.device = "auto",
        precision: str = "auto",
        compile: bool | str = "auto",
        num_workers: int = 0,
        in_memory: bool | str = "auto",
        checkpoint_dir: str | os.PathLike | None = None,
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 1,
        callbacks: list[Callback] | None = None,
        on_error: str = "raise",
    ) -> None:
        self._store_parameters(locals())

    def fit(self, X: Any, y: Any) -> SupervisedClassifier:
        """Fine-tune the backbone and a linear head on the labeled images.

        Parameters
        ----------
        X : array, torch tensor, pandas Series or DataFrame, or list
            The images, in any form `DinoFeaturizer` accepts.
        y : array-like of shape (n_samples,)
            Class labels (integers or strings); ``-1`` marks an unlabeled image, which is
            left out of training with a ``UserWarning``.

        Returns
        -------
        self : SupervisedClassifier
        """
        device = self._check_parameters()
        # The labels first: they are cheap to check, and a wrong target is the likelier mistake.
        y, labeled, classes, encoded = self._labeled_classes(y)
        source = as_image_source(X)
        check_one_label_per_image(source, y, "one label per image")
        rng = check_random_state(self.random_state)
        # Drawn in this order whatever is skipped: the split's seed, then torch's.
        split_seed, seed = draw_seed(rng), draw_seed(rng)
        with seeded_torch(seed):
            backbone, data_config = self._starting_backbone()
            trainer = FineTuneTrainer(
                backbone,
                len(classes),
                self._augmentation(data_config),
                FineTuneConfig(
                    epochs=self.epochs,
                    batch_size=self.batch_size,
                    lr=self.lr,
                    min_lr=self.min_lr,
                    warmup_epochs=self.warmup_epochs,
                    weight_decay=self.weight_decay,
                    patience=self.n_iter_no_change,
                ),
                device,
                resolve_precision(self.precision, device),
                self.checkpoint_dir,
                compile=resolve_compile(self.compile, device),
                callbacks=self.callbacks or (),
            )
        check_patch_multiples(
            backbone, {"image_size": data_config["image_size"]}, self.image_size is not None
        )
        skipped = self._skipped_list()
        images = self._decode_training_images(
            subset_source(source, labeled.tolist()), data_config["image_size"], device, skipped
        )
        if skipped:
            skipped = [image._replace(index=int(labeled[image.index])) for image in skipped]
            warn_skipped(skipped, len(labeled), "SupervisedClassifier.fit")
            encoded = self._without_skipped(encoded, classes, images.kept)
        train, validation = self._split(classes, encoded, split_seed)
        counts = np.bincount(encoded[train], minlength=len(classes))
        weights = 1.0 / counts
        class_weight = weights * len(classes) / weights.sum()
        generator = torch.Generator().manual_seed(seed)
        with self._training_progress("fine-tuning") as progress:
            history = trainer.fit(
                images,
                torch.as_tensor(encoded),
                torch.as_tensor(train),
                None if validation is None else torch.as_tensor(validation),
                torch.as_tensor(class_weight),
                generator,
                progress,
            )
        self._set_fitted(
            classes_=classes,
            class_weight_=class_weight,
            model_=trainer.model.eval().requires_grad_(False),
            best_epoch_=trainer.best_epoch,
            n_iter_=len(history["loss"]),
            early_stopping_=validation is not None,
            history_=history,
            data_config_=data_config,
            skipped_files_=skipped or [],
        )
        return self

    @staticmethod
    def _without_skipped(
        encoded: np.ndarray, classes: np.ndarray, kept: list[int] | None
    ) -> np.ndarray:
        """The class indices of the labeled images that decoded; every class must keep one."""
        encoded = encoded if kept is None else encoded[kept]
        lost = np.setdiff1d(np.arange(len(classes)), encoded)
        if len(lost):
            raise ValueError(
                f"Class {classes[lost[0]]!r} has no labeled image left that can be decoded "
                "(on_error='skip' left out the others, see the warning); expected at least one "
                "readable image per class."
            )
        return encoded

    def _labeled_classes(self, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``y`` as a 1-D array, the positions of its labeled images, the classes and the
        labeled images' class indices; refuses targets a classifier cannot learn."""
        y = column_or_1d(np.asarray(y), warn=True)
        check_class_labels(y)
        check_classification_targets(y)
        labeled = np.flatnonzero(labeled_mask(y))
        if len(labeled) < len(y):
            warnings.warn(
                f"{len(y) - len(labeled)} of {len(y)} images are labeled -1 (unlabeled) and are "
                "left out of supervised training.",
                UserWarning,
                stacklevel=3,
            )
        classes, encoded = np.unique(y[labeled], return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"y has {len(classes)} class(es) among its labeled images; a classifier "
                "needs at least 2."
            )
        return y, labeled, classes, encoded

    def _epoch_postfix(self, row: dict[str, float]) -> dict[str, str]:
        shown = super()._epoch_postfix(row)
        if "validation_balanced_accuracy" in row:
            shown["val_bacc"] = f"{row['validation_balanced_accuracy']:.3f}"
        return shown

    def decision_function(self, X: Any) -> np.ndarray:
        """The network's logits.

        Parameters
        ----------
        X : array, torch tensor, pandas Series or DataFrame, or list
            The images.

        Returns
        -------
        scores : ndarray of shape (n,) or (n, n_classes), float32
            For two classes, the logit of ``classes_[1]`` minus that of ``classes_[0]``, as
            scikit-learn's binary classifiers return.
        """
        check_is_fitted(self, "model_")
        logits = self._logits(X)
        if len(self.classes_) == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (softmax of the logits), columns in the order of ``classes_``.

        Parameters
        ----------
        X : array, torch tensor, pandas Series or DataFrame, or list
            The images.

        Returns
        -------
        probabilities : ndarray of shape (n, n_classes), float32
        """
        return torch.softmax(torch.from_numpy(self._logits(X)), dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of every image.

        Parameters
        ----------
        X : array, torch tensor, pandas Series or DataFrame, or list
            The images.

        Returns
        -------
        labels : ndarray of shape (n,)
            Elements of ``classes_``; with ``on_error="skip"``, ``None`` for an image that
            could not be decoded (an object array then).
        """
        check_is_fitted(self, "model_")
        logits = self._logits(X)
        if self._skipped_list() is None:
            return self.classes_[logits.argmax(axis=1)]
        labels = self.classes_[np.nan_to_num(logits).argmax(axis=1)]
        skipped = np.isnan(logits).any(axis=1)
        if skipped.any():
            labels = labels.astype(object)
            labels[skipped] = None
        return labels

    def _logits(self, X: Any) -> np.ndarray:
        """The logits, a row of NaN for each image skipped (``on_error="skip"``)."""
        check_is_fitted(self, "model_")
        source = as_image_source(X)
        skipped = self._skipped_list()
        logits = batched_outputs(
            self.model_,
            source,
            self.data_config_,
            len(self.classes_),
            description="predicting",
            skipped=skipped,
            **self._inference_options(),
        )
        warn_skipped(skipped or [], len(source), "SupervisedClassifier")
        return logits

    def _split(
        self, classes: np.ndarray, encoded: np.ndarray, split_seed: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Training and validation positions among the labeled images (stratified)."""
        positions = np.arange(len(encoded))
        n_classes = len(classes)
        counts = np.bincount(encoded, minlength=n_classes)
        if self.validation_fraction is None:
            return positions, None
        if counts.min() < 2:
            smallest = classes[int(counts.argmin())]
            warnings.warn(
                f"Class {smallest} has {int(counts.min())} label: early stopping needs 2 per "
                "class (one to train on, one to validate), so all labels are trained on for "
                f"all epochs={self.epochs} and the last epoch is kept.",
                UserWarning,
                stacklevel=3,
            )
            return positions, None
        n_validation = max(n_classes, round(self.validation_fraction * len(encoded)))
        n_validation = min(n_validation, len(encoded) - n_classes)
        train, validation = train_test_split(
            positions, test_size=n_validation, stratify=encoded, random_state=split_seed
        )
        return np.sort(train), np.sort(validation)

    def _starting_backbone(self) -> tuple[torch.nn.Module, dict[str, Any]]:
        """A private copy of the starting backbone, in train mode, and its data config."""
        pretrained = self.pretrained
        if isinstance(pretrained, DinoFeaturizer):
            check_is_fitted(pretrained, "backbone_")
            backbone = copy.deepcopy(pretrained.backbone_).requires_grad_(True)
            config = dict(pretrained.data_config_)
            if self.image_size is not None:
                config["image_size"] = int(self.image_size)
            return backbone.train(), config
        if isinstance(pretrained, torch.nn.Module):
            backbone = copy.deepcopy(pretrained).requires_grad_(True)
        else:
            backbone = self._build_backbone(pretrained)
        return backbone.train(), backbone_data_config(backbone, self.image_size)

    def _augmentation(self, data_config: dict[str, Any]) -> MultiCropAugmentation:
        # One global crop per image, as the first of DINO's global crops: it takes the first
        # entry of a blur or perspective_p triple.
        return super()._augmentation(
            data_config,
            global_crops=1,
            local_crops=0,
            global_crop_scale=tuple(self.crop_scale),
            solarization_p=0.0,
        )

    def __sklearn_clone__(self) -> SupervisedClassifier:
        clone = super().__sklearn_clone__()
        # clone() would replace a fitted featurizer by an unfitted copy: the starting point
        # is data, not a setting to refit, so every clone shares it (it is only read).
        if isinstance(self.pretrained, DinoFeaturizer):
            clone.pretrained = self.pretrained
        return clone

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = True
        return tags
