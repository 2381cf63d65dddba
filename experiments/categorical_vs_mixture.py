"""The categorical distribution against the discretized mixture of logistics at small scale, the same budget.

    python experiments/categorical_vs_mixture.py --minutes 10
    python experiments/categorical_vs_mixture.py --quick              # smoke run (seconds), temporary folder

CIFAR-10 subset: ``cifar10-1d-cat-tiny`` (a 256-way softmax per sub-pixel, 3,072 positions) against
``cifar10-1d-dmol-tiny`` (10 logistics per pixel, 1,024 positions); MNIST: ``mnist-tiny`` and the same model with the
mixture (blocks of 112 pixels). Dropout 0. Writes ``categorical_vs_mixture.md`` and ``.png``.
"""

from __future__ import annotations

import common

CONFIGS = {
    "cifar-categorical": ("cifar", "cifar10-1d-cat-tiny", {}),
    "cifar-mixture": ("cifar", "cifar10-1d-dmol-tiny", {}),
    "mnist-categorical": ("mnist", "mnist-tiny", {}),
    "mnist-mixture": ("mnist", "mnist-tiny", dict(distribution="dmol", num_mixtures=10)),
}
EXPERIMENT = "categorical_vs_mixture"
CLAIM = ("**The paper's claim** (Parmar et al. 2018, sections 3.1 and 5, paraphrased): on CIFAR-10 the discretized "
         "mixture of logistics, with its ordinal treatment of intensities, gives better bits/dim than the 256-way "
         "categorical (Table 4's best mixture model against the categorical models).")


def main() -> None:
    args = common.parser(__doc__, default_minutes=10).parse_args()
    out = common.setup(args)
    names = args.only or (["cifar-categorical", "cifar-mixture"] if args.quick else list(CONFIGS))
    if not args.report:
        common.run_configs(args, out, EXPERIMENT, CONFIGS, names)
    common.compare_report(args, out, EXPERIMENT, CONFIGS, "Categorical against mixture of logistics", CLAIM,
                          "categorical_vs_mixture.py")


if __name__ == "__main__":
    main()
