"""tools/train_zoo.sh retrains each shipped model as its card records it: the script's default settings, read by bash
itself, given to the command line's own `train` (stopped before any data or training), build the card's config and
training settings. A preset that changes after a model shipped must be undone in the script's flags for that model."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from image_transformer import cli
from image_transformer.files import folders
from image_transformer.training import TrainConfig
from image_transformer.zoo import MODEL_CLASSES

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "train_zoo.sh"
SHIPPED = folders.shipped_names()
# the case statement of train_zoo.sh: what each model's train command is given (data, preset, minutes, flags)
SETTINGS = {"mnist": ("{MNIST_DATA}", "{MNIST_PRESET}", "{MNIST_MINUTES}", "{MNIST_FLAGS}"),
            "cifar10-jpeg": ("{CIFAR_DATA}", "{CIFAR_PRESET}", "{CIFAR_MINUTES}", "{CIFAR_FLAGS}"),
            "celeba-sr": ("{CELEBA_DATA}", "{CELEBA_PRESET}", "{CELEBA_MINUTES}", "{CELEBA_FLAGS}"),
            "cifar10": ("npz:{COLOUR_HOLDOUT}", "{COLOUR_PRESET}", "{COLOUR_MINUTES}", "{COLOUR_FLAGS}"),
            "cifar10-sr": ("npz:{COLOUR_HOLDOUT}", "{CIFAR_SR_PRESET}", "{CIFAR_SR_MINUTES}", "{CIFAR_SR_FLAGS}")}
def script_defaults() -> dict[str, str]:
    """The values train_zoo.sh gives its settings when the environment sets none (bash evaluates them)."""
    text = SCRIPT.read_text()
    block = text[text.index("set -euo pipefail"):text.index("\nlog() ")]
    names = sorted(set(re.findall(r"^([A-Z_]+)=", block, re.MULTILINE)))
    show = "".join(f'printf "%s\\0" "${name}"; ' for name in names)
    done = subprocess.run(["bash", "-c", f"{block}\n{show}", str(SCRIPT)], env={"PATH": os.environ["PATH"]},
                          capture_output=True, text=True, check=True, timeout=60)
    return dict(zip(names, done.stdout.split("\0")))


def script_train(name: str, defaults: dict[str, str], monkeypatch) -> dict:
    """What `train` would be given by the script's command for ``name``: the TrainingRun's arguments."""
    data, preset, minutes, flags = (setting.format(**defaults) for setting in SETTINGS[name])
    made = {}
    monkeypatch.setattr(cli, "TrainingRun", lambda **kwargs: made.update(kwargs) or (lambda: None))
    monkeypatch.setattr(cli, "_set_threads", lambda threads: None)  # the test process keeps its threads
    argv = ["train", "--data", data, "--preset", preset, "--out", "unused", *shlex.split(flags),
            "--max-minutes", minutes, "--final-eval-images", "500", "--threads", defaults["THREADS"]]
    assert cli.main(argv) == 0
    return made


def test_the_script_names_every_shipped_model():
    listed = re.search(r"names=\((.*?)\)", SCRIPT.read_text().split("names=(\"$@\")")[1]).group(1).split()
    assert sorted(listed) == sorted(SETTINGS)
    assert set(SHIPPED) <= set(SETTINGS)


@pytest.mark.parametrize("name", SHIPPED)
def test_the_script_rebuilds_the_cards_config_and_training_settings(name, monkeypatch):
    card = folders.read_card(folders.shipped_folder(name))
    config_class = MODEL_CLASSES[card["model_type"]].config_class
    shipped = config_class.from_dict(card["config"])
    run = script_train(name, script_defaults(), monkeypatch)
    data = SimpleNamespace(image_shape=(*shipped.image_size, shipped.channels), num_classes=0)
    built = run["model_config"](data)
    assert type(built) is config_class
    assert built.to_dict() == shipped.to_dict()
    trained = TrainConfig(**{**run["recipe"], **run["train"]})  # as TrainingRun makes a fresh run's settings
    assert dataclasses.asdict(trained) == card["train"]
