import errno
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import forge2, png_claiming, run
from image_transformer import cli, codec
from image_transformer.cli import build_parser
from image_transformer.nn.model import ImageTransformer


def test_train_eval_sample_complete_resume(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--data", f"mnist:{tiny_mnist}", "--preset", "tiny", "--out", out, "--batch-size", 4,
              "--eval-every", 2, "--eval-images", 4, "--checkpoint-every", 2, "--num-samples", 2, "--quiet"]
    assert run("train", *common, "--steps", 3) == 0
    text = capsys.readouterr().out
    assert "test bits/dim" in text
    result = json.loads((out / "eval.json").read_text())
    assert result["num_images"] == 12 and 0 < result["bits_per_dim"] < 9
    assert (out / "samples.png").is_file() and (out / "model" / "model.safetensors").is_file()
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [2, 3]

    assert run("train", *common, "--steps", 5, "--resume") == 0
    assert "resumed" in capsys.readouterr().out
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 5

    assert run("eval", out, "--limit", 5, "-o", tmp_path / "e.json") == 0
    assert json.loads((tmp_path / "e.json").read_text())["num_images"] == 5
    assert run("eval", out / "model", "--data", f"mnist:{tiny_mnist}") == 0  # pretrained dir needs --data

    assert run("sample", out, "-n", 3, "--temperature", 0.8, "-o", tmp_path / "s.png") == 0
    grid = np.asarray(Image.open(tmp_path / "s.png"))
    assert grid.ndim == 2 and grid.shape[0] > 12

    Image.fromarray(np.full((6, 6), 200, np.uint8)).save(tmp_path / "in.png")
    assert run("complete", out, "--input", tmp_path / "in.png", "--rows", 3, "-n", 2, "-o", tmp_path / "c.png") == 0
    assert (tmp_path / "c.png").is_file()


def test_class_conditional_training_and_sampling(tiny_mnist, tmp_path):
    out = tmp_path / "cc"
    assert run("train", "--data", f"mnist:{tiny_mnist}", "--preset", "tiny", "--out", out, "--steps", 2,
               "--batch-size", 4, "--class-conditional", "--num-samples", 0, "--final-eval-images", 4, "--quiet") == 0
    assert run("sample", out, "-n", 9, "-o", tmp_path / "s.png") == 0  # one row per class (10 classes, idx labels)
    assert run("sample", out, "-n", 2, "--label", 1, "-o", tmp_path / "s1.png") == 0


def test_errors_are_clear_and_exit_2(tiny_mnist, tmp_path, capsys):
    assert run("train", "--data", f"mnist:{tiny_mnist}", "--out", tmp_path / "x", "--steps", 1) == 2
    assert "preset 'mnist-cpu' is for 28x28x1 images but the data holds 6x6x1" in capsys.readouterr().err
    assert run("train", "--data", f"mnist:{tmp_path / 'nowhere'}", "--out", tmp_path / "x") == 2
    assert "nowhere" in capsys.readouterr().err
    assert run("train", "--preset", "nope", "--data", f"mnist:{tiny_mnist}", "--out", tmp_path / "x") == 2
    assert "unknown preset" in capsys.readouterr().err
    assert run("sample", tmp_path / "missing") == 2
    assert "missing: no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "x" / "checkpoint.pt").exists()


