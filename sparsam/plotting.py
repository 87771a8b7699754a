"""Figures: the paper's few-shot curves and confusion matrices, DINO's attention maps.

matplotlib is an optional extra (``pip install "sparsam[plot]"``); it is imported only when a
figure is drawn, so ``import sparsam`` works without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_attention", "plot_confusion_matrix", "plot_few_shot_curve"]

_MISSING_MATPLOTLIB = 'plotting needs matplotlib: pip install "sparsam[plot]"'


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(_MISSING_MATPLOTLIB) from error
    return plt


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _score_label(scoring: str) -> str:
    return scoring.replace("_", " ").capitalize()


def plot_few_shot_curve(
    results_by_name: Mapping[str, Any],
    ax: Axes | None = None,
    *,
    reference_lines: Mapping[str, float] | None = None,
    title: str | None = None,
    log_x: bool = True,
) -> Axes:
    """Score against labeled images per class for several methods, as in the paper's Figure 1.

    Each method is a line of mean scores with markers and a band of ± one standard deviation
    over the repeated draws; reference scores (e.g. a supervised network trained on all labels)
    are horizontal dashed lines.

    Parameters
    ----------
    results_by_name : mapping of str to few-shot curve result
        Legend label to a result of ``sparsam.few_shot_curve`` (anything with the attributes
        ``n_per_class``, ``mean`` and ``std``, 1-D arrays of equal length, and ``scoring``, the
        name of the score, e.g. ``"balanced_accuracy"``). All methods must share one scoring.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.
    reference_lines : mapping of str to float, optional
        Legend label to score, e.g. ``{"supervised, all labels": 0.89}``.
    title : str, optional
        Axes title.
    log_x : bool, default=True
        Logarithmic x axis (labels per class usually grow geometrically: 1, 5, 10, 25 ...),
        ticked at the N values of the results.

    Returns
    -------
    ax : matplotlib Axes

    Notes
    -----
    Drawn with matplotlib directly rather than with
    `sklearn.model_selection.LearningCurveDisplay`, which fits one curve per display:
    it labels every line "Test" or "Train" (a legend entry per method cannot be passed, as it
    sets ``label`` itself), calls ``ax.legend()`` once per curve, names the x axis "Number
    of samples in the training set", chooses the x scale itself, needs the score of every
    draw (a peer's published mean ± std cannot be drawn), and does not keep the band of a
    bounded score inside [0, 1].

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> import numpy as np
    >>> result = SimpleNamespace(n_per_class=np.array([1, 10, 100]), scoring="balanced_accuracy",
    ...                          mean=np.array([0.4, 0.7, 0.85]), std=np.array([0.1, 0.05, 0.01]))
    >>> ax = plot_few_shot_curve({"DINO + SVC": result},
    ...                          reference_lines={"supervised, all labels": 0.88})
    >>> ax.get_xlabel()
    'Labeled images per class'
    """
    if not results_by_name:
        raise ValueError("results_by_name is empty: pass at least one method's result.")
    scorings = {
        name: getattr(result, "scoring", "score") for name, result in results_by_name.items()
    }
    if len(set(scorings.values())) > 1:
        raise ValueError(f"All results must share one scoring to share a y axis; got {scorings}.")
    ax = _axes(ax, figsize=(6.4, 4.4))
    all_n: set[int] = set()
    curves = []
    for name, result in results_by_name.items():
        n_per_class = np.asarray(result.n_per_class)
        mean = np.asarray(result.mean, dtype=float)
        std = np.asarray(result.std, dtype=float)
        if not n_per_class.ndim == mean.ndim == std.ndim == 1 or not (
            len(n_per_class) == len(mean) == len(std)
        ):
            raise ValueError(
                f"Result {name!r}: n_per_class, mean and std must be 1-D arrays of one length; "
                f"got shapes {n_per_class.shape}, {mean.shape} and {std.shape}."
            )
        curves.append((name, n_per_class, mean, std))
        all_n.update(int(n) for n in n_per_class)
    reference_lines = dict(reference_lines or {})
    centres = [*(curve[2] for curve in curves), np.array(list(reference_lines.values()))]
    centres = np.concatenate(centres)
    # Scores in [0, 1] (balanced accuracy, F1): a band of mean ± std must not leave that range.
    bounded = bool(np.all((centres >= 0) & (centres <= 1)))
    low, high = [], []
    for name, n_per_class, mean, std in curves:
        lower, upper = mean - std, mean + std
        if bounded:
            lower, upper = np.clip(lower, 0, 1), np.clip(upper, 0, 1)
        (line,) = ax.plot(n_per_class, mean, marker="o", label=name)
        ax.fill_between(n_per_class, lower, upper, color=line.get_color(), alpha=0.2)
        low.append(np.min(lower, initial=np.inf))
        high.append(np.max(upper, initial=-np.inf))
    for index, (name, score) in enumerate(reference_lines.items()):
        ax.axhline(
            score,
            linestyle="--",
            linewidth=1.2,
            color=f"C{len(results_by_name) + index}",
            label=name,
        )
        low.append(score)
        high.append(score)
    if log_x:
        ax.set_xscale("log")
        ticks = sorted(all_n)
        ax.set_xticks(ticks, [str(n) for n in ticks])
        # Minor log ticks would add unlabeled marks between the N values.
        ax.set_xticks([], minor=True)
    if bounded:
        ax.set_ylim(max(0.0, float(np.min(low)) - 0.05), min(1.0, float(np.max(high)) + 0.05))
    ax.set_xlabel("Labeled images per class")
    ax.set_ylabel(_score_label(next(iter(scorings.values()))))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right")
    if title is not None:
        ax.set_title(title)
    return ax


def plot_confusion_matrix(
    y_true: Any,
    y_pred: Any,
    *,
    labels: Sequence[Any] | None = None,
    class_names: Sequence[str] | None = None,
    ax: Axes | None = None,
    normalize: bool = True,
    cmap: str = "Blues",
) -> Axes:
    """Confusion matrix with each class's frequency beside its row, as in the paper's Figure 3.

    Drawn by `sklearn.metrics.ConfusionMatrixDisplay` (without its colorbar), to which
    this adds the support counts of the rows and the row normalisation that keeps an empty
    row at zero.

    With few labels and imbalanced classes (bone marrow cytology spans three orders of
    magnitude), a row-normalised matrix shows the recall of every class; the support counts
    ``n=...`` on the right-hand axis show how much each row can be trusted.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted labels.
    labels : sequence, optional
        Classes in the order of rows and columns; by default the sorted union of ``y_true`` and
        ``y_pred``.
    class_names : sequence of str, optional
        Display names, one per class of ``labels``; by default the labels themselves.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.
    normalize : bool, default=True
        Divide each row by its class's number of samples (rows sum to 1, cells read as percent);
        otherwise show counts.
    cmap : str, default="Blues"
        matplotlib colormap.

    Returns
    -------
    ax : matplotlib Axes
        The matrix is its first image (``ax.images[0].get_array()``); the support counts are
        the tick labels of a secondary y axis on the right.

    Examples
    --------
    >>> ax = plot_confusion_matrix([0, 0, 1, 1, 1], [0, 1, 1, 1, 1], class_names=["a", "b"])
    >>> ax.images[0].get_array()[0].tolist()
    [0.5, 0.5]
    """
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if labels is None:
        labels = np.unique(np.concatenate([y_true, y_pred]))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    n_classes = len(matrix)
    if class_names is None:
        class_names = [str(label) for label in labels]
    if len(class_names) != n_classes:
        raise ValueError(
            f"class_names has {len(class_names)} names but there are {n_classes} classes "
            f"({list(labels)}); pass one name per class."
        )
    support = matrix.sum(axis=1)
    # A class absent from y_true has an empty row: show zeros rather than NaN.
    values = matrix / np.maximum(support, 1)[:, None] if normalize else matrix
    ax = _axes(ax, figsize=(1.0 + 0.7 * n_classes, 0.8 + 0.6 * n_classes))
    display = ConfusionMatrixDisplay(values, display_labels=list(class_names))
    display.plot(
        ax=ax,
        cmap=cmap,
        colorbar=False,
        xticks_rotation=45,
        values_format=".0%" if normalize else "d",
        im_kw={"vmin": 0, "vmax": 1} if normalize else None,
        text_kw={"fontsize": "small"},
    )
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")
    ticks = np.arange(n_classes)
    frequencies = ax.secondary_yaxis("right")
    frequencies.set_yticks(ticks, [f"n={count}" for count in support])
    frequencies.set_ylabel("Class frequency")
    return ax


def plot_attention(
    featurizer: Any,
    images: Any,
    *,
    heads: str = "all",
    threshold: float | None = None,
    overlay: bool = True,
    axes: Any = None,
    cmap: str = "inferno",
) -> Figure:
    """Where the class token looks: DINO's self-attention maps, one row per image.

    As in Caron et al. (2021), Figure 1: the attention of the CLS query to the patches in the
    last block (XCiT: its last class-attention block), one map per head
    (`sparsam.attention.cls_attention`), each coloured from its own minimum to its maximum
    (as DINO saves them) and stretched over the image (nearest neighbour: one square per
    patch). The images are resized and
    normalised as ``transform`` does, and the first column shows them as the backbone saw
    them.

    Parameters
    ----------
    featurizer : DinoFeaturizer
        A fitted featurizer whose backbone is a timm ViT or XCiT with a class token.
    images : array, tensor, list of paths, ...
        The images, in any form ``fit`` accepts; one row of the figure each.
    heads : {"all", "mean"}, default="all"
        One map per head, or one map of the heads' mean.
    threshold : float, optional
        Show only the largest weights of each map that together hold this share of its mass
        (`sparsam.attention.mass_threshold`; DINO's figures use 0.6); the rest is left
        transparent.
    overlay : bool, default=True
        Draw each map half-transparent over the image; otherwise the map alone.
    axes : array of matplotlib Axes of shape (n_images, 1 + maps), optional
        Where to draw (``maps`` is the number of heads, or 1 with ``heads="mean"``); a new
        figure when omitted.
    cmap : str, default="inferno"
        matplotlib colormap of the maps.

    Returns
    -------
    figure : matplotlib Figure
        Row ``i`` holds image ``i`` and its maps; each map is the last image of its axes
        (``axes.images[-1].get_array()``, at the patch grid's resolution).

    Examples
    --------
    >>> import numpy as np
    >>> from sparsam import DinoFeaturizer
    >>> featurizer = DinoFeaturizer(
    ...     backbone="vit_tiny_patch16_224", image_size=16, epochs=0, backbone_kwargs={
    ...         "patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2}, verbose=0,
    ... ).fit(np.zeros((1, 16, 16), np.uint8))
    >>> figure = plot_attention(featurizer, np.zeros((2, 16, 16), np.uint8))
    >>> len(figure.axes)  # 2 images x (the image + 2 heads)
    6
    """
    from .attention import attention_maps, mass_threshold

    if heads not in ("all", "mean"):
        raise ValueError(f"heads must be 'all' or 'mean', got {heads!r}.")
    if threshold is not None and not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1] (a share of the mass), got {threshold!r}.")
    plt = _pyplot()
    pixels, maps = attention_maps(featurizer, images)
    if heads == "mean":
        maps = maps.mean(axis=1, keepdims=True)
    n_images, n_maps = maps.shape[:2]
    shape = (n_images, 1 + n_maps)
    if axes is None:
        _, axes = plt.subplots(
            *shape, figsize=(1.8 * shape[1], 1.8 * n_images), squeeze=False, layout="constrained"
        )
    axes = np.asarray(axes, dtype=object)
    if axes.size != n_images * (1 + n_maps):
        raise ValueError(
            f"axes holds {axes.size} Axes; expected {shape[0]} x {shape[1]} (one row per image: "
            f"the image and its {n_maps} map(s))."
        )
    axes = axes.reshape(shape)
    keep = mass_threshold(maps, threshold) if threshold is not None else np.ones(maps.shape, bool)
    side = pixels.shape[1]
    # Pixel centres at integers: the patch grid covers the image exactly.
    extent = (-0.5, side - 0.5, side - 0.5, -0.5)
    for row, (image, image_maps, image_keep) in enumerate(zip(pixels, maps, keep, strict=True)):
        axes[row, 0].imshow(image)
        for column, (weights, kept) in enumerate(zip(image_maps, image_keep, strict=True), 1):
            ax = axes[row, column]
            if overlay:
                ax.imshow(image.mean(axis=2), cmap="gray", vmin=0, vmax=255)
            else:
                ax.set_facecolor("black")
            ax.imshow(
                np.ma.masked_where(~kept, weights),
                cmap=cmap,
                vmin=float(weights.min()),
                vmax=float(weights.max()),
                alpha=0.6 if overlay else 1.0,
                interpolation="nearest",
                extent=extent,
            )
            ax.set_xlim(extent[:2])
            ax.set_ylim(extent[2:])
    titles = ["image", *(f"head {head + 1}" for head in range(n_maps))]
    if heads == "mean":
        titles[1] = "mean of heads"
    for column, title in enumerate(titles):
        axes[0, column].set_title(title, fontsize="small")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return axes[0, 0].figure
