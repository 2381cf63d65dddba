import errno
import json
import os
import stat

import pytest
import torch

from image_transformer import ImageTransformer, ImageTransformerConfig
from image_transformer.files.checkpoint import (
    CheckpointError,
    atomic_write,
    read_checkpoint,
    save_checkpoint,
    stale_temporaries,
)
from image_transformer.files.pretrained import load_model, model_record


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
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        ImageTransformer.from_pretrained(tmp_path / "m")
    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="c.pt: unreadable"):
        load_model(tmp_path / "c.pt")


def test_load_model_from_a_training_checkpoint(tmp_path):
    model = tiny().eval()
    save_checkpoint(tmp_path / "checkpoint.pt", {**model_record(model), "model": model.state_dict()})
    again = load_model(tmp_path)
    x = torch.randint(0, 256, (2, 3, 3, 1), dtype=torch.uint8)
    assert torch.equal(again.log_prob(x), model.log_prob(x))


def test_a_run_folder_without_its_checkpoint_loads_its_model_folder(tmp_path):
    """A finished run's optimizer checkpoint is often deleted (never shipped); its model/ folder still loads."""
    model = tiny().eval()
    x = torch.randint(0, 256, (2, 3, 3, 1), dtype=torch.uint8)
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match="holds neither checkpoint.pt"):
        load_model(tmp_path / "run")
    model.save_pretrained(tmp_path / "run" / "model")
    assert torch.equal(load_model(tmp_path / "run").log_prob(x), model.log_prob(x))
    newer = tiny().eval()  # the checkpoint, where there is one, stays first: it is the newer weights
    assert not torch.equal(newer.log_prob(x), model.log_prob(x))
    save_checkpoint(tmp_path / "run" / "checkpoint.pt", {**model_record(newer), "model": newer.state_dict()})
    assert torch.equal(load_model(tmp_path / "run").log_prob(x), newer.log_prob(x))


class WritesAFile:
    """Unpickling this calls open(path, "w"): what a malicious checkpoint could do with any function."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_whose_pickle_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    model = tiny()
    torch.save({**model_record(model), "model": model.state_dict(), "run_info": WritesAFile(marker)},
               tmp_path / "checkpoint.pt")
    for load in (read_checkpoint, load_model):
        with pytest.raises(CheckpointError, match=r"checkpoint\.pt: refused: opening it would run code \(.*open\)"):
            load(tmp_path / "checkpoint.pt")
    assert not marker.exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o007, 0o660)])
def test_written_files_get_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        model = tiny()
        save_checkpoint(tmp_path / "checkpoint.pt", {**model_record(model), "model": model.state_dict()})
        model.save_pretrained(tmp_path / "model")
    finally:
        os.umask(old)
    for path in (tmp_path / "checkpoint.pt", tmp_path / "model" / "model.safetensors",
                 tmp_path / "model" / "config.json"):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "checkpoint.pt"
    atomic_write(path, lambda f: f.write(b"good"))

    def full(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what a write on a full disk raises: no name

    with pytest.raises(OSError) as error:
        atomic_write(path, full)
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(path)
    assert path.read_bytes() == b"good" and list(tmp_path.iterdir()) == [path]


def test_stale_temporaries_are_the_ones_a_killed_write_leaves(tmp_path):
    for name in ("checkpoint.pt.k2j3.tmp", "checkpoint-8.pt.a1.tmp", "checkpoint.pt", "notes.tmp", "metrics.jsonl"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in stale_temporaries(tmp_path, "checkpoint*.pt")] == ["checkpoint-8.pt.a1.tmp",
                                                                             "checkpoint.pt.k2j3.tmp"]


def test_the_registry_loads_each_model_kind(tmp_path):
    """Every registered model kind is rebuilt from its record and read back from a pretrained folder."""
    from image_transformer import SuperResolutionConfig, SuperResolutionTransformer
    from image_transformer.files.pretrained import build_model, model_from_config
    from image_transformer.zoo import MODEL_CLASSES as MODEL_TYPES

    small = dict(channels=1, hidden_size=8, num_layers=1, num_heads=2, ffn_size=8)
    configs = {"ImageTransformer": ImageTransformerConfig(image_size=(3, 3), **small),
               "SuperResolutionTransformer": SuperResolutionConfig(image_size=(4, 4), input_size=(2, 2),
                                                                   encoder_layers=1, **small)}
    assert set(MODEL_TYPES) == set(configs)  # a new kind needs a case here
    assert MODEL_TYPES["SuperResolutionTransformer"] is SuperResolutionTransformer
    for kind, config in configs.items():
        model = model_from_config(config)
        assert type(model).__name__ == kind and model.config == config
        assert type(build_model(model_record(model), "test")) is type(model)
        model.save_pretrained(tmp_path / kind)
        loaded = load_model(tmp_path / kind)
        assert type(loaded) is type(model) and loaded.config == config
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))

def test_no_module_imports_another_inside_a_function():
    """No import cycle held apart by imports inside functions: the package's own imports are all at the top."""
    import ast
    from pathlib import Path

    import image_transformer

    for path in Path(image_transformer.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        top = set(tree.body)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                assert node in top, f"{path.name}:{node.lineno} imports .{node.module} inside a function"
