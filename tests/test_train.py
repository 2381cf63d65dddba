import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from image_transformer import ImageTransformer, ImageTransformerConfig
from image_transformer.cli import main
from image_transformer.files.checkpoint import CheckpointError
from image_transformer.tasks import evaluate
from image_transformer.training import trainer as train_module
from image_transformer.training.config import TrainConfig
from image_transformer.training.guard import RunLocked, StopOnSignal, run_lock
from image_transformer.training.schedule import transformer_schedule
from image_transformer.training.trainer import Trainer, batch_indices, progress_bar


def test_schedule_warms_up_linearly_then_decays_with_inverse_sqrt():
    assert transformer_schedule(50, 100) == pytest.approx(0.5)
    assert transformer_schedule(100, 100) == pytest.approx(1.0)
    assert transformer_schedule(400, 100) == pytest.approx(0.5)


def test_optimizer_is_adam_with_paper_betas(tmp_path, tiny_model, data):
    trainer = Trainer(tiny_model(), TrainConfig(steps=1), tmp_path, data(), None, progress=False)
    group = trainer.opt.param_groups[0]
    assert isinstance(trainer.opt, torch.optim.Adam)
    assert group["betas"] == (0.9, 0.98) and group["eps"] == 1e-9


def test_batches_are_epochs_of_permutations_and_a_function_of_the_step():
    seen = torch.cat([batch_indices(s, 10, 5, seed=3) for s in range(4)])
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(7, 10, 3, 1), batch_indices(7, 10, 3, 1))
    assert not torch.equal(batch_indices(0, 10, 10, 1), batch_indices(1, 10, 10, 1))


def test_training_lowers_bits_per_dim(tmp_path, tiny_model, data):
    model = tiny_model()
    x = data(64)
    before = evaluate(model, x)["bits_per_dim"]
    Trainer(model, TrainConfig(steps=60, batch_size=16, lr=5e-3, warmup=10, eval_every=1000,
                               checkpoint_every=1000), tmp_path, x, None, progress=False).train()
    after = evaluate(model, x)["bits_per_dim"]
    assert after < before - 1.0, (before, after)
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "metrics.jsonl").is_file()


def test_resume_continues_exactly(tmp_path, tiny_model, data):
    cfg = dict(batch_size=8, lr=3e-3, warmup=2, eval_every=1000, checkpoint_every=3)
    x = data()
    straight = tiny_model()
    Trainer(straight, TrainConfig(steps=6, **cfg), tmp_path / "a", x, None, progress=False).train()

    first = tiny_model()
    Trainer(first, TrainConfig(steps=3, **cfg), tmp_path / "b", x, None, progress=False).train()
    torch.manual_seed(123)  # a resumed process starts from a different RNG state
    resumed = tiny_model(seed=99)
    trainer = Trainer(resumed, TrainConfig(steps=6, **cfg), tmp_path / "b", x, None, progress=False)
    trainer.resume()
    assert trainer.step == 3
    trainer.train()
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_refuses_another_architecture(tmp_path, tiny_model, data):
    x = data()
    Trainer(tiny_model(), TrainConfig(steps=1, eval_every=10, checkpoint_every=1), tmp_path, x, None,
            progress=False).train()
    other = tiny_model(num_heads=4)
    with pytest.raises(CheckpointError, match="num_heads"):
        Trainer(other, TrainConfig(steps=2), tmp_path, x, None, progress=False).resume()


def test_non_finite_loss_stops_with_the_step(tmp_path, tiny_model, data):
    model = tiny_model()
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="at step 1"):
        Trainer(model, TrainConfig(steps=3), tmp_path, data(), None, progress=False).train()


