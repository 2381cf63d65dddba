"""Models by name: shipped folders (made here from tiny real training runs, in a temporary zoo), the models that
really ship with the package, Hub repo ids in offline mode, folders of the old layout, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import safetensors.torch
import torch

from helpers import load_tool, run, write_tiny_mnist
from image_transformer import ImageTransformer, SuperResolutionTransformer, load_model
from image_transformer.files import folders as zoo
from image_transformer.files.pretrained import PretrainedModel
from image_transformer.tasks import evaluate
from image_transformer.zoo import preset

REPO = Path(__file__).resolve().parents[1]
OLD = Path(__file__).parent / "data" / "pretrained-6222cca"  # written by save_pretrained of commit 6222cca
REAL_ZOO = zoo.SHIPPED  # the package's own folder, before any test points zoo.SHIPPED elsewhere
WHEEL_BUDGET = 25 * 1024 * 1024
ship_model = load_tool("ship_model")
model_tables = load_tool("model_tables")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test here may reach the network: the Hub library is in offline mode throughout."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two tiny models really trained for a few steps on 6x6 images in MNIST's layout (dark left, bright right)
    and shipped into a temporary zoo: ``digits`` (generator) and ``digits-sr`` (3x3 -> 6x6 super-resolution)."""
    root = tmp_path_factory.mktemp("zoo")
    data = write_tiny_mnist(root / "mnist")
    common = ["--data", f"mnist:{data}", "--preset", "tiny", "--steps", 3, "--batch-size", 4, "--eval-images", 4,
              "--num-samples", 2, "--quiet"]
    commands = {"digits": ["train", "--out", root / "runs" / "digits", *common],
                "digits-sr": ["train", "--out", root / "runs" / "digits-sr", *common, "--task", "superres",
                              "--input-size", "3x3"]}
    shipped = root / "shipped"
    torch.manual_seed(0)
    for name, command in commands.items():
        assert run(*command) == 0
        ship_model.ship(root / "runs" / name, name, description="6x6 test images", licence="made by the test",
                        commands=["image-transformer " + " ".join(map(str, command))], data_name="tiny digits",
                        hardware="the test machine", zoo=shipped, slice_images=4, grid_images=4)
    return {"zoo": shipped, "data": data, "runs": root / "runs"}


@pytest.fixture
def in_zoo(trained, monkeypatch):
    """The temporary zoo as the package's shipped models."""
    monkeypatch.setattr(zoo, "SHIPPED", trained["zoo"])
    return trained


@pytest.fixture
def empty_zoo(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "SHIPPED", tmp_path / "none-shipped")
    return tmp_path


# ----- a model shipped into a zoo ------------------------------------------------------------------------
def test_a_shipped_model_loads_by_name_offline_and_matches_its_card(in_zoo):
    folder = in_zoo["zoo"] / "digits"
    assert sorted(p.name for p in folder.iterdir()) == sorted(zoo.REQUIRED_FILES)
    assert zoo.shipped_names() == ["digits", "digits-sr"] and zoo.problems("digits") == []
    card = zoo.read_card(folder)
    for key in ("data", "command", "steps", "train_minutes", "hardware", "test", "slice", "sample_grid"):
        assert card[key] not in (None, "", []), key
    assert card["data"]["licence"] == "made by the test" and card["steps"] == 3
    assert card["test"]["full_split"] and card["test"]["images"] == 12

    model = ImageTransformer.from_pretrained("digits")
    assert type(model) is ImageTransformer and not model.training
    assert model.config.to_dict() == card["config"] and card["model_type"] == "ImageTransformer"
    assert model.num_parameters() == card["parameters"]
    # half precision on disk, float32 in memory: the run's weights rounded to float16
    on_disk = safetensors.torch.load_file(str(folder / zoo.WEIGHTS_NAME))
    assert card["weights_dtype"] == "float16" and all(v.dtype == torch.float16 for v in on_disk.values()
                                                       if v.is_floating_point())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    run_model = load_model(in_zoo["runs"] / "digits")
    for key, value in run_model.state_dict().items():
        expected = value.half().float() if value.is_floating_point() else value
        assert torch.equal(model.state_dict()[key], expected), key

    # the card's test bits/dim: the whole test split, and the fixed slice the folder keeps
    test_slice = zoo.read_slice(folder)
    assert test_slice["indices"].tolist() == card["slice"]["indices"]
    assert ship_model.slice_bits_per_dim(model, test_slice) == pytest.approx(card["slice"]["bits_per_dim"], abs=1e-5)
    from image_transformer.files.data import load_split
    x, _ = load_split(f"mnist:{in_zoo['data']}", "test").tensors()
    assert torch.equal(x[test_slice["indices"]], test_slice["images"])
    assert evaluate(model, x)["bits_per_dim"] == pytest.approx(card["test"]["bits_per_dim"], abs=1e-5)
    assert abs(card["test"]["bits_per_dim"] - card["test"]["bits_per_dim_float32"]) < 0.01

    # every loader takes the name; the generic ones give either kind
    assert type(load_model("digits")) is ImageTransformer
    assert type(PretrainedModel.from_pretrained("digits-sr")) is SuperResolutionTransformer
    assert type(SuperResolutionTransformer.from_pretrained("digits-sr")) is SuperResolutionTransformer
    with pytest.raises(ValueError, match="holds a model of type 'SuperResolutionTransformer'"):
        ImageTransformer.from_pretrained("digits-sr")


