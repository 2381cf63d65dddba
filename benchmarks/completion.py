"""Any-region completion measured: naive raster completion against sequential Monte Carlo with K particles.

    python benchmarks/completion.py --data npz:runs/zoo/cifar-holdout --images 8 --particles 1 4 16 64

For held-out images of a shipped model's data with a centre hole (``--hole`` pixels square), prints for each K the
mean log-probability of the known pixels after the hole under the completions, against the original image's own,
the share of naive completion's gap that K particles close, and the seconds per completion (all images of a K run
as one batch; 2 threads by default).
"""

from __future__ import annotations

import argparse
import time

import torch

from image_transformer.files.data import load_split
from image_transformer.files.pretrained import load_model
from image_transformer.metrics import spread
from image_transformer.nn.fill import fill, missing_steps
from image_transformer.nn.sampling import Sampling


def known_after(model, missing: torch.Tensor) -> torch.Tensor:
    """(H*W*C,) bool: the known values generated after the hole's first step."""
    steps = missing_steps(model, missing)
    rank = torch.empty_like(model.layout.order)
    rank[model.layout.order] = torch.arange(model.layout.n)
    h, w = model.config.image_size
    c = model.config.channels
    sub_rank = rank[torch.arange(h * w * c) // model.dist.values_per_position]
    return (sub_rank > int(steps.nonzero()[0])) & ~missing.reshape(-1).repeat_interleave(c)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cifar10")
    p.add_argument("--data", required=True, help="a data spec whose test split holds the images")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--hole", type=int, default=12, help="side of the centre square that is filled")
    p.add_argument("--particles", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    x, _ = load_split(args.data, "test").tensors()
    x = x[spread(len(x), args.images)]
    h, w = model.config.image_size
    missing = torch.zeros(h, w, dtype=torch.bool)
    top, left = (h - args.hole) // 2, (w - args.hole) // 2
    missing[top : top + args.hole, left : left + args.hole] = True
    after = known_after(model, missing)
    with torch.no_grad():
        own = model.log_prob(x).reshape(len(x), -1)[:, after].sum(1).mean().item()
    print(f"{args.model}, {len(x)} images of {args.data}, centre {args.hole}x{args.hole} hole; the originals' own "
          f"log p of the known values after it: {own:.1f} nats")
    naive = None
    for k in args.particles:
        started = time.perf_counter()
        _, lp = fill(model, x, missing, particles=k,
                     options=Sampling(generator=torch.Generator().manual_seed(args.seed)))
        seconds = (time.perf_counter() - started) / len(x)
        mean = lp.mean().item()
        naive = mean if k == 1 else naive
        closed = f", {(mean - naive) / (own - naive):.0%} of naive's gap closed" if naive is not None and k > 1 else ""
        print(f"  K={k:3d}: {mean:.1f} nats ({mean - own:+.1f} from the originals){closed}, "
              f"{seconds:.1f} s per completion")


if __name__ == "__main__":
    main()
