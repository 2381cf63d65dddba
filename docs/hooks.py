"""MkDocs hooks: the command-line reference made from the parser itself, and the shipped models' sample grids."""

from __future__ import annotations

import argparse
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
CLI_PAGE = "reference/cli.md"


def _help(parser: argparse.ArgumentParser) -> str:
    # a fixed width, so the page does not change with the terminal that builds it
    parser.formatter_class = lambda prog: argparse.ArgumentDefaultsHelpFormatter(prog, width=100)
    return parser.format_help()


def cli_reference() -> str:
    """One section per subcommand, each its ``--help`` text as the command prints it."""
    from image_transformer.cli import HelpFormatter, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lines = ["# Command line", "",
             "Every subcommand of `image-transformer`, with its `--help` as the command prints it "
             "(this page is generated from the parser).", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, command in sub.choices.items():
        command.formatter_class = lambda prog: HelpFormatter(prog, width=110)
        lines += [f"## {name}", "", "```text", command.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def on_files(files, config):
    """Add the generated CLI page and each shipped model's sample grid (as models/NAME.png)."""
    files.append(File.generated(config, CLI_PAGE, content=cli_reference()))
    for grid in sorted((ROOT / "src" / "image_transformer" / "pretrained").glob("*/samples.png")):
        files.append(File.generated(config, f"models/{grid.parent.name}.png", abs_src_path=str(grid)))
    return files
