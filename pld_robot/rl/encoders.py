"""Observation encoders: an observation (the store's keys: `state`, `<camera>_rgb`) -> one feature vector.

Images go through the reward classifier's small CNN (from scratch) or a frozen Hugging Face vision
tower (`reward.model.PretrainedEncoder`, which loads with `load_vision_tower`), one encoder shared by
all cameras, then DrQ's trunk (Linear + LayerNorm + tanh) to `image_features`. Proprioception is
passed as is or through one small layer. During updates, images get DrQ's random shift (pad 4 px and
crop back); written here rather than reusing `reward.augment`, which builds its indices on the CPU
and so cannot run on a learner's GPU.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from pld_robot.data.layout import rgb_key
from pld_robot.reward.augment import random_shift
from pld_robot.reward.model import PretrainedEncoder, SmallCNN, frames_to_input
from pld_robot.rl.config import EncoderConfig

STATE_KEY = "state"


class ObservationEncoder(nn.Module):
    def __init__(self, config: EncoderConfig, state_dim: int):
        super().__init__()
        self.config = config
        self.state_dim = state_dim
        if config.use_state and state_dim < 1:
            raise ValueError(f"encoder: use_state is true but state_dim is {state_dim}")
        self.cameras = config.cameras if config.image_encoder != "none" else ()
        self.obs_keys = ((STATE_KEY,) if config.use_state else ()) + tuple(rgb_key(c) for c in self.cameras)
        self.out_dim = 0
        self.state_net: nn.Module | None = None
        if config.use_state:
            if config.state_hidden:
                self.state_net = nn.Sequential(nn.Linear(state_dim, config.state_hidden),
                                               nn.LayerNorm(config.state_hidden), nn.Tanh())
            self.out_dim += config.state_hidden or state_dim
        self.backbone: nn.Module | None = None
        if self.cameras:
            self.backbone = SmallCNN(config.channels) if config.image_encoder == "cnn" \
                else PretrainedEncoder(config.pretrained_path)
            self.trunk = nn.Sequential(nn.Linear(self.backbone.out_dim * len(self.cameras), config.image_features),
                                       nn.LayerNorm(config.image_features), nn.Tanh())
            self.out_dim += config.image_features

    def forward(self, obs: Mapping[str, torch.Tensor], augment_images: bool = False) -> torch.Tensor:
        """obs: tensors with a batch axis (state float (B, S), images uint8 (B, H, W, 3)) -> (B, out_dim)."""
        missing = [k for k in self.obs_keys if k not in obs]
        if missing:
            raise KeyError(f"encoder: observation lacks {missing} (has {sorted(obs)})")
        parts = []
        if self.config.use_state:
            state = obs[STATE_KEY].float()
            if state.shape[-1] != self.state_dim:
                raise ValueError(f"encoder: state has {state.shape[-1]} dimensions, expected {self.state_dim}")
            parts.append(self.state_net(state) if self.state_net is not None else state)
        if self.cameras:
            x = frames_to_input({c: obs[rgb_key(c)] for c in self.cameras}, self.cameras, self.config.image_size)
            b = x.shape[0]
            x = x.flatten(0, 1)
            if augment_images and self.config.shift_px:
                x = random_shift(x, self.config.shift_px)
            parts.append(self.trunk(self.backbone(x).reshape(b, -1)))
        return torch.cat(parts, dim=-1)

