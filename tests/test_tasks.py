"""The task layer: what the command line and the demo both run."""

import pytest
import torch

from helpers import tiny
from image_transformer import tasks
from image_transformer.images import repeat_image
from image_transformer.nn.sampling import Sampling


def test_compress_reports_the_coders_own_cost_without_a_second_pass():
    model = tiny("local_1d", "dmol", 3, size=(4, 5)).float()
    x = torch.randint(0, 256, (3, 4, 5, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = tasks.evaluate(model, x)["bits_per_dim"]
    parallel = model.log_prob
    model.log_prob = lambda *a, **k: pytest.fail("compress ran a second, parallel pass")
    try:
        coded = tasks.compress(model, x, batch_size=2)
        back = tasks.decompress(coded.stream, model)
    finally:
        model.log_prob = parallel
    assert coded.bits.shape == (3,) and torch.equal(coded.bits, back.bits)  # both sides code with the same tables
    assert coded.model_bits_per_dim == pytest.approx(expected, abs=1e-4)
    assert torch.equal(back.images, x)
    assert coded.file_bits_per_dim() > coded.model_bits_per_dim  # the file adds its header and the coder's rounding
    assert f"(the model's own: {coded.model_bits_per_dim:.4f} bits/dim)" in coded.report()


def test_complete_keeps_the_prefix_and_frames_the_completions():
    model = tiny("local_1d", "categorical", 3, size=(4, 6))
    image = torch.randint(0, 256, (4, 6, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    rows = tasks.complete(model, image, 2, num=3, options=Sampling(generator=torch.Generator().manual_seed(5)))
    expected = model.complete(repeat_image(image, 3), 2, generator=torch.Generator().manual_seed(5))
    assert rows.shape == (5, 4, 6, 3)
    assert torch.equal(rows[1:4], expected) and torch.equal(rows[-1], image)
    assert torch.equal(rows[0, :2], image[:2]) and bool((rows[0, 2:] == tasks.GREY).all())


def test_labels_are_resolved_in_one_place():
    conditional = tiny("local_1d", "categorical", 1, size=(3, 3), num_classes=3)
    plain = tiny("local_1d", "categorical", 1, size=(3, 3))
    assert tasks.labels_for(conditional, 4, [2]).tolist() == tasks.labels_for(conditional, 4, 2).tolist() == [2] * 4
    assert tasks.labels_for(conditional, 2, [0, 1]).tolist() == [0, 1]
    assert tasks.labels_for(plain, 2, None) is None
    with pytest.raises(ValueError, match="one class label or one per image"):
        tasks.labels_for(conditional, 4, [0, 1])
    with pytest.raises(ValueError, match="class-conditional .*pick a class"):
        tasks.labels_for(conditional, 4, None)
    for given in ([1], 1):  # refused, never ignored: the same rule for a grid, a completion and a file
        with pytest.raises(ValueError, match="a class label was given but the model is unconditional"):
            tasks.labels_for(plain, 4, given)
    with pytest.raises(ValueError, match="a class label was given but the model is unconditional"):
        tasks.sample_labels(plain, 4, 1)
    images, nrow = tasks.sample(conditional, 6, options=Sampling(generator=torch.Generator().manual_seed(0)))
    assert images.shape == (6, 3, 3, 1) and nrow == 2  # one row per class
