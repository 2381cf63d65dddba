"""The CUDA path: likelihoods equal the CPU's sub-pixel by sub-pixel, the model stays autoregressive under bf16
autocast and under torch.compile, the samplers (eager, reference, CUDA graphs) draw the same images, compiled
training steps give the eager steps' weights, and a torchrun run over NCCL resumes bit-exactly after a kill.

Marked ``cuda`` and skipped, saying why, where no GPU is present (CI has none): run them on a GPU machine with
``python -m pytest -m cuda``.
"""

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import ATTENTION, free_port, tiny
from image_transformer import SuperResolutionConfig, SuperResolutionTransformer, bits_per_dim, load_model
from image_transformer.files.folders import read_slice, shipped_folder, shipped_names
from image_transformer.nn.static_step import StaticSampler
from image_transformer.training.config import TrainConfig
from image_transformer.training.trainer import Trainer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")]
CASES = list(itertools.product(ATTENTION, ["categorical", "dmol"]))
# How far one sub-pixel's log-probability may differ between the CPU and CUDA, in nats. Float32 alone moves it by up
# to 2e-4 against float64 on the shipped models (5e-5 on the tiny ones here), measured on the CPU, and two float32
# computations that sum in different orders differ by about as much; a sub-pixel scored from a wrong position, or
# from one it should not see, moves by tenths of a nat or more.
SUB_PIXEL_NATS = 2e-3
IMAGE_BITS = 1e-4  # per image, in bits/dim: those differences average out over an image's sub-pixels


def log_probs(model, images, *condition):
    """log p of every sub-pixel (nats) from wherever ``model`` is, float64 on the CPU."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return model.log_prob(images.to(device), *(c.to(device) for c in condition)).double().cpu()


def assert_same_log_probs(cpu, cuda):
    """The two devices' log-probabilities (B, H, W, C) agree sub-pixel by sub-pixel, and so per image."""
    gap = (cpu - cuda).abs()
    worst = tuple(int(i) for i in torch.unravel_index(gap.argmax(), gap.shape))
    assert gap.max() < SUB_PIXEL_NATS, (f"sub-pixel {worst}: {float(cpu[worst]):.6f} on the CPU, "
                                        f"{float(cuda[worst]):.6f} on CUDA (cudnn.allow_tf32="
                                        f"{torch.backends.cudnn.allow_tf32})")
    assert (bits_per_dim(cpu) - bits_per_dim(cuda)).abs().max() < IMAGE_BITS


