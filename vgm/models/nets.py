"""Encoder and decoder backbones: an MLP for any input size, and a strided CNN for square images.

Both accept extra leading dimensions (e.g. importance samples) and give them back unchanged.
"""
from __future__ import annotations

import math

import torch
from torch import nn

CONV_CHANNELS = (32, 32, 64, 64)


def mlp(sizes: list[int], final_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def conv_layout(input_shape: tuple[int, ...]) -> tuple[int, int]:
    """Number of stride-2 convolutions (halve while the side is even and above 4) and the final side."""
    if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        raise ValueError(f"arch 'conv' needs square images (C, H, H), got shape {tuple(input_shape)}")
    side, n = input_shape[1], 0
    while side % 2 == 0 and side > 4 and n < len(CONV_CHANNELS):
        side, n = side // 2, n + 1
    if n == 0:
        raise ValueError(f"arch 'conv' cannot downsample images of side {input_shape[1]}")
    return n, side


class Encoder(nn.Module):
    """x of shape (..., *input_shape) -> features of shape (..., out_dim)."""

    def __init__(self, arch: str, input_shape: tuple[int, ...], hidden: tuple[int, ...], out_dim: int):
        super().__init__()
        self.input_shape = tuple(input_shape)
        if arch == "mlp":
            self.conv = None
            self.head = mlp([math.prod(input_shape), *hidden, out_dim])
        elif arch == "conv":
            n, side = conv_layout(self.input_shape)
            chans = [input_shape[0], *CONV_CHANNELS[:n]]
            layers: list[nn.Module] = []
            for a, b in zip(chans[:-1], chans[1:]):
                layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.ReLU()]
            self.conv = nn.Sequential(*layers, nn.Flatten())
            self.head = mlp([chans[-1] * side * side, *hidden, out_dim])
        else:
            raise ValueError(f"unknown arch {arch!r} (choose mlp or conv)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[: x.dim() - len(self.input_shape)]
        if self.conv is None:
            h = x.reshape(*lead, -1)
        else:
            h = self.conv(x.reshape(-1, *self.input_shape)).reshape(*lead, -1)
        return self.head(h)


class Decoder(nn.Module):
    """z of shape (..., latent_dim) -> parameters of shape (..., channels_out * C, H, W) (channels first)."""

    def __init__(self, arch: str, input_shape: tuple[int, ...], hidden: tuple[int, ...], latent_dim: int,
                 params_per_value: int = 1):
        super().__init__()
        self.out_shape = (input_shape[0] * params_per_value, *input_shape[1:])
        if arch == "mlp":
            self.deconv = None
            self.body = mlp([latent_dim, *reversed(hidden), math.prod(self.out_shape)])
        elif arch == "conv":
            n, side = conv_layout(tuple(input_shape))
            chans = [*reversed(CONV_CHANNELS[:n])]
            self.top = (chans[0], side, side)
            self.body = mlp([latent_dim, *reversed(hidden), math.prod(self.top)], final_activation=True)
            layers: list[nn.Module] = []
            outs = [*chans[1:], self.out_shape[0]]
            for i, (a, b) in enumerate(zip(chans, outs)):
                layers.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
                if i < len(outs) - 1:
                    layers.append(nn.ReLU())
            self.deconv = nn.Sequential(*layers)
        else:
            raise ValueError(f"unknown arch {arch!r} (choose mlp or conv)")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.body(z)
        if self.deconv is not None:
            h = self.deconv(h.reshape(-1, *self.top))
        return h.reshape(*lead, *self.out_shape)
