"""Image inputs: validation, lazy decoding and batching to uint8 tensors."""

from sparsam.data.inputs import ImageSource, as_image_source, iter_batches, load_images

__all__ = ["ImageSource", "as_image_source", "iter_batches", "load_images"]