def test_a_super_resolution_model_ships_with_its_slice_and_grid(in_zoo):
    folder = in_zoo["zoo"] / "digits-sr"
    card = zoo.read_card(folder)
    model = SuperResolutionTransformer.from_pretrained("digits-sr")
    assert card["pipeline_tag"] == "image-to-image" and model.config.to_dict() == card["config"]
    assert ship_model.slice_bits_per_dim(model, zoo.read_slice(folder)) == pytest.approx(
        card["slice"]["bits_per_dim"], abs=1e-5)
    assert (folder / zoo.GRID_NAME).stat().st_size > 0


def test_weights_stay_float32_when_half_precision_would_move_bits_per_dim(trained, tmp_path):
    ship_model.ship(trained["runs"] / "digits", "exact", description="d", licence="l", commands=["c"],
                    zoo=tmp_path, tolerance=0.0, slice_images=2, grid_images=1)
    card = zoo.read_card(tmp_path / "exact")
    assert card["weights_dtype"] == "float32"
    assert card["test"]["bits_per_dim"] == card["test"]["bits_per_dim_float32"]
    on_disk = safetensors.torch.load_file(str(tmp_path / "exact" / zoo.WEIGHTS_NAME))
    assert all(v.dtype == torch.float32 for v in on_disk.values() if v.is_floating_point())


def test_a_model_trained_in_stages_ships_each_stage_and_its_other_evaluations(trained, tmp_path):
    first, tuned, data = trained["runs"] / "digits", tmp_path / "tuned", f"mnist:{trained['data']}"
    assert run("train", "--init", first / "model", "--data", data, "--steps", 2, "--batch-size", 4,
               "--eval-images", 4, "--num-samples", 0, "--quiet", "--out", tuned) == 0
    assert run("eval", tuned, "--split", "train", "--data", data) == 0  # -> tuned/eval-train.json
    ship_model.ship(tuned, "tuned", description="d", licence="l", commands=["c1", "c2"], hardware="h",
                    zoo=tmp_path / "zoo", slice_images=2, grid_images=1)
    card = zoo.read_card(tmp_path / "zoo" / "tuned")
    assert [s["steps"] for s in card["stages"]] == [3, 2] and card["steps"] == 5
    assert card["stages"][0]["run"] == str(first) and card["stages"][1]["run"] == str(tuned)
    assert card["train_minutes"] == pytest.approx(sum(s["train_minutes"] for s in card["stages"]), abs=0.011)
    (other,) = card["other_evaluations"]
    assert other["file"] == "eval-train.json" and other["images"] == 48
    body = (tmp_path / "zoo" / "tuned" / "README.md").read_text()
    assert "stage 1: 3 steps" in body and "stage 2: 2 steps" in body and "over 48 images" in body
    # a model trained in one go has neither
    plain = zoo.read_card(trained["zoo"] / "digits")
    assert "stages" not in plain and "other_evaluations" not in plain and plain["steps"] == 3


