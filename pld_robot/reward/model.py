"""The success classifier: camera frames in, the probability that the task (stage) is done out.

One encoder is shared by all cameras (frames are stacked on the batch axis); the per-camera features
are concatenated, in the configured camera order, into a small MLP head. The encoder is a small CNN
trained from scratch by default, or a frozen vision tower from a local Hugging Face folder (any
`AutoModel` that is or contains one, e.g. the SigLIP inside a PI0 checkpoint).

`frames_to_input` is the one preprocessing path, shared by training and serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class RewardModelConfig:
    cameras: tuple[str, ...] = ("front", "wrist")  # store / topic camera names, in this order
    image_size: int = 128  # frames are resized (with antialiasing) to this square size
    encoder: str = "cnn"  # cnn (from scratch) or pretrained (frozen, from pretrained_path)
    pretrained_path: str = ""  # a local Hugging Face folder, for encoder: pretrained
    channels: tuple[int, ...] = (16, 32, 64, 64)  # cnn: one stride-2 conv block per entry
    hidden: int = 128  # head width
    dropout: float = 0.1
    stage: str = "task"  # which stage of the task this classifier judges

    def __post_init__(self):
        if not self.cameras:
            raise ValueError("reward model: at least one camera is needed")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"reward model: cameras repeat: {list(self.cameras)}")
        if self.image_size < 32:
            raise ValueError(f"reward model: image_size {self.image_size} is below the minimum of 32")
        if self.encoder not in ("cnn", "pretrained"):
            raise ValueError(f"reward model: encoder must be 'cnn' or 'pretrained', not '{self.encoder}'")
        if self.encoder == "pretrained" and not self.pretrained_path:
            raise ValueError("reward model: encoder 'pretrained' needs pretrained_path (a local Hugging Face folder)")
        if not self.channels or min(self.channels) < 1 or self.hidden < 1 or not 0.0 <= self.dropout < 1.0:
            raise ValueError("reward model: channels and hidden must be positive, dropout in [0, 1)")


def frames_to_input(frames: Mapping[str, np.ndarray | torch.Tensor], cameras: tuple[str, ...],
                    size: int) -> torch.Tensor:
    """Frames (uint8, [B,] H, W, 3 per camera) -> float (B, cameras, 3, size, size) in [-1, 1]."""
    views = []
    for camera in cameras:
        if camera not in frames:
            raise KeyError(f"reward model: no frame from camera '{camera}' (have {sorted(frames)})")
        x = torch.as_tensor(frames[camera])
        if x.dtype != torch.uint8 or x.shape[-1] != 3 or x.ndim not in (3, 4):
            raise ValueError(f"reward model: camera '{camera}' frames must be uint8 (H, W, 3) or (B, H, W, 3), "
                             f"got {x.dtype} {tuple(x.shape)}")
        x = (x if x.ndim == 4 else x[None]).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        views.append(x)
    return torch.stack(views, dim=1)


class SmallCNN(nn.Module):
    def __init__(self, channels: tuple[int, ...]):
        super().__init__()
        layers, width = [], 3
        for out in channels:
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1), nn.GroupNorm(min(8, out), out), nn.ReLU()]
            width = out
        self.body = nn.Sequential(*layers)
        # Where things are matters (a cube held up vs on the table): keep a coarse 4x4 map, not a mean.
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.out_dim = width * 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x)).flatten(1)


class PretrainedEncoder(nn.Module):
    """A frozen vision tower; its pooled output (or mean token) is the feature."""

    def __init__(self, path: str):
        super().__init__()
        self.tower, self.tower_size = load_vision_tower(path)
        self.tower.requires_grad_(False).eval()
        self.out_dim = int(self.tower.config.hidden_size)

    def train(self, mode: bool = True) -> "PretrainedEncoder":
        super().train(mode)
        self.tower.eval()  # frozen: no dropout, ever
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.tower_size:
            x = F.interpolate(x, size=(self.tower_size, self.tower_size), mode="bilinear", align_corners=False)
        with torch.no_grad():
            out = self.tower(pixel_values=x.to(next(self.tower.parameters()).dtype))
        pooled = getattr(out, "pooler_output", None)
        return (pooled if pooled is not None else out.last_hidden_state.mean(1)).float()


def load_vision_tower(path: str) -> tuple[nn.Module, int]:
    """The vision tower in a local Hugging Face folder: the model itself if it is one, else the first
    submodule called vision_tower / vision_model (PaliGemma, SigLIP, CLIP, PI0's VLM)."""
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"reward model: cannot load a Hugging Face model from '{path}': {exc}") from exc
    tower = model if type(model).__name__.endswith("VisionModel") else next(
        (m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in ("vision_tower", "vision_model")), None)
    if tower is None:
        raise ValueError(f"reward model: '{path}' holds a {type(model).__name__}, which has no vision tower")
    size = getattr(tower.config, "image_size", None) or getattr(getattr(tower.config, "vision_config", None),
                                                                 "image_size", None)
    if size is None:
        raise ValueError(f"reward model: the vision tower in '{path}' does not say its image_size")
    return tower, int(size)


class RewardClassifier(nn.Module):
    def __init__(self, config: RewardModelConfig):
        super().__init__()
        self.config = config
        self.encoder = SmallCNN(config.channels) if config.encoder == "cnn" \
            else PretrainedEncoder(config.pretrained_path)
        self.head = nn.Sequential(
            nn.Linear(self.encoder.out_dim * len(config.cameras), config.hidden), nn.LayerNorm(config.hidden),
            nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(config.hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, cameras, 3, S, S) in [-1, 1] -> success logits (B,)."""
        b, n = x.shape[:2]
        features = self.encoder(x.flatten(0, 1)).view(b, n * self.encoder.out_dim)
        return self.head(features).squeeze(-1)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: everything but a frozen pretrained tower (loaded from its folder)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.tower.")}

    @torch.no_grad()
    def predict(self, frames: Mapping[str, np.ndarray | torch.Tensor]) -> np.ndarray:
        """Success probabilities for a batch (or one set) of frames."""
        x = frames_to_input(frames, self.config.cameras, self.config.image_size)
        return torch.sigmoid(self(x)).numpy()
