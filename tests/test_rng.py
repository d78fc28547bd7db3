"""One rule for random numbers, so that code proven on a CPU does not break on CUDA.

torch refuses a draw on one device from a generator on another ("Expected a 'cuda' device type
for generator but found 'cpu'"). A CPU never shows it: every tensor and every generator is on the
CPU. Two tests stand in for the GPU here:

* a structural one: no code in diffusion/ or generators/ calls torch's random functions, or makes
  a generator, except diffusion/rng.py, which always draws on the generator's own device;
* a behavioural one: every stream a section is handed claims to live on CUDA while the tensors
  stay on the CPU, and torch's random functions check devices as CUDA does. The Part B samplers
  and losses, Part A's loops and a whole smoke build must run under it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from diffusion import ddpm
from diffusion.one_step import add_noise
from diffusion.unet import ClassConditionalUNet, TimeConditionalUNet

ROOT = Path(__file__).resolve().parent.parent
RANDOM_FUNCTIONS = {"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "normal",
                    "bernoulli", "multinomial", "poisson", "Generator"}
RANDOM_METHODS = {"normal_", "uniform_", "random_", "bernoulli_", "exponential_", "geometric_", "cauchy_",
                  "log_normal_"}
THE_HELPER = ROOT / "diffusion" / "rng.py"


def _random_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.random"):
            found += [f"line {node.lineno}: from {node.module} import {a.name}" for a in node.names
                      if a.name in RANDOM_FUNCTIONS]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name, owner = node.func.attr, node.func.value
            if name in RANDOM_METHODS or (name in RANDOM_FUNCTIONS and isinstance(owner, ast.Name)
                                          and owner.id == "torch"):
                found.append(f"line {node.lineno}: {ast.unparse(node.func)}(...)")
    return found


def test_every_random_draw_in_the_science_and_the_sections_goes_through_diffusion_rng():
    offenders = {}
    for folder in ("diffusion", "generators"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path != THE_HELPER and (calls := _random_calls(path)):
                offenders[path.relative_to(ROOT).as_posix()] = calls
    assert not offenders, ("draw random numbers through diffusion.rng (which draws on the generator's own "
                           f"device), not torch directly: {offenders}")


def test_the_structural_check_sees_each_kind_of_call(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom torch import randn\n"
                   "def f(g, x):\n"
                   "    a = torch.randn(3, generator=g, device=x.device)\n"
                   "    b = torch.Generator('cuda')\n"
                   "    return x.normal_(generator=g)\n")
    assert [c.split(":")[0] for c in _random_calls(bad)] == ["line 2", "line 4", "line 5", "line 6"]
    assert _random_calls(THE_HELPER)  # the helper itself is the one place that calls torch


# ---------------------------------------------------------------------------------------------
# behaviour: generators that live "elsewhere"


class ElsewhereGenerator:
    """A CPU generator that reports another device, as every stream does in a CUDA build."""

    def __init__(self, seed: int, device: str = "cuda"):
        self.cpu = torch.Generator().manual_seed(seed)
        self.device = torch.device(device)

    def __getattr__(self, name):
        return getattr(self.cpu, name)


@pytest.fixture
def cuda_rules(monkeypatch):
    """torch's random functions refuse a generator from another device, as they do on CUDA, and run
    an ElsewhereGenerator's draw on the CPU once it has passed that check."""
    for name in ("rand", "randn", "randint", "randperm", "normal", "bernoulli", "multinomial"):
        real = getattr(torch, name)

        def checked(*args, _real=real, **kwargs):
            g = kwargs.get("generator")
            if g is not None:
                where = torch.device(kwargs.get("device") or "cpu")
                if where.type != g.device.type:
                    raise RuntimeError(f"Expected a '{where.type}' device type for generator but found "
                                       f"'{g.device.type}'")
                if isinstance(g, ElsewhereGenerator):
                    kwargs = {**kwargs, "generator": g.cpu, "device": "cpu"}
            return _real(*args, **kwargs)

        monkeypatch.setattr(torch, name, checked)