def test_a_non_finite_loss_says_which_checkpoint_is_kept_and_names_a_damaged_one(tmp_path, tiny_model, data):
    def stop_on_nan() -> str:
        model = tiny_model()
        with torch.no_grad():
            model.head.bias.fill_(float("nan"))
        with pytest.raises(FloatingPointError) as caught:
            Trainer(model, TrainConfig(steps=3), tmp_path, data(), None, progress=False).train()
        return str(caught.value)

    path = tmp_path / "checkpoint.pt"
    assert stop_on_nan().endswith("stopped: no checkpoint was written yet")
    Trainer(tiny_model(), TrainConfig(steps=2, checkpoint_every=1, eval_every=10), tmp_path, data(), None,
            progress=False).train()
    assert stop_on_nan().endswith(f"stopped: the last good checkpoint {path} (step 2) is kept")
    path.write_bytes(path.read_bytes()[:100])  # cut short
    message = stop_on_nan()
    assert message.startswith("non-finite loss (nan) at step 1; stopped: the checkpoint there cannot be read, so the "
                              f"run cannot resume: {path}: unreadable checkpoint (")
    assert "is kept" not in message and "none yet" not in message and "\n" not in message


def test_evaluate_is_mean_bits_per_dim(tiny_model, data):
    model = tiny_model().eval()
    x = data(10)
    with torch.no_grad():
        expected = (-model.log_prob(x).flatten(1).sum(1) / (16 * math.log(2))).mean()
    assert evaluate(model, x, batch_size=3)["bits_per_dim"] == pytest.approx(float(expected), rel=1e-5)


