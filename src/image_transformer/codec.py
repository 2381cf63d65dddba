"""Lossless image coding with the model: each sub-pixel is range-coded with its exact conditional.

A file costs about the model's -log2 p of the images. Entropy coding is ``constriction``'s range coder
with its categorical model (probabilities quantized inside the library, the same way on both sides).

Determinism: encoder and decoder run the same path, the sampler's cached step (``ImageTransformer.cached_steps``),
over the same batches (the batch size is stored in the file), with the coding table of each value from
``dist.channel_table`` (float64; ``value_probs`` for format version 1). The encoder feeds the true values back in,
the decoder the decoded ones,
so both compute bit-identical probabilities; the known-prefix parallel pass is *not* used (its sums are
grouped differently and are not bit-identical to the step's). Decoding needs the same weights (checked
by fingerprint) and the same arithmetic: the same torch build on the same kind of CPU. A CRC of the
images is stored and checked after decoding, so a machine that computes different probabilities gets
an error, never a silently wrong image.

Container (little-endian)::

    magic b"\\x89ITC\\r\\n\\x1a\\n" | version u16 | header length u32 | header | header CRC32 u32 | payload

The header holds the model fingerprint, image shape, count, batch size, payload length, payload CRC32, image CRC32,
and the labels and names where there are any. The payload is the range coder's 32-bit words.

- Version 2 (written): a binary header, 42 bytes without labels or names (the first 16 bytes of the fingerprint,
  then H, W u16, C u8, count, batch size, payload bytes, payload CRC, images CRC u32, flags u8; labels as u16,
  names as deflated JSON behind a u32 length), and the mixture's coding tables from ``channel_table``.
- Version 1 (read, and written on request): a JSON header (the whole fingerprint in hex, names deflated when that
  is shorter) and the tables from ``value_probs``, the whole likelihood for every candidate value.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .images import check_images
from .nn.config import without_added_defaults
from .nn.model import ImageTransformer

__all__ = ["encode", "decode", "read_header", "fingerprint", "Header", "CodecError", "Cost", "FORMAT_VERSION"]

MAGIC = b"\x89ITC\r\n\x1a\n"
FORMAT_VERSION = 2  # what encode writes; decode reads 1 and 2
_PREFIX = struct.Struct("<8sHI")  # magic, version, header length
# version 2's fixed fields: fingerprint (16 bytes), H, W, C, count, batch size, payload bytes, payload CRC, images CRC,
# flags; then labels (count u16) and names (u32 length, deflated JSON) as the flags say
_FIXED = struct.Struct("<16sHHBIIIIIB")
_LABELS, _NAMES = 1, 2
FINGERPRINT_HEX = {1: 64, 2: 32}  # hexadecimal digits of the fingerprint a header keeps


class CodecError(ValueError):
    """A compressed stream that cannot be decoded with this model (names the problem)."""


@dataclass
class Header:
    """What a compressed stream says about itself."""

    fingerprint: str
    shape: tuple[int, int, int]  # (H, W, C)
    count: int
    batch_size: int
    payload_bytes: int
    payload_crc: int
    images_crc: int
    labels: list[int] | None = None
    names: list[str] | None = None
    version: int = FORMAT_VERSION


def fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's config and weights (hex): a stream decodes only with the model that wrote it."""
    # fields added since the first streams were written are left out at their defaults, so old streams decode
    config = without_added_defaults(model.config.to_dict())
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class Cost:
    """What coding cost under the model's own tables: -log2 p of every coded value, summed per image (float64), the
    code length an ideal coder would reach; the range coder's file is this plus its quantization and the header."""

    bits: list[Tensor]  # one (b,) tensor per coded batch

    @classmethod
    def empty(cls) -> "Cost":
        return cls([])

    def start_batch(self, size: int) -> None:
        self.bits.append(torch.zeros(size, dtype=torch.float64))

    def add(self, probs: Tensor, symbols: Tensor) -> None:
        """Count the values ``symbols`` (b,) coded with the tables ``probs`` (b, 256) into the current batch."""
        self.bits[-1] += -torch.log2(probs.cpu().gather(1, symbols.cpu().long()[:, None])[:, 0])

    def per_image(self) -> Tensor:
        return torch.cat(self.bits) if self.bits else torch.zeros(0, dtype=torch.float64)


