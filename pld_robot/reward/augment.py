"""Augmentation for a fixed camera: small shifts (DrQ's pad-and-crop) and colour jitter. The camera
does not move between episodes, so no flips, rotations or large crops: they would teach the
classifier views it will never see."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class AugmentConfig:
    shift_px: int = 4  # at the model's image size
    brightness: float = 0.2  # +- fraction
    contrast: float = 0.2
    saturation: float = 0.2

    def __post_init__(self):
        if self.shift_px < 0 or min(self.brightness, self.contrast, self.saturation) < 0:
            raise ValueError("augment: shift_px and the jitter amounts must be >= 0")


def augment(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """x: (B, cameras, 3, S, S) in [-1, 1]; each image gets its own shift and jitter."""
    b, n, c, h, w = x.shape
    flat = x.reshape(b * n, c, h, w)
    if config.shift_px:
        flat = random_shift(flat, config.shift_px, generator)

    def factor(amount: float) -> torch.Tensor:
        return 1.0 + (torch.rand(b * n, 1, 1, 1, generator=generator) * 2 - 1) * amount

    img = (flat + 1) / 2  # jitter in [0, 1], as the usual definitions assume
    if config.brightness:
        img = img * factor(config.brightness)
    if config.contrast:
        mean = img.mean(dim=(1, 2, 3), keepdim=True)
        img = (img - mean) * factor(config.contrast) + mean
    if config.saturation:
        gray = (0.299 * img[:, :1] + 0.587 * img[:, 1:2] + 0.114 * img[:, 2:3])
        img = (img - gray) * factor(config.saturation) + gray
    return (img.clamp(0, 1) * 2 - 1).reshape(b, n, c, h, w)


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ: pad each (N, C, H, W) image by `pad` (replicating the border) and crop it back at a random
    offset. Offsets are drawn on the CPU (where `generator` lives) and moved to the images' device."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    dev = images.device
    rows = (torch.randint(0, 2 * pad + 1, (n, 1), generator=generator) + torch.arange(h)).to(dev)
    cols = (torch.randint(0, 2 * pad + 1, (n, 1), generator=generator) + torch.arange(w)).to(dev)
    return padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]
