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
        p = config.shift_px
        padded = F.pad(flat, (p, p, p, p), mode="replicate")
        dx = torch.randint(0, 2 * p + 1, (b * n,), generator=generator)
        dy = torch.randint(0, 2 * p + 1, (b * n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None])[:, :, None].expand(-1, -1, w)
        cols = (dx[:, None] + torch.arange(w)[None])[:, None, :].expand(-1, h, -1)
        index = (rows * (w + 2 * p) + cols).reshape(b * n, 1, h * w).expand(-1, c, -1)
        flat = padded.reshape(b * n, c, -1).gather(2, index).reshape(b * n, c, h, w)

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