def _check_model(model: nn.Module) -> ImageTransformer:
    if not isinstance(model, ImageTransformer):
        kind = type(model).__name__
        if "compress" not in getattr(model, "tasks", ("compress",)):  # a kind of model that says it codes nothing
            raise ValueError("super-resolution models are out of scope for the codec: it codes images with an "
                             "unconditional or class-conditional ImageTransformer")
        raise ValueError(f"the codec needs an ImageTransformer, got {kind}")
    if model.blocks[0].cross is not None:
        raise ValueError("models with cross-attention (super-resolution decoders) are out of scope for the codec")
    return model


def _crc(images: Tensor) -> int:
    return zlib.crc32(images.contiguous().cpu().numpy().tobytes())


def _code(model: ImageTransformer, values: Tensor, labels: Tensor | None, code_value, bar: tqdm, version: int) -> None:
    """Run the cached step over one batch; ``code_value(probs (B, 256) float64, c) -> (B,) long`` per value, with the
    coding tables of the stream's format ``version``."""
    k = model.dist.values_per_position
    table = model.dist.value_probs if version == 1 else model.dist.channel_table

    def choose(t: int, params: Tensor) -> Tensor:
        chosen = torch.zeros(params.shape[0], k, dtype=torch.long)
        for c in range(k):
            chosen[:, c] = code_value(t, table(params, chosen, c), c)
        bar.update(1)
        return chosen

    model.cached_steps(values, 0, labels, None, choose)


@torch.no_grad()
def encode(model: ImageTransformer, images: Tensor, labels: Tensor | None = None, *, names: list[str] | None = None,
           batch_size: int = 64, progress: bool = False, cost: Cost | None = None,
           format_version: int = FORMAT_VERSION) -> bytes:
    """Compress uint8 images (B, H, W, C) (and their labels, for class-conditional models) to bytes; ``cost``, when
    given, counts what each image cost under the coding tables (the model's own bits, at no extra pass).
    ``format_version`` 1 writes the older container and tables, for readers that know no other."""
    import constriction

    model = _check_model(model)
    check_images(images, model.image_shape)
    b = images.shape[0]
    if b < 1:
        raise ValueError("images must hold at least one image")
    labels = model.check_labels(labels, b)
    if names is not None and len(names) != b:
        raise ValueError(f"names must have one entry per image: {len(names)} names for {b} images")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if format_version not in FINGERPRINT_HEX:
        raise ValueError(f"format_version must be one of {sorted(FINGERPRINT_HEX)}, got {format_version!r}")
    if format_version == 2 and labels is not None and labels.numel() and int(labels.max()) > 0xFFFF:
        raise ValueError("format version 2 stores labels as 16-bit numbers: a label above 65535 needs version 1")
    images = images.to(torch.uint8).cpu()
    family = constriction.stream.model.Categorical(perfect=False)
    coder = constriction.stream.queue.RangeEncoder()
    order = model.layout.order.tolist()
    bar = tqdm(total=model.layout.n * -(-b // batch_size), disable=not progress, unit="step",
               desc="encoding", dynamic_ncols=True, leave=False)
    with model.evaluating(), bar:
        for lo in range(0, b, batch_size):
            truth = model.to_positions(images[lo : lo + batch_size])  # (b, n, k)
            chunk_labels = None if labels is None else labels[lo : lo + batch_size]
            if cost is not None:
                cost.start_batch(len(truth))

            def code_value(t: int, probs: Tensor, c: int, truth: Tensor = truth) -> Tensor:
                symbols = truth[:, order[t], c]
                coder.encode(symbols.numpy().astype(np.int32), family, probs.cpu().numpy())
                if cost is not None:
                    cost.add(probs, symbols)
                return symbols

            values = torch.zeros_like(truth, device=model.head.weight.device)
            _code(model, values, chunk_labels, code_value, bar, format_version)
    payload = coder.get_compressed().astype("<u4").tobytes()
    header = Header(
        fingerprint=fingerprint(model)[: FINGERPRINT_HEX[format_version]], shape=tuple(model.image_shape), count=b,
        batch_size=batch_size, payload_bytes=len(payload), payload_crc=zlib.crc32(payload), images_crc=_crc(images),
        labels=None if labels is None else labels.tolist(), names=names, version=format_version,
    )
    return _pack(header) + payload


MAX_NAME_BYTES = 1024  # the most a stored name may take, decompressed (file names are far shorter)


def _pack_names(names: list[str] | None) -> dict[str, object]:
    """The names' header field: the JSON list, or, when shorter, that list deflated and in base64 (``names_z``);
    a folder's file names share most of their letters, and deflate keeps about one byte in ten of them."""
    if names is None:
        return {"names": None}
    plain = json.dumps(names, separators=(",", ":"))
    packed = base64.b64encode(zlib.compress(plain.encode(), 9)).decode()
    return {"names_z": packed} if len(packed) < len(plain) else {"names": names}


def _unpack_names(d: dict, count: int) -> object:
    """The names a header holds, from ``names`` or ``names_z`` (inflated to no more than their count allows)."""
    if d.get("names_z") is None:
        return d.get("names")
    packed = d["names_z"]
    if not isinstance(packed, str):
        raise ValueError(f"names_z must be text, got {packed!r:.80}")
    try:
        inflate = zlib.decompressobj()
        plain = inflate.decompress(base64.b64decode(packed, validate=True), count * MAX_NAME_BYTES + 2)
    except (ValueError, zlib.error) as e:
        raise ValueError(f"names_z is not deflated base64 ({e})") from None
    if inflate.unconsumed_tail:
        raise ValueError(f"names_z holds more than {count} names can take")
    try:
        return json.loads(plain)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"names_z does not hold a JSON list ({e})") from None