def test_superres_train_eval_upscale(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "sr"
    assert run("train", "--task", "superres", "--input-size", 3, "--data", f"mnist:{tiny_mnist}", "--preset", "tiny",
               "--out", out, "--steps", 2, "--batch-size", 4, "--num-samples", 2, "--final-eval-images", 4,
               "--quiet") == 0
    text = capsys.readouterr().out
    assert "test bits/dim" in text and "T=0.9: consistency (paper's: L2 to the bicubic downsampling)" in text
    report = json.loads((out / "superres.json").read_text())
    assert set(report["temperatures"]) == {"0.8", "0.9", "1.0"}
    assert 0 <= report["temperatures"]["1.0"]["nearest_train_ms_ssim"] <= 1
    grid = np.asarray(Image.open(out / "superres.png"))
    assert grid.shape[1] > grid.shape[0]  # 2 rows of 5 columns
    (out / "superres.png").unlink()
    (tmp_path / "elsewhere").mkdir()
    capsys.readouterr()
    assert run("eval", out, "--samples", 2, "-o", tmp_path / "elsewhere" / "e.json") == 0
    result = json.loads((tmp_path / "elsewhere" / "e.json").read_text())
    assert "superres" in result and "the right input is worth" in capsys.readouterr().out
    assert result["input_gain"] == pytest.approx(result["shuffled_input_bits_per_dim"] - result["bits_per_dim"])
    # the report's files go where -o says, not beside the checkpoint
    assert (tmp_path / "elsewhere" / "superres.png").is_file() and not (out / "superres.png").exists()
    Image.fromarray(np.full((3, 3), 90, np.uint8)).save(tmp_path / "low.png")
    assert run("upscale", out, "--input", tmp_path / "low.png", "-n", 2, "-o", tmp_path / "up.png") == 0
    assert (tmp_path / "up.png").is_file()
    assert run("upscale", out, "--input", tmp_path / "up.png", "-o", tmp_path / "x.png") == 2
    assert "the model generates 3x3" in capsys.readouterr().err
    assert run("sample", out, "-o", tmp_path / "s.png") == 2
    assert "use `image-transformer upscale`" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "eval", "sample", "complete", "upscale", "compress", "decompress",
                                     "average", "presets", "demo"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "usage: image-transformer " + command in text
    for action in build_parser()._subparsers._group_actions[0].choices[command]._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{command} {action.option_strings} has no help"


@pytest.fixture
def trained(tiny_mnist, tmp_path):
    """A run directory of an unconditional tiny model trained for 2 steps."""
    out = tmp_path / "trained"
    assert run("train", "--data", f"mnist:{tiny_mnist}", "--preset", "tiny", "--out", out, "--steps", 2,
               "--batch-size", 4, "--num-samples", 0, "--final-eval-images", 4, "--quiet") == 0
    return out


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last_one(tiny_mnist, tmp_path, monkeypatch,
                                                                           capsys):
    real_save = torch.save

    def disk_fills_up_at_step_4(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 4:
            f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills_up_at_step_4)
    out = tmp_path / "run"
    assert run("train", "--data", f"mnist:{tiny_mnist}", "--preset", "tiny", "--out", out, "--steps", 6,
               "--batch-size", 4, "--checkpoint-every", 2, "--num-samples", 0, "--quiet") == 2
    err = capsys.readouterr().err
    assert err == (f"error: {out / 'checkpoint.pt'}: No space left on device; free some space or write elsewhere; "
                   f"the checkpoint of step 2 is kept: continue with `image-transformer train --out {out} "
                   f"--resume`\n")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not list(out.glob("*.tmp")) and not (out / "train.lock").exists()


def test_a_full_disk_beside_a_damaged_checkpoint_says_it_is_damaged(tiny_mnist, tmp_path, monkeypatch, capsys):
    """The disk fills up at step 4 and the step 2 checkpoint is found damaged: the error says so, not that no
    checkpoint was written (nor that one is kept to resume from)."""
    real_save = torch.save
    out = tmp_path / "run"

    def damage_then_fill_up_at_step_4(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 4:
            (out / "checkpoint.pt").write_bytes(b"\0" * 64)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", damage_then_fill_up_at_step_4)
    assert run("train", "--data", f"mnist:{tiny_mnist}", "--preset", "tiny", "--out", out, "--steps", 6,
               "--batch-size", 4, "--checkpoint-every", 2, "--num-samples", 0, "--quiet") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out / 'checkpoint.pt'}: No space left on device; free some space or write "
                          f"elsewhere; and the checkpoint there cannot be read, so the run cannot resume: "
                          f"{out / 'checkpoint.pt'}: unreadable checkpoint (")
    assert err.count("\n") == 1 and "is kept" not in err and "no checkpoint was written" not in err


