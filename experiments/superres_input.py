"""Does a super-resolution model use its input? Synthetic problems that the input solves, trained for seconds.

    python experiments/superres_input.py            # both problems, every design (a few minutes on 2 cores)
    python experiments/superres_input.py --small    # the 2x2 -> 8x8 problem only

Targets whose 4x4 blocks take the grey of the input pixel under them, plus noise of +-6 levels: given the input a
pixel costs about log2(13) = 3.7 bits, without it a model can only copy its neighbours. For each design (options of
``SuperResolutionConfig`` and the output distribution) it trains a small model from the same seed and prints
bits/dim of new pairs given their own inputs and given another pair's (inputs shifted by one), and the difference:
what the input is worth (``tasks.input_gain``). Writes the table to ``--output`` (Markdown) too.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from image_transformer.images import area_downsample
from image_transformer.nn.superres import SuperResolutionConfig, SuperResolutionTransformer
from image_transformer.tasks import evaluate, input_gain

OLD = dict(input_skip=False, encoder_input="table", encoder_positions="own")  # the design the first model had
SMALL = [  # (what, design, steps, lr)
    ("as shipped first: mixture, cross-attention only, input through tables", dict(OLD), 250, 3e-3),
    ("the same, the input on the target's position frame", dict(OLD, encoder_positions="aligned"), 250, 3e-3),
    ("the same, pre-norm blocks", dict(OLD, norm="pre"), 250, 3e-3),
    ("the same, 1,000 steps", dict(OLD), 1000, 3e-3),
    ("the same, 1,000 steps at lr 1e-3", dict(OLD), 1000, 1e-3),
    ("categorical output instead of the mixture", dict(OLD, distribution="categorical"), 250, 3e-3),
    ("mixture, the encoder reads intensities as numbers", dict(OLD, encoder_input="linear"), 250, 3e-3),
    ("mixture, numbers, aligned positions, the skip (the defaults)", {}, 250, 3e-3),
]
LARGE = [
    ("numbers, aligned positions, no skip", dict(OLD, encoder_input="linear", encoder_positions="aligned"), 1200),
    ("numbers, own positions, no skip", dict(OLD, encoder_input="linear"), 1200),
    ("tables, with the skip", dict(OLD, input_skip=True), 600),
    ("numbers, aligned positions, the skip (the defaults)", {}, 600),
]


def pairs(n: int, low_size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    low = torch.randint(0, 256, (n, low_size, low_size, 1), generator=g, dtype=torch.uint8)
    high = low.repeat_interleave(4, 1).repeat_interleave(4, 2).long()
    high = (high + torch.randint(-6, 7, high.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    return high, area_downsample(high, (low_size, low_size))


def trial(low_size: int, design: dict, steps: int, lr: float, batch: int) -> tuple[float, float, float]:
    size = 4 * low_size
    cfg = SuperResolutionConfig(**{**dict(image_size=(size, size), input_size=(low_size, low_size), channels=1,
                                          encoder_layers=1, hidden_size=32, num_layers=2, num_heads=2, ffn_size=64,
                                          dropout=0.0, attention="local_1d", query_length=2 * size,
                                          memory_length=2 * size, distribution="dmol", num_mixtures=2), **design})
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = SuperResolutionTransformer(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        high, low = pairs(batch, low_size, g)
        loss = -model.log_prob(high, low).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    high, low = pairs(128, low_size, g)
    own = evaluate(model, high, low)["bits_per_dim"]
    gain = input_gain(model, high, low, own)
    return own, gain["shuffled_input_bits_per_dim"], gain["input_gain"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="the 2x2 -> 8x8 problem only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-o", "--output", default="superres_input.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    lines = []
    problems = [("2x2 -> 8x8 grey, batches of 32", 2, 32, [(w, d, s, lr) for w, d, s, lr in SMALL])]
    if not args.small:
        problems.append(("4x4 -> 16x16 grey, batches of 16, lr 3e-3", 4, 16, [(w, d, s, 3e-3) for w, d, s in LARGE]))
    for title, low_size, batch, rows in problems:
        lines += [f"\n### {title}\n", "| design | steps | bits/dim, own input | given another's | the input's worth |",
                  "|---|---|---|---|---|"]
        print(lines[-3].strip(), flush=True)
        for what, design, steps, lr in rows:
            start = time.perf_counter()
            own, other, gain = trial(low_size, design, steps, lr, batch)
            lines.append(f"| {what} | {steps} | {own:.3f} | {other:.3f} | {gain:.3f} |")
            print(f"{lines[-1]}  ({time.perf_counter() - start:.0f} s)", flush=True)
    Path(args.output).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
