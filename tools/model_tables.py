"""The shipped models' table, written from their cards into the README and the docs (one source per figure).

    python tools/model_tables.py          # rewrite the tables in README.md, docs/guide/models.md, quickstart.md
    python tools/model_tables.py --check  # exit 1, naming the file, where a table is not what the cards say

Each file holds the table between two markers (``<!-- models table -->`` and ``<!-- end of models table -->``);
everything in it comes from the cards in src/image_transformer/pretrained/NAME/README.md, which
tools/ship_model.py writes from the runs' own records. tests/test_zoo.py checks the files against the cards.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from image_transformer.files.folders import read_card, shipped_folder, shipped_names
from image_transformer.zoo import MODEL_CLASSES

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", ROOT / "docs" / "guide" / "models.md", ROOT / "docs" / "guide" / "quickstart.md"]
BEGIN, END = "<!-- models table -->", "<!-- end of models table -->"
ATTENTION = {"local_1d": "1D local", "local_2d": "2D local", "global": "global"}


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def describe_model(meta: dict[str, Any]) -> str:
    """The architecture in a few words, from the card's config."""
    c = meta["config"]
    output = "categorical" if c["distribution"] == "categorical" else f"mixture of {c['num_mixtures']} logistics"
    blocks = ATTENTION.get(c["attention"], c["attention"])
    if c.get("conv_size"):
        blocks += f" with causal {c['conv_size']}x{c['conv_size']} convolutions"
    words = [output, blocks, f"d {c['hidden_size']}, {c['num_layers']} layers"]
    if MODEL_CLASSES[meta["model_type"]].low_resolution_input:
        h, w = c["input_size"] if isinstance(c["input_size"], list) else (c["input_size"],) * 2
        words.insert(0, f"{h}x{w} -> {c['image_size'][0]}x{c['image_size'][1]} super-resolution")
        words[-1] += f" + {c['encoder_layers']} encoder layers"
    if c.get("num_classes"):
        words.append(f"{c['num_classes']} classes")
    return ", ".join(words) + f", {_millions(meta['parameters'])} parameters"


def _machine(hardware: str) -> str:
    """"AMD EPYC, 2 cores visible to the process, no GPU" -> "2 CPU cores"; a GPU's name where there was one."""
    gpu = hardware.rsplit(", ", 1)[-1]
    if gpu != "no GPU":
        return gpu
    cores = re.search(r"(\d+) cores", hardware)
    return f"{cores.group(1)} CPU cores" if cores else hardware


def row(name: str) -> str:
    meta = read_card(shipped_folder(name))
    test = meta["test"]
    score = f"**{test['bits_per_dim']:.3f}** on {test['images']:,} test images"
    if not test.get("full_split", True):
        score += " (spread over the split)"
    left = meta.get("left_out", [])
    data = meta["data"].get("name", meta["data"]["spec"])
    if left:
        data += "; " + ", ".join(f"{e['files']:,} files left out (`{e['file']}`)" for e in left)
    minutes = meta["train_minutes"]
    training = f"{meta['steps']:,} steps, {minutes:.0f} min on {_machine(meta['hardware'])}"
    return f"| `{name}` | {describe_model(meta)} | {data} | {score} | {training} |"


def table() -> str:
    """The markdown table of every shipped model, between its markers."""
    lines = [BEGIN, "", "| name | model | data | test bits/dim | training |", "|---|---|---|---|---|",
             *(row(name) for name in shipped_names()), "", END]  # blank lines: MkDocs ends an HTML block at one
    return "\n".join(lines)


def rewritten(text: str, path: Path) -> str:
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"{path}: needs exactly one {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return head + table() + tail


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only check; exit 1 where a file differs")
    args = p.parse_args(argv)
    stale = []
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        new = rewritten(text, path)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    for path in stale:
        print(f"{path.relative_to(ROOT)}: {'differs from' if args.check else 'rewritten from'} the cards")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
