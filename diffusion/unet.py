"""The Part B UNet, built from the course's named operations.

Shapes for MNIST (28x28) with D hidden channels:

    x  1x28 -ConvBlock-> s1  Dx28 -DownBlock-> s2  Dx14 -DownBlock-> s3 2Dx7
    s3 -Flatten-> 2Dx1 -Unflatten-> 2Dx7            (conditioning enters here)
    cat(., s3) 4Dx7  -UpBlock-> up1  Dx14            (and here)
    cat(., s2) 2Dx14 -UpBlock->      Dx28
    cat(., s1) 2Dx28 -ConvBlock-> Dx28 -Conv2d 3x3-> 1x28

Conditioning follows the assignment: FCBlocks map t/T (and the one-hot class) to per-channel
vectors that shift (and, for the class, scale) `unflatten` and `up1`.
"""
from __future__ import annotations

import torch
from torch import nn


def Conv(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.GELU())


def DownConv(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.GELU())


def UpConv(cin, cout):
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.GELU())


def Flatten():
    return nn.Sequential(nn.AvgPool2d(7), nn.GELU())


def Unflatten(channels):
    return nn.Sequential(nn.ConvTranspose2d(channels, channels, 7, 7, 0), nn.BatchNorm2d(channels), nn.GELU())


def ConvBlock(cin, cout):
    return nn.Sequential(Conv(cin, cout), Conv(cout, cout))


def DownBlock(cin, cout):
    return nn.Sequential(DownConv(cin, cout), ConvBlock(cout, cout))


def UpBlock(cin, cout):
    return nn.Sequential(UpConv(cin, cout), ConvBlock(cout, cout))


def FCBlock(fin, fout):
    return nn.Sequential(nn.Linear(fin, fout), nn.GELU(), nn.Linear(fout, fout))


def _per_channel(v):
    return v[:, :, None, None]  # (N, C) -> (N, C, 1, 1), broadcast over the feature map


class _UNet(nn.Module):
    """The shared trunk; subclasses differ only in how they modulate `unflatten` and `up1`."""

    def __init__(self, in_channels, num_hiddens):
        super().__init__()
        D = num_hiddens
        self.inp = ConvBlock(in_channels, D)
        self.down1 = DownBlock(D, D)
        self.down2 = DownBlock(D, 2 * D)
        self.flatten = Flatten()
        self.unflatten = Unflatten(2 * D)
        self.up1 = UpBlock(4 * D, D)
        self.up2 = UpBlock(2 * D, D)
        self.out = nn.Sequential(ConvBlock(2 * D, D), nn.Conv2d(D, in_channels, 3, 1, 1))

    def trunk(self, x, mod1=None, mod2=None):
        s1 = self.inp(x)
        s2 = self.down1(s1)
        s3 = self.down2(s2)
        h = self.unflatten(self.flatten(s3))
        if mod1 is not None:
            h = mod1(h)
        h = self.up1(torch.cat([h, s3], dim=1))
        if mod2 is not None:
            h = mod2(h)
        h = self.up2(torch.cat([h, s2], dim=1))
        return self.out(torch.cat([h, s1], dim=1))


class UnconditionalUNet(_UNet):
    def __init__(self, in_channels: int = 1, num_hiddens: int = 128):
        super().__init__(in_channels, num_hiddens)
        self.config = {"in_channels": in_channels, "num_hiddens": num_hiddens}

    def forward(self, x):
        return self.trunk(x)


class TimeConditionalUNet(_UNet):
    """eps_theta(x_t, t); `t` is a float tensor (N,) holding t/T in [0, 1]."""

    def __init__(self, in_channels: int = 1, num_hiddens: int = 64):
        super().__init__(in_channels, num_hiddens)
        self.config = {"in_channels": in_channels, "num_hiddens": num_hiddens}
        self.fc1_t = FCBlock(1, 2 * num_hiddens)
        self.fc2_t = FCBlock(1, num_hiddens)

    def forward(self, x, t):
        t = t.reshape(-1, 1).to(x.dtype)
        t1, t2 = _per_channel(self.fc1_t(t)), _per_channel(self.fc2_t(t))
        return self.trunk(x, lambda h: h + t1, lambda h: h + t2)


class ClassConditionalUNet(_UNet):
    """eps_theta(x_t, t, c); `c` is a float one-hot (N, num_classes), an all-zero row meaning
    "no class" (the classifier-free guidance null condition), and `t` is t/T as above.

    The assignment's pseudocode ends with `up1 = c2 * up1 + t1`; t1 has 2D channels and up1 has D,
    so the intended line is `c2 * up1 + t2`, which is what runs here.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, num_hiddens: int = 64):
        super().__init__(in_channels, num_hiddens)
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "num_hiddens": num_hiddens}
        D = num_hiddens
        self.num_classes = num_classes
        self.fc1_t, self.fc1_c = FCBlock(1, 2 * D), FCBlock(num_classes, 2 * D)
        self.fc2_t, self.fc2_c = FCBlock(1, D), FCBlock(num_classes, D)

    def forward(self, x, c, t):
        t = t.reshape(-1, 1).to(x.dtype)
        c = c.to(x.dtype)
        t1, t2 = _per_channel(self.fc1_t(t)), _per_channel(self.fc2_t(t))
        c1, c2 = _per_channel(self.fc1_c(c)), _per_channel(self.fc2_c(c))
        return self.trunk(x, lambda h: c1 * h + t1, lambda h: c2 * h + t2)