# ----- runs that survive pre-emption and sharing --------------------------------------------------------
def train_process(*args):
    """A real ``image-transformer train`` in a child process, as a scheduler would start it."""
    return subprocess.Popen([sys.executable, "-m", "image_transformer", "train", *map(str, args)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for_records(proc, log, count, seconds=120):
    """Wait until the child has logged ``count`` metrics records (it is mid-run, past some steps)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and log.read_text().count("\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"the child ended or stalled before {count} records (exit {proc.poll()})")


def run_args(tiny_mnist, **extra):
    values = {"--data": f"mnist:{tiny_mnist}", "--preset": "tiny", "--batch-size": 4, "--eval-every": 50,
              "--eval-images": 4, "--num-samples": 0, "--final-eval-images": 4, "--threads": 1, **extra}
    return [str(a) for kv in values.items() for a in kv] + ["--quiet"]


def test_run_lock_is_exclusive_and_released_on_any_exit(tmp_path):
    with run_lock(tmp_path / "run") as path:
        assert path.read_text().startswith(f"process {os.getpid()} on ")
        with pytest.raises(RunLocked, match=f"another training is writing to this run \\(process {os.getpid()}"):
            with run_lock(tmp_path / "run"):
                pass
    with pytest.raises(RuntimeError):
        with run_lock(tmp_path / "run"):
            raise RuntimeError("crash")
    with run_lock(tmp_path / "run"):  # released by the crash
        pass
    assert not path.exists()
    with run_lock(tmp_path / "never-written"):
        pass
    assert not (tmp_path / "never-written").exists()  # a folder it made and left empty is removed


def test_a_second_training_on_the_same_folder_fails_at_once(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    first = train_process(*run_args(tiny_mnist, **{"--steps": 100000, "--out": out}))
    try:
        wait_for_records(first, out / "metrics.jsonl", 1)
        started = time.monotonic()
        assert main(["train", *run_args(tiny_mnist, **{"--steps": 2, "--out": out}), "--overwrite"]) == 2
        assert time.monotonic() - started < 5  # refused before loading data or building a model
        err = capsys.readouterr().err
        assert f"{out}: another training is writing to this run (process {first.pid} on " in err
    finally:
        first.kill()
        first.communicate()
    # the killed process left its lock file: the next training takes the stale lock over, with a message
    assert main(["train", *run_args(tiny_mnist, **{"--steps": 2, "--out": out}), "--overwrite"]) == 0
    assert f"taking over the stale lock of process {first.pid} on " in capsys.readouterr().err
    assert not (out / "train.lock").exists()


def comparable(run):
    """A finished run's weights, evaluation and metrics records, without the wall-clock fields."""
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    evaluation = json.loads((run / "eval.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        del r["images_per_sec"], r["minutes"]
    return state["model"], state["optimizer"]["state"], evaluation["bits_per_dim"], records


@pytest.mark.slow
def test_sigterm_stops_with_a_checkpoint_and_resumes_exactly(tiny_mnist, tmp_path):
    args = run_args(tiny_mnist, **{"--steps": 300, "--dropout": 0.1, "--checkpoint-every": 1000})
    out = tmp_path / "stopped"
    proc = train_process(*args, "--out", out)
    wait_for_records(proc, out / "metrics.jsonl", 2)  # past step 20; no periodic checkpoint before the end
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signal.SIGTERM, err
    stopped_at = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert 20 <= stopped_at < 300
    assert f"stopped by SIGTERM at step {stopped_at}; checkpoint written to {out / 'checkpoint.pt'}" in err
    assert f"image-transformer train --out {out} --resume" in err
    assert not (out / "train.lock").exists() and not (out / "eval.json").exists()

    assert main(["train", *args, "--out", str(out), "--resume"]) == 0
    assert main(["train", *args, "--out", str(tmp_path / "straight")]) == 0
    resumed, straight = comparable(out), comparable(tmp_path / "straight")
    for k in straight[0]:
        assert torch.equal(resumed[0][k], straight[0][k]), k
    for i in straight[1]:
        for k, v in straight[1][i].items():
            assert torch.equal(resumed[1][i][k], v), (i, k)
    assert resumed[2:] == straight[2:]  # bits/dim and every metrics record, bit for bit


def test_a_second_signal_exits_at_once():
    previous = signal.getsignal(signal.SIGINT)
    with StopOnSignal(verbose=False) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert stop.signum == signal.SIGINT  # the first one only asks the loop to stop
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    assert signal.getsignal(signal.SIGINT) is previous
    script = ("import os, signal, time\nfrom image_transformer.training.guard import StopOnSignal\n"
              "with StopOnSignal() as stop:\n"
              "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.05); print('asked', stop.signum, flush=True)\n"
              "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)\n"
              "print('still running')\n")
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGTERM and child.stdout == f"asked {int(signal.SIGTERM)}\n"
    assert "SIGTERM again: exiting at once" in child.stderr


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def test_a_kill_between_checkpoint_writes_loses_no_kept_copy(tmp_path, monkeypatch, capsys, tiny_model, data):
    cfg = dict(steps=6, batch_size=8, warmup=2, eval_every=1000, checkpoint_every=2, keep_checkpoints=3)
    real_save = train_module.save_checkpoint

    def killed_after_the_first_file_of_step_4(path, state):
        real_save(path, state)
        if state["step"] == 4:  # killed while writing the next file: its temporary stays behind
            (path.parent / "checkpoint-9.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")
            (path.parent / "checkpoint.pt.x7.tmp").write_bytes(b"half a checkpoint")
            raise Killed

    monkeypatch.setattr(train_module, "save_checkpoint", killed_after_the_first_file_of_step_4)
    with pytest.raises(Killed):
        Trainer(tiny_model(), TrainConfig(**cfg), tmp_path, data(), None, progress=False).train()
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    trainer = Trainer(tiny_model(seed=5), TrainConfig(**cfg), tmp_path, data(), None, progress=False)
    trainer.resume()
    assert sorted(p.name for p in tmp_path.glob("*.tmp")) == []
    err = capsys.readouterr().err
    assert f"removed {tmp_path / 'checkpoint.pt.x7.tmp'}: a temporary file left by a write that was killed" in err
    trainer.train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*.pt")) == ["checkpoint-2.pt", "checkpoint-4.pt",
                                                                          "checkpoint-6.pt"]
    assert torch.load(tmp_path / "checkpoint-4.pt", weights_only=True)["step"] == 4


def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path, capsys, tiny_model, data):
    cfg = dict(batch_size=8, warmup=2, eval_every=1, checkpoint_every=1)
    x = data()
    Trainer(tiny_model(), TrainConfig(steps=3, **cfg), tmp_path, x, None, x[:4], progress=False).train()
    log = tmp_path / "metrics.jsonl"
    with open(log, "a") as f:
        f.write('{"step": 4, "train_bits_per_dim": 3.1')  # a kill or a full disk in the middle of an append
    trainer = Trainer(tiny_model(), TrainConfig(steps=5, **cfg), tmp_path, x, None, x[:4], progress=False)
    trainer.resume()
    assert f"warning: {log}: dropped its last line, cut short by an interrupted write" in capsys.readouterr().err
    trainer.train()
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5]

    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=f"{log}: line 2 is not a metrics record"):
        Trainer(tiny_model(), TrainConfig(steps=6, **cfg), tmp_path, x, None, x[:4], progress=False).resume()


