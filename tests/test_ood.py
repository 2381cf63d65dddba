"""Out-of-distribution scores: the detection metrics against their definitions, the scores on tiny models that
learned something, the codecs' bits against a direct encode, the typicality test, and the score command."""

import io
import itertools
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from image_transformer import ood, tasks
from image_transformer.cli import main
from image_transformer.files.folders import shipped_names
from image_transformer.metrics import aupr, auroc, detection, fpr_at_tpr, roc_curve


# ----- the metrics against brute-force definitions ----------------------------------------------------------
def brute_auroc(neg, pos):
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(neg) * len(pos))


def brute_average_precision(neg, pos):
    """Precision at every distinct threshold, weighted by the recall that threshold adds."""
    total, last_recall = 0.0, 0.0
    for t in sorted(set(neg) | set(pos), reverse=True):
        tp, fp = sum(p >= t for p in pos), sum(n >= t for n in neg)
        recall = tp / len(pos)
        total += (recall - last_recall) * tp / (tp + fp)
        last_recall = recall
    return total


def brute_fpr_at_tpr(neg, pos, tpr=0.95):
    for t in sorted(set(neg) | set(pos), reverse=True):
        if sum(p >= t for p in pos) / len(pos) >= tpr - 1e-12:
            return sum(n >= t for n in neg) / len(neg)
    raise AssertionError


scores = st.lists(st.integers(0, 6).map(float), min_size=1, max_size=12)  # small integers: many ties


@settings(max_examples=150, deadline=None)
@given(scores, scores)
def test_detection_metrics_match_their_definitions(neg, pos):
    assert auroc(neg, pos) == pytest.approx(brute_auroc(neg, pos), abs=1e-12)
    assert aupr(neg, pos) == pytest.approx(brute_average_precision(neg, pos), abs=1e-12)
    assert fpr_at_tpr(neg, pos) == pytest.approx(brute_fpr_at_tpr(neg, pos), abs=1e-12)
    fpr, tpr, thresholds = roc_curve(neg, pos)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0) and np.all(np.diff(thresholds) < 0)
    # the trapezoid under the curve is the AUROC, ties included
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(neg, pos), abs=1e-12)


