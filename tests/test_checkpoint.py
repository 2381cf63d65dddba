import json

import pytest
import torch

from image_transformer import ImageTransformer, ImageTransformerConfig
from image_transformer.checkpoint import CheckpointError, atomic_write, load_model, save_checkpoint


def tiny(**kw):
    return ImageTransformer(ImageTransformerConfig(image_size=(3, 3), channels=1, hidden_size=8, num_layers=1,
                                                   num_heads=2, ffn_size=8, **kw))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda f: f.write(b"good"))

    def broken(f):
        f.write(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_bytes() == b"good"
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


def test_from_pretrained_refuses_mismatched_weights(tmp_path):
    tiny().save_pretrained(tmp_path / "a")
    record = json.loads((tmp_path / "a" / "config.json").read_text())
    record["config"]["hidden_size"] = 16
    (tmp_path / "a" / "config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        ImageTransformer.from_pretrained(tmp_path / "a")


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="config.json: not found"):
        ImageTransformer.from_pretrained(tmp_path)
    tiny().save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="weights.safetensors"):
        ImageTransformer.from_pretrained(tmp_path / "m")
    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="c.pt: unreadable"):
        load_model(tmp_path / "c.pt")


def test_load_model_from_a_training_checkpoint(tmp_path):
    model = tiny().eval()
    from image_transformer.checkpoint import model_record

    save_checkpoint(tmp_path / "checkpoint.pt", {**model_record(model), "model": model.state_dict()})
    again = load_model(tmp_path)
    x = torch.randint(0, 256, (2, 3, 3, 1), dtype=torch.uint8)
    assert torch.equal(again.log_prob(x), model.log_prob(x))
