import math

import pytest
import torch

from image_transformer import ImageTransformer, ImageTransformerConfig
from image_transformer.checkpoint import CheckpointError
from image_transformer.train import Trainer, TrainConfig, batch_indices, evaluate, transformer_schedule


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    values = dict(image_size=(4, 4), channels=1, hidden_size=16, num_layers=2, num_heads=2, ffn_size=32,
                  dropout=0.1, query_length=8, memory_length=8)
    cfg = ImageTransformerConfig(**{**values, **kw})
    return ImageTransformer(cfg)


def data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    # a learnable pattern: left half dark, right half bright, plus noise
    x = torch.zeros(n, 4, 4, 1, dtype=torch.long)
    x[:, :, 2:] = 200
    x = (x + torch.randint(0, 40, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    return x


def test_schedule_warms_up_linearly_then_decays_with_inverse_sqrt():
    assert transformer_schedule(50, 100) == pytest.approx(0.5)
    assert transformer_schedule(100, 100) == pytest.approx(1.0)
    assert transformer_schedule(400, 100) == pytest.approx(0.5)


def test_optimizer_is_adam_with_paper_betas(tmp_path):
    trainer = Trainer(tiny_model(), TrainConfig(steps=1), tmp_path, data(), None, progress=False)
    group = trainer.opt.param_groups[0]
    assert isinstance(trainer.opt, torch.optim.Adam)
    assert group["betas"] == (0.9, 0.98) and group["eps"] == 1e-9


def test_batches_are_epochs_of_permutations_and_a_function_of_the_step():
    seen = torch.cat([batch_indices(s, 10, 5, seed=3) for s in range(4)])
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(7, 10, 3, 1), batch_indices(7, 10, 3, 1))
    assert not torch.equal(batch_indices(0, 10, 10, 1), batch_indices(1, 10, 10, 1))


def test_training_lowers_bits_per_dim(tmp_path):
    model = tiny_model()
    x = data(64)
    before = evaluate(model, x)["bits_per_dim"]
    Trainer(model, TrainConfig(steps=60, batch_size=16, lr=5e-3, warmup=10, eval_every=1000,
                               checkpoint_every=1000), tmp_path, x, None, progress=False).train()
    after = evaluate(model, x)["bits_per_dim"]
    assert after < before - 1.0, (before, after)
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "metrics.jsonl").is_file()


def test_resume_continues_exactly(tmp_path):
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


def test_resume_refuses_another_architecture(tmp_path):
    x = data()
    Trainer(tiny_model(), TrainConfig(steps=1, eval_every=10, checkpoint_every=1), tmp_path, x, None,
            progress=False).train()
    other = tiny_model(num_heads=4)
    with pytest.raises(CheckpointError, match="num_heads"):
        Trainer(other, TrainConfig(steps=2), tmp_path, x, None, progress=False).resume()


def test_non_finite_loss_stops_with_the_step(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="at step 1"):
        Trainer(model, TrainConfig(steps=3), tmp_path, data(), None, progress=False).train()


def test_evaluate_is_mean_bits_per_dim():
    model = tiny_model().eval()
    x = data(10)
    with torch.no_grad():
        expected = (-model.log_prob(x).flatten(1).sum(1) / (16 * math.log(2))).mean()
    assert evaluate(model, x, batch_size=3)["bits_per_dim"] == pytest.approx(float(expected), rel=1e-5)
