"""Observations -> PI0 model inputs: the one preprocessing the policy server and the SFT trainer share.

    layout = Pi0Layout.from_config(model.config)
    inputs = assemble_inputs([front_uint8, wrist_uint8], ["pick up the cube"], state, layout, tokenizer, stats)
    chunk = model.sample_actions(**inputs.to(device, dtype).model_kwargs(), noise=noise)

transformers' PI0Processor cannot be used here (its image processor needs torchvision), so this module
builds what it builds, batch by batch, in plain torch:

- input_ids: `tokens_per_image` image placeholder ids per camera first, then bos + prompt + "\\n"
  (PaliGemma's prompt format), right-padded; attention_mask marks the real tokens. Padding does not
  change the model's output: position ids come from the mask's cumulative sum.
- pixel_values: (B, cameras, 3, S, S) in [-1, 1] (PaliGemma's rescale with mean = std = 0.5), each image
  resized to the vision tower's S x S keeping its aspect ratio and padded. Resizing follows openpi, whose
  pipeline the PI0 weights were trained with: bilinear, centred, padded black (-1). transformers'
  PI0ImageProcessor resizes bicubic and pads bottom/right with 0 after normalising (mid-grey); we do not
  copy that.
- state (and, for training, actions): normalised with our NormStats, zero-padded to the model's
  max_state_dim / max_action_dim, as the processor and LeRobot do.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pld_robot.data.normalization import Mode, NormStats

ArrayLike = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class Pi0Layout:
    """The facts about a PI0 model that preprocessing needs, read once from its config."""

    image_size: int  # the vision tower's square input, pixels
    tokens_per_image: int  # (image_size // patch_size) ** 2 for SigLIP
    image_token_id: int
    max_state_dim: int
    max_action_dim: int
    chunk_size: int

    @classmethod
    def from_config(cls, config: Any) -> "Pi0Layout":
        """From a transformers PI0Config (read by attribute, so this module does not import transformers)."""
        vision = config.vlm_config.vision_config
        return cls(image_size=vision.image_size, tokens_per_image=(vision.image_size // vision.patch_size) ** 2,
                   image_token_id=config.vlm_config.image_token_id, max_state_dim=config.max_state_dim,
                   max_action_dim=config.max_action_dim, chunk_size=config.chunk_size)


def resize_with_pad(images: ArrayLike, size: int) -> torch.Tensor:
    """uint8 RGB, (B, H, W, 3) or (B, 3, H, W) -> float32 (B, 3, size, size) in [-1, 1].

    Scaled so the longer side fits (aspect ratio kept), centred, the rest black (-1); an image already
    size x size is only rescaled. Channels-last is assumed when the last axis is 3, since that is how
    cameras and the episode store hand images over."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"images must be a uint8 batch (B, H, W, 3) or (B, 3, H, W), "
                         f"got {x.dtype} {tuple(x.shape)}")
    if x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    elif x.shape[1] != 3:
        raise ValueError(f"images must have 3 channels first or last, got shape {tuple(x.shape)}")
    x = x.to(torch.float32) / 255.0 * 2.0 - 1.0
    height, width = x.shape[-2:]
    if (height, width) == (size, size):
        return x.contiguous()
    ratio = max(width / size, height / size)
    new_h, new_w = max(1, int(height / ratio)), max(1, int(width / ratio))
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False).clamp(-1.0, 1.0)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    return F.pad(x, (left, size - new_w - left, top, size - new_h - top), value=-1.0)


def tokenize(prompts: Sequence[str], tokenizer: Any, tokens_per_image: int, n_cameras: int,
             image_token_id: int, max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask, (B, n_cameras * tokens_per_image + text length), int64.

    Each row: the image placeholders, then bos + prompt + "\\n" (the official processor appends the
    newline to every prompt), then right padding with the tokenizer's pad id. `max_length` counts the
    text tokens (bos and newline included), like LeRobot's `tokenizer_max_length`: every row is padded
    to it, for fixed shapes in training; None pads to the longest prompt of the batch. A longer prompt
    is an error rather than silently cut, since the cut would drop the newline the model expects."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, not one string")
    bos = tokenizer.bos_token_id
    if bos is None:
        raise ValueError("the tokenizer has no bos token; PI0's prompt starts with one")
    # the image placeholders are ids, not text: PaliGemma's tokenizer has no <image> token of its own
    texts = tokenizer([p + "\n" for p in prompts], add_special_tokens=False)["input_ids"]
    rows = [[bos, *ids] for ids in texts]
    longest = max((len(r) for r in rows), default=0)
    width = longest if max_length is None else max_length
    if longest > width:
        prompt = prompts[next(i for i, r in enumerate(rows) if len(r) > width)]
        raise ValueError(f"prompt {prompt!r} is {longest} tokens with bos and newline; max_length is {width}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n_image = tokens_per_image * n_cameras
    input_ids = torch.full((len(rows), n_image + width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), n_image + width), dtype=torch.long)
    input_ids[:, :n_image] = image_token_id
    for i, row in enumerate(rows):
        input_ids[i, n_image:n_image + len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, :n_image + len(row)] = 1
    return input_ids, attention_mask