def _class_folder(root: Path, n: int = 6) -> Path:
    """A tiny image folder with train/ and test/ and two classes, 6x6 grey images as PNG."""
    from PIL import Image
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(root / split / cls / f"{i:04d}.png")
    return root


def test_files_left_out_of_training_are_kept_with_the_run_and_shipped_with_the_model(tmp_path, capsys):
    data = f"folder:{_class_folder(tmp_path / 'data')}"
    (tmp_path / "list.txt").write_text("# twins of images held out elsewhere\na/0001\nb/0004\n")
    first, tuned = tmp_path / "first", tmp_path / "tuned"
    common = ["--preset", "tiny", "--batch-size", 4, "--eval-images", 4, "--num-samples", 0, "--quiet"]
    assert run("train", "--data", data, "--leave-out", tmp_path / "list.txt", "--steps", 2, *common,
               "--out", first) == 0
    assert (first / zoo.LEFT_OUT_NAME).read_text() == "a/0001\nb/0004\n"
    info = json.loads((first / "run.json").read_text())
    assert info["left_out"] == {"file": zoo.LEFT_OUT_NAME, "files": 2} and "2 files left out" in info["train_source"]
    # a resumed run leaves out its own list; it takes no other, and refuses to go on without it
    assert run("train", "--out", first, "--resume", "--steps", 3, "--quiet") == 0
    assert "2 files left out" in json.loads((first / "run.json").read_text())["train_source"]
    assert run("train", "--out", first, "--resume", "--steps", 4, "--leave-out", tmp_path / "list.txt", "--quiet") == 2
    assert "--leave-out is for a new run" in capsys.readouterr().err
    # a second stage (no list of its own) from the first: the model ships with the first stage's list
    assert run("train", "--init", first / "model", "--data", data, "--steps", 2, *common, "--out", tuned) == 0
    ship_model.ship(tuned, "tuned", description="d", licence="l", commands=["c1", "c2"], hardware="h",
                    zoo=tmp_path / "zoo", slice_images=2, grid_images=1)
    shipped = tmp_path / "zoo" / "tuned"
    card = zoo.read_card(shipped)
    assert (shipped / zoo.LEFT_OUT_NAME).read_text() == "a/0001\nb/0004\n"
    assert card["left_out"] == [{"file": zoo.LEFT_OUT_NAME, "files": 2, "data": card["stages"][0]["data"]}]
    assert "| left out of training | 2 files of" in (shipped / zoo.CARD_NAME).read_text()
    # started afresh over the run without a list: the old list is not this run's
    (first / zoo.LEFT_OUT_NAME).unlink()
    assert run("train", "--out", first, "--resume", "--steps", 4, "--quiet") == 2  # nor one that lost its list
    assert "left-out.txt listed, and that file is gone" in capsys.readouterr().err
    (first / zoo.LEFT_OUT_NAME).write_text("a/0001\n")
    assert run("train", "--data", data, "--steps", 1, *common, "--out", first, "--overwrite") == 0
    assert not (first / zoo.LEFT_OUT_NAME).exists() and "left_out" not in json.loads((first / "run.json").read_text())


def test_the_model_tables_of_the_readme_and_docs_are_the_cards():
    for path in model_tables.FILES:
        text = path.read_text(encoding="utf-8")
        assert model_tables.rewritten(text, path) == text, \
            f"{path.relative_to(REPO)}: its models table is not the cards': run python tools/model_tables.py"


