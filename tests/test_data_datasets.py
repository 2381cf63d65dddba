"""torch Datasets over ImageData (image_transformer.files.data.datasets)."""

from __future__ import annotations

import numpy as np
import torch

from image_transformer.files import data as D
from image_transformer.files.data import ImageData


def test_to_tensor_dataset_yields_uint8_images_and_int64_labels_or_minus_one():
    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2, 1)
    ds = D.to_tensor_dataset(ImageData(images, np.array([2, 0, 1]), 3, None, "t"))
    assert len(ds) == 3
    x, y = ds[1]
    assert x.dtype == torch.uint8 and x.shape == (2, 2, 1) and x.flatten().tolist() == [4, 5, 6, 7]
    assert y.dtype == torch.int64 and int(y) == 0
    _, y = D.to_tensor_dataset(ImageData(images, None, None, None, "t"))[2]
    assert int(y) == -1
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert xb.shape == (3, 2, 2, 1) and yb.tolist() == [2, 0, 1]
