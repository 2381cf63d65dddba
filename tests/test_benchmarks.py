"""The measuring scripts under benchmarks/ that nothing else runs: a smoke run on a tiny preset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_step_profile_finds_each_family_and_accounts_for_the_step(tmp_path):
    out = tmp_path / "profile.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "profile_step.py"), "--preset", "tiny",
                           "--precision", "fp32", "--steps", "2", "--threads", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    ms = row["ms"]
    # the attention kernel, the linear layers and the mixture or softmax likelihood are each found by name
    assert ms["attention"] > 0 and ms["matmul"] > 0 and ms["likelihood"] > 0 and ms["optimizer"] > 0, ms
    # the ops account for most of the step, and together for no more than it (between ops is what is left)
    ops = sum(v for k, v in ms.items() if k != "between ops")
    assert 0.5 * row["wall_ms"] < ops <= row["wall_ms"] + 1e-6 and ms["between ops"] >= 0, (ops, row["wall_ms"])
    assert "| **step** |" in done.stdout