def test_a_table_row_is_read_from_the_card(in_zoo, tmp_path, monkeypatch):
    card = zoo.read_card(in_zoo["zoo"] / "digits")
    row = model_tables.row("digits")
    assert row.startswith("| `digits` | categorical, 1D local") and "tiny digits" in row
    assert f"**{card['test']['bits_per_dim']:.3f}** on {card['test']['images']} test images" in row
    assert "| 3 steps, " in row and "super-resolution" in model_tables.row("digits-sr")
    # a figure changed in a card changes the table, and a file holding the old table is stale
    text = f"intro\n{model_tables.table()}\nafter\n"
    folder = tmp_path / "zoo"
    shutil.copytree(in_zoo["zoo"], folder)
    card_file = folder / "digits" / zoo.CARD_NAME
    figure = f"bits_per_dim: {card['test']['bits_per_dim']}"
    assert figure in card_file.read_text()
    card_file.write_text(card_file.read_text().replace(figure, "bits_per_dim: 9.875", 1))
    monkeypatch.setattr(zoo, "SHIPPED", folder)
    assert "**9.875**" in model_tables.table() and model_tables.rewritten(text, Path("f")) != text
    with pytest.raises(ValueError, match="needs exactly one"):
        model_tables.rewritten("no table here", Path("f"))


def test_stages_trained_elsewhere_are_found_beside_the_run_they_came_back_with(trained, tmp_path):
    """Runs trained on another machine come back together; their run.json names --init paths of that machine."""
    data = f"mnist:{trained['data']}"
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(trained["runs"] / "digits", elsewhere / "first")
    assert run("train", "--init", elsewhere / "first" / "model", "--data", data, "--steps", 2, "--batch-size", 4,
               "--eval-images", 4, "--num-samples", 0, "--quiet", "--out", elsewhere / "tuned") == 0
    back = tmp_path / "back"
    shutil.move(elsewhere, back)  # the init path recorded in tuned/run.json no longer exists
    ship_model.ship(back / "tuned", "tuned", description="d", licence="l", commands=["c1", "c2"], hardware="h",
                    zoo=tmp_path / "zoo", slice_images=2, grid_images=1)
    card = zoo.read_card(tmp_path / "zoo" / "tuned")
    assert [s["steps"] for s in card["stages"]] == [3, 2] and card["stages"][0]["run"] == str(back / "first")
    # a start from a shipped model, named, ends the chain even where a run folder beside it has that name
    info = json.loads((back / "tuned" / "run.json").read_text())
    (back / "tuned" / "run.json").write_text(json.dumps({**info, "init": "first"}))
    ship_model.ship(back / "tuned", "named", description="d", licence="l", commands=["c"], hardware="h",
                    zoo=tmp_path / "zoo", slice_images=2, grid_images=1)
    assert "stages" not in zoo.read_card(tmp_path / "zoo" / "named")


def test_an_incomplete_shipped_folder_fails_clearly(in_zoo, tmp_path, monkeypatch, capsys):
    broken = tmp_path / "zoo"
    shutil.copytree(in_zoo["zoo"], broken)
    (broken / "digits" / zoo.WEIGHTS_NAME).unlink()
    card = broken / "digits-sr" / zoo.CARD_NAME
    card.write_text(card.read_text().replace("num_layers: ", "num_layers: 1", 1))
    monkeypatch.setattr(zoo, "SHIPPED", broken)
    assert zoo.problems("digits") == [f"{broken / 'digits'}: missing {zoo.WEIGHTS_NAME}"]
    assert "differ from config.json" in zoo.problems("digits-sr")[0]
    with pytest.raises(zoo.ModelFolderError, match="incomplete.*missing model.safetensors"):
        ImageTransformer.from_pretrained("digits")
    assert run("models") == 1
    out = capsys.readouterr().out
    assert "digits           INCOMPLETE" in out and "digits-sr        INCOMPLETE" in out


# ----- the models that really ship ------------------------------------------------------------------------
def _really_shipped():
    names = sorted(p.name for p in REAL_ZOO.iterdir() if p.is_dir()) if REAL_ZOO.is_dir() else []
    names = [n for n in names if not n.startswith((".", "_"))]
    if not names:
        return [pytest.param(None, marks=pytest.mark.skip(
            reason=f"no trained models are shipped yet in {REAL_ZOO}: tools/train_zoo.sh trains mnist, "
                   f"cifar10-jpeg, celeba-sr, cifar10 and cifar10-sr and ships them there"))]
    return names


