import json

import numpy as np
import pytest
import torch
from PIL import Image

from image_transformer.cli import build_parser, main


def run(*args):
    return main([str(a) for a in args])


def test_train_eval_sample_complete_resume(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--data", f"mnist:{tiny_mnist}", "--preset", "tiny", "--out", out, "--batch-size", 4,
              "--eval-every", 2, "--eval-images", 4, "--checkpoint-every", 2, "--num-samples", 2, "--quiet"]
    assert run("train", *common, "--steps", 3) == 0
    text = capsys.readouterr().out
    assert "test bits/dim" in text
    result = json.loads((out / "eval.json").read_text())
    assert result["num_images"] == 12 and 0 < result["bits_per_dim"] < 9
    assert (out / "samples.png").is_file() and (out / "model" / "weights.safetensors").is_file()
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
    assert "preset 'mnist-tiny' is for 28x28x1 images but the data holds 6x6x1" in capsys.readouterr().err
    assert run("train", "--data", f"mnist:{tmp_path / 'nowhere'}", "--out", tmp_path / "x") == 2
    assert "nowhere" in capsys.readouterr().err
    assert run("train", "--preset", "nope", "--data", f"mnist:{tiny_mnist}", "--out", tmp_path / "x") == 2
    assert "unknown preset" in capsys.readouterr().err
    assert run("sample", tmp_path / "missing") == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "x" / "checkpoint.pt").exists()


def test_superres_train_eval_upscale(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "sr"
    assert run("train", "--task", "superres", "--input-size", 3, "--data", f"mnist:{tiny_mnist}", "--preset", "tiny",
               "--out", out, "--steps", 2, "--batch-size", 4, "--num-samples", 2, "--final-eval-images", 4,
               "--quiet") == 0
    text = capsys.readouterr().out
    assert "test bits/dim" in text and "T=0.9: consistency RMSE" in text
    report = json.loads((out / "superres.json").read_text())
    assert set(report["temperatures"]) == {"0.8", "0.9", "1.0"}
    assert 0 <= report["temperatures"]["1.0"]["nearest_train_ms_ssim"] <= 1
    grid = np.asarray(Image.open(out / "superres.png"))
    assert grid.shape[1] > grid.shape[0]  # 2 rows of 5 columns
    assert run("eval", out, "--samples", 2, "-o", tmp_path / "e.json") == 0
    assert "superres" in json.loads((tmp_path / "e.json").read_text())
    Image.fromarray(np.full((3, 3), 90, np.uint8)).save(tmp_path / "low.png")
    assert run("upscale", out, "--input", tmp_path / "low.png", "-n", 2, "-o", tmp_path / "up.png") == 0
    assert (tmp_path / "up.png").is_file()
    assert run("upscale", out, "--input", tmp_path / "up.png", "-o", tmp_path / "x.png") == 2
    assert "the model generates 3x3" in capsys.readouterr().err
    assert run("sample", out, "-o", tmp_path / "s.png") == 2
    assert "use `image-transformer upscale`" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "eval", "sample", "complete", "upscale", "average", "presets"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "usage: image-transformer " + command in text
    for action in build_parser()._subparsers._group_actions[0].choices[command]._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{command} {action.option_strings} has no help"
