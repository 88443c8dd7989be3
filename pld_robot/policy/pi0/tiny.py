"""A tiny random PI0 checkpoint, built offline in a second: the real loading, preprocessing and serving
code runs on it where a real PI0 (3.5 B parameters, a download) cannot, in tests, the sim and the
distill stage's smoke runs.

    build_tiny_pi0(tmp / "pi0", {"front": (96, 128)}, state_names, action_names, layout="lerobot")

The network is PI0's with every size cut down (a 1-layer SigLIP seeing 2 x 2 patches, a 2-layer Gemma
and action expert), the tokenizer a word-level one over a small robot-task vocabulary with PaliGemma's
special tokens, the statistics made up. Its weights are random but larger than transformers' init
(std 0.02), so every input visibly moves the actions and a preprocessing mistake shows in a test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
from transformers import PI0Config, PI0ForConditionalGeneration, PreTrainedTokenizerFast

from pld_robot.data.normalization import KeyStats, NormStats
from pld_robot.policy.pi0.checkpoint import Layout, PolicyInfo, save_checkpoint

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<image>")  # PaliGemma's pad/eos/bos ids are 0/1/2
TINY_WORDS = ("pick", "up", "place", "put", "lift", "grasp", "push", "move", "stack", "open", "close", "the", "a",
              "it", "cube", "block", "bowl", "plate", "drawer", "gripper", "red", "green", "blue", "yellow",
              "on", "in", "into", "to", "of", "and", "left", "right", ".", ",")
HIDDEN_LAYERS = 2  # the action expert reads the VLM's key/value cache layer by layer: same depth


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level, lower-cased, punctuation and "\\n" as tokens of their own; unknown words -> <unk>."""
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, "\n", *TINY_WORDS))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
        pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
        pre_tokenizers.Punctuation(behavior="isolated"),
    ])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>", extra_special_tokens=["<image>"])


def tiny_pi0_config(vocab_size: int, image_token_id: int, *, image_size: int = 32, patch_size: int = 16,
                    chunk_size: int = 4, max_state_dim: int = 8, max_action_dim: int = 8,
                    num_inference_steps: int = 10) -> PI0Config:
    """PI0's architecture at toy size: (image_size // patch_size) ** 2 tokens per image."""
    gemma = dict(model_type="gemma", num_hidden_layers=HIDDEN_LAYERS, num_attention_heads=2, num_key_value_heads=1,
                 head_dim=16)
    return PI0Config(
        vlm_config={"text_config": {**gemma, "hidden_size": 32, "intermediate_size": 64, "vocab_size": vocab_size},
                    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 16, "intermediate_size": 32,
                                      "patch_size": patch_size, "image_size": image_size, "num_hidden_layers": 1,
                                      "num_attention_heads": 2, "vocab_size": vocab_size, "vision_use_head": False},
                    "projection_dim": 32, "image_token_id": image_token_id},
        dit_config={**gemma, "hidden_size": 16, "intermediate_size": 32},
        chunk_size=chunk_size, max_state_dim=max_state_dim, max_action_dim=max_action_dim,
        num_inference_steps=num_inference_steps)


def tiny_stats(state_names: Sequence[str], action_names: Sequence[str], seed: int = 0) -> NormStats:
    """Made-up statistics (mean ~ N(0, 1), std in [0.5, 2]), so that unnormalising is not the identity."""
    rng = np.random.default_rng(seed)

    def key(names: Sequence[str]) -> KeyStats:
        mean = rng.normal(size=len(names)).astype(np.float32)
        std = rng.uniform(0.5, 2.0, size=len(names)).astype(np.float32)
        return KeyStats(mean=mean, std=std, q01=mean - 2.33 * std, q99=mean + 2.33 * std, names=tuple(names))

    return NormStats(keys={"state": key(state_names), "action": key(action_names)}, count=0, episodes=0,
                     store="made up by build_tiny_pi0")


def build_tiny_pi0(out_dir: str | Path, cameras: Mapping[str, tuple[int, int]], state_names: Sequence[str],
                   action_names: Sequence[str], *, control_hz: float = 10.0, prompt: str = "pick up the cube",
                   chunk_size: int = 4, chunk_length: int | None = None, max_state_dim: int = 8,
                   max_action_dim: int = 8, image_size: int = 32, patch_size: int = 16,
                   num_inference_steps: int = 10, weight_std: float = 0.3, stats: NormStats | None = None,
                   seed: int = 0, layout: Layout = "hf") -> Path:
    """Write a tiny random PI0 checkpoint for `cameras` (name -> (height, width), in model order) to
    `out_dir` in `layout`; the same `seed` gives the same weights. Returns `out_dir`."""
    tokenizer = build_tiny_tokenizer()
    config = tiny_pi0_config(len(tokenizer), tokenizer.convert_tokens_to_ids("<image>"), image_size=image_size,
                             patch_size=patch_size, chunk_size=chunk_size, max_state_dim=max_state_dim,
                             max_action_dim=max_action_dim, num_inference_steps=num_inference_steps)
    model = PI0ForConditionalGeneration(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if param.ndim >= 2:  # matrices and embeddings; norms keep their unit scale, biases zero
                param.normal_(0.0, weight_std, generator=generator)
    info = PolicyInfo(cameras=dict(cameras), state_names=tuple(state_names), action_names=tuple(action_names),
                      control_hz=control_hz, prompt=prompt, chunk_length=chunk_length)
    return save_checkpoint(model, tokenizer, stats or tiny_stats(state_names, action_names, seed), info,
                           out_dir, layout=layout)