@pytest.mark.parametrize("name", _really_shipped())
def test_every_shipped_model_is_complete_loads_offline_and_reproduces_its_card(name):
    assert zoo.NAME_PATTERN.match(name), f"{name}: not a valid model name"
    assert zoo.problems(name) == [], zoo.problems(name)
    folder = REAL_ZOO / name
    card = zoo.read_card(folder)
    model = PretrainedModel.from_pretrained(name)
    assert type(model).__name__ == card["model_type"]
    # a card written before a config field existed reads it at the value that keeps the model what it was
    assert model.config.to_dict() == type(model.config).from_dict(card["config"]).to_dict()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert card["test"]["full_split"], "a shipped card reports the whole test split"
    assert abs(card["test"]["bits_per_dim"] - card["test"]["bits_per_dim_float32"]) < 0.01
    assert ship_model.slice_bits_per_dim(model, zoo.read_slice(folder)) == pytest.approx(
        card["slice"]["bits_per_dim"], abs=1e-3)


def test_the_shipped_files_fit_the_wheel_budget():
    package = REAL_ZOO.parent
    data = [p for folder in ("pretrained", "datasets") for p in (package / folder).rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in data) + sum(p.stat().st_size for p in package.glob("*.py"))
    assert total < WHEEL_BUDGET, f"package data {total / 1e6:.1f} MB: the wheel must stay under 25 MB"


def test_the_gpu_colour_preset_ships_under_10_mb_in_half_precision():
    """tools/train_gpu_colour.sh's model ships as float16 weights of at most 10 MB, within the wheel budget beside
    the shipped models."""
    model = ImageTransformer(preset("cifar10-gpu"))
    assert 4e6 < sum(p.numel() for p in model.parameters()) * 2 < 10e6