def test_linear_and_cosine_schedules_warm_up_then_decay_to_zero_at_the_last_step():
    from image_transformer.training.schedule import lr_factor

    for schedule in ("linear", "cosine"):
        cfg = TrainConfig(steps=110, warmup=10, schedule=schedule)
        assert lr_factor(5, cfg) == pytest.approx(0.5)
        assert lr_factor(10, cfg) == pytest.approx(1.0)
        assert lr_factor(60, cfg) == pytest.approx(0.5)  # half-way through the decay, for both shapes
        assert lr_factor(110, cfg) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(35, TrainConfig(steps=110, warmup=10, schedule="linear")) == pytest.approx(0.75)
    assert lr_factor(35, TrainConfig(steps=110, warmup=10, schedule="cosine")) == pytest.approx(0.5 + 0.5 ** 1.5)
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig(schedule="step")


def test_a_time_limited_runs_bar_counts_minutes_not_the_steps_it_will_not_reach():
    bar = progress_bar(TrainConfig(steps=10**6, max_minutes=10.0), step=500, minutes=2.5)
    try:
        assert bar.total == 10.0 and bar.n == 2.5 and bar.unit == "min"
        assert "2.5/10.0 min" in str(bar)
    finally:
        bar.close()
    bar = progress_bar(TrainConfig(steps=300), step=20, minutes=0.0)  # no clock: steps, from where a resume is
    try:
        assert bar.total == 300 and bar.n == 20 and bar.unit == "step"
    finally:
        bar.close()


def test_a_time_limited_schedule_decays_over_the_minutes_too():
    from image_transformer.training.schedule import lr_factor

    cfg = TrainConfig(steps=10**6, warmup=10, schedule="linear", max_minutes=10.0)
    assert lr_factor(20, cfg, minutes=2.5) == pytest.approx(0.75)  # time, not steps, is the binding limit
    assert lr_factor(20, cfg, minutes=10.0) == 0.0
    assert lr_factor(20, TrainConfig(steps=10**6, warmup=10, max_minutes=10.0), minutes=10.0) == \
        pytest.approx(transformer_schedule(20, 10))  # the paper's schedule ignores the clock


def test_periodic_evaluation_is_not_training_time(tmp_path):
    model = ImageTransformer(ImageTransformerConfig(image_size=(6, 6), hidden_size=16, num_layers=1, num_heads=2,
                                                    ffn_size=16, query_length=8, memory_length=8))
    images = torch.randint(0, 256, (8, 6, 6, 1), dtype=torch.uint8)
    trainer = Trainer(model, TrainConfig(steps=2, batch_size=2, eval_every=1, eval_images=8), tmp_path, images,
                      None, images, None, progress=False)
    slow = trainer.evaluate
    trainer.evaluate = lambda: (time.sleep(0.5), slow())[1]
    t0 = time.monotonic()
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert time.monotonic() - t0 > 1.0  # two evaluations of at least 0.5 s each ...
    assert records[-1]["minutes"] * 60 < 0.9  # ... that the training clock leaves out


@pytest.mark.parametrize("name", ["cifar10-cpu", "mnist-cpu"])
def test_budget_presets_train_for_ten_minutes_and_decay_with_the_clock(name):
    from image_transformer.training.schedule import lr_factor
    from image_transformer.zoo import RECIPES, preset

    cfg = TrainConfig(**RECIPES[name])
    assert cfg.max_minutes == 10.0 and cfg.schedule == "linear"
    assert lr_factor(cfg.warmup + 1, cfg, minutes=5.0) == pytest.approx(0.5, abs=1e-3)  # the clock binds ...
    assert lr_factor(cfg.warmup + 1, cfg, minutes=10.0) == 0.0  # ... and the decay ends with it
    assert preset(name).dropout == 0.0


