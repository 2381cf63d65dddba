"""1D against 2D local attention at small scale: the same model, the same budget, the two factorizations.

    python experiments/local_1d_vs_2d.py --minutes 10
    python experiments/local_1d_vs_2d.py --quick                      # smoke run (seconds), temporary folder

CIFAR-10 subset: ``cifar10-1d-cat-tiny`` (blocks of 256 sub-pixels reading the 256 before) against
``cifar10-2d-cat-tiny`` (4x24 query blocks, memory 4 rows up and 12 sub-pixels left and right); MNIST: ``mnist-tiny``
in 1D and with 2D blocks of 4x14 and flange 4x7. Dropout 0. Writes ``local_1d_vs_2d.md`` and ``.png``.
"""

from __future__ import annotations

import common

CONFIGS = {
    "cifar-1d": ("cifar", "cifar10-1d-cat-tiny", {}),
    "cifar-2d": ("cifar", "cifar10-2d-cat-tiny", {}),
    "mnist-1d": ("mnist", "mnist-tiny", {}),
    "mnist-2d": ("mnist", "mnist-tiny", dict(attention="local_2d", query_shape=(4, 14), memory_flange=(4, 7))),
}
EXPERIMENT = "local_1d_vs_2d"
CLAIM = ("**The paper's claim** (Parmar et al. 2018, sections 3.3 and 5, paraphrased): 2D local attention, whose "
         "memory is balanced between rows above and pixels to the side, does at least as well as 1D local attention "
         "with the same effective receptive field (on CIFAR-10 the 2D model is reported close to the 1D one; on "
         "CelebA super-resolution 2D samples fooled humans more often).")


def main() -> None:
    args = common.parser(__doc__, default_minutes=10).parse_args()
    out = common.setup(args)
    names = args.only or (["cifar-1d", "cifar-2d"] if args.quick else list(CONFIGS))
    if not args.report:
        common.run_configs(args, out, EXPERIMENT, CONFIGS, names)
    common.compare_report(args, out, EXPERIMENT, CONFIGS, "1D against 2D local attention", CLAIM, "local_1d_vs_2d.py")


if __name__ == "__main__":
    main()