def _pack(header: Header) -> bytes:
    if header.version == 1:
        body = json.dumps({
            "fingerprint": header.fingerprint, "shape": list(header.shape), "count": header.count,
            "batch_size": header.batch_size, "payload_bytes": header.payload_bytes, "payload_crc": header.payload_crc,
            "images_crc": header.images_crc, "labels": header.labels, **_pack_names(header.names),
        }, separators=(",", ":")).encode()
    else:
        flags = (_LABELS if header.labels is not None else 0) | (_NAMES if header.names is not None else 0)
        body = _FIXED.pack(bytes.fromhex(header.fingerprint), *header.shape, header.count, header.batch_size,
                           header.payload_bytes, header.payload_crc, header.images_crc, flags)
        if header.labels is not None:
            body += struct.pack(f"<{len(header.labels)}H", *header.labels)
        if header.names is not None:
            names = zlib.compress(json.dumps(header.names, separators=(",", ":")).encode(), 9)
            body += struct.pack("<I", len(names)) + names
    return _PREFIX.pack(MAGIC, header.version, len(body)) + body + struct.pack("<I", zlib.crc32(body))


def _unpack_v2(body: bytes) -> dict:
    """Version 2's binary header as the fields version 1 spells in JSON, for the same checks."""
    if len(body) < _FIXED.size:
        raise ValueError(f"{len(body)} bytes, fewer than the {_FIXED.size} of its fixed fields")
    fp, h, w, c, count, batch, payload_bytes, payload_crc, images_crc, flags = _FIXED.unpack_from(body)
    if flags & ~(_LABELS | _NAMES):
        raise ValueError(f"unknown flags {flags:#04x}")
    d: dict = dict(fingerprint=fp.hex(), shape=[h, w, c], count=count, batch_size=batch, payload_bytes=payload_bytes,
                   payload_crc=payload_crc, images_crc=images_crc, labels=None, names=None)
    at = _FIXED.size
    if flags & _LABELS:
        if len(body) < at + 2 * count:
            raise ValueError(f"it ends inside the labels of {count:,} images")
        d["labels"] = list(struct.unpack_from(f"<{count}H", body, at))
        at += 2 * count
    if flags & _NAMES:
        if len(body) < at + 4:
            raise ValueError("it ends before the names' length")
        (length,) = struct.unpack_from("<I", body, at)
        at += 4
        if len(body) < at + length:
            raise ValueError("it ends inside the names")
        d["names_z"] = base64.b64encode(body[at : at + length]).decode()  # inflated, within limits, by the checks
        at += length
    if at != len(body):
        raise ValueError(f"{len(body) - at} bytes after its last field")
    return d