# ----- Hub repo ids, offline ------------------------------------------------------------------------------
def _hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """What a download of ``repo_id`` leaves in the Hub's cache: refs/main names a snapshot holding the files."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)


def test_a_hub_repo_id_loads_from_the_cache_in_offline_mode(in_zoo, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    _hub_cache(cache, "someone/tiny-digits", in_zoo["zoo"] / "digits")
    expected = ImageTransformer.from_pretrained("digits").state_dict()
    model = ImageTransformer.from_pretrained("someone/tiny-digits", cache_dir=cache)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in expected.items())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert type(load_model("hf-hub:someone/tiny-digits")) is ImageTransformer
    with pytest.raises(zoo.UnknownModel, match="'someone/missing': not in the Hub's local cache.*shipped models: "
                                               "digits, digits-sr"):
        ImageTransformer.from_pretrained("someone/missing")
    # on the command line a bare USER/NAME is a path; the Hub is asked only for hf-hub:USER/NAME
    with pytest.raises(zoo.UnknownModel, match="no such file or folder.*write hf-hub:someone/tiny-digits"):
        load_model("someone/tiny-digits")


def test_the_cli_samples_from_a_hub_repo_with_hf_hub_offline(in_zoo, tmp_path):
    cache = tmp_path / "hub"
    _hub_cache(cache, "someone/tiny-digits", in_zoo["zoo"] / "digits")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "image_transformer", "sample", "hf-hub:someone/tiny-digits", "-n", "2",
               "-o", str(tmp_path / "s.png")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "s.png").is_file()


# ----- folders of the old layout ----------------------------------------------------------------------------
def test_folders_written_before_the_hub_layout_still_load(tmp_path, capsys):
    expected = torch.load(OLD / "expected.pt")
    assert not (OLD / "pretrained" / zoo.WEIGHTS_NAME).exists()
    for model in (ImageTransformer.from_pretrained(OLD / "pretrained"), load_model(OLD / "pretrained"),
                  PretrainedModel.from_pretrained(str(OLD / "pretrained"))):
        with torch.no_grad():
            assert torch.equal(model.log_prob(expected["images"]), expected["log_prob"])
    assert run("sample", OLD / "pretrained", "-n", 2, "-o", tmp_path / "s.png") == 0
    # saving again writes the Hub's layout and drops the old weights file
    shutil.copytree(OLD / "pretrained", tmp_path / "m")
    ImageTransformer.from_pretrained(tmp_path / "m").save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    with torch.no_grad():
        again = ImageTransformer.from_pretrained(tmp_path / "m").log_prob(expected["images"])
    assert torch.equal(again, expected["log_prob"])


def test_save_pretrained_writes_the_hub_layout_with_a_card(tmp_path):
    model = ImageTransformer.from_pretrained(OLD / "pretrained")
    model.save_pretrained(tmp_path / "m")
    card = zoo.read_card(tmp_path / "m")
    assert card["library_name"] == "image-transformer" and "image-transformer" in card["tags"]
    record = json.loads((tmp_path / "m" / "config.json").read_text())
    assert record["model_type"] == "ImageTransformer" and record["config"] == model.config.to_dict()
    (tmp_path / "m" / "README.md").write_text("---\nlibrary_name: image-transformer\n---\nmine\n")
    model.save_pretrained(tmp_path / "m")  # a card that is there is kept, as the Hub's mixin does
    assert (tmp_path / "m" / "README.md").read_text().endswith("mine\n")


# ----- unknown names -----------------------------------------------------------------------------------------
def test_an_unknown_name_fails_listing_the_shipped_names(in_zoo, capsys):
    with pytest.raises(zoo.UnknownModel, match="mnsit: no such file or folder, and not the name of a shipped "
                                               "model; shipped models: digits, digits-sr"):
        load_model("mnsit")
    with pytest.raises(zoo.UnknownModel, match="shipped models: digits, digits-sr"):
        ImageTransformer.from_pretrained("mnsit")
    assert run("sample", "mnsit", "-n", 1) == 2
    assert "shipped models: digits, digits-sr" in capsys.readouterr().err
    assert run("models", "mnsit") == 2
    assert "not a shipped model; shipped models: digits, digits-sr" in capsys.readouterr().err


def test_with_nothing_shipped_the_error_says_how_to_train_them(empty_zoo, capsys):
    with pytest.raises(zoo.UnknownModel, match="no trained models are shipped in this installation yet.*"
                                               "tools/train_zoo.sh"):
        load_model("mnist")
    assert run("models") == 0
    out = capsys.readouterr().out
    assert "No trained models are installed yet" in out and "tools/train_zoo.sh" in out


def test_a_local_model_folder_wins_over_a_shipped_name(in_zoo, tmp_path, monkeypatch):
    ImageTransformer.from_pretrained(OLD / "pretrained").save_pretrained(tmp_path / "digits")
    monkeypatch.chdir(tmp_path)
    assert load_model("digits").config.image_size == (4, 4)  # the folder here, not the shipped 6x6 model
    (tmp_path / "digits-sr").mkdir()  # a folder that holds no model does not hide the shipped one
    assert type(load_model("digits-sr")) is SuperResolutionTransformer


# ----- the command line ---------------------------------------------------------------------------------------
def test_models_lists_the_shipped_models_and_prints_a_card(in_zoo, capsys):
    assert run("models") == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("digits "))
    card = zoo.read_card(in_zoo["zoo"] / "digits")
    assert "ImageTransformer" in row and "tiny digits" in row and f"{card['test']['bits_per_dim']:.4f}" in row
    assert f"{card['parameters']:,}" in row and "MB" in row
    assert run("models", "digits") == 0
    assert capsys.readouterr().out == (in_zoo["zoo"] / "digits" / "README.md").read_text()


def test_the_cli_takes_a_name_wherever_it_takes_a_run_folder(in_zoo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = f"mnist:{in_zoo['data']}"
    assert run("sample", "digits", "-n", 2, "-o", "s.png") == 0
    assert run("eval", "digits", "--data", spec) == 0
    result = json.loads((tmp_path / "eval-digits-test.json").read_text())
    assert result["bits_per_dim"] == pytest.approx(zoo.read_card(in_zoo["zoo"] / "digits")["test"]["bits_per_dim"],
                                                   abs=1e-5)
    assert run("eval", "digits") == 2
    assert "its card: trained on mnist:" in capsys.readouterr().err
    assert run("complete", "digits", "--data", spec, "--index", 0, 5, 11, "--rows", 3, "-n", 2, "-o", "c.png") == 0
    assert run("upscale", "digits-sr", "--data", spec, "--index", 1, 2, "-n", 2, "-o", "u.png") == 0
    assert run("compress", "digits", "--data", spec, "--limit", 3, "-o", "t.itc") == 0
    assert run("decompress", "t.itc", "--model", "digits", "-o", "restored") == 0
    assert len(list((tmp_path / "restored").iterdir())) == 3
    assert run("eval", "digits-sr", "--data", spec, "--samples", 2) == 0
    assert sorted(p.name for p in (in_zoo["zoo"] / "digits-sr").iterdir()) == sorted(zoo.REQUIRED_FILES)


def test_complete_and_upscale_take_images_from_a_data_spec(in_zoo, tmp_path, capsys):
    from PIL import Image
    spec = f"mnist:{in_zoo['data']}"
    out = tmp_path / "c.png"
    assert run("complete", "digits", "--data", spec, "--index", 0, 5, "--rows", 3, "-n", 2, "-o", out,
               "--scale", 1) == 0
    assert Image.open(out).size == (4 * 6 + 5 * 2, 2 * 6 + 3 * 2)  # rows: input, 2 completions, original
    assert run("upscale", "digits-sr", "--data", spec, "--split", "train", "--index", 7, "-n", 2, "-o", out,
               "--scale", 1) == 0
    assert Image.open(out).size == (4 * 6 + 5 * 2, 6 + 2 * 2)  # input enlarged, 2 samples, original
    assert run("complete", "digits", "--data", spec, "--index", 12, "--rows", 3, "-o", out) == 2
    err = capsys.readouterr().err
    assert "--index 12: the test split" in err and "holds 12 images" in err
    assert run("complete", "digits", "--rows", 3, "-o", out) == 2
    assert "give image files (--input) or a data set (--data" in capsys.readouterr().err
    assert run("complete", "digits", "--data", "mnist-slice", "--index", 0, "--rows", 3, "-o", out) == 2
    assert "the data is 28x28 but image size 6x6 was requested" in capsys.readouterr().err
    # slice:NAME, the test images shipped beside a model: no path to find
    shipped = zoo.read_slice(in_zoo["zoo"] / "digits-sr")["images"]
    assert run("upscale", "digits-sr", "--data", "slice:digits-sr", "--index", 1, "-n", 2, "-o", out,
               "--scale", 1) == 0
    grid = torch.from_numpy(np.array(Image.open(out)))
    assert grid.shape[:2] == (6 + 2 * 2, 4 * 6 + 5 * 2)
    assert torch.equal(grid[2:8, -8:-2].reshape(6, 6, -1)[..., :1], shipped[1])  # the row ends with that original
    assert run("upscale", "digits-sr", "--data", "slice:digits-sr", "--index", len(shipped), "-o", out) == 2
    assert f"holds {len(shipped)} images" in capsys.readouterr().err
    assert run("upscale", "digits-sr", "--data", "slice:nonesuch", "-o", out) == 2
    err = capsys.readouterr().err
    assert "slice:nonesuch" in err and "digits" in err and "digits-sr" in err


def test_push_to_hub_uploads_the_saved_folder(monkeypatch):
    """push_to_hub (the Hub's mixin) uploads what save_pretrained writes; the Hub's client is replaced here, so
    nothing leaves the machine."""
    import huggingface_hub.hub_mixin

    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return type("Repo", (), {"repo_id": repo_id})

        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploaded.update(repo_id=repo_id, files=sorted(p.name for p in Path(folder_path).iterdir()),
                            config=json.loads((Path(folder_path) / "config.json").read_text()))
            return "https://huggingface.co/someone/tiny/commit/0"

    monkeypatch.setattr(huggingface_hub.hub_mixin, "HfApi", FakeApi)
    model = ImageTransformer.from_pretrained(OLD / "pretrained")
    model.push_to_hub("someone/tiny")
    assert uploaded["repo_id"] == "someone/tiny"
    assert uploaded["files"] == ["README.md", "config.json", "model.safetensors"]
    assert uploaded["config"]["model_type"] == "ImageTransformer"
