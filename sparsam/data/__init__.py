"""Image inputs: validation, lazy decoding and batching to uint8 tensors; labels from a CSV."""

from sparsam.data.inputs import ImageSource, as_image_source, iter_batches, load_images
from sparsam.data.labels import read_labels

__all__ = ["ImageSource", "as_image_source", "iter_batches", "load_images", "read_labels"]