MAX_BATCH_VALUES = 1 << 28  # values one decoded batch may hold (int64: 2 GiB); the encoder's batches stay far below
# the least one coded value can cost: the coder quantizes to 24 bits and gives every one of the 256 values at least
# 2^-24, so no value is more likely than 1 - 255 * 2^-24
MIN_BITS_PER_VALUE = -math.log2(1 - 255 / 2**24)
STATE_BITS = 96  # what a range decoder may still hold when it has read all its words, with room to spare


def _parse_header(d: object, version: int = 1) -> Header:
    """A header's fields, each checked for its type and range before anything is allocated from it: a header is
    protected only by a CRC, which anyone who edits it can recompute."""
    if not isinstance(d, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("fingerprint", "shape", "count", "batch_size", "payload_bytes", "payload_crc",
                           "images_crc") if k not in d]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")

    def integer(key: str, low: int, high: int | None = None) -> int:
        value = d[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f">= {low}"
            raise ValueError(f"{key} must be an integer {span}, got {value!r}")
        return value

    fingerprint, digits = d["fingerprint"], FINGERPRINT_HEX[version]
    if (not isinstance(fingerprint, str) or len(fingerprint) != digits
            or any(c not in "0123456789abcdef" for c in fingerprint)):
        raise ValueError(f"fingerprint must be {digits} hexadecimal digits, got {fingerprint!r:.80}")
    shape = d["shape"]
    if (not isinstance(shape, list) or len(shape) != 3 or any(isinstance(x, bool) or not isinstance(x, int)
                                                             for x in shape)
            or min(shape[:2]) < 1 or not 1 <= shape[2] <= 4):
        raise ValueError(f"shape must be [H, W, C] with H, W >= 1 and C in 1..4, got {shape!r:.80}")
    count = integer("count", 1)
    batch_size = integer("batch_size", 1)
    if min(batch_size, count) * shape[0] * shape[1] * shape[2] > MAX_BATCH_VALUES:
        raise ValueError(f"batches of {min(batch_size, count)} {shape[0]}x{shape[1]}x{shape[2]} images are more than "
                         f"one batch may hold ({MAX_BATCH_VALUES:,} values)")
    labels, names = d.get("labels"), _unpack_names(d, count)
    if labels is not None and (not isinstance(labels, list) or len(labels) != count
                               or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in labels)):
        raise ValueError(f"labels must be null or {count} integers >= 0, got {labels!r:.80}")
    if names is not None and (not isinstance(names, list) or len(names) != count
                              or any(not isinstance(x, str) for x in names)):
        raise ValueError(f"names must be null or {count} strings, got {names!r:.80}")
    return Header(fingerprint=fingerprint, shape=tuple(shape), count=count, batch_size=batch_size,
                  payload_bytes=integer("payload_bytes", 0), payload_crc=integer("payload_crc", 0, 2**32 - 1),
                  images_crc=integer("images_crc", 0, 2**32 - 1), labels=labels, names=names, version=version)


