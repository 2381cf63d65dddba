import base64
import functools
import itertools
import json
import math
import struct
import zlib

import pytest
import torch

import helpers
from helpers import ATTENTION, forge, forge2
from image_transformer import (
    ImageTransformer,
    ImageTransformerConfig,
    SuperResolutionConfig,
    SuperResolutionTransformer,
    codec,
)

# the codec's models are float32, as shipped models run, on 4x5 images
tiny = functools.partial(helpers.tiny, size=(4, 5), dtype=torch.float32)


def images(n, channels=3, seed=1):
    return torch.randint(0, 256, (n, 4, 5, channels), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("attention,distribution,channels",
                         list(itertools.product(ATTENTION, ["categorical", "dmol"], [1, 3])))
def test_round_trip_and_cost_for_every_model_kind(attention, distribution, channels):
    model = tiny(attention, distribution, channels)
    x = images(5, channels)
    data = codec.encode(model, x, batch_size=2)  # batches of 2, 2 and 1
    out, labels = codec.decode(data, model)
    assert out.dtype == torch.uint8 and torch.equal(out, x) and labels is None
    header, payload = codec.read_header(data)
    with torch.no_grad():
        model_bits = float(-model.log_prob(x).double().sum() / math.log(2))
    assert 8 * len(payload) <= 1.01 * model_bits + 32  # within 1% of -log2 p (+ the last 32-bit word)
    assert 8 * len(payload) >= model_bits - 1


def test_class_labels_are_stored_and_restored():
    model = tiny("local_2d", "dmol", num_classes=4)
    x, labels = images(3), torch.tensor([3, 0, 2])
    out, got = codec.decode(codec.encode(model, x, labels), model)
    assert torch.equal(out, x) and torch.equal(got, labels)
    with pytest.raises(ValueError, match="pass labels"):
        codec.encode(model, x)
    data = codec.encode(model, x, labels, format_version=1)
    for forged in ([3, 0, 4], None):  # a label past the model's classes; none for a class-conditional model
        with pytest.raises(codec.CodecError, match="labels do not fit the model"):
            codec.decode(forge(data, labels=forged), model)


def test_decoding_does_not_depend_on_the_thread_count():
    """Encode with 2 threads, decode with 1 (a model wide enough that the fused kernel would differ)."""
    cfg = ImageTransformerConfig(image_size=(6, 6), channels=3, hidden_size=128, num_layers=2, num_heads=4,
                                 ffn_size=256, dropout=0.0, distribution="dmol", attention="local_1d",
                                 query_length=16, memory_length=16)
    torch.manual_seed(0)
    model = ImageTransformer(cfg).eval()
    x = torch.randint(0, 256, (8, 6, 6, 3), dtype=torch.uint8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        data = codec.encode(model, x)
        torch.set_num_threads(1)
        out, _ = codec.decode(data, model)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(out, x)


def test_names_travel_in_the_header():
    model = tiny()
    data = codec.encode(model, images(2), names=["a.png", "b.png"])
    assert codec.read_header(data)[0].names == ["a.png", "b.png"]
    with pytest.raises(ValueError, match="one entry per image"):
        codec.encode(model, images(2), names=["a.png"])


@pytest.fixture(scope="module")
def stream():
    model = tiny()
    return model, codec.encode(model, images(3))


@pytest.fixture(scope="module")
def stream_v1():
    model = tiny()
    return model, codec.encode(model, images(3), format_version=1)


def test_another_model_is_refused(stream):
    model, data = stream
    with pytest.raises(codec.CodecError, match="different model"):
        codec.decode(data, tiny(seed=1))


@pytest.mark.parametrize("damage,message", [
    (lambda d: d[:-5], "truncated"),
    (lambda d: d[:20], "truncated inside its header"),
    (lambda d: d + b"x", "unexpected bytes"),
    (lambda d: d[:-3] + bytes([d[-3] ^ 1]) + d[-2:], "payload is corrupted"),
    (lambda d: d[:30] + bytes([d[30] ^ 1]) + d[31:], "header is corrupted"),
    (lambda d: b"PNG" + d[3:], "bad magic"),
    (lambda d: d[:8] + struct.pack("<H", codec.FORMAT_VERSION + 1) + d[10:], "newer than this library"),
    (lambda d: b"", "bad magic"),
])
def test_damaged_streams_are_refused_by_name(stream, damage, message):
    model, data = stream
    with pytest.raises(codec.CodecError, match=message):
        codec.decode(damage(data), model)


@pytest.mark.parametrize("fields,message", [
    (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    (dict(batch_size=2.5), "batch_size must be an integer"),
    (dict(count=0), "count must be an integer >= 1, got 0"),
    (dict(count=True), "count must be an integer"),
    (dict(labels="xyz"), "labels must be null or 3 integers"),
    (dict(labels=[0, 1]), "labels must be null or 3 integers"),
    (dict(labels=[0, 1, 2]), "labels do not fit the model: .*unconditional"),
    (dict(names=[5, 6, 7]), "names must be null or 3 strings"),
    (dict(names=["a.png"]), "names must be null or 3 strings"),
    (dict(shape=[4, 5]), "shape must be"),
    (dict(shape=[4, 5, 9]), "shape must be"),
    (dict(fingerprint="x" * 64), "fingerprint must be 64 hexadecimal digits"),
    (dict(payload_bytes=-1), "payload_bytes must be an integer >= 0"),
    (dict(images_crc=2**40), "images_crc must be an integer 0..4294967295"),
    (dict(count=10**9, batch_size=10**9), "more than one batch may hold"),
    (dict(count=10**8, labels=None, names=None), "more than .* bytes of payload can hold"),
])
def test_forged_header_fields_are_refused_before_anything_is_allocated(stream_v1, fields, message):
    model, data = stream_v1
    with pytest.raises(codec.CodecError, match=message):
        codec.decode(forge(data, **fields), model)


@pytest.mark.parametrize("fields,message", [
    (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    (dict(count=0), "count must be an integer >= 1, got 0"),
    (dict(channels=9), "shape must be"),
    (dict(height=0), "shape must be"),
    (dict(flags=8), "unknown flags"),
    (dict(flags=1), "ends inside the labels"),
    (dict(flags=2), "ends before the names"),
    (dict(count=2**31, batch_size=2**31), "more than one batch may hold"),
    (dict(count=10**8), "more than .* bytes of payload can hold"),
    (dict(fingerprint=bytes(16)), "different model"),
])
def test_forged_binary_header_fields_are_refused_by_name(stream, fields, message):
    model, data = stream
    with pytest.raises(codec.CodecError, match=message):
        codec.decode(forge2(data, **fields), model)
    with pytest.raises(codec.CodecError, match="bytes after its last field"):
        codec.decode(forge2(data, tail=b"\0"), model)


def test_version_2_keeps_the_header_small_and_version_1_streams_still_decode(stream):
    model, data = stream
    header, payload = codec.read_header(data)
    assert header.version == 2 and len(data) - len(payload) == 14 + 42 + 4  # prefix, fixed fields, CRC
    x = images(3)
    labels_and_names = codec.encode(model, x, names=["a.png", "b.png", "c.png"])
    old = codec.encode(model, x, format_version=1)
    assert codec.read_header(old)[0].version == 1
    assert len(old) - len(codec.read_header(old)[1]) > 3 * (len(data) - len(payload))  # JSON and a 64-digit hash
    for stream_ in (old, labels_and_names):
        assert torch.equal(codec.decode(stream_, model)[0], x)
    with pytest.raises(ValueError, match="format_version must be one of"):
        codec.encode(model, x, format_version=3)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_the_mixtures_fast_tables_are_its_likelihoods(channels):
    """``channel_table`` (version 2) equals ``value_probs`` (the likelihood's own arithmetic), so files cost the
    model's bits, and sums to one."""
    dist = tiny(distribution="dmol", channels=channels).dist
    g = torch.Generator().manual_seed(0)
    params = torch.randn(32, dist.num_params, generator=g, dtype=torch.float64) * 3
    values = torch.randint(0, 256, (32, channels), generator=g)
    for c in range(channels):
        fast, exact = dist.channel_table(params, values, c), dist.value_probs(params, values, c)
        assert torch.allclose(fast, exact, rtol=1e-4, atol=1e-10)
        assert torch.allclose(fast.sum(-1), torch.ones(32, dtype=torch.float64), atol=1e-12)
    changed = values.clone()
    changed[:, -1] = 255 - changed[:, -1]  # the channel being coded and later ones never matter
    assert torch.equal(dist.channel_table(params, values, channels - 1),
                       dist.channel_table(params, changed, channels - 1))


def test_many_names_are_stored_deflated_and_read_back(stream):
    model, _ = stream
    names = [f"IMG_{i:05d}.png" for i in range(300)]
    x = images(300)
    plain = len(json.dumps(names, separators=(",", ":")))
    for version in (1, 2):
        data = codec.encode(model, x, names=names, batch_size=300, format_version=version)
        header, payload = codec.read_header(data)
        assert header.names == names
        assert len(data) - len(payload) < plain / 3  # the whole header, against the names alone as plain JSON
    deflated_bomb = zlib.compress(b"[" + b'"x",' * 10**6 + b'"x"]')
    with pytest.raises(codec.CodecError, match="names_z holds more than 300 names can take"):
        codec.read_header(forge2(data, tail=struct.pack("<I", len(deflated_bomb)) + deflated_bomb))
    data = codec.encode(model, x, names=names, batch_size=300, format_version=1)
    bomb = base64.b64encode(deflated_bomb).decode()
    for forged, message in ((dict(names_z="not base64!"), "names_z is not deflated base64"),
                            (dict(names_z=bomb), "names_z holds more than 300 names can take"),
                            (dict(names_z=base64.b64encode(zlib.compress(b'["a.png"]')).decode()),
                             "names must be null or 300 strings")):
        with pytest.raises(codec.CodecError, match=message):
            codec.read_header(forge(data, **forged))


def test_a_forged_count_stops_where_the_payload_runs_out(stream):
    model, data = stream
    data = codec.encode(model, images(2), batch_size=1, format_version=1)
    # within what the payload could hold at the least cost per value, so only the decoder's exhaustion tells
    with pytest.raises(codec.CodecError, match="payload ends 499,998 images before the count"):
        codec.decode(forge(data, count=500_000), model)


def test_wrong_inputs_are_refused():
    model = tiny()
    with pytest.raises(ValueError, match="shape"):
        codec.encode(model, torch.zeros(1, 5, 4, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="at least one image"):
        codec.encode(model, torch.zeros(0, 4, 5, 3, dtype=torch.uint8))
    sr = SuperResolutionTransformer(SuperResolutionConfig(image_size=(8, 8), input_size=(2, 2), channels=1,
                                                          hidden_size=16, num_layers=1, encoder_layers=1,
                                                          num_heads=2, ffn_size=32, query_length=8,
                                                          memory_length=8))
    with pytest.raises(ValueError, match="super-resolution models are out of scope"):
        codec.encode(sr, torch.zeros(1, 8, 8, 1, dtype=torch.uint8))


def test_probabilities_that_differ_from_the_encoders_fail_the_checksum(stream, monkeypatch):
    """If another machine computed other probabilities, decoding stops with an error, not a wrong image."""
    model, data = stream
    monkeypatch.setattr(codec, "fingerprint", lambda m: codec.read_header(data)[0].fingerprint)
    with pytest.raises(codec.CodecError, match="fail their checksum"):
        codec.decode(data, tiny(seed=1))


def test_config_fields_added_later_leave_old_fingerprints_alone(monkeypatch):
    """A stream written before ``norm`` existed (its config had no such key) still matches the model."""
    model = tiny()
    now = codec.fingerprint(model)
    before = {k: v for k, v in model.config.to_dict().items() if k != "norm"}
    monkeypatch.setattr(model.config, "to_dict", lambda: before)
    assert codec.fingerprint(model) == now
    monkeypatch.undo()
    pre = tiny(norm="pre")
    pre.load_state_dict(model.state_dict(), strict=False)
    assert codec.fingerprint(pre) != now  # a non-default value is part of the model
