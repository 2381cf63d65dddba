"""Table 4's trend at small scale: held-out bits/dim against the query and memory block sizes, 1D and 2D local.

    python experiments/table4_block_sizes.py --minutes 10            # every configuration, CIFAR-10 subset and MNIST
    python experiments/table4_block_sizes.py --minutes 10 --only cifar-1d-q64-m64
    python experiments/table4_block_sizes.py --quick                 # smoke run (seconds), temporary folder

The paper's Table 4 (8 layers, ffn 1024, CIFAR-10, days of GPU training) reports bits/dim falling as query and
memory blocks grow. Here each configuration is the data set's small model (``cifar10-1d-cat-tiny`` /
``cifar10-2d-cat-tiny``, ``mnist-tiny``; dropout 0) with only its blocks changed, trained for the same budget
with the same recipe. Writes ``table4.md`` and ``table4.png``.
"""

from __future__ import annotations

import common

# name -> (data, preset, model settings): only the blocks change within a data set and attention type
CONFIGS: dict[str, tuple[str, str, dict]] = {}
for q, m in ((32, 32), (64, 64), (128, 128), (256, 256)):  # positions of the [32, 96] sub-pixel grid
    CONFIGS[f"cifar-1d-q{q}-m{m}"] = ("cifar", "cifar10-1d-cat-tiny", dict(query_length=q, memory_length=m))
for q, f in (((2, 12), (2, 6)), ((4, 24), (4, 12)), ((8, 24), (8, 24))):
    CONFIGS[f"cifar-2d-q{q[0]}x{q[1]}-m{f[0]}x{f[1]}"] = ("cifar", "cifar10-2d-cat-tiny",
                                                           dict(query_shape=q, memory_flange=f))
for q, m in ((28, 28), (56, 56), (112, 112), (196, 196)):  # positions of the [28, 28] grid
    CONFIGS[f"mnist-1d-q{q}-m{m}"] = ("mnist", "mnist-tiny", dict(query_length=q, memory_length=m))
for q, f in (((2, 7), (2, 7)), ((4, 14), (4, 7)), ((7, 14), (7, 14))):
    CONFIGS[f"mnist-2d-q{q[0]}x{q[1]}-m{f[0]}x{f[1]}"] = ("mnist", "mnist-tiny",
                                                           dict(attention="local_2d", query_shape=q, memory_flange=f))
EXPERIMENT = "table4"


def context(model: dict) -> int:
    """Positions a query block attends to at most (its own block and its memory)."""
    if "query_length" in model:
        return model["query_length"] + model["memory_length"]
    (qh, qw), (fh, fw) = model["query_shape"], model["memory_flange"]
    return (qh + fh) * (qw + 2 * fw)


def report(args, out):
    results = [r for r in common.stored(out, EXPERIMENT, args.minutes) if r["name"] in CONFIGS]
    if not results:
        return
    rows = []
    for r in sorted(results,
                    key=lambda r: (CONFIGS[r["name"]][0], "-2d-" in r["name"], context(CONFIGS[r["name"]][2]))):
        data, preset, model = CONFIGS[r["name"]]
        blocks = ", ".join(f"{k}={v}" for k, v in model.items())
        rows.append([data, "2D" if "-2d-" in r["name"] else "1D", blocks, context(model), r["steps"],
                     f"{r['bits_per_dim']:.4f}"])
    preface = [
        "**The paper's claim** (Parmar et al. 2018, Table 4 and its discussion, paraphrased): on CIFAR-10, with models "
        "of 8 layers and ffn 1024, bits/dim improve as the query and memory blocks grow, "
        "for 1D and 2D local attention.",
        "",
        "**Ours**: the same change at small scale. " + common.budget_line(args, results),
        "", f"Command: `{common.command('table4_block_sizes.py', args)}`",
    ]
    common.write_markdown(out / "table4.md", "Table 4's trend: bits/dim against block sizes", preface,
                          ["data", "attention", "blocks", "context (positions)", "steps", "held-out bits/dim"], rows,
                          "table4.png")
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, data in zip(axes, ("cifar", "mnist")):
        for kind in ("1d", "2d"):
            points = sorted((context(CONFIGS[r["name"]][2]), r["bits_per_dim"]) for r in results
                            if r["name"].startswith(f"{data}-{kind}-"))
            if points:
                ax.plot(*zip(*points), "o-", label=f"{kind.upper()} local")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("positions a query block attends to")
        ax.set_ylabel("held-out bits/dim")
        ax.set_title(f"{data}: {args.minutes:g} min per run ({args.clock} clock)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    fig.savefig(out / "table4.png", dpi=110)
    plt.close(fig)


def main() -> None:
    args = common.parser(__doc__, default_minutes=10).parse_args()
    out = common.setup(args)
    names = args.only or list(CONFIGS)
    if args.quick and not args.only:
        names = [names[0], "cifar-2d-q2x12-m2x6", "mnist-1d-q28-m28"]
    if not args.report:
        common.run_configs(args, out, EXPERIMENT, CONFIGS, names, lambda: report(args, out))
    report(args, out)


if __name__ == "__main__":
    main()