def read_header(data: bytes) -> tuple[Header, bytes]:
    """Parse and check a stream's container: (header, payload). Raises CodecError naming the problem."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"a compressed stream is bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _PREFIX.size or not data.startswith(MAGIC):
        raise CodecError("not an image-transformer compressed stream (bad magic number)")
    _, version, length = _PREFIX.unpack_from(data)
    if version > FORMAT_VERSION:
        raise CodecError(f"stream format version {version} is newer than this library reads ({FORMAT_VERSION}): "
                         "upgrade image-transformer")
    if version < 1:
        raise CodecError(f"unknown stream format version {version}")
    end = _PREFIX.size + length
    if len(data) < end + 4:
        raise CodecError("the stream is truncated inside its header")
    body = data[_PREFIX.size : end]
    if zlib.crc32(body) != struct.unpack_from("<I", data, end)[0]:
        raise CodecError("the stream's header is corrupted (checksum mismatch)")
    try:
        header = _parse_header(json.loads(body) if version == 1 else _unpack_v2(body), version)
    except (ValueError, UnicodeDecodeError, struct.error) as e:  # JSONDecodeError is a ValueError
        raise CodecError(f"the stream's header is malformed: {e}") from None
    values = header.count * header.shape[0] * header.shape[1] * header.shape[2]
    if values * MIN_BITS_PER_VALUE > 8 * header.payload_bytes + STATE_BITS:
        raise CodecError(f"the stream's header claims {header.count:,} images, more than {header.payload_bytes:,} "
                         f"bytes of payload can hold at the least a value can cost: edited or damaged")
    payload = data[end + 4 :]
    if len(payload) < header.payload_bytes:
        raise CodecError(f"the stream is truncated: {len(payload)} of {header.payload_bytes} payload bytes")
    if len(payload) > header.payload_bytes:
        raise CodecError(f"the stream has {len(payload) - header.payload_bytes} unexpected bytes after its payload")
    if zlib.crc32(payload) != header.payload_crc:
        raise CodecError("the stream's payload is corrupted (checksum mismatch)")
    return header, payload


@torch.no_grad()
def decode(data: bytes, model: ImageTransformer, *, progress: bool = False, cost: Cost | None = None
           ) -> tuple[Tensor, Tensor | None]:
    """Decompress bytes from :func:`encode` with the same model: (images uint8 (B, H, W, C), labels or None);
    ``cost`` as in :func:`encode`."""
    import constriction

    model = _check_model(model)
    header, payload = read_header(data)
    if header.fingerprint != fingerprint(model)[: len(header.fingerprint)]:
        raise CodecError("the stream was written with a different model (fingerprint mismatch): decode it with "
                         "the model that encoded it")
    if header.shape != tuple(model.image_shape):
        raise CodecError(f"the stream holds {header.shape} images but the model makes {model.image_shape}")
    labels = None
    if header.labels is not None:
        labels = torch.tensor(header.labels, dtype=torch.long)
    try:
        labels = model.check_labels(labels, header.count)
    except ValueError as e:  # labels an edited header gives (or leaves out) that this model cannot take
        raise CodecError(f"the stream's labels do not fit the model: {e}") from None
    family = constriction.stream.model.Categorical(perfect=False)
    if len(payload) % 4:
        raise CodecError("the stream's payload is not a whole number of 32-bit words")
    coder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    b, size = header.count, header.batch_size
    per_image = header.shape[0] * header.shape[1] * header.shape[2]
    out = []
    bar = tqdm(total=model.layout.n * -(-b // size), disable=not progress, unit="step", desc="decoding",
               dynamic_ncols=True, leave=False)
    with model.evaluating(), bar:
        for lo in range(0, b, size):
            n_chunk = min(size, b - lo)
            if lo and coder.maybe_exhausted() and (b - lo) * per_image * MIN_BITS_PER_VALUE > STATE_BITS:
                raise CodecError(f"the stream's payload ends {b - lo:,} images before the count in its header: edited "
                                 f"or damaged")
            if cost is not None:
                cost.start_batch(n_chunk)

            def code_value(t: int, probs: Tensor, c: int) -> Tensor:
                symbols = torch.from_numpy(coder.decode(family, probs.cpu().numpy()).astype(np.int64))
                if cost is not None:
                    cost.add(probs, symbols)
                return symbols

            values = torch.zeros(n_chunk, model.layout.n, model.dist.values_per_position, dtype=torch.long,
                                 device=model.head.weight.device)
            try:
                _code(model, values, None if labels is None else labels[lo : lo + size], code_value, bar,
                      header.version)
            except (RuntimeError, ValueError, AssertionError) as e:  # the range decoder ran off its data
                raise CodecError(f"the stream does not decode with this model: {e}") from None
            out.append(model.to_images(values.cpu()).to(torch.uint8))
    images = torch.cat(out)
    if _crc(images) != header.images_crc:
        raise CodecError("decoded images fail their checksum: the stream was edited, or this model computes different "
                         "probabilities here "
                         "than where the stream was written (another torch build or CPU kind?)")
    return images, labels
