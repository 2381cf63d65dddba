"""The experiment scripts under experiments/ run end to end: a smoke run (--quick) writes its table and plot."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # each runs a few short trainings


ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
SHARED_DATA = ROOT / ".." / "shared" / "data"


def run_script(script: str, out: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, str(EXPERIMENTS / script), "--quick", "--threads", "1", "--out", str(out),
                           *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def table_numbers(path: Path, column: int) -> list[float]:
    """The numbers in one column of a markdown table's body."""
    rows = [line for line in path.read_text().splitlines() if line.startswith("| ") and not line.startswith("| data")
            and not line.startswith("| temperature")]
    return [float(re.split(r"\s*\|\s*", row.strip("| "))[column]) for row in rows]


@pytest.mark.skipif(not (SHARED_DATA / "cifar10-lossless-subset").is_dir(), reason="needs ../shared/data")
def test_table4_writes_a_row_per_configuration_and_a_plot(tmp_path):
    run_script("table4_block_sizes.py", tmp_path, "--only", "cifar-1d-q32-m32", "cifar-2d-q2x12-m2x6")
    bits = table_numbers(tmp_path / "table4.md", 5)
    assert len(bits) == 2 and all(0 < b < 9 for b in bits)  # 8 bits/dim is a uniform guess; untrained is near it
    assert (tmp_path / "table4.png").stat().st_size > 0
    assert len(list((tmp_path / "RESULTS").glob("table4-*.json"))) == 2
    # a second run reuses the stored results (an interrupted experiment continues) and rewrites the same table
    before = (tmp_path / "table4.md").read_text()
    run_script("table4_block_sizes.py", tmp_path, "--only", "cifar-1d-q32-m32", "cifar-2d-q2x12-m2x6")
    assert (tmp_path / "table4.md").read_text() == before


def test_superres_temperature_scores_each_temperature(tmp_path):
    run_script("superres_temperature.py", tmp_path)  # --quick: the shipped MNIST slice, 7x7 -> 28x28
    consistency = table_numbers(tmp_path / "superres_temperature.md", 1)
    assert len(consistency) == 3 and all(math.isfinite(c) and c >= 0 for c in consistency)
    assert (tmp_path / "superres_temperature_samples.png").stat().st_size > 0


@pytest.mark.skipif(not (SHARED_DATA / "cifar10-lossless-subset").is_dir(), reason="needs ../shared/data")
def test_an_identical_run_is_shared_between_experiments_and_a_different_one_is_not(tmp_path):
    """local_1d_vs_2d's cifar-1d is cifar10-1d-cat-tiny as it is, the configuration table4 names cifar-1d-q256-m256
    (the preset's own blocks): the same run, so it is not trained twice. categorical_vs_mixture's cifar-mixture is
    another model and trains."""
    run_script("table4_block_sizes.py", tmp_path, "--only", "cifar-1d-q256-m256")
    first = json.loads((tmp_path / "RESULTS" / "table4-0.04min-cifar-1d-q256-m256.json").read_text())
    run_script("local_1d_vs_2d.py", tmp_path, "--only", "cifar-1d")
    shared = json.loads((tmp_path / "RESULTS" / "local_1d_vs_2d-0.04min-cifar-1d.json").read_text())
    assert shared["same_run_as"] == "table4-0.04min-cifar-1d-q256-m256.json"
    assert {k: v for k, v in shared.items() if k not in ("name", "same_run_as")} == \
        {k: v for k, v in first.items() if k != "name"}
    run_script("categorical_vs_mixture.py", tmp_path, "--only", "cifar-mixture")
    mixture = json.loads((tmp_path / "RESULTS" / "categorical_vs_mixture-0.04min-cifar-mixture.json").read_text())
    assert "same_run_as" not in mixture and mixture["model"]["distribution"] == "dmol"


def test_a_stored_super_resolution_score_is_reused_only_for_the_same_weights(tmp_path, monkeypatch):
    """A shipped name or run folder trained again keeps its name: its stored temperature result must not be reused."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    import superres_temperature as experiment

    from helpers import tiny_superres
    from image_transformer.codec import fingerprint
    from image_transformer.files.pretrained import load_model

    folder = tmp_path / "model"
    tiny_superres().save_pretrained(folder)
    path = tmp_path / "result.json"
    assert experiment.stored_result(path, str(folder)) is None  # nothing stored yet
    path.write_text(json.dumps({"bits_per_dim": 3.0, "weights": fingerprint(load_model(folder))}))
    assert experiment.stored_result(path, str(folder))["bits_per_dim"] == 3.0
    assert experiment.stored_result(path)["bits_per_dim"] == 3.0  # --report reads what is stored
    retrained = tiny_superres()
    with torch.no_grad():
        next(retrained.parameters()).add_(0.5)
    retrained.save_pretrained(folder)
    assert experiment.stored_result(path, str(folder)) is None
