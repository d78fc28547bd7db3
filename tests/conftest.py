import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests run many small tensors and build subprocesses; oversubscribed OpenMP threads make small
# convolutions an order of magnitude slower whenever anything else is busy, so use one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")


# The quick tier, what `pytest` runs by default: everything but the tests marked slow (whole smoke builds
# of their own, the mutation sample, the gpu-check dry runs, benchmarks) and browser (headless Chromium).
# `--all`, or FUN_DIFFUSION_TESTS=all, runs every test; CI (.ci/run) does.
SLOW_TIER = ("slow", "browser")


def pytest_addoption(parser):
    parser.addoption("--all", action="store_true", default=os.environ.get("FUN_DIFFUSION_TESTS") == "all",
                     help="run every test: also those marked slow or browser (CI runs them; the default tier "
                          "leaves them out)")


def pytest_report_header(config):
    if not config.getoption("--all"):
        return "quick tier: tests marked slow or browser are deselected; --all runs them too (as CI does)"
    return None


def pytest_collection_modifyitems(config, items):
    """The quick tier leaves out the slow tier; tests marked ``gpu`` need CUDA, and without it they are
    skipped, saying so."""
    if not config.getoption("--all"):
        slow = [item for item in items if any(item.get_closest_marker(m) for m in SLOW_TIER)]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [item for item in items if item not in slow]
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False); "
                                   "scripts/gpu-check runs these on one")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


def build(*args, cache, site, check=True, env=None):
    """``python build.py`` in a subprocess; ``proc.report`` is its --report JSON (None if it wrote none)."""
    import json
    import tempfile

    fd, report = tempfile.mkstemp(suffix=".json", prefix="build-report-")
    os.close(fd)
    os.unlink(report)
    cmd = [sys.executable, str(ROOT / "build.py"), "--no-progress", "--cache-dir", str(cache),
           "--site-dir", str(site), "--report", report, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900, env=env)
    proc.report = json.loads(Path(report).read_text()) if Path(report).is_file() else None
    Path(report).unlink(missing_ok=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"build.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def statuses(proc) -> dict[str, str]:
    """Each section's cache status, from the build's --report."""
    return {s["id"]: s["status"] for s in proc.report["sections"]}


@pytest.fixture(scope="session")
def smoke_build(tmp_path_factory):
    """One cold smoke build and one warm rebuild, shared by the tests below."""
    base = tmp_path_factory.mktemp("smoke")
    cache, site = base / "cache", base / "site"
    cold = build("--profile", "smoke", cache=cache, site=site)
    warm = build("--profile", "smoke", cache=cache, site=site)
    return {"cache": cache, "site": site, "cold": cold, "warm": warm}


@pytest.fixture
def toy_project(tmp_path, monkeypatch):
    """A throwaway project with its own section package, so cache tests can edit code freely."""
    root = tmp_path / "proj"
    pkg = root / "toygens"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "up.py").write_text(UP)
    (pkg / "down.py").write_text(DOWN)
    (pkg / "side.py").write_text(SIDE)
    (pkg / "shade.py").write_text(SHADE)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # edits within a second must not hit stale .pyc
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [m for m in sys.modules if m == "toygens" or m.startswith("toygens.")]:
        del sys.modules[name]


UP = '''
import numpy as np
from builder.section import Section

SECTION = Section(id="up", title="Upstream", params={"n": 3}, profiles={"smoke": {"n": 2}})


def run(ctx):
    values = np.random.rand(ctx.params.n).round(6).tolist()
    ctx.save_json("values", values)
    ctx.save_image("up_image", np.full((4, 4), ctx.params.n / 10), caption="A flat grey square.")
'''

DOWN = '''
import numpy as np
from builder.section import Section

SECTION = Section(id="down", title="Downstream", depends=("up",))


def run(ctx):
    values = ctx.upstream("up").json("values")
    ctx.save_image("down_image", np.array([values]), caption="The upstream values as one row of pixels.")
'''

SHADE = '''
def black():
    return 0.0
'''

SIDE = '''
import numpy as np
from builder.section import Section
from toygens.shade import black

SECTION = Section(id="side", title="Independent", params={"fail": False}, inputs=("toy-data",), uses=("backend",))


def run(ctx):
    ctx.save_image("side_image", np.full((2, 2), black()), caption="Two by two black pixels.")
    if ctx.params.fail:
        raise RuntimeError("side failed on purpose")
'''
