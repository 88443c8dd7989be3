"""PI0 from transformers behind the Policy protocol: what `pld-robot serve-policy --backend pi0` serves.

    policy = Pi0Policy("checkpoints/pi0_pick_cube")      # either checkpoint layout, see checkpoint.py
    chunk = policy.predict(obs)                           # (spec.chunk_length, len(action_names)) float32

On a GPU the model runs in bfloat16 (as openpi and LeRobot serve it); on the CPU in float32, where
bfloat16 is slow and buys nothing. Not thread-safe: the server runs one inference at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pld_robot.policy.pi0.checkpoint import load_checkpoint
from pld_robot.policy.pi0.preprocess import Pi0Layout, assemble_inputs, unnormalize_actions
from pld_robot.policy.spec import InvalidObservation, Observation, PolicySpec, check_observation


class Pi0Policy:
    def __init__(self, checkpoint_dir: str | Path, device: str | torch.device | None = None):
        """Load the checkpoint onto `device` (None: CUDA when there is one, else the CPU)."""
        self.checkpoint = load_checkpoint(checkpoint_dir)
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = self.checkpoint.load_model(self.device, self.dtype)
        self.tokenizer = self.checkpoint.load_tokenizer()
        self.layout = Pi0Layout.from_config(self.model.config)
        info = self.checkpoint.info
        self.spec = PolicySpec(cameras=dict(info.cameras), state_names=info.state_names,
                               action_names=info.action_names, chunk_length=self.checkpoint.chunk_length,
                               control_hz=info.control_hz, backend="pi0", version=self.checkpoint.version)

    def predict(self, obs: Observation) -> np.ndarray:
        """The next `spec.chunk_length` actions in robot units. `obs.noise`, (chunk_size, max_action_dim),
        makes the sample reproducible; without it each call draws fresh noise. An empty prompt means
        the checkpoint's default prompt."""
        check_observation(self.spec, obs)
        info = self.checkpoint.info
        inputs = assemble_inputs([obs.images[name][None] for name in self.spec.cameras],
                                 [obs.prompt or info.prompt], obs.state[None], self.layout, self.tokenizer,
                                 self.checkpoint.stats, mode=info.norm_mode)
        with torch.inference_mode():
            chunk = self.model.sample_actions(**inputs.to(self.device, self.dtype).model_kwargs(),
                                              noise=self._noise(obs.noise))
        return unnormalize_actions(chunk[0, :self.spec.chunk_length].float(), self.checkpoint.stats,
                                   len(self.spec.action_names), info.norm_mode)

    def _noise(self, noise: np.ndarray | None) -> torch.Tensor:
        shape = (self.layout.chunk_size, self.layout.max_action_dim)
        if noise is None:
            return torch.randn((1, *shape), device=self.device, dtype=self.dtype)
        if noise.shape != shape:
            raise InvalidObservation(f"noise has shape {noise.shape}, expected {shape} "
                                     "(the model's chunk_size, max_action_dim)")
        return torch.as_tensor(noise, device=self.device, dtype=self.dtype)[None]
