"""The GPU session's command rehearsed on the CPU at tiny sizes, so that a GPU's few minutes are never lost to a
renamed flag or a file that does not come back: tools/gpu_session.sh runs benchmarks/gpu.py, the CUDA tests alone
within their budget (all skipped here) and tools/train_gpu_colour.sh, one after the other, and leaves in its OUT only
what a lent GPU machine hands back (a few plain files, none large, no folders); its default budgets fit the command."""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import load_tool
from image_transformer import load_model
from image_transformer.files.folders import read_card

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu  # noqa: E402  (benchmarks/gpu.py)

ship_model = load_tool("ship_model")
TINY = "--hidden-size 16 --num-layers 1 --num-heads 1 --ffn-size 16 --num-mixtures 2"


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def jpeg_copy(path: Path) -> None:
    """A CIFAR-10 JPEG copy in the shared data's layout: cifar10-jpeg/{train,test}/CLASS/NNNN.jpg, gzipped."""
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", 12), ("test", 6)):
            for i, image in enumerate(images(n, seed=len(split))):
                data = io.BytesIO()
                Image.fromarray(image).save(data, format="JPEG", quality=75)
                info = tarfile.TarInfo(f"cifar10-jpeg/{split}/{('cat', 'dog')[i % 2]}/{i:04d}.jpg")
                info.size = data.tell()
                data.seek(0)
                tar.addfile(info, data)


@pytest.mark.slow  # about a minute on 2 cores: the benchmark's smoke run (8x8 images) and two tiny trainings
def test_the_gpu_session_rehearsed_on_the_cpu_leaves_what_comes_back(tmp_path):
    data, holdout, out, work = (tmp_path / name for name in ("data", "holdout", "out", "work"))
    data.mkdir()
    holdout.mkdir()
    jpeg_copy(data / "cifar10-jpeg.tar.gz")
    for split, n in (("train", 16), ("test", 8)):  # tools/make_cifar_holdout.py's format
        np.savez(holdout / f"{split}.npz", data=images(n, seed=n), labels=np.arange(n) % 10)
    # budgets far above the quiet machine's seconds: on a loaded CPU each of the session's Python processes starts
    # slowly, and a budget met here says nothing of a GPU's (the defaults are checked below)
    env = dict(os.environ, OUT=str(out), DATA=str(data), HOLDOUT=str(holdout), WORK=str(work), PYTHON=sys.executable,
               BENCH_S="600", TESTS_S="300", TRAIN_S="900", BENCH_FLAGS="--device cpu --quick --no-compile",
               DEVICE="cpu", MINUTES="0.03", TUNE_MINUTES="0.02", TUNE_STEPS="3", MODEL_FLAGS=TINY,
               LEAVE_OUT=str(tmp_path / "left-out.txt"))
    # the tiny copy's stand-ins for the held-out images' JPEG versions (the real list names files of the real copy)
    (tmp_path / "left-out.txt").write_text("cat/0002\ndog/0005\n")
    done = subprocess.run(["bash", str(ROOT / "tools" / "gpu_session.sh")], env=env, capture_output=True, text=True,
                          timeout=2400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = done.stdout
    assert "benchmark: exit status 0" in log and "training: exit status 0" in log, log[-3000:]

    # What a lent machine hands back: at most 8 plain files of at most 16 MiB, named in [A-Za-z0-9._-].
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bench.log", "gpu.md", "jpeg-fp16.safetensors", "runs.tar.gz", "tests.log", "tests.xml",
                     "train.log", "tuned-fp16.safetensors"], files
    assert all((out / f).is_file() and (out / f).stat().st_size < 16 * 2**20 and re.fullmatch(r"[\w.-]+", f)
               for f in files)

    # the benchmark: both tables, a row for every quick preset, precision and batch, none skipped or failed
    table = (out / "gpu.md").read_text()
    assert "Matmul ceiling" in table and "| cifar10-1d-dmol-tiny | 4 |" in table
    rows = [line for line in table.splitlines() if line.startswith("| cifar10-")]
    assert len(rows) == 8 and not any("skipped" in r or "error" in r.lower() for r in rows), rows
    assert "- bf16 training of cifar10-1d-cat-tiny at batch 2: " in table  # read against the targets

    # the CUDA tests ran alone (after the benchmark, before the training) with their budget, and, with no GPU here,
    # were all skipped for that reason, each reported in the JUnit file
    steps = [line for line in log.splitlines() if re.match(r"(\[\d+ s\] |benchmark:|tests:|training:)", line)]
    assert [re.sub(r"^\[\d+ s\] ", "", line) for line in steps[:6]] == [
        "benchmark", "benchmark: exit status 0", "CUDA tests alone, 300 s at most", "tests: exit status 0",
        "the colour model's training, 900 s at most", "training: exit status 0"], steps
    tests = (out / "tests.log").read_text()
    assert "tests: exit status 0" in tests and "no CUDA GPU on this machine" in tests and " passed" not in tests
    suite = ET.parse(out / "tests.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == int(suite.get("tests")) == int(suite.get("skipped")) > 50, suite.attrib
    assert all(c.find("skipped") is not None and "no CUDA GPU on this machine" in c.find("skipped").get("message")
               for c in cases)
    assert {c.get("name").split("[")[0] for c in cases} >= {
        "test_autoregressive_under_bf16_and_compile", "test_compiled_steps_on_cuda_give_the_eager_steps_weights",
        "test_torchrun_over_nccl_is_killed_and_resumes_bit_exactly"}

    # both runs trained, evaluated on both test sets, and packed without optimizer state or float32 weights
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "back", filter="data")
    assert "nvidia-smi.txt" in names and not any(n.endswith(("checkpoint.pt", "model.safetensors")) for n in names)
    back = tmp_path / "back" / "colour"
    for run, evals in (("jpeg", ("eval.json", "eval-holdout.json")), ("tuned", ("eval.json", "eval-jpeg-test.json"))):
        for name in evals:
            assert math.isfinite(json.loads((back / run / name).read_text())["bits_per_dim"]), (run, name)
        # the half-precision weights with the run's config are a loadable model again
        (back / run / "model" / "model.safetensors").write_bytes((out / f"{run}-fp16.safetensors").read_bytes())
        model = load_model(back / run / "model")
        assert model.config.conv_size == 3 and model.config.hidden_size == 16
    tuned = json.loads((back / "tuned" / "run.json").read_text())
    assert tuned["train"]["steps"] == 3 and tuned["init"].endswith("jpeg/model")

    # and it ships from here, with both stages on its card, once the GPU machine's folders are gone
    shutil.rmtree(work)
    ship_model.ship(back / "tuned", "colour", description="d", licence="l", commands=["c"], hardware="one GPU",
                    zoo=tmp_path / "zoo", slice_images=2, grid_images=1)
    card = read_card(tmp_path / "zoo" / "colour")
    assert [s["run"] for s in card["stages"]] == [str(back / "jpeg"), str(back / "tuned")]
    assert card["hardware"] == "one GPU" and card["steps"] == sum(s["steps"] for s in card["stages"])
    # the JPEG run left the listed files out, and the shipped model says so and keeps the list
    assert json.loads((back / "jpeg" / "run.json").read_text())["left_out"]["files"] == 2
    assert card["left_out"][0]["files"] == 2 and (tmp_path / "zoo" / "colour" / "left-out.txt").read_text() == \
        "cat/0002\ndog/0005\n"


