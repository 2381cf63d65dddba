"""ImageData, the type every loader returns (image_transformer.files.data.common)."""

from __future__ import annotations

import numpy as np
import pytest

from image_transformer.files.data import DataError, ImageData


def test_image_data_subsets_keep_labels_and_classes_and_five_channels_are_refused():
    images = np.arange(4 * 2 * 3 * 3, dtype=np.uint8).reshape(4, 2, 3, 3)
    d = ImageData(images, np.array([0, 1, 2, 1]), 3, ["a", "b", "c"], "test")
    assert len(d) == 4 and d.image_shape == (2, 3, 3)
    s = d.subset(slice(1, 3))
    assert len(s) == 2 and np.array_equal(s.images, images[1:3]) and s.labels.tolist() == [1, 2]
    assert s.labels.dtype == np.int64 and s.num_classes == 3 and s.class_names == ["a", "b", "c"]
    one = d.subset(-1)
    assert one.images.shape == (1, 2, 3, 3) and one.labels.tolist() == [1]
    assert d.subset(np.array([True, False, False, True])).labels.tolist() == [0, 1]
    assert ImageData(images[..., :2], None, None, None, "grey + alpha").image_shape == (2, 3, 2)
    with pytest.raises(DataError, match="1 to 4"):
        ImageData(np.zeros((1, 2, 2, 5), np.uint8), None, None, None, "five channels")