def random_images(model, n, seed=0):
    return torch.randint(0, 256, (n, *model.image_shape), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


# ----- the likelihood ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention,distribution", CASES)
def test_log_prob_on_cuda_equals_the_cpus(attention, distribution):
    model = tiny(attention, distribution, 3, size=(8, 8), query_length=16, memory_length=16).float()
    x = random_images(model, 4)
    cpu = log_probs(model, x)
    assert_same_log_probs(cpu, log_probs(model.cuda(), x))


def test_class_conditional_log_prob_on_cuda_equals_the_cpus():
    model = tiny("local_1d", "categorical", 3, size=(8, 8), num_classes=4).float()
    x, labels = random_images(model, 4), torch.tensor([0, 1, 2, 3])
    cpu = log_probs(model, x, labels)
    assert_same_log_probs(cpu, log_probs(model.cuda(), x, labels))


def superres_model():
    cfg = SuperResolutionConfig(image_size=(8, 8), input_size=(4, 4), channels=3, hidden_size=32, num_layers=2,
                                encoder_layers=1, num_heads=2, ffn_size=64, dropout=0.0, query_length=32,
                                memory_length=32)
    torch.manual_seed(0)
    return SuperResolutionTransformer(cfg).eval()


def test_super_resolution_log_prob_on_cuda_equals_the_cpus():
    model = superres_model()
    x = random_images(model, 4)
    lows = torch.randint(0, 256, (4, 4, 4, 3), dtype=torch.uint8)
    cpu = log_probs(model, x, lows)
    assert_same_log_probs(cpu, log_probs(model.cuda(), x, lows))


@pytest.mark.parametrize("name", sorted(shipped_names()))
def test_shipped_models_give_the_cpus_log_probs_on_cuda(name):
    model = load_model(name).eval()
    part = read_slice(shipped_folder(name))
    images = part["images"]
    condition = model.condition_for(images, part.get("labels"))
    condition = () if condition is None else (condition,)
    cpu = log_probs(model, images, *condition)
    assert_same_log_probs(cpu, log_probs(model.cuda(), images, *condition))


# ----- the autoregressive property where the arithmetic changes -----------------------------------------------
def cuda_log_prob(model, precision, compiled):
    """``model.log_prob`` on CUDA under ``precision`` (bf16: autocast), compiled or eager; CPU float tensors out."""
    if compiled:
        torch.compiler.reset()  # a fresh compile: graphs of earlier models count against dynamo's recompile limit
    log_prob = torch.compile(model.log_prob) if compiled else model.log_prob

    def run(images):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            return log_prob(images.cuda()).float().cpu()

    return run


AUTOREGRESSIVE = ([(a, d, conv, "bf16", False) for (a, d), conv in itertools.product(CASES, [0, 3])]
                  # a compile costs tens of seconds of the session's budget: the 1D layout with cifar10-gpu's blocks
                  # as it trains (bf16), and the 2D layout's other mask in fp32
                  + [("local_1d", "dmol", 3, "bf16", True), ("local_2d", "categorical", 3, "fp32", True)])


@pytest.mark.parametrize("attention,distribution,conv_size,precision,compiled", AUTOREGRESSIVE)
def test_autoregressive_under_bf16_and_compile(attention, distribution, conv_size, precision, compiled,
                                              dependency_violations):
    """Changing a sub-pixel changes no log-probability earlier in the generation order, with the arithmetic that
    trains on a GPU: bf16 autocast (its kernels), torch.compile (its fused code), or both. The same check as on the
    CPU, the unchanged image scored in the same batch, since these kernels' sums may depend on the batch size."""
    model = tiny(attention, distribution, 3, size=(4, 5), conv_size=conv_size).float().cuda()
    violations, later = dependency_violations(cuda_log_prob(model, precision, compiled), model.generation_order(),
                                              model.image_shape, base_in_batch=True)
    assert violations == []
    assert later > 0  # the check has teeth: later positions do react


# ----- sampling ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention,distribution", CASES)
def test_cached_sampler_on_cuda_draws_the_reference_samplers_images(attention, distribution):
    model = tiny(attention, distribution, 3, size=(4, 5)).float().cuda()
    a = model.sample(3, generator=torch.Generator().manual_seed(7), graphs=False)
    b = model.sample(3, generator=torch.Generator().manual_seed(7), use_cache=False)
    assert torch.equal(a, b)


@pytest.mark.parametrize("attention,distribution", CASES)
@pytest.mark.parametrize("generator", ["cpu", "cuda"])
def test_graph_sampler_draws_the_eager_samplers_images(attention, distribution, generator):
    model = tiny(attention, distribution, 3, size=(6, 5)).float().cuda()
    for seed in (7, 8):  # the second call replays the graph captured by the first
        eager = model.sample(4, generator=torch.Generator(generator).manual_seed(seed), graphs=False)
        graph = model.sample(4, generator=torch.Generator(generator).manual_seed(seed), graphs=True)
        assert torch.equal(graph, eager), seed
    assert len(model.__dict__["_static_samplers"]) == 1


def test_graph_sampler_with_block_convolutions_draws_the_eager_samplers_images():
    model = tiny("local_1d", "dmol", 3, size=(6, 5), conv_size=3).float().cuda()  # cifar10-gpu's blocks
    for seed in (7, 8):
        eager = model.sample(4, generator=torch.Generator("cuda").manual_seed(seed), graphs=False)
        assert torch.equal(model.sample(4, generator=torch.Generator("cuda").manual_seed(seed), graphs=True), eager)


def test_graph_replay_is_the_static_step_run_eagerly_bit_for_bit():
    model = tiny("local_1d", "dmol", 3, size=(6, 5)).float().cuda()
    values = torch.zeros(3, model.layout.n, 3, dtype=torch.long, device="cuda")
    runs = []
    for graph in (False, True):
        sampler = StaticSampler(model, 3, 1.0, False, None, graph=graph)
        seen = []
        with torch.no_grad():
            sampler.run(values.clone(), 0, None, None, torch.Generator("cuda").manual_seed(1),
                        on_step=lambda v, t: seen.append(v.clone()))
        runs.append(torch.stack(seen))
    assert torch.equal(*runs)


def test_graph_sampler_is_the_default_on_cuda_for_1d_and_honours_labels_prefixes_and_hooks():
    model = tiny("local_1d", "categorical", 3, size=(6, 5), num_classes=3).float().cuda()
    labels = torch.tensor([0, 2, 1])
    steps = []
    graph = model.sample(3, labels=labels, generator=torch.Generator().manual_seed(3),
                         on_step=lambda v, t: steps.append(t))
    assert steps == list(range(model.layout.n + 1)) and "_static_samplers" in model.__dict__
    assert torch.equal(graph, model.sample(3, labels=labels, generator=torch.Generator().manual_seed(3), graphs=False))
    x = random_images(model, 3).cuda()
    a = model.complete(x, 2, labels=labels, generator=torch.Generator().manual_seed(4))
    b = model.complete(x, 2, labels=labels, generator=torch.Generator().manual_seed(4), graphs=False)
    assert torch.equal(a, b) and torch.equal(a[:, :2], x[:, :2])


def test_super_resolution_graph_sampler_draws_the_eager_images():
    model = superres_model().cuda()
    lows = torch.randint(0, 256, (3, 4, 4, 3), dtype=torch.uint8).cuda()
    a = model.sample(lows, generator=torch.Generator().manual_seed(2), graphs=True)
    assert torch.equal(a, model.sample(lows, generator=torch.Generator().manual_seed(2), graphs=False))


@pytest.mark.parametrize("name", ["cifar10-jpeg", "cifar10"])  # plain blocks; blocks with convolutions
def test_a_shipped_colour_model_samples_alike_with_and_without_graphs(name):
    model = load_model(name).cuda()
    a = model.sample(2, generator=torch.Generator("cuda").manual_seed(0), graphs=True)
    assert torch.equal(a, model.sample(2, generator=torch.Generator("cuda").manual_seed(0), graphs=False))


# ----- training ---------------------------------------------------------------------------------------------
def learnable(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 4, 4, 1, dtype=torch.long)
    x[:, :, 2:] = 200
    return (x + torch.randint(0, 40, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)


# How far apart the compiled and the eager runs' weights may end, as a share of how far the eager run moved them
# from their common start (norms over all weights). The same steps compute the same function and differ only in
# rounding: this test run on the CPU (Inductor's C++ against eager) ended 8e-5 apart in fp32 and 0.007 in bf16.
# With the attention mask dropped under torch.compile alone (every position sees the later ones of its block) they
# ended 0.19 apart in both, while the loss fell as far as eager's.
APART = {"fp32": 0.01, "bf16": 0.05}


def norm(weights):
    return math.sqrt(sum(float(w.double().square().sum()) for w in weights))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_steps_on_cuda_give_the_eager_steps_weights(tmp_path, tiny_model, precision):
    """From one start, 40 steps of the trainer compiled and 40 eager on the same batches end with the same weights
    (within APART), and both lower the loss: in bf16, as cifar10-gpu trains, and in fp32, where only rounding
    separates them. The model has cifar10-gpu's block convolutions; no dropout, whose compiled random numbers are
    not eager's."""
    x = learnable()
    start = tiny_model(conv_size=3, dropout=0.0).state_dict()
    runs = {}
    torch.compiler.reset()
    for compile in (False, True):
        model = tiny_model(conv_size=3, dropout=0.0).cuda()
        with torch.no_grad():
            before = -model.eval().log_prob(x.cuda()).mean().item()
        Trainer(model, TrainConfig(steps=40, batch_size=16, lr=5e-3, warmup=5, precision=precision, eval_every=100,
                                   checkpoint_every=100), tmp_path / str(compile), x, None, progress=False,
                compile=compile).train()
        with torch.no_grad():
            after = -model.eval().log_prob(x.cuda()).mean().item()
        assert after < before - 0.5, (compile, before, after)
        runs[compile] = {k: v.cpu() for k, v in model.state_dict().items()}
    floats = [k for k, v in start.items() if v.is_floating_point()]
    moved = norm(runs[False][k] - start[k] for k in floats)
    apart = norm(runs[True][k] - runs[False][k] for k in floats)
    assert apart < APART[precision] * moved, (apart, moved)


def torchrun(args, out, **kw):
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1",
                             "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "image_transformer",
                             "train", *map(str, args), "--out", str(out)], start_new_session=True, **kw)


