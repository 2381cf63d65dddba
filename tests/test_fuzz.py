"""Fuzzing: random and mutated bytes at every parser of untrusted input (the codec's container, the image reader, each
data format's loader) and random arguments at the command line. The only outcomes allowed are a correct result or
the typed error of that parser (one line on the command line); anything else (a raw TypeError, MemoryError, ...)
fails the test with the input that caused it."""

import gzip
import io
import os
import pickle
import struct
import zlib

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import forge, forge2, tiny
from image_transformer import codec
from image_transformer.cli import main
from image_transformer.files.data import DataError, load_cifar, load_image_folder, load_npz, read_idx
from image_transformer.files.image_files import open_image, read_image

# FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz.py: a longer run than the suite's
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 150)), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
MODEL = tiny("local_1d", "categorical", 1, size=(3, 3))
IMAGES = torch.randint(0, 256, (2, 3, 3, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
STREAM = codec.encode(MODEL, IMAGES, names=["a.png", "b.png"], batch_size=1)
STREAM_V1 = codec.encode(MODEL, IMAGES, names=["a.png", "b.png"], batch_size=1, format_version=1)


@st.composite
def mutated(draw, base: bytes):
    """``base`` with a few bytes flipped, cut short, or with bytes inserted: most of a valid file, a little wrong."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        if kind == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        else:
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


# ----- the codec ------------------------------------------------------------------------------------------------
@FUZZ
@given(st.one_of(st.binary(max_size=200), mutated(STREAM), mutated(STREAM_V1)))
def test_the_codec_decodes_or_refuses_with_a_codec_error(data):
    try:
        images, _ = codec.decode(data, MODEL)
    except codec.CodecError:
        return
    assert torch.equal(images, IMAGES)  # anything decoded is what was coded


def with_payload(stream: bytes, payload: bytes) -> bytes:
    """``stream`` carrying ``payload`` in place of its own, the header's payload length and checksum recomputed, as
    anyone editing a file can: no checksum of the container stops it, and the range decoder reads it."""
    header, old = codec.read_header(stream)
    fields = dict(payload_bytes=len(payload), payload_crc=zlib.crc32(payload))
    forged = forge(stream, **fields) if header.version == 1 else forge2(stream, **fields)
    return forged[: len(forged) - len(old)] + payload


def random_words(low: int, high: int) -> st.SearchStrategy[bytes]:
    """From ``low`` to ``high`` random 32-bit words."""
    return st.integers(low, high).flatmap(lambda k: st.binary(min_size=4 * k, max_size=4 * k))


@st.composite
def hostile_payloads(draw) -> bytes:
    """A stream (either version) whose payload is changed a little (bytes flipped, 32-bit words cut out or put in,
    or every word replaced) and whose header vouches for it."""
    stream = draw(st.sampled_from([STREAM, STREAM_V1]))
    data = bytearray(codec.read_header(stream)[1])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "replace"]))
        count = len(data) // 4
        if kind == "flip":
            if data:
                data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        elif kind == "cut":  # whole words, so that the decoder, not the word-count check, meets the change
            at = 4 * draw(st.integers(0, count))
            data[at : at + 4 * draw(st.integers(1, 2))] = b""
        elif kind == "insert":
            at = 4 * draw(st.integers(0, count))
            data[at:at] = draw(random_words(1, 2))
        else:
            data = bytearray(draw(random_words(0, 8)))
    return with_payload(stream, bytes(data))


@FUZZ
@given(hostile_payloads())
def test_a_payload_its_header_vouches_for_decodes_to_the_images_or_to_a_codec_error(data):
    """Behind a valid header, only the range decoder and the images' checksum stand between hostile bytes and the
    caller: the outcome is the images that were coded or a CodecError, never other images or another error."""
    codec.read_header(data)  # the container's checks pass: what follows tests the decoder
    try:
        images, labels = codec.decode(data, MODEL)
    except codec.CodecError:
        return
    assert torch.equal(images, IMAGES) and labels is None


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(["fingerprint", "shape", "count", "batch_size", "payload_bytes",
                                               "payload_crc", "images_crc", "labels", "names"]),
                              st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=8),
                                           lambda inner: st.lists(inner, max_size=4), max_leaves=6)))
def test_forged_header_values_are_refused_by_name(fields):
    try:
        images, labels = codec.decode(forge(STREAM_V1, **fields), MODEL)
    except codec.CodecError:
        return
    assert torch.equal(images, IMAGES) and labels is None  # a header that decodes gives back what was coded


@FUZZ
@given(fields=st.fixed_dictionaries({}, optional={
    "height": st.integers(0, 2**16 - 1), "width": st.integers(0, 2**16 - 1), "channels": st.integers(0, 255),
    "count": st.integers(0, 2**32 - 1), "batch_size": st.integers(0, 2**32 - 1),
    "payload_bytes": st.integers(0, 2**32 - 1), "flags": st.integers(0, 255)}),
    tail=st.none() | st.binary(max_size=40))
def test_forged_binary_header_values_are_refused_by_name(fields, tail):
    try:
        images, _ = codec.decode(forge2(STREAM, tail, **fields), MODEL)
    except codec.CodecError:
        return
    assert torch.equal(images, IMAGES)


# ----- images ---------------------------------------------------------------------------------------------------
def png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


PNG = png(np.arange(48, dtype=np.uint8).reshape(4, 12))


@FUZZ
@given(st.one_of(st.binary(max_size=100), mutated(PNG)))
def test_the_image_reader_reads_or_refuses_with_a_value_error(tmp_path, data):
    path = tmp_path / "x.png"
    path.write_bytes(data)
    try:
        image = read_image(path, (4, 12, 1))
    except ValueError as e:
        assert "x.png" in str(e) and "\n" not in str(e)
        return
    assert image.shape == (4, 12, 1) and image.dtype == torch.uint8
    open_image(data, "x.png")  # the same bytes through the gate the folders and the demo use


# ----- data formats ---------------------------------------------------------------------------------------------
def idx_bytes(array):
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


IDX = idx_bytes(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3))


@FUZZ
@given(data=st.one_of(st.binary(max_size=60), mutated(IDX)), zipped=st.booleans())
def test_idx_files_read_or_refuse_with_a_data_error(tmp_path, data, zipped):
    path = tmp_path / ("x.idx.gz" if zipped else "x.idx")
    path.write_bytes(gzip.compress(data) if zipped else data)
    try:
        array = read_idx(path)
    except DataError:
        return
    assert isinstance(array, np.ndarray)


def npz_bytes():
    buf = io.BytesIO()
    np.savez(buf, data=np.zeros((2, 4, 4, 3), np.uint8), labels=np.array([1, 2]))
    return buf.getvalue()


NPZ = npz_bytes()


@FUZZ
@given(st.one_of(st.binary(max_size=80), mutated(NPZ)))
def test_npz_files_read_or_refuse_with_a_data_error(tmp_path, data):
    path = tmp_path / "x.npz"
    path.write_bytes(data)
    try:
        loaded = load_npz(path, "train")
    except DataError:
        return
    assert loaded.images.dtype == np.uint8


def cifar_bytes():
    d = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    return pickle.dumps(d)


CIFAR = cifar_bytes()


@FUZZ
@given(st.one_of(st.binary(max_size=80), mutated(CIFAR)))
def test_cifar_batches_read_or_refuse_with_a_data_error(tmp_path, data):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    (folder / "data_batch_1").write_bytes(data)
    (folder / "test_batch").write_bytes(CIFAR)
    try:
        loaded = load_cifar(folder, "train")
    except DataError:
        return
    assert loaded.images.shape[1:] == (32, 32, 3)


@FUZZ
@given(st.one_of(st.binary(max_size=80), mutated(PNG)))
def test_image_folders_read_or_refuse_with_a_data_error(tmp_path, data):
    folder = tmp_path / "f"
    folder.mkdir(exist_ok=True)
    (folder / "a.png").write_bytes(data)
    (folder / "b.png").write_bytes(PNG)
    try:
        loaded = load_image_folder(folder, "train")
    except DataError:
        return
    assert loaded.images.dtype == np.uint8


# ----- the command line -----------------------------------------------------------------------------------------
WORDS = ["presets", "models", "sample", "eval", "compress", "decompress", "complete", "upscale", "average", "train",
         "mnist", "nosuchmodel", "-n", "0", "-1", "3", "1e9", "--label", "--seed", "x", "-o", "--rows", "--index",
         "--data", "mnist-slice", "folder:/nonexistent", "slice:", "--temperature", "nan", "inf", "--scale",
         "--threads", "--device", "gpu7", "--limit", "--batch-size", "--input", "--split", "val", "--help"]


@FUZZ
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=6))
def test_random_command_lines_end_in_a_result_or_a_one_line_error(capsys, words):
    if any(w in words for w in ("train", "sample", "complete", "upscale", "compress", "eval")) and \
            "nosuchmodel" not in words and "--help" not in words:
        words = [w for w in words if w not in ("train", "sample", "complete", "upscale", "compress", "eval")] or \
            ["presets"]  # commands that do real work are exercised elsewhere; here the parser and the refusals
    try:
        code = main(words)
    except SystemExit as e:  # argparse: a usage error (2) or --help (0)
        assert e.code in (0, 2)
        capsys.readouterr()
        return
    err = capsys.readouterr().err
    assert code in (0, 1, 2) and "Traceback" not in err
    if code:
        assert len(err.strip().splitlines()) == 1, err


def jpeg(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


FACE = jpeg(np.random.default_rng(0).integers(0, 256, (109, 89, 3), dtype=np.uint8))


@FUZZ
@given(st.one_of(st.binary(max_size=80), mutated(FACE)))
def test_cropped_jpeg_faces_read_or_refuse_with_a_data_error(tmp_path, data):
    """The CelebA path (a loader of 1,000 and more faces): JPEGs, a crop box and a resize, as load_celeba reads them."""
    folder = tmp_path / "celeba"
    folder.mkdir(exist_ok=True)
    (folder / "000001.jpg").write_bytes(data)
    (folder / "000002.jpg").write_bytes(FACE)
    try:
        loaded = load_image_folder(folder, None, image_size=(8, 8), crop=(20, 10, 69, 69))
    except DataError:
        return
    assert loaded.images.shape == (2, 8, 8, 3)