@pytest.mark.parametrize("native", [False, True])
def test_bf16_training_warns_where_the_cpu_has_no_bf16_kernels(tiny_mnist, tmp_path, capsys, monkeypatch, native):
    from image_transformer.training import run as run_module
    monkeypatch.setattr(run_module, "bf16_runs_natively", lambda device: native)
    args = run_args(tiny_mnist, **{"--steps": 1, "--out": tmp_path / "run"})
    assert main(["train", *args, "--precision", "bf16", "--num-samples", "0"]) == 0
    assert ("bf16 autocast has no fast kernels on this cpu" in capsys.readouterr().err) is not native


def _auto_run(folder, tiny_model, data, precision="auto", steps=3):
    model = tiny_model()  # dropout 0.1: the timed passes draw random numbers too
    cfg = TrainConfig(steps=steps, batch_size=8, lr=3e-3, warmup=2, eval_every=1000, checkpoint_every=1000,
                      precision=precision)
    trainer = Trainer(model, cfg, folder, data(), None, progress=False)
    trainer.train()
    return trainer, model


def test_auto_precision_is_fp32_without_timing_where_bf16_has_no_kernels(tmp_path, tiny_model, data, monkeypatch,
                                                                        capsys):
    from image_transformer.training import distributed

    monkeypatch.setattr(distributed, "bf16_runs_natively", lambda device: False)
    trainer, _ = _auto_run(tmp_path, tiny_model, data)
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["train"]["precision"] == "fp32" and trainer.cfg.precision == "fp32"
    assert record["precision"]["chosen"] == "fp32" and "no kernels of its own" in record["precision"]["why"]
    assert record["precision"]["seconds_per_pass"] == {}  # nothing timed
    assert "precision: fp32" in capsys.readouterr().err


@pytest.mark.parametrize("faster", ["fp32", "bf16"])
def test_auto_precision_trains_in_the_faster_and_the_timing_changes_nothing(tmp_path, tiny_model, data, monkeypatch,
                                                                            faster):
    """With bf16 kernels (pretended here: the CPU's bf16 is what it is), both precisions are timed and the faster
    chosen; the timed passes leave no trace: the weights are bit for bit those of a run in that precision."""
    from image_transformer.training import distributed

    monkeypatch.setattr(distributed, "bf16_runs_natively", lambda device: True)
    clock = iter(range(10**6))
    slow = "bf16" if faster == "fp32" else "fp32"
    passes = []
    real_pass = train_module.training_pass

    def counted(loss, device, x, y):
        one = real_pass(loss, device, x, y)

        def run(precision):
            passes.append(precision)
            one(precision)
        return run

    # each pass of the slow precision takes 10 ticks of a fake clock, of the fast one 1
    monkeypatch.setattr(train_module, "training_pass", counted)
    monkeypatch.setattr(distributed, "perf_counter",
                        lambda: next(clock) * (10 if passes and passes[-1] == slow else 1))
    auto, auto_model = _auto_run(tmp_path / "auto", tiny_model, data)
    monkeypatch.undo()
    assert passes == ["fp32"] * 3 + ["bf16"] * 3  # one warm-up and two timed passes of each
    assert auto.cfg.precision == faster and auto.run_info["precision"]["chosen"] == faster
    assert set(auto.run_info["precision"]["seconds_per_pass"]) == {"fp32", "bf16"}
    _, plain_model = _auto_run(tmp_path / "plain", tiny_model, data, precision=faster)
    for (name, a), b in zip(auto_model.state_dict().items(), plain_model.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_resumed_auto_run_keeps_the_precision_it_chose(tmp_path, tiny_model, data, monkeypatch):
    from image_transformer.training import distributed

    monkeypatch.setattr(distributed, "bf16_runs_natively", lambda device: False)
    _auto_run(tmp_path, tiny_model, data)
    monkeypatch.setattr(train_module, "choose_precision", lambda *a, **k: pytest.fail("chose again on resume"))
    cfg = TrainConfig(steps=5, batch_size=8, lr=3e-3, warmup=2, eval_every=1000, checkpoint_every=1000,
                      precision="auto")
    resumed = Trainer(tiny_model(), cfg, tmp_path, data(), None, progress=False)
    resumed.resume()
    assert resumed.cfg.precision == "fp32" and resumed.run_info["precision"]["chosen"] == "fp32"
    resumed.train()
    assert resumed.step == 5