def kill_every_process_of(out):
    """SIGKILL every process whose command line names the run folder ``out``."""
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if str(out).encode() in f.read().split(b"\0") and int(pid) != os.getpid():
                    os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def test_torchrun_over_nccl_is_killed_and_resumes_bit_exactly(tiny_mnist, tmp_path):
    args = ["--data", f"mnist:{tiny_mnist}", "--preset", "tiny", "--dropout", 0.1, "--steps", 600, "--batch-size", 4,
            "--checkpoint-every", 7, "--eval-every", 100, "--eval-images", 4, "--num-samples", 0, "--quiet",
            "--device", "cuda", "--deterministic"]
    out, straight = tmp_path / "killed", tmp_path / "straight"
    try:
        proc = torchrun(args, out, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90  # start-up (CUDA, NCCL, the data) and three logged steps: seconds on a GPU
        while time.monotonic() < deadline and proc.poll() is None:
            log = out / "metrics.jsonl"
            if log.is_file() and log.read_text().count("\n") >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        kill_every_process_of(out)  # torchrun and its worker, which runs in a process group of its own
        proc.wait()
        killed_at = torch.load(out / "checkpoint.pt", weights_only=False, map_location="cpu")["step"]
        assert 0 < killed_at < 600
        for folder, extra in ((out, ["--resume"]), (straight, [])):
            done = torchrun(args + extra, folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            stdout, stderr = done.communicate(timeout=90)
            assert done.returncode == 0, stderr[-3000:]
            assert "1 process(es) (nccl) on cuda" in stdout
    finally:  # runs started in sessions of their own outlive an interrupted test: they must not hold the GPU
        kill_every_process_of(out)
        kill_every_process_of(straight)
    a = torch.load(out / "checkpoint.pt", weights_only=False, map_location="cpu")
    b = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False, map_location="cpu")
    assert a["step"] == b["step"] == 600
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))
