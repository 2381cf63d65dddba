"""Helpers shared by several test files: tiny models, the CLI, files in the formats we read, forged codec streams and
the repository's scripts. Test files import from here (pytest puts tests/ on sys.path), never from one another, so
that a test file can be moved, split or deleted without breaking another one.

Fixtures live in conftest.py; what is here is plain functions and constants, usable at import time (in parametrize
lists, module-level models) as well as inside tests.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import socket
import struct
import zlib
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

from image_transformer import (
    ImageTransformer,
    ImageTransformerConfig,
    SuperResolutionConfig,
    SuperResolutionTransformer,
    codec,
)
from image_transformer.cli import main
from image_transformer.nn.static_step import StaticSampler

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO / ".." / "shared" / "data"  # the real data sets, beside the checkout; tests skip without them

# ----- tiny models ---------------------------------------------------------------------------------------------------
ATTENTION = {
    # query/memory sizes chosen so that they do not divide the sequence or the grid
    "local_1d": dict(attention="local_1d", query_length=7, memory_length=5),
    "global": dict(attention="global"),
    "local_2d": dict(attention="local_2d", query_shape=(2, 4), memory_flange=(1, 3)),
}


def tiny(attention="local_1d", distribution="categorical", channels=3, size=(5, 6), seed=0, dtype=torch.float64,
         **kw) -> ImageTransformer:
    """A 2-layer model of width 16 in eval mode, weights drawn from ``seed``; float64 by default, so that the exact
    checks (autoregressive, normalized, cached = parallel) are not blurred by rounding."""
    cfg = ImageTransformerConfig(
        image_size=size, channels=channels, hidden_size=16, num_layers=2, num_heads=2, ffn_size=32,
        dropout=0.0, distribution=distribution, num_mixtures=3, **{**ATTENTION[attention], **kw},
    )
    torch.manual_seed(seed)
    return ImageTransformer(cfg).to(dtype).eval()


def tiny_superres(attention="local_1d", distribution="categorical", size=(4, 6), input_size=(2, 3),
                  **kw) -> SuperResolutionTransformer:
    """A float64 super-resolution model in eval mode: a 1-layer encoder, a 2-layer decoder of width 16."""
    cfg = SuperResolutionConfig(
        image_size=size, input_size=input_size, channels=3, encoder_layers=1, hidden_size=16, num_layers=2,
        num_heads=2, ffn_size=32, dropout=0.0, distribution=distribution, num_mixtures=3,
        **{**ATTENTION[attention], **kw},
    )
    torch.manual_seed(0)
    return SuperResolutionTransformer(cfg).double().eval()


def static_generate(model, values, start=0, labels=None, context=None, generator=None, temperature=1.0):
    """Draw with the static (CUDA-graph) sampler's step, run eagerly: small chunks, so that several are crossed."""
    sampler = StaticSampler(model, values.shape[0], temperature, labels is not None, context, graph=False, chunk=5)
    with torch.no_grad():
        return sampler.run(values.clone(), start, labels, context, generator)


# ----- the command line and processes ------------------------------------------------------------------------------
def run(*args) -> int:
    """The CLI in this process, arguments given as any objects (paths, numbers); its exit status."""
    return main([str(a) for a in args])


def free_port() -> int:
    """A TCP port free on loopback now (for a server or torchrun's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@functools.cache
def load_tool(name: str) -> ModuleType:
    """tools/NAME.py as a module: the scripts are not a package. Loaded once, so that every test file patches and
    reads the same module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----- files in the formats we read, written independently of the code under test --------------------------------
def write_idx(path: Path, array: np.ndarray, gz: bool = True, code: int = 0x08) -> Path:
    """An idx file (MNIST's format) holding ``array`` as the type ``code`` names, gzipped unless ``gz`` is false."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) \
        + np.asarray(array, dtype=dtype).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_tiny_mnist(root: Path) -> Path:
    """48 training and 12 test 6x6 grey images in MNIST's layout, dark left half, bright right half (learnable in a
    few steps), labels 0 to 2."""
    rng = np.random.default_rng(0)
    root.mkdir()
    for prefix, n in (("train", 48), ("t10k", 12)):
        images = np.zeros((n, 6, 6), np.uint8)
        images[:, :, 3:] = 220
        images = np.clip(images + rng.integers(0, 30, images.shape), 0, 255)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 3, n))
    return root


def mnist_dir(root: Path, n_train: int = 5, n_test: int = 3, gz: bool = True, size=(6, 4)) -> dict:
    """Random images and labels 0 to 9 in MNIST's file names; what was written, by file prefix."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, *size), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", images, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", labels, gz)
        out[prefix] = (images, labels)
    return out


def cifar_rows(n: int, offset: int) -> np.ndarray:
    """Rows in CHW planar order: channel c of image k at (y, x) holds (offset + k + 80*c + 3*y + x) % 256."""
    k, c, y, x = np.meshgrid(np.arange(n), np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return ((offset + k + 80 * c + 3 * y + x) % 256).astype(np.uint8).reshape(n, 3072)


def expected_hwc(n: int, offset: int) -> np.ndarray:
    """The images of ``cifar_rows(n, offset)`` in (N, H, W, C) order, as the loaders return them."""
    k, y, x, c = np.meshgrid(np.arange(n), np.arange(32), np.arange(32), np.arange(3), indexing="ij")
    return ((offset + k + 80 * c + 3 * y + x) % 256).astype(np.uint8)


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_claiming(width: int, height: int) -> bytes:
    """A 45-byte PNG whose header claims ``width`` x ``height`` grey pixels (and holds none)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


def assert_names(exc: pytest.ExceptionInfo, *names: str) -> None:
    """The error's message names each of ``names`` (a file, a size, a key): errors must say what is wrong where."""
    for name in names:
        assert name in str(exc.value), (name, str(exc.value))


# ----- forged codec streams ----------------------------------------------------------------------------------------
FIXED = ("fingerprint", "height", "width", "channels", "count", "batch_size", "payload_bytes", "payload_crc",
         "images_crc", "flags")  # the fixed header fields of a version 2 stream, in order


def _reheader(data: bytes, version: int, length: int, body: bytes) -> bytes:
    """``data`` with its header (``length`` bytes) replaced by ``body`` and the header's CRC recomputed."""
    prefix = codec._PREFIX
    return prefix.pack(codec.MAGIC, version, len(body)) + body + struct.pack("<I", zlib.crc32(body)) + \
        data[prefix.size + length + 4 :]


def forge(data: bytes, **fields) -> bytes:
    """``data`` (a version 1 stream) with header fields replaced and the header's CRC recomputed, as anyone editing a
    stream can."""
    prefix = codec._PREFIX
    _, version, length = prefix.unpack_from(data)
    header = json.loads(data[prefix.size : prefix.size + length])
    header.update(fields)
    return _reheader(data, version, length, json.dumps(header).encode())


def forge2(data: bytes, tail: bytes | None = None, **fields) -> bytes:
    """A version 2 stream with fixed header fields (and, given ``tail``, what follows them) replaced and the header's
    CRC recomputed."""
    prefix = codec._PREFIX
    _, version, length = prefix.unpack_from(data)
    assert version == 2
    body = data[prefix.size : prefix.size + length]
    values = dict(zip(FIXED, codec._FIXED.unpack_from(body)))
    values.update(fields)
    body = codec._FIXED.pack(*values.values()) + (body[codec._FIXED.size :] if tail is None else tail)
    return _reheader(data, version, length, body)