def test_the_rule_check_refuses_what_cuda_refuses(cuda_rules):
    with pytest.raises(RuntimeError, match="Expected a 'cpu' device type for generator but found 'cuda'"):
        torch.randn(3, generator=ElsewhereGenerator(0), device="cpu")
    with pytest.raises(RuntimeError, match="Expected a 'cuda' device type for generator but found 'cpu'"):
        torch.randn(3, generator=torch.Generator(), device="cuda")
    from diffusion import rng

    assert rng.randn((3,), ElsewhereGenerator(0), device="cpu").device.type == "cpu"


def test_helpers_draw_where_the_generator_lives_and_deliver_where_asked():
    from diffusion import rng

    g = torch.Generator().manual_seed(5)
    x = rng.randn((2, 3), g, dtype=torch.float64)
    assert x.dtype == torch.float64 and torch.equal(x, torch.randn(2, 3, generator=torch.Generator().manual_seed(5),
                                                                    dtype=torch.float64))
    assert rng.randint(1, 4, (100,), g, device="cpu").unique().tolist() == [1, 2, 3]
    assert sorted(rng.randperm(10, g).tolist()) == list(range(10))
    assert ((0 <= rng.rand((50,), g)) & (rng.rand((50,), g) < 1)).all()
    assert rng.randn((4,), None, device="cpu").shape == (4,)
    assert rng.generator(7, "cpu").initial_seed() == 7


def _tiny(cls, **kw):
    torch.manual_seed(0)
    return cls(in_channels=1, num_hiddens=4, **kw).eval()


def test_part_b_samplers_and_losses_with_generators_on_another_device(cuda_rules):
    schedule = ddpm.linear_schedule(6)
    samples = ddpm.sample_time(_tiny(TimeConditionalUNet), 3, schedule, ElsewhereGenerator(1), keep_every=2)
    assert samples.images.shape == (3, 1, 28, 28) and samples.trajectory.shape[0] == 4  # x_6, x_4, x_2, x_0
    samples = ddpm.sample_class(_tiny(ClassConditionalUNet, num_classes=10), [1, 2], schedule, ElsewhereGenerator(2))
    assert torch.isfinite(samples.images).all()
    x0 = torch.rand(4, 1, 28, 28)
    assert ddpm.time_loss(_tiny(TimeConditionalUNet), x0, schedule, ElsewhereGenerator(3)).ndim == 0
    labels = torch.tensor([0, 1, 2, 3])
    assert ddpm.class_loss(_tiny(ClassConditionalUNet, num_classes=10), x0, labels, schedule,
                           ElsewhereGenerator(4)).ndim == 0
    assert add_noise(x0, 0.5, ElsewhereGenerator(5)).shape == x0.shape


def test_streams_on_another_device_give_the_same_numbers_as_on_the_cpu(cuda_rules):
    # The CPU draw behind an ElsewhereGenerator is the draw a CPU generator makes: the helpers only
    # moved where it happens, so the CPU build's figures keep their bytes.
    schedule = ddpm.linear_schedule(6)
    a = ddpm.sample_time(_tiny(TimeConditionalUNet), 2, schedule, ElsewhereGenerator(9), keep_every=0)
    b = ddpm.sample_time(_tiny(TimeConditionalUNet), 2, schedule, torch.Generator().manual_seed(9), keep_every=0)
    assert torch.equal(a.images, b.images)


@pytest.mark.slow
def test_a_whole_smoke_build_with_every_stream_on_another_device(cuda_rules, monkeypatch, tmp_path):
    from builder.context import Context, derive_seed
    import backends
    import build
    from builder.graph.engine import BuildConfig, Engine
    from builder.graph.registry import discover
    from project import PROJECT

    def elsewhere(self, name="default", device=None):
        return ElsewhereGenerator(derive_seed(self.seed, name))

    monkeypatch.setattr(Context, "generator", elsewhere)
    args = build.parse_args(["--backend", "local"])
    config = BuildConfig(profile="smoke", device="cpu", dtype="float32", seed=1, cache_root=tmp_path,
                         resources={"backend": backends.resource(args, "cpu", PROJECT)})
    result = Engine(PROJECT, config, discover(PROJECT.sections)).build()
    failed = {r.id: r.error for r in result.results if r.status not in ("miss", "hit")}
    assert not failed, failed
