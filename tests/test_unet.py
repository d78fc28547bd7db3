import pytest
import torch

from diffusion.unet import ClassConditionalUNet, TimeConditionalUNet, UnconditionalUNet

D = 4


def inputs(n=3, channels=1):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, channels, 28, 28, generator=g)
    t = torch.rand(n, generator=g)
    c = torch.nn.functional.one_hot(torch.tensor([3, 0, 9])[:n], 10).float()
    c[-1] = 0  # the null condition
    return x, c, t


def forwards():
    x, c, t = inputs()
    return [
        (UnconditionalUNet(1, D), lambda m, x: m(x)),
        (TimeConditionalUNet(1, D), lambda m, x: m(x, t)),
        (ClassConditionalUNet(1, 10, D), lambda m, x: m(x, c, t)),
    ]


@pytest.mark.parametrize("index", range(3))
def test_output_has_input_shape(index):
    model, run = forwards()[index]
    x, _, _ = inputs()
    assert run(model, x).shape == x.shape


@pytest.mark.parametrize("index", range(3))
def test_channels_last_and_bf16_autocast(index):
    model, run = forwards()[index]
    x, _, _ = inputs()
    model.to(memory_format=torch.channels_last).eval()
    reference = run(model, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run(model, x.contiguous(memory_format=torch.channels_last))
    assert out.shape == x.shape and out.dtype == torch.bfloat16
    assert torch.isfinite(out.float()).all()
    assert (out.float() - reference).abs().max() < 0.1 * reference.abs().max() + 0.05


def test_skip_and_bottleneck_channel_plan():
    model = UnconditionalUNet(1, 8)
    assert model.up1[0][0].in_channels == 32  # cat(unflatten 2D, skip 2D) = 4D
    assert model.up2[0][0].in_channels == 16  # cat(up1 D, skip D) = 2D
    assert model.out[0][0][0].in_channels == 16  # cat(up2 D, skip D) = 2D
    assert model.out[-1].out_channels == 1


def test_class_signal_changes_the_output():
    # A fixed initialisation: with D = 4, about one random init in five leaves the bottleneck so
    # flat that the class modulation moves the output by less than allclose's tolerance.
    torch.manual_seed(1)
    model = ClassConditionalUNet(1, 10, D).eval()
    x, c, t = inputs()
    with torch.no_grad():
        a = model(x, c, t)
        b = model(x, torch.zeros_like(c), t)
    assert not torch.allclose(a[:2], b[:2])
    assert torch.equal(a[2], b[2])  # the third row was already the null condition


def test_time_enters_as_a_normalised_float():
    torch.manual_seed(1)
    model = TimeConditionalUNet(1, D).eval()
    x, _, _ = inputs(2)
    with torch.no_grad():
        assert not torch.allclose(model(x, torch.tensor([0.1, 0.1])), model(x, torch.tensor([0.9, 0.9])))
