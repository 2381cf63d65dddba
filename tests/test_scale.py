"""Training that scales and survives: DDP, kill-and-resume, accumulation, precision, compile, averaging."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import free_port, run
from image_transformer.files.checkpoint import CheckpointError
from image_transformer.files.pretrained import average_checkpoints, load_model
from image_transformer.training.config import TrainConfig
from image_transformer.training.distributed import resolve_device
from image_transformer.training.trainer import Trainer


def weights(path):
    return torch.load(path, weights_only=False)["model"]


def cli(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, args)], env=env, capture_output=True, text=True, **kw)


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tiny_mnist, tmp_path):
    common = ["--data", f"mnist:{tiny_mnist}", "--preset", "tiny", "--steps", 4, "--batch-size", 8,
              "--eval-every", 2, "--eval-images", 12, "--num-samples", 0, "--quiet", "--threads", 1]
    two = cli("-m", "torch.distributed.run", "--nproc_per_node", 2, "--master_addr", "127.0.0.1",
              "--master_port", free_port(), "-m", "image_transformer", "train", *common, "--out", tmp_path / "ddp",
              timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es)" in two.stdout and two.stdout.count("test bits/dim") == 1  # rank 0 speaks
    assert run("train", *common, "--out", tmp_path / "one") == 0
    a, b = weights(tmp_path / "ddp" / "checkpoint.pt"), weights(tmp_path / "one" / "checkpoint.pt")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5), k
    evals = [json.loads((tmp_path / d / "eval.json").read_text()) for d in ("ddp", "one")]
    assert evals[0]["num_images"] == evals[1]["num_images"] == 12
    assert evals[0]["bits_per_dim"] == pytest.approx(evals[1]["bits_per_dim"], abs=1e-4)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tiny_mnist, tmp_path):
    args = ["--data", f"mnist:{tiny_mnist}", "--preset", "tiny", "--dropout", 0.1, "--steps", 400, "--batch-size", 4,
            "--checkpoint-every", 7, "--eval-every", 50, "--eval-images", 4, "--num-samples", 0, "--quiet",
            "--threads", 1]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "image_transformer", "train", *map(str, args), "--out", str(out)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        log = out / "metrics.jsonl"
        if log.is_file() and log.read_text().count("\n") >= 3:  # past a few checkpoints, mid-run
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = torch.load(out / "checkpoint.pt", weights_only=False)["step"]
    assert 0 < killed_at < 400
    assert run("train", *args, "--out", out, "--resume") == 0
    assert run("train", *args, "--out", tmp_path / "straight") == 0
    a, b = weights(out / "checkpoint.pt"), weights(tmp_path / "straight" / "checkpoint.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # records after the kill point were dropped, none repeated


def test_gradient_accumulation_gives_the_same_step(tmp_path, tiny_model, data):
    cfg = dict(steps=2, batch_size=8, warmup=1, eval_every=100, checkpoint_every=100)
    a, b = tiny_model(dropout=0.0), tiny_model(dropout=0.0)
    Trainer(a, TrainConfig(**cfg), tmp_path / "a", data(), None, progress=False).train()
    Trainer(b, TrainConfig(**cfg, grad_accum=4), tmp_path / "b", data(), None, progress=False).train()
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-6), k
    with pytest.raises(ValueError, match="divisible"):
        Trainer(tiny_model(), TrainConfig(batch_size=6, grad_accum=4), tmp_path / "c", data(), None)


def test_bf16_autocast_trains(tmp_path, tiny_model, data):
    model = tiny_model()
    x = data(64)
    before = model.eval().log_prob(x).mean().item()
    Trainer(model, TrainConfig(steps=40, batch_size=16, lr=5e-3, warmup=5, precision="bf16", eval_every=100,
                               checkpoint_every=100), tmp_path, x, None, progress=False).train()
    assert model.eval().log_prob(x).mean().item() > before + 0.5


def test_compile_matches_eager(tmp_path, tiny_model, data):
    cfg = dict(steps=2, batch_size=8, warmup=1, eval_every=100, checkpoint_every=100)
    a, b = tiny_model(dropout=0.0), tiny_model(dropout=0.0)
    Trainer(a, TrainConfig(**cfg), tmp_path / "a", data(), None, progress=False).train()
    Trainer(b, TrainConfig(**cfg), tmp_path / "b", data(), None, progress=False, compile=True).train()
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-4), k


def test_cuda_without_a_gpu_is_refused_clearly():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu7")


def test_ema_tracks_the_weights_and_is_used_for_loading(tmp_path, tiny_model, data):
    model = tiny_model()
    trainer = Trainer(model, TrainConfig(steps=3, batch_size=8, ema=0.5, eval_every=100, checkpoint_every=100),
                      tmp_path, data(), None, progress=False)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    history = []
    for _ in range(3):
        trainer.train_step()
        history.append({k: v.clone() for k, v in model.state_dict().items()})
    k = "head.weight"
    expected = start[k]
    for h in history:
        expected = 0.5 * expected + 0.5 * h[k]
    assert torch.allclose(trainer.ema.shadow[k], expected, atol=1e-6)
    trainer.save()
    loaded = load_model(tmp_path)
    assert torch.equal(loaded.state_dict()[k], trainer.ema.shadow[k])
    assert torch.equal(load_model(tmp_path, ema=False).state_dict()[k], model.state_dict()[k])


def test_keep_checkpoints_and_average(tiny_mnist, tmp_path, capsys, tiny_model):
    out = tmp_path / "run"
    assert run("train", "--data", f"mnist:{tiny_mnist}", "--preset", "tiny", "--out", out, "--steps", 6,
               "--batch-size", 4, "--checkpoint-every", 2, "--keep-checkpoints", 2, "--num-samples", 0,
               "--final-eval-images", 4, "--quiet") == 0
    kept = sorted(p.name for p in out.glob("checkpoint-*.pt"))
    assert kept == ["checkpoint-4.pt", "checkpoint-6.pt"]
    assert (out / "curve.png").is_file() and (out / "run.json").is_file()
    assert run("average", out / "checkpoint-4.pt", out / "checkpoint-6.pt", "-o", tmp_path / "avg") == 0
    avg = load_model(tmp_path / "avg").state_dict()
    a, b = weights(out / "checkpoint-4.pt"), weights(out / "checkpoint-6.pt")
    assert torch.allclose(avg["head.weight"], (a["head.weight"] + b["head.weight"]) / 2)
    other = tiny_model()
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(CheckpointError, match="different architecture"):
        average_checkpoints([out / "checkpoint-4.pt", tmp_path / "other"])


def test_fresh_run_refuses_to_overwrite_a_checkpoint(tiny_mnist, tmp_path, capsys):
    args = ["train", "--data", f"mnist:{tiny_mnist}", "--preset", "tiny", "--out", tmp_path / "r", "--steps", 1,
            "--batch-size", 4, "--num-samples", 0, "--final-eval-images", 2, "--quiet"]
    assert run(*args) == 0
    assert run(*args) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert run(*args, "--overwrite") == 0


def test_the_trainer_is_freed_before_the_process_group_is_destroyed(tmp_path, monkeypatch):
    """Its DDP wrapper holds the process group: freed at interpreter exit instead, gloo can abort the process."""
    import gc
    import weakref

    from image_transformer.training import run as training_run

    made = []

    class Recorded(Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    monkeypatch.setattr(training_run, "Trainer", Recorded)
    gc.disable()  # no automatic collection may do it by chance
    try:
        assert run("train", "--data", "mnist-slice", "--preset", "tiny", "--steps", 2, "--batch-size", 4,
                   "--eval-images", 4, "--final-eval-images", 4, "--num-samples", 0, "--quiet",
                   "--out", tmp_path / "run") == 0
        assert len(made) == 1 and made[0]() is None
    finally:
        gc.enable()
