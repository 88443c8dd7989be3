"""PI0's flow-matching loss, masked to the robot's real action dimensions and to real time steps.

transformers' PI0ForConditionalGeneration.forward(actions=...) returns F.mse_loss(noise - actions,
v_pred) over the whole (chunk, max_action_dim) block. Two parts of that block are not data: the action
dimensions past the robot's (zero padding up to max_action_dim, 32 for pi0) and the steps past an
episode's end (SFTDataset repeats the last action there and marks them in `action_is_pad`). Fitting
those teaches the model nothing about the robot and dilutes the loss (a 7-dim arm is 7/32 of the
block), so the trainer builds the noisy input itself, as forward does:

    x_t = t * noise + (1 - t) * actions,   t ~ Beta(1.5, 1) * 0.999 + 0.001   (PI0Config's time_sampling_*)
    v_pred = model(state, noise=x_t, timestep=t, ...).logits        (forward with actions=None: x_t is taken as is)
    loss = mean over real (step, dim) of (noise - actions - v_pred) ** 2

and averages only where the mask is true, as LeRobot's pi0 does with action_is_pad.
"""

from __future__ import annotations

import torch


def sample_time(batch: int, config, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Flow-matching time per sample, float32 (B,), as PI0ForConditionalGeneration.forward samples it."""
    alpha = torch.tensor(float(config.time_sampling_beta_alpha))
    beta = torch.tensor(float(config.time_sampling_beta_beta))
    # Beta(a, b) = Ga / (Ga + Gb); torch's Beta has no generator argument, _standard_gamma neither, so
    # through uniforms: for b == 1, Beta(a, 1) = U^(1/a) exactly
    if float(beta) == 1.0:
        u = torch.rand(batch, generator=generator)
        time = u ** (1.0 / alpha)
    else:  # not PI0's setting; reproducible only through the global generator
        time = torch.distributions.Beta(alpha, beta).sample((batch,))
    return (time * config.time_sampling_scale + config.time_sampling_offset).float().to(device)


def loss_mask(action_is_pad: torch.Tensor, action_dim: int, max_action_dim: int) -> torch.Tensor:
    """(B, chunk, max_action_dim) bool: a real step of a real action dimension."""
    dims = torch.arange(max_action_dim, device=action_is_pad.device) < action_dim
    return (~action_is_pad.bool())[:, :, None] & dims[None, None, :]


def masked_flow_loss(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the elements where `mask` is true (float32). Every sample has at least
    its first step real (a sample starts on a recorded step), so the mask is never empty."""
    err = (predicted.float() - target.float()) ** 2
    mask = mask.to(err.dtype)
    return (err * mask).sum() / mask.sum().clamp_min(1.0)


def flow_matching_loss(model: torch.nn.Module, inputs: dict[str, torch.Tensor], action_is_pad: torch.Tensor,
                       action_dim: int, config, generator: torch.Generator | None = None) -> torch.Tensor:
    """The masked loss of one batch. `inputs`: Pi0Inputs.model_kwargs() with `actions` (B, chunk,
    max_action_dim), normalised and zero-padded; `config`: the model's PI0Config."""
    inputs = dict(inputs)
    actions = inputs.pop("actions")
    batch = actions.shape[0]
    noise = torch.randn(actions.shape, generator=generator).to(actions.device, actions.dtype)
    time = sample_time(batch, config, generator, actions.device)
    t = time[:, None, None].to(actions.dtype)
    noisy = t * noise + (1 - t) * actions
    predicted = model(noise=noisy, timestep=time, **inputs).logits
    mask = loss_mask(action_is_pad.to(actions.device), action_dim, actions.shape[-1])
    return masked_flow_loss(predicted, noise - actions, mask)
