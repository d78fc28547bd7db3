"""Mutation testing in CI: a seeded sample of the mutants scripts/mutation-test makes.

The whole run (every mutant of the core modules, well over an hour on 2 cores) writes
bench/results/mutation.json; this test runs a fixed sample of it, so that a change that leaves a
class of bugs uncaught fails here too. The sample and its seed are fixed, so the result only
changes when the code or the tests do. A sample's score scatters around the whole run's: the
test fails when it is below what a run meeting the target would give in 95 samples out of 100.
"""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # the quick tier leaves it to CI (conftest.py, --all)

SAMPLE, SEED = 80, 2026


@pytest.mark.skipif(importlib.util.find_spec("mutmut") is None, reason="mutmut is not installed")
def test_a_sample_of_deliberate_bugs_is_caught(tmp_path):
    out = tmp_path / "mutation.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "mutation-test"), "--sample", str(SAMPLE),
                           "--seed", str(SEED), "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)
    assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["sample"] == {"size": SAMPLE, "seed": SEED}
    assert sum(m["mutants"] for m in result["modules"].values()) == SAMPLE
    assert result["judged"] >= SAMPLE * 0.7, "most sampled mutants must be judged"
    target, n = result["target"], result["judged"]
    floor = target - 1.645 * math.sqrt(target * (1 - target) / n)
    survivors = "\n".join(f"{s['name']} ({s['status']}): {s['mutated']}" for s in result["survivors"])
    assert result["score"] >= floor, f"score {result['score']:.1%} < {floor:.1%}; not caught:\n{survivors}"