def test_the_sessions_default_budgets_fit_one_command():
    """What a lent machine allows one command (600 s) holds the session's steps at their defaults, one after the
    other, with the install and the packing; the training's budget holds its minutes and room for the rest."""
    script = (ROOT / "tools" / "gpu_session.sh").read_text()
    default = {name: float(value) for name, value in re.findall(r"^(\w+)=\$\{\1:-([\d.]+)\}", script, re.MULTILINE)}
    bench, tests, train = default["BENCH_S"], default["TESTS_S"], default["TRAIN_S"]
    kill = int(re.search(r'timeout -s INT -k (\d+) "\$TESTS_S"', script).group(1))  # the tests' grace to stop
    assert bench + tests + kill + train + 40 <= 600, (bench, tests, kill, train)  # 40 s: install and packing
    assert train >= 60 * (default["MINUTES"] + default["TUNE_MINUTES"]) + 60, default
    assert '--junitxml="$OUT/tests.xml"' in script


def test_the_benchmark_reads_its_rows_against_the_targets():
    ceiling = {"fp32": [50.0], "bf16": [100.0]}
    training = [dict(preset="p", batch=64, precision="fp32", compile=False, tflops=20.0),
                dict(preset="p", batch=64, precision="bf16", compile=False, tflops=30.0),
                dict(preset="p", batch=64, precision="bf16", compile=True, tflops=40.0),
                dict(preset="q", batch=64, precision="bf16", compile=False, tflops=99.0)]  # not the first preset
    sampling = [dict(preset="p", batch=1, eager=[3.0, 3.1], graphs=[1.0]), dict(preset="p", batch=256),
                dict(preset="q", batch=1, eager=[2.0], graphs=[1.0]), dict(preset="q", batch=256)]
    rates = {("p", 1): 1.0, ("p", 256): 50.0, ("q", 1): 1.0, ("q", 256): 49.0}
    lines = gpu.targets(ceiling, training, sampling, rates, [1, 16, 256])
    assert lines[2:] == [
        "- bf16 training of p at batch 64: 30% of the bf16 ceiling (target 35%): **not met**",
        "- bf16 + compile training of p at batch 64: 40% of the bf16 ceiling (target 35%): met",
        "- sampling p at batch 1, graphs over eager per position: 3.0x (target 3x): met",
        "- sampling p, images/s at batch 256 over batch 1: 50x (target 50x): met",
        "- sampling q at batch 1, graphs over eager per position: 2.0x (target 3x): **not met**",
        "- sampling q, images/s at batch 256 over batch 1: 49x (target 50x): **not met**"]
    failed = [dict(preset="p", batch=64, precision="bf16", compile=False, error="out of GPU memory")]
    assert gpu.targets(ceiling, failed, [dict(preset="p", batch=1, eager=[1.0])], {}, [1])[2:] == [
        "- bf16 training of p at batch 64: - of the bf16 ceiling (target 35%): not measured",
        "- sampling p at batch 1, graphs over eager per position: - (target 3x): not measured"]  # one batch: no gain


def test_the_benchmark_without_a_gpu_says_so_in_one_line_and_exits_2():
    """``python benchmarks/gpu.py`` as typed on a machine without CUDA (a GPU machine's devices hidden stands for
    one): one line saying why, exit status 2, no traceback."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stdout + done.stderr
    assert done.stderr.startswith("benchmarks/gpu.py: no CUDA GPU on this machine") and "--device cpu" in done.stderr
