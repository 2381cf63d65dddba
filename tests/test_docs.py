"""The documentation site builds with no warning (a broken link or a stale API reference fails), and its command-line
reference is the parser's own help."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MISSING = [m for m in ("mkdocs", "material", "mkdocstrings") if importlib.util.find_spec(m) is None]
needs_mkdocs = pytest.mark.skipif(
    bool(MISSING) and not os.environ.get("DOCS_REQUIRED"),
    reason=f"the docs extra is not installed ({', '.join(MISSING)}): pip install -e '.[docs]'")


@pytest.mark.docs
@needs_mkdocs
def test_the_site_builds_strictly_with_the_parsers_help(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    for command in ("train", "eval", "sample", "complete", "upscale", "compress", "decompress", "demo"):
        assert f"usage: image-transformer {command}" in cli, command
    assert "--init" in cli and "--deterministic" in cli  # options added to the parser appear without editing a page
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "image_transformer.tasks.compress" in api


def test_the_readme_links_only_to_files_that_exist():
    import re

    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#]+)\)", text) + re.findall(r'src="([^"]+)"', text)
    local = [t for t in targets if not t.startswith("http")]
    assert local and [t for t in local if not (ROOT / t).exists()] == []
