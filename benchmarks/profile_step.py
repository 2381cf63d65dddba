"""Where a training step's time goes: torch.profiler over the trainer's own steps, summed by op family.

    python benchmarks/profile_step.py                                   # cifar10-cpu and mnist-cpu, fp32 and bf16
    python benchmarks/profile_step.py --preset cifar10-cpu --precision fp32 --steps 5
    python benchmarks/profile_step.py --peer /tmp/pixel-cnn-pp          # PixelCNN++'s step too, for comparison

Each top-level op of a step (a forward op, or the autograd node that runs a backward op) is put in one family by
its name: the attention kernel, matmuls (linear layers), gathers (index_select, embedding lookups), copies (copy,
cat, clone, dtype casts), views (reshapes and transposes that copy nothing: pure overhead), convolutions, layer
norms, other element-wise ops, gradient accumulation and the optimizer. Ops run inside the distribution's
``log_prob`` (forward, and their backward by autograd sequence number) are "likelihood" whatever their name. The
step's wall time minus the ops' is "between ops": Python and dispatch that no op accounts for.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).parent))
from training import has_bf16, make_trainer  # noqa: E402  (the benchmark's own trainer set-up)

FAMILIES = [  # (family, pattern on the op or autograd node name): the first that matches wins
    ("optimizer", r"^Optimizer\.|^aten::_foreach|^aten::_fused_adam|lr_scheduler"),
    ("attention", r"scaled_dot_product|flash_attention|ScaledDotProduct|FlashAttention|flex_attention|FlexAttention"
                  r"|attention_lse"),
    ("matmul", r"^aten::(linear|addmm|mm|bmm|matmul|baddbmm|einsum)$|^(Addmm|Mm|Bmm|Baddbmm|Linear)Backward"),
    ("gathers", r"index_select|^aten::index(_add|_copy|_put)?_?$|^Index|gather|Gather|embedding|Embedding|scatter"
                r"|Scatter|take|Take"),
    ("copies", r"copy|clone|Clone|^aten::cat$|^CatBackward|^aten::(to|_to_copy|contiguous|stack)$|ToCopy|Stack"
               r"|^aten::(pad|constant_pad_nd)$|ConstantPadNd|^aten::(where|masked_fill)"),
    ("views", r"view|View|reshape|Reshape|transpose|Transpose|permute|Permute|unflatten|flatten|Unflatten|expand"
              r"|Expand|^aten::(t|split|chunk|slice|select|narrow|unbind|squeeze|unsqueeze|as_strided)$"
              r"|^(T|Split|Chunk|Slice|Select|Squeeze|Unsqueeze|AsStrided|Unbind)(WithSizes)?Backward"),
    ("convolution", r"conv|Conv"),
    ("layer norm", r"layer_norm|LayerNorm"),
    ("gradient accumulation", r"AccumulateGrad"),
]
NODE = "autograd::engine::evaluate_function: "


def family(name: str) -> str:
    name = name.removeprefix(NODE).removeprefix("torch::autograd::")
    for fam, pattern in FAMILIES:
        if re.search(pattern, name):
            return fam
    return "element-wise and other"


def copies(event) -> bool:
    return any(c.name in ("aten::copy_", "aten::clone") or copies(c) for c in event.cpu_children)


def profile_steps(step: Callable[[], object], steps: int, likelihood_owner: object) -> tuple[dict[str, float], float]:
    """Milliseconds per step by family, and the wall milliseconds per step, over ``steps`` profiled steps."""
    dist_log_prob = likelihood_owner.log_prob

    def traced(*args, **kwargs):
        with record_function("likelihood"):
            return dist_log_prob(*args, **kwargs)

    likelihood_owner.log_prob = traced
    try:
        step()  # warm-up, outside the profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                with record_function("step"):
                    step()
    finally:
        del likelihood_owner.log_prob
    events = prof.events()
    in_likelihood: set[int] = set()

    def under(e, name):
        while e is not None:
            if e.name == name:
                return True
            e = e.cpu_parent
        return False

    for e in events:
        if e.sequence_nr >= 0 and not e.name.startswith(NODE) and under(e, "likelihood"):
            in_likelihood.add(e.sequence_nr)
    totals: dict[str, float] = collections.defaultdict(float)
    wall = 0.0
    for e in events:
        if e.name == "step":
            wall += e.cpu_time_total
            continue
        if e.name == "likelihood":  # its ops are counted one by one below
            continue
        parent = e.cpu_parent
        top = parent is not None and parent.name in ("step", "likelihood") or parent is None and e.name.startswith(NODE)
        if not top:
            continue
        if (parent is not None and parent.name == "likelihood"
                or e.name.startswith(NODE) and e.sequence_nr in in_likelihood):
            totals["likelihood"] += e.cpu_time_total
        else:
            fam = family(e.name)
            if fam == "views" and copies(e):  # a reshape of a non-contiguous tensor copies it
                fam = "copies"
            totals[fam] += e.cpu_time_total
    # backward runs in the step's range on CPU; what no op covers is the Python and dispatch between them
    totals["between ops"] = max(0.0, wall - sum(totals.values()))
    return {k: v / steps / 1e3 for k, v in totals.items()}, wall / steps / 1e3


def peer_step(peer: Path, batch: int, precision: str) -> tuple[Callable[[], object], object]:
    from peer_pixelcnn import peer_modules, to_peer

    peer_model, peer_utils = peer_modules(peer)
    torch.Tensor.cuda = lambda self, *a, **k: self  # the peer's loss calls .cuda() unconditionally
    torch.manual_seed(0)
    model = peer_model.PixelCNN(nr_resnet=5, nr_filters=33, nr_logistic_mix=10, input_channels=3)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout2d):
            m.p = 0.0
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = to_peer(torch.randint(0, 256, (batch, 32, 32, 3), dtype=torch.uint8))
    holder = type("Loss", (), {"log_prob": staticmethod(peer_utils.discretized_mix_logistic_loss)})()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
        loss = holder.log_prob(x, out.float())
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, holder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", action="append", help="presets to profile (default: cifar10-cpu, mnist-cpu)")
    p.add_argument("--batch-size", type=int, default=0, help="0: 8 for colour presets, 16 for MNIST")
    p.add_argument("--precision", nargs="+", default=None,
                   help="fp32 and/or bf16 (default: both where the CPU has bf16)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peer", type=Path, help="a checkout of pclucas14/pixel-cnn-pp: profile its step as well")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    precisions = args.precision or (["fp32", "bf16"] if has_bf16() else ["fp32"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.preset or ["cifar10-cpu", "mnist-cpu"]:
            batch = args.batch_size or (16 if name.startswith("mnist") else 8)
            for precision in precisions:
                trainer = make_trainer(name, {}, batch, precision, False, f"{tmp}/{len(rows)}")
                ms, wall = profile_steps(trainer.train_step, args.steps, trainer.model.dist)
                rows.append((f"{name} b{batch}", precision, ms, wall))
        if args.peer:
            for precision in precisions:
                step, holder = peer_step(args.peer, 8, precision)
                ms, wall = profile_steps(step, args.steps, holder)
                rows.append(("PixelCNN++ b8", precision, ms, wall))
    print(f"torch {torch.__version__}, {args.threads} threads, {args.steps} profiled steps each; "
          "ms per step by op family (share of the step)")
    families = sorted({k for _, _, ms, _ in rows for k in ms}, key=lambda k: -max(r[2].get(k, 0) / r[3] for r in rows))
    header = "| family | " + " | ".join(f"{label} {prec}" for label, prec, _, _ in rows) + " |"
    print(header)
    print("|" + "---|" * (len(rows) + 1))
    for fam in families:
        print(f"| {fam} | "
              + " | ".join(f"{ms.get(fam, 0):.1f} ({ms.get(fam, 0) / wall:.0%})" for _, _, ms, wall in rows) + " |")
    print("| **step** | " + " | ".join(f"**{wall:.1f}**" for _, _, _, wall in rows) + " |")
    if args.json:
        args.json.write_text(json.dumps([dict(model=label, precision=pr, wall_ms=w, ms=m) for label, pr, m, w in rows],
                                        indent=1))


if __name__ == "__main__":
    main()