def test_detection_extremes_and_errors():
    assert detection([0, 1, 2], [3, 4]) == {"auroc": 1.0, "aupr": 1.0, "fpr95": 0.0}
    assert auroc([3, 4], [0, 1, 2]) == 0.0
    assert auroc([1, 1], [1, 1, 1]) == 0.5
    with pytest.raises(ValueError, match="both sets"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        auroc([float("nan")], [1.0])
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr([0.0], [1.0], tpr=0.0)


# ----- scores on a tiny model that learned its data ---------------------------------------------------------
@pytest.fixture(scope="module")
def learned():
    """A tiny 4x4 grey model trained for a few hundred steps on dark-left, bright-right images."""
    from image_transformer.nn.config import ImageTransformerConfig
    from image_transformer.nn.model import ImageTransformer

    def images(n, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.zeros(n, 4, 4, 1, dtype=torch.long)
        x[:, :, 2:] = 200
        return (x + torch.randint(0, 40, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)

    torch.manual_seed(0)
    model = ImageTransformer(ImageTransformerConfig(image_size=(4, 4), channels=1, hidden_size=16, num_layers=2,
                                                    num_heads=2, ffn_size=32, dropout=0.0, query_length=8,
                                                    memory_length=8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(300):
        x = images(32, 1000 + step)
        loss = -model.log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), images


def test_a_set_unlike_the_training_data_is_told_apart_perfectly(learned):
    model, images = learned
    inside = images(200, 1)
    table_in = ood.score_images(model, inside, codecs=["PNG"])
    table_out = ood.score_images(model, ood.synthetic("noise", 200, (4, 4, 1)), codecs=["PNG"])
    assert float(table_in["bits_per_dim"].mean()) < 6.0 < float(table_out["bits_per_dim"].mean())
    for column in ood.score_columns(table_in):
        assert auroc(table_in[column], table_out[column]) == 1.0, column


def test_two_sets_from_one_distribution_are_not_told_apart(learned):
    model, images = learned
    a = ood.score_images(model, images(200, 2), codecs=["PNG"])
    b = ood.score_images(model, images(200, 3), codecs=["PNG"])
    for column in ood.score_columns(a):
        # the AUROC of two samples of one distribution has a standard deviation of about 0.03 here
        assert abs(auroc(a[column], b[column]) - 0.5) < 0.12, column


def test_scores_are_the_model_bits_minus_the_codec_bits(learned):
    model, images = learned
    x = images(10, 4)
    table = ood.score_images(model, x, codecs=["PNG", "WEBP"], background=model)
    log_prob = model.log_prob(x).double()
    expected = -log_prob.flatten(1).sum(1) / (16 * math.log(2))
    assert torch.allclose(table["bits_per_dim"], expected, atol=1e-6)
    assert torch.allclose(table["minus_png"], table["bits_per_dim"] - table["png_bits_per_dim"])
    best = torch.minimum(table["png_bits_per_dim"], table["webp_bits_per_dim"])
    assert torch.allclose(table["minus_best"], table["bits_per_dim"] - best)
    assert torch.equal(table["ratio"], torch.zeros(10, dtype=torch.float64))  # a model against itself
    assert ood.score_columns(table) == ["bits_per_dim", "minus_png", "minus_webp", "minus_best", "ratio"]


def test_the_likelihood_ratio_is_the_models_bits_minus_a_background_models(learned, tiny_model):
    """Against a background model that knows nothing (its head zeroed: every sub-pixel uniform over 256 values, 8
    bits/dim exactly), the ratio is the model's bits minus 8: negative, by the bits the model learned."""
    model, images = learned
    background = tiny_model(dropout=0.0).eval()
    with torch.no_grad():
        background.head.weight.zero_()
        background.head.bias.zero_()
    x = images(10, 4)
    table = ood.score_images(model, x, codecs=["PNG"], background=background)
    assert torch.allclose(table["background_bits_per_dim"], torch.full((10,), 8.0, dtype=torch.float64), atol=1e-6)
    by_hand = -model.log_prob(x).double().flatten(1).sum(1) / (16 * math.log(2)) - 8.0
    assert torch.allclose(table["ratio"], by_hand, atol=1e-6)
    # each sub-pixel is its half's level plus noise uniform over 40 values, log2(40) = 5.3 bits/dim that no model can
    # learn: the learned model's images cost about that, the uniform background's 8
    assert ((table["ratio"] > -3.0) & (table["ratio"] < -2.0)).all(), table["ratio"]
    # the roles swapped, the ratio changes sign
    swapped = ood.score_images(background, x, codecs=["PNG"], background=model)
    assert torch.allclose(swapped["ratio"], -table["ratio"], atol=1e-9)


def test_simple_images_fool_the_raw_likelihood_but_not_the_complexity_corrected_scores():
    """The headline (Nalisnick et al.; Serra et al.), on the shipped colour model: constant images get fewer bits
    than its own test images, so raw bits/dim ranks them as more typical (AUROC below 0.5), and subtracting a generic
    codec's bits finds them (AUROC above 0.9). docs/results/ood.md measured 0.290 and 1.000 on 1,000 images a set."""
    from image_transformer.files import folders
    from image_transformer.files.pretrained import load_model

    model = load_model("cifar10-jpeg")
    inside = folders.read_slice(folders.shipped_folder("cifar10-jpeg"))["images"]  # 8 of its JPEG test images
    constant = ood.synthetic("constant", 32, model.image_shape)
    table_in = ood.score_images(model, inside, codecs=["PNG", "WEBP"])
    table_out = ood.score_images(model, constant, codecs=["PNG", "WEBP"])
    assert auroc(table_in["bits_per_dim"], table_out["bits_per_dim"]) < 0.5
    for column in ("minus_png", "minus_webp", "minus_best"):
        assert auroc(table_in[column], table_out[column]) > 0.9, column


def test_codec_bits_are_the_real_encoders_sizes():
    x = ood.synthetic("noise", 3, (8, 8, 3), seed=1)
    x[1] = 7  # a flat image: a very different size
    direct = []
    for image in x.numpy():
        buf = io.BytesIO()
        Image.fromarray(image, "RGB").save(buf, format="PNG", optimize=True)
        direct.append(len(buf.getvalue()) * 8 / image.size)
    assert ood.codec_bits(x, "PNG").tolist() == direct
    webp = []
    for image in x.numpy():
        buf = io.BytesIO()
        Image.fromarray(image, "RGB").save(buf, format="WEBP", lossless=True, method=6, quality=100, exact=True)
        webp.append(len(buf.getvalue()) * 8 / image.size)
    assert ood.codec_bits(x, "WEBP", workers=2).tolist() == webp
    with pytest.raises(ValueError, match="unknown codec"):
        ood.codec_bits(x, "GIF")


def test_a_class_conditional_model_without_labels_scores_p_of_x(tiny_model):
    model = tiny_model(num_classes=3, dropout=0.0).eval()
    x = ood.synthetic("noise", 5, (4, 4, 1), seed=2)
    bits, maps = ood.model_bits(model, x, per_pixel=True)
    per_class = torch.stack([model.log_prob(x, torch.full((5,), y)).double().flatten(1).sum(1) for y in range(3)])
    p_x = torch.logsumexp(per_class, 0) - math.log(3)
    assert torch.allclose(bits, -p_x / (16 * math.log(2)), atol=1e-9)
    assert maps.shape == (5, 4, 4)
    given_labels, _ = ood.model_bits(model, x, torch.tensor([0, 1, 2, 0, 1]))
    assert torch.allclose(given_labels, -per_class[[0, 1, 2, 0, 1], range(5)] / (16 * math.log(2)), atol=1e-9)


def test_bf16_scores_stay_within_the_promise_and_unknown_precisions_are_refused(learned):
    model, images = learned
    x = images(16, 5)
    exact, _ = ood.model_bits(model, x)
    fast, _ = ood.model_bits(model, x, precision="bf16")
    assert not torch.equal(exact, fast) and (exact - fast).abs().max() <= ood.BF16_WITHIN
    with pytest.raises(ValueError, match="unknown precision"):
        ood.model_bits(model, x, precision="fp8")


def test_bf16_scores_of_a_shipped_model_stay_within_the_promise():
    """What ``score --precision bf16`` promises (``ood.BF16_WITHIN``, ``ood.BF16_WITHIN_FLAT``), on the shipped colour
    model: its own test images and noise move little; flat images, predicted with great confidence, move more."""
    from image_transformer.files import folders
    from image_transformer.files.pretrained import load_model

    model = load_model("cifar10-jpeg")
    # 4 images a set: on a CPU without bf16 instructions torch emulates them, several times slower than fp32
    sets = {"test": folders.read_slice(folders.shipped_folder("cifar10-jpeg"))["images"][:4],
            "noise": ood.synthetic("noise", 4, model.image_shape),
            "constant": ood.synthetic("constant", 4, model.image_shape)}
    for name, x in sets.items():
        gap = (ood.model_bits(model, x)[0] - ood.model_bits(model, x, precision="bf16")[0]).abs().max()
        assert gap <= (ood.BF16_WITHIN_FLAT if name == "constant" else ood.BF16_WITHIN), (name, float(gap))


def test_the_per_pixel_bits_add_up_to_the_images_bits(tiny_model):
    model = tiny_model(dropout=0.0)
    x = ood.synthetic("noise", 3, (4, 4, 1))
    bits, maps = ood.model_bits(model, x, per_pixel=True, batch_size=2)
    assert torch.allclose(maps.flatten(1).sum(1) / 16, bits, atol=1e-9)
    bpd, one_map = tasks.likelihood(model, x[1])  # the demo's Likelihood tab: the same figures
    assert bpd == pytest.approx(float(bits[1]), abs=1e-9) and torch.allclose(one_map, maps[1])


# ----- typicality --------------------------------------------------------------------------------------------
def test_the_typicality_test_flags_about_alpha_of_typical_batches_and_all_shifted_ones():
    rng = np.random.default_rng(0)
    reference = rng.normal(1.0, 0.2, 2000)
    test = ood.TypicalityTest.fit(reference, batch_size=10, alpha=0.05)
    assert test.entropy == pytest.approx(1.0, abs=0.02)
    assert test.epsilon == pytest.approx(1.96 * 0.2 / math.sqrt(10), rel=0.1)
    assert abs(test.flagged(rng.normal(1.0, 0.2, 20000)) - 0.05) < 0.02
    assert test.flagged(rng.normal(1.3, 0.2, 1000)) == 1.0
    assert test.flagged(rng.normal(0.7, 0.2, 1000)) == 1.0  # too likely is atypical too
    assert test.is_typical(np.full(10, 1.0)) and not test.is_typical(np.full(10, 2.0))
    with pytest.raises(ValueError, match="batches of 10"):
        test.is_typical(np.ones(3))
    with pytest.raises(ValueError, match="alpha"):
        ood.TypicalityTest.fit(reference, 10, alpha=1.5)


# ----- reference sets -----------------------------------------------------------------------------------------
def test_synthetic_sets_and_transforms():
    noise = ood.synthetic("noise", 4, (6, 6, 3))
    flat = ood.synthetic("constant", 4, (6, 6, 3))
    assert noise.shape == flat.shape == (4, 6, 6, 3) and noise.dtype == flat.dtype == torch.uint8
    assert (flat == flat[:, :1, :1]).all() and not (noise == noise[:, :1, :1]).all()
    x = torch.arange(2 * 3, dtype=torch.uint8).reshape(1, 2, 3, 1)
    assert torch.equal(ood.transform(x, "inverted"), 255 - x)
    assert torch.equal(ood.transform(x, "flipped")[0, 0], x[0, 1])
    assert torch.equal(ood.transform(x, "rotated"), x.flip(1, 2))  # not square: a half turn
    square = ood.synthetic("noise", 1, (3, 3, 1))
    assert torch.equal(ood.transform(square, "rotated")[0, :, :, 0], square[0, :, :, 0].rot90(1, (0, 1)))
    with pytest.raises(ValueError, match="unknown transform"):
        ood.transform(x, "blurred")
    with pytest.raises(ValueError, match="unknown synthetic"):
        ood.synthetic("stripes", 1, (2, 2, 1))


# ----- the command ---------------------------------------------------------------------------------------------
def test_the_score_command_end_to_end(tiny_mnist, tmp_path, tiny_model, capsys):
    model = tiny_model(image_size=(6, 6), dropout=0.0)
    model.save_pretrained(tmp_path / "m")
    out = tmp_path / "out" / "scores.csv"
    code = main(["score", str(tmp_path / "m"), "--data", f"mnist:{tiny_mnist}", "--split", "train",
                 "--ood", "noise", f"inverted:mnist:{tiny_mnist}", "--limit", "40", "--codecs", "png",
                 "--batch-test", "4", "--heat-maps", "noise@2", "--write-reference", "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "vs noise (40 images)" in text and "minus_png" in text and "typicality test, batches of 4" in text
    rows = out.read_text().splitlines()
    assert rows[0] == "set,role,index,bits_per_dim,png_bits_per_dim,minus_png" and len(rows) == 1 + 3 * 40
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["separation"]["noise"]["minus_png"]["auroc"] == pytest.approx(
        auroc([float(r.split(",")[5]) for r in rows[1:41]], [float(r.split(",")[5]) for r in rows[41:81]]), abs=1e-5)
    for name in ("scores-roc.png", "scores-hist.png", "scores-heat-noise-2.png"):
        assert Image.open(out.parent / name).size[0] > 100, name


def test_the_score_command_refuses_bad_requests_in_one_line(tiny_mnist, tmp_path, tiny_model, capsys):
    model = tiny_model(image_size=(6, 6), dropout=0.0)
    model.save_pretrained(tmp_path / "m")
    base = ["score", str(tmp_path / "m"), "--data", f"mnist:{tiny_mnist}", "--codecs", "png", "-o",
            str(tmp_path / "s.csv")]
    assert main(base + ["--ood", "noise", "--heat-maps", "constant@1"]) == 2  # not a scored set: before any work
    err = capsys.readouterr().err
    assert "SET@INDEX" in err and "model:" not in err and not (tmp_path / "s.csv").exists()
    assert main(base + ["--ood", "mnist-slice"]) == 2  # 28x28 digits for a 6x6 model: refused before any scoring
    err = capsys.readouterr().err
    assert "the data is 28x28 but image size 6x6 was requested" in err and "model:" not in err
    assert main(base) == 0  # 12 test images: the default typicality test is left out
    assert "typicality" not in capsys.readouterr().out
    assert main(base + ["--batch-test", "16"]) == 2  # asked for, it is refused: 12 cannot fit and check it
    assert "at least 64" in capsys.readouterr().err


def test_the_demo_places_an_image_among_the_kept_reference_scores(tiny_mnist, tmp_path, tiny_model, capsys):
    from image_transformer.demo.jobs import DemoModel, placement
    from image_transformer.files import folders

    model = tiny_model(image_size=(6, 6), dropout=0.0)
    model.save_pretrained(tmp_path / "m")
    shown = DemoModel(str(tmp_path / "m"), model)
    assert shown.reference() is None
    assert "No reference scores" in placement(None, torch.zeros(6, 6, 1, dtype=torch.uint8), 1.0)
    assert main(["score", str(tmp_path / "m"), "--data", f"mnist:{tiny_mnist}", "--split", "train", "--codecs", "png",
                 "--write-reference", "-o", str(tmp_path / "s.csv")]) == 0
    record = folders.read_reference(tmp_path / "m")
    assert record["images"] == 48 and len(record["percentiles"]["minus_png"]) == 101
    inside = tasks.load_score_set(f"mnist:{tiny_mnist}", (6, 6, 1), "train")[0]
    bits = ood.model_bits(model, inside)[0]
    middle = int(bits.argsort()[len(bits) // 2])
    text = placement(DemoModel(str(tmp_path / "m"), model).reference(), inside[middle], float(bits[middle]))
    assert "within the range" in text and "| minus_png |" in text
    # an image far above every held-out score
    assert "looks out of distribution" in placement(record, inside[middle], float(bits.max()) + 50.0)
    assert ood.percentile(record, "bits_per_dim", float(bits.min()) - 1) == 0.0
    assert ood.percentile(record, "bits_per_dim", float(bits.max()) + 1) == 100.0


def test_a_damaged_reference_is_an_error_naming_the_file_not_no_reference(tmp_path, tiny_model):
    from image_transformer.demo.jobs import DemoModel
    from image_transformer.files import folders

    model = tiny_model(dropout=0.0)
    model.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / folders.REFERENCE_NAME
    assert folders.read_reference(tmp_path / "m") is None  # none kept: nothing to say
    for text, problem in (('{"source": "x", "images": 3, "percentiles": {"bits_per_dim": [1,', "is not JSON"),
                          (b"\xff\xfe{}", "is not JSON"),
                          ('{"source": "x", "images": 3}', 'no "percentiles" mapping'),
                          ("[1, 2, 3]", 'no "percentiles" mapping')):
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(folders.ModelFolderError) as caught:
            folders.read_reference(tmp_path / "m")
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and problem in message and "\n" not in message, message
        with pytest.raises(folders.ModelFolderError, match=folders.REFERENCE_NAME):
            DemoModel(str(tmp_path / "m"), model).reference()
    assert folders.read_reference("a model held in memory") is None  # no folder, nothing kept


@pytest.mark.parametrize("name", sorted(shipped_names()))
def test_the_shipped_references_place_noise_out_and_their_test_images_in(name):
    from image_transformer.demo.jobs import DemoModel, placement
    from image_transformer.files import folders
    from image_transformer.files.pretrained import load_model

    model = load_model(name)
    shown = DemoModel(name, model)
    record = shown.reference()
    assert record is not None and record["images"] == 1000
    for column in ("bits_per_dim", "minus_png", "minus_webp"):
        assert np.all(np.diff(record["percentiles"][column]) >= 0), column
    held = folders.read_slice(folders.shipped_folder(name))["images"]
    bits, _ = ood.model_bits(model, held)
    typical = int(bits.argsort()[len(bits) // 2])
    assert "within the range" in placement(record, held[typical], float(bits[typical]))
    noise = ood.synthetic("noise", 1, model.image_shape)
    assert "looks out of distribution" in placement(record, noise[0], float(ood.model_bits(model, noise)[0][0]))