def _pad_last(x: torch.Tensor, dim: int, what: str) -> torch.Tensor:
    if x.shape[-1] > dim:
        raise ValueError(f"{what} has {x.shape[-1]} dimensions, more than the model's {dim}")
    return F.pad(x, (0, dim - x.shape[-1]))


def _as_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def normalize_state(state: ArrayLike, stats: NormStats | None, max_state_dim: int,
                    mode: Mode = "mean_std") -> torch.Tensor:
    """(B, S) raw state -> (B, max_state_dim) float32, normalised with `stats` (None: already
    normalised, e.g. by the SFT dataset) and zero-padded."""
    x = _as_numpy(state)
    if stats is not None:
        x = stats.normalize("state", x, mode)
    return _pad_last(torch.as_tensor(np.asarray(x, dtype=np.float32)), max_state_dim, "state")


def normalize_actions(actions: ArrayLike, stats: NormStats | None, max_action_dim: int,
                      mode: Mode = "mean_std") -> torch.Tensor:
    """(B, T, A) raw actions (training targets) -> (B, T, max_action_dim) float32, as normalize_state."""
    x = _as_numpy(actions)
    if stats is not None:
        x = stats.normalize("action", x, mode)
    return _pad_last(torch.as_tensor(np.asarray(x, dtype=np.float32)), max_action_dim, "actions")


def unnormalize_actions(actions: ArrayLike, stats: NormStats, action_dim: int,
                        mode: Mode = "mean_std") -> np.ndarray:
    """Model output (..., max_action_dim) -> (..., action_dim) float32 in robot units: the padding
    dimensions are dropped, then the normalisation undone."""
    x = _as_numpy(actions).astype(np.float32, copy=False)[..., :action_dim]
    return stats.unnormalize("action", x, mode).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Pi0Inputs:
    """One batch for PI0ForConditionalGeneration: `sample_actions` at inference, `forward` with
    `actions` in training."""

    input_ids: torch.Tensor  # (B, L) int64
    attention_mask: torch.Tensor  # (B, L) int64
    pixel_values: torch.Tensor  # (B, cameras, 3, S, S) float in [-1, 1]
    pixel_attention_mask: torch.Tensor  # (B, cameras) bool
    state: torch.Tensor  # (B, max_state_dim) float, normalised
    actions: torch.Tensor | None = None  # (B, chunk, max_action_dim) float, normalised; training only

    def to(self, device: torch.device | str, dtype: torch.dtype) -> "Pi0Inputs":
        """Everything onto `device`; the float tensors in the model's `dtype`, ids and masks unchanged."""
        moved = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if t is not None:
                moved[f.name] = t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)
        return replace(self, **moved)

    def model_kwargs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for the model; `actions` only when set (sample_actions must not get it)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def assemble_inputs(images: Sequence[ArrayLike], prompts: Sequence[str], state: ArrayLike, layout: Pi0Layout,
                    tokenizer: Any, stats: NormStats | None, *, actions: ArrayLike | None = None,
                    mode: Mode = "mean_std", max_length: int | None = None) -> Pi0Inputs:
    """A batch of B observations as model inputs.

    images: one uint8 batch per camera, (B, H, W, 3) or (B, 3, H, W), in the model's camera order (the
    order the placeholders stand for). state (B, S) and actions (B, chunk, A) raw, normalised with
    `stats` (None: already normalised)."""
    if not images:
        raise ValueError("PI0 needs at least one camera image")
    pixel_values = torch.stack([resize_with_pad(cam, layout.image_size) for cam in images], dim=1)
    batch = pixel_values.shape[0]
    if len(prompts) != batch:
        raise ValueError(f"{len(prompts)} prompts for a batch of {batch} images")
    input_ids, attention_mask = tokenize(prompts, tokenizer, layout.tokens_per_image, len(images),
                                         layout.image_token_id, max_length)
    state_t = normalize_state(state, stats, layout.max_state_dim, mode)
    if state_t.shape[0] != batch:
        raise ValueError(f"state has a batch of {state_t.shape[0]}, the images {batch}")
    actions_t = None
    if actions is not None:
        actions_t = normalize_actions(actions, stats, layout.max_action_dim, mode)
        if actions_t.shape[:2] != (batch, layout.chunk_size):
            raise ValueError(f"actions must be (batch {batch}, chunk {layout.chunk_size}, A), "
                             f"got {tuple(actions_t.shape)}")
    return Pi0Inputs(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                     pixel_attention_mask=torch.ones((batch, len(images)), dtype=torch.bool),
                     state=state_t, actions=actions_t)