def test_unwritable_outputs_are_refused_before_any_work(trained, tmp_path, monkeypatch, capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("work done before the output path was checked")

    monkeypatch.setattr(ImageTransformer, "sample", no_work)
    monkeypatch.setattr(ImageTransformer, "complete", no_work)
    monkeypatch.setattr(cli, "evaluate", no_work)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    Image.fromarray(np.full((6, 6), 200, np.uint8)).save(tmp_path / "in.png")
    complete = ["complete", trained, "--input", tmp_path / "in.png", "--rows", 3]
    for command, message in [
        (["sample", trained, "-o", tmp_path / "samples"], f"{tmp_path / 'samples'}: no image extension; use .png"),
        (["sample", trained, "-o", tmp_path / "s.pgn"], "s.pgn: unknown image extension '.pgn'; use .png"),
        (["sample", trained, "-o", tmp_path / "blocker" / "s.png"], f"{tmp_path / 'blocker'} is a file, not a folder"),
        ([*complete, "-o", tmp_path / "c"], "no image extension"),
        (["eval", trained, "-o", tmp_path / "blocker" / "e.json"], f"{tmp_path / 'blocker'} is a file, not a folder"),
        (["average", trained, "-o", tmp_path / "blocker" / "avg"], f"{tmp_path / 'blocker'} is a file, not a folder"),
        (["train", "--out", tmp_path / "blocker" / "run"], f"{tmp_path / 'blocker' / 'run'}"),
    ]:
        assert run(*command) == 2, command
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, (command, err)


DROP_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


def test_a_read_only_folder_is_refused_before_any_work(trained, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):  # root: run the CLI without the capability that ignores permissions
            if shutil.which("setpriv") is None:
                pytest.skip("root may write into a read-only folder, and setpriv is not here to drop that")
            for args, message in (
                (["sample", tmp_path / "no-model", "-o", folder / "s.png"], "cannot write into"),  # before loading
                (["train", "--out", folder / "run", "--steps", 1], "Permission denied"),
            ):
                done = subprocess.run([*DROP_DAC, sys.executable, "-m", "image_transformer", *map(str, args)],
                                      capture_output=True, text=True)
                assert done.returncode == 2 and message in done.stderr, done.stderr
            return
        monkeypatch.setattr(ImageTransformer, "sample", lambda *a, **k: pytest.fail("sampled first"))
        assert run("sample", trained, "-o", folder / "s.png") == 2
        assert f"cannot write into {folder} (read-only or no permission)" in capsys.readouterr().err
        assert run("train", "--out", folder / "run", "--steps", 1) == 2
        assert f"{folder / 'run'}: Permission denied; check the permissions" in capsys.readouterr().err
    finally:
        folder.chmod(0o755)


def test_finished_work_is_written_elsewhere_when_the_output_fails(trained, tmp_path, monkeypatch, capsys):
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full, a file whose writes fail with 'No space left on device'")
    assert run("eval", trained, "--limit", 2, "-o", "/dev/full") == 2
    err = capsys.readouterr().err
    match = re.search(r"\berror: /dev/full: No space left on device; free some space or write elsewhere\. "
                      r"The result was written to (\S+) instead\n$", err)  # after the progress bar
    assert match, err
    assert json.loads(open(match.group(1)).read())["num_images"] == 2

    real_save_grid = cli.save_grid

    def full_disk_for_the_asked_path(images, path, **kwargs):
        if path == tmp_path / "s.png":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save_grid(images, path, **kwargs)

    monkeypatch.setattr(cli, "save_grid", full_disk_for_the_asked_path)
    assert run("sample", trained, "-n", 2, "-o", tmp_path / "s.png") == 2
    rescued = re.search(r"written to (\S+) instead", capsys.readouterr().err).group(1)
    assert np.asarray(Image.open(rescued)).shape[0] > 6


@pytest.mark.parametrize("command, message", [
    (["eval", "run", "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["eval", "run", "--limit", "-5"], "argument --limit: must be at least 0, got -5"),
    (["sample", "run", "--scale", "0"], "argument --scale: must be at least 1, got 0"),
    (["sample", "run", "-n", "0"], "argument -n/--num: must be at least 1, got 0"),
    (["complete", "run", "--input", "x.png", "--rows", "-1"], "argument --rows: must be at least 0, got -1"),
    (["upscale", "run", "--input", "x.png", "--scale", "-2"], "argument --scale: must be at least 1, got -2"),
    (["train", "--steps", "0"], "argument --steps: must be at least 1, got 0"),
    (["train", "--threads", "0"], "argument --threads: must be at least 1, got 0"),
    (["train", "--keep-checkpoints", "two"], "argument --keep-checkpoints: expected an integer, got 'two'"),
])
def test_bad_numbers_are_refused_when_parsing(command, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(command)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_labels_the_model_cannot_use_are_refused(trained, tmp_path, capsys):
    Image.fromarray(np.full((6, 6), 200, np.uint8)).save(tmp_path / "in.png")
    assert run("complete", trained, "--input", tmp_path / "in.png", "--rows", 3, "--label", 1,
               "-o", tmp_path / "c.png") == 2
    assert "a class label was given but the model is unconditional" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("command", ["train", "eval", "sample", "complete", "upscale", "average", "demo"])
def test_help_states_each_default_once(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # one line per option
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    options = [line for line in text.splitlines() if line.startswith("  -")]
    assert len(options) >= 2
    for line in options:
        assert line.count("default") <= 1 and "(default: None)" not in line, line
    if command == "train":
        assert any(line.split()[0] == "--steps" and line.endswith("(default 300)") for line in options)


def test_train_minutes_count_every_session(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    common = ["train", "--data", f"mnist:{tiny_mnist}", "--preset", "tiny", "--out", out, "--batch-size", 4,
              "--num-samples", 0, "--final-eval-images", 4, "--quiet"]
    assert run(*common, "--steps", 2) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert 0 < state["train_minutes"] < 1
    state["train_minutes"] = 42.0  # as if the first session had trained for 42 minutes
    torch.save(state, out / "checkpoint.pt")
    assert run(*common, "--steps", 3, "--resume") == 0
    assert 42.0 <= json.loads((out / "eval.json").read_text())["train_minutes"] < 43


def test_compress_and_decompress_end_to_end(trained, tiny_mnist, tmp_path, capsys):
    files = []
    for i in range(3):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (6, 6), dtype=np.uint8)).save(path)
        files.append(path)
    files.append(tmp_path / "digit0.jpg")  # any Pillow image; a second 'digit0' gets a distinct name
    Image.open(files[0]).save(files[-1], quality=95)
    assert run("compress", trained, *files, "-o", tmp_path / "x.itc", "--batch-size", 2) == 0
    out = capsys.readouterr().out
    assert re.search(r"[\d,]+ bytes for 4 images of 6x6x1: [\d.]+ bits/dim \(the model's own: [\d.]+ bits/dim\)", out)
    assert run("decompress", tmp_path / "x.itc", "--model", trained, "-o", tmp_path / "dec") == 0
    assert "decompressed 4 images" in capsys.readouterr().out
    names = sorted(p.name for p in (tmp_path / "dec").iterdir())
    assert names == ["digit0-00003.png", "digit0.png", "digit1.png", "digit2.png"]
    for src, name in zip(files, ["digit0.png", "digit1.png", "digit2.png", "digit0-00003.png"]):
        assert np.array_equal(np.asarray(Image.open(src).convert("L")), np.asarray(Image.open(tmp_path / "dec" / name)))

    # a whole split, and the errors
    assert run("compress", trained / "model", "--data", f"mnist:{tiny_mnist}", "--limit", 5,
               "-o", tmp_path / "s.itc") == 0
    assert run("decompress", tmp_path / "s.itc", "--model", trained, "-o", tmp_path / "split") == 0
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == [f"image-{i:05d}.png" for i in range(5)]
    assert codec.read_header((tmp_path / "s.itc").read_bytes())[0].names is None  # no made-up names stored
    capsys.readouterr()
    before = (tmp_path / "split" / "image-00000.png").stat().st_mtime_ns
    assert run("decompress", tmp_path / "s.itc", "--model", trained, "-o", tmp_path / "split") == 2  # never silently
    err = capsys.readouterr().err
    assert "image-00000.png" in err and "pass --overwrite" in err
    assert (tmp_path / "split" / "image-00000.png").stat().st_mtime_ns == before
    assert run("decompress", tmp_path / "s.itc", "--model", trained, "-o", tmp_path / "split", "--overwrite") == 0
    capsys.readouterr()
    (tmp_path / "cut.itc").write_bytes((tmp_path / "s.itc").read_bytes()[:-4])
    assert run("decompress", tmp_path / "cut.itc", "--model", trained, "-o", tmp_path / "cut") == 2
    assert "truncated" in capsys.readouterr().err
    assert run("compress", trained, "-o", tmp_path / "none.itc") == 2
    assert "give image files or --data" in capsys.readouterr().err


def test_model_and_training_flags_are_made_from_the_config_fields():
    """Each TrainConfig field and each model field the data does not decide is a train flag, with the field's help."""
    import dataclasses

    from image_transformer import ImageTransformerConfig, SuperResolutionConfig
    from image_transformer.training.config import TrainConfig

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    actions = {a.dest: a for a in train._actions}
    decoder = tuple(f.name for f in dataclasses.fields(ImageTransformerConfig))
    for config_class, leave_out in ((TrainConfig, ()),
                                    (ImageTransformerConfig, ("image_size", "channels", "num_classes")),
                                    (SuperResolutionConfig, decoder)):
        for field in dataclasses.fields(config_class):
            if field.name in leave_out:
                continue
            action = actions[field.name]
            flag = "--" + field.name.replace("_", "-")
            assert action.option_strings == ([flag, "--no-" + flag[2:]] if field.type in (bool, "bool") else [flag])
            assert field.metadata["help"] in action.help and action.default is None
    assert actions["steps"].help.endswith(f"(default {TrainConfig().steps})")


def test_train_writes_into_runs_preset_without_out_and_defaults_to_the_mnist_budget_preset(tiny_mnist, tmp_path,
                                                                                             monkeypatch):
    assert cli.DEFAULT_PRESET == "mnist-cpu"  # the README's main job: the sweep's winner for MNIST
    monkeypatch.chdir(tmp_path)
    assert run("train", "--data", f"mnist:{tiny_mnist}", "--preset", "tiny", "--steps", 1, "--batch-size", 4,
               "--num-samples", 0, "--final-eval-images", 4, "--quiet") == 0
    assert (tmp_path / "runs" / "tiny" / "eval.json").is_file()


def test_train_init_starts_from_a_models_weights_with_its_architecture(tiny_mnist, tmp_path, capsys):
    common = ["--data", f"mnist:{tiny_mnist}", "--batch-size", 4, "--num-samples", 0, "--final-eval-images", 4,
              "--quiet"]
    assert run("train", *common, "--preset", "tiny", "--hidden-size", 16, "--steps", 3, "--out", tmp_path / "a") == 0
    base = ImageTransformer.from_pretrained(tmp_path / "a" / "model")
    # a learning rate too small to move the weights: the run must end where the model it starts from is
    assert run("train", *common, "--init", tmp_path / "a" / "model", "--steps", 1, "--lr", 1e-12, "--warmup", 0,
               "--out", tmp_path / "b") == 0
    assert "starting from the weights of" in capsys.readouterr().out
    tuned = ImageTransformer.from_pretrained(tmp_path / "b" / "model")
    assert tuned.config == base.config and tuned.config.hidden_size == 16
    for (name, a), b in zip(base.state_dict().items(), tuned.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert json.loads((tmp_path / "b" / "run.json").read_text())["init"] == str(tmp_path / "a" / "model")
    # a fresh run of the same settings without --init starts elsewhere
    assert run("train", *common, "--preset", "tiny", "--hidden-size", 16, "--steps", 1, "--lr", 1e-12, "--warmup", 0,
               "--seed", 5, "--out", tmp_path / "c") == 0
    fresh = ImageTransformer.from_pretrained(tmp_path / "c" / "model")
    assert not torch.allclose(fresh.head.weight, base.head.weight)


def test_train_init_refuses_model_flags_and_resume(trained, tmp_path, capsys):
    assert run("train", "--init", trained, "--hidden-size", 64, "--out", tmp_path / "x") == 2
    assert "--init takes the architecture" in capsys.readouterr().err
    assert run("train", "--init", trained, "--resume", "--out", tmp_path / "x") == 2
    assert "give one" in capsys.readouterr().err


def test_a_decompression_bomb_is_one_line_and_writes_nothing(trained, tmp_path, capsys):
    (tmp_path / "bomb.png").write_bytes(png_claiming(20000, 10000))
    assert run("compress", trained, tmp_path / "bomb.png", "-o", tmp_path / "b.itc") == 2
    err = capsys.readouterr().err
    assert "bomb.png: refused" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b.itc").exists()


def test_a_forged_stream_is_one_line_and_writes_nothing(trained, tmp_path, capsys):
    assert run("compress", trained / "model", "--data", f"mnist:{tiny_mnist_path(trained)}", "--limit", 2,
               "-o", tmp_path / "s.itc") == 0
    names = zlib.compress(json.dumps([5, 6]).encode())
    forged = forge2((tmp_path / "s.itc").read_bytes(), flags=2, tail=struct.pack("<I", len(names)) + names)
    (tmp_path / "bad.itc").write_bytes(forged)
    capsys.readouterr()
    assert run("decompress", tmp_path / "bad.itc", "--model", trained, "-o", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "names must be null or 2 strings" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def tiny_mnist_path(run_folder):
    """The data a run of the ``trained`` fixture was trained on (its run.json records the spec)."""
    return json.loads((run_folder / "run.json").read_text())["data"].split(":", 1)[1]


def test_checkpoints_that_cannot_be_resumed_or_read_are_one_line(trained, tmp_path, capsys):
    state = torch.load(trained / "checkpoint.pt", weights_only=False)
    del state["train_config"]
    (tmp_path / "no-config").mkdir()
    torch.save(state, tmp_path / "no-config" / "checkpoint.pt")
    assert run("train", "--out", tmp_path / "no-config", "--resume") == 2
    err = capsys.readouterr().err
    assert "holds no training configuration" in err and "--init" in err and len(err.strip().splitlines()) == 1
    state = torch.load(trained / "checkpoint.pt", weights_only=False)
    state["model"] = 5
    torch.save(state, tmp_path / "odd.pt")
    assert run("eval", tmp_path / "odd.pt") == 2
    err = capsys.readouterr().err
    assert "'model' entry is not a mapping" in err and len(err.strip().splitlines()) == 1


def test_an_unexpected_error_is_one_line_unless_debug(monkeypatch, capsys):
    def broken(args):
        raise TypeError("a bug\nwith more lines")

    monkeypatch.setattr(cli, "cmd_presets", broken)
    assert run("presets") == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: unexpected TypeError: a bug (rerun with --debug for the traceback)"
    with pytest.raises(TypeError, match="a bug"):
        run("--debug", "presets")


def test_decompress_keeps_only_base_names_and_non_ascii_paths_work(trained, tmp_path, capsys):
    folder = tmp_path / "données ünï 画像"
    folder.mkdir()
    image = folder / "chiffre-é.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (6, 6), dtype=np.uint8)).save(image)
    assert run("compress", trained, image, "-o", folder / "flux-ß.itc") == 0
    # a stream whose names try to climb out of the output folder
    names = zlib.compress(json.dumps(["../../évadé.png"]).encode())
    data = forge2((folder / "flux-ß.itc").read_bytes(), flags=2, tail=struct.pack("<I", len(names)) + names)
    (folder / "évadé.itc").write_bytes(data)
    assert run("decompress", folder / "évadé.itc", "--model", trained, "-o", folder / "sortie") == 0
    assert [p.name for p in (folder / "sortie").iterdir()] == ["évadé.png"]
    assert not (tmp_path / "évadé.png").exists()
    assert np.array_equal(np.asarray(Image.open(folder / "sortie" / "évadé.png")), np.asarray(Image.open(image)))


def test_complete_fills_a_box_or_a_masked_region_and_keeps_every_known_pixel(trained, tmp_path, capsys):
    from image_transformer import tasks
    from image_transformer.files.pretrained import load_model

    image = np.arange(36, dtype=np.uint8).reshape(6, 6) * 7
    Image.fromarray(image).save(tmp_path / "in.png")
    assert run("complete", trained, "--input", tmp_path / "in.png", "--box", 1, 2, 3, 2, "--particles", 4, "-n", 2,
               "--scale", 1, "-o", tmp_path / "box.png") == 0
    assert (tmp_path / "box.png").is_file()
    mask = np.zeros((6, 6), np.uint8)
    mask[2:4, 1:5] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert run("complete", trained, "--input", tmp_path / "in.png", "--mask", tmp_path / "mask.png",
               "-o", tmp_path / "masked.png") == 0
    # what the command drew, through the task it calls: the known pixels are the input's in every completion
    model = load_model(str(trained))
    missing = tasks.region((6, 6), mask=tmp_path / "mask.png")
    assert missing.sum() == 8 and bool(missing[2:4, 1:5].all())
    row, known = tasks.fill_region(model, torch.from_numpy(image)[..., None], missing, num=3, particles=4)
    assert row.shape == (5, 6, 6, 1) and known.shape == (3,) and bool((known < 0).all())
    assert bool((row[1:4, ~missing] == torch.from_numpy(image)[~missing][None, :, None]).all())
    assert bool((row[0][missing] == tasks.GREY).all())

    Image.fromarray(np.zeros((5, 6), np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "empty.png").write_bytes(b"")
    for flags, message in ((["--mask", tmp_path / "small.png"], "small.png"), (["--mask", tmp_path / "empty.png"],
                           "empty.png"), (["--box", 4, 4, 3, 1], "--box 4 4 3 1 is not inside the 6x6 image")):
        capsys.readouterr()
        assert run("complete", trained, "--input", tmp_path / "in.png", *flags, "-o", tmp_path / "bad.png") == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "bad.png").exists()
