"""Image data sets read from the formats people already have on disk.

Every loader returns an :class:`ImageData` holding ``uint8`` images of shape (N, H, W, C) with C in {1, 2, 3, 4}
(grey, grey + alpha, RGB, RGBA)
and, when the data set has them, ``int64`` class labels. Every problem with the input (missing file, truncated
or corrupt file, inconsistent shapes) raises :class:`DataError`, whose message names the file or folder.

Supported layouts:

* MNIST / Fashion-MNIST idx files, gzipped or raw (:func:`load_mnist`, :func:`read_idx`);
* CIFAR-10 / CIFAR-100 python pickle batches (:func:`load_cifar`), and the lossless subset's held-out split
  (:func:`cifar_holdout`);
* downsampled-ImageNet style ``.npz`` files (:func:`load_npz`);
* folders or tar archives of png/jpg/bmp/webp images, flat or one subfolder per class (:func:`load_image_folder`);
* aligned CelebA faces, centre-cropped and area-resized (:func:`load_celeba`);
* ``"KIND:PATH"`` specs, the shipped ``"mnist-slice"`` and a shipped model's test images ``"slice:NAME"``
  (:func:`load_dataset`).

One module per format family (``idx``, ``cifar``, ``npz``, ``image_folders``), ``specs`` for ``KIND:PATH`` and the
cache, ``datasets`` for torch (:func:`to_tensor_dataset`, super-resolution pairs for a ``DataLoader``).
"""

from ._common import DATASET_KINDS, DataError, ImageData
from .cifar import HOLDOUT_TRAIN, cifar_holdout, load_cifar
from .datasets import SuperResolutionPairs, make_pairs, to_tensor_dataset
from .idx import load_mnist, read_idx
from .image_folders import load_celeba, load_image_folder, read_name_list
from .npz import load_npz
from .specs import load_dataset, load_model_slice, load_split

__all__ = ["DataError", "ImageData", "read_idx", "load_mnist", "load_cifar", "cifar_holdout", "HOLDOUT_TRAIN",
           "load_npz", "load_image_folder", "load_celeba", "read_name_list", "load_dataset", "load_model_slice",
           "load_split", "to_tensor_dataset", "make_pairs", "SuperResolutionPairs", "DATASET_KINDS"]
