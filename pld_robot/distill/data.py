"""The SFT batches: SFTDataset samples of the selected episodes, assembled into PI0 inputs in the
DataLoader workers with the same preprocessing the policy server runs (pld_robot.policy.pi0.preprocess).

    loader = make_loader(dataset, indices, collate, batch_size, rank, world, seed, start_step, workers)
    for batch in loader:                       # {"inputs": model kwargs with actions, "action_is_pad": (B, chunk)}

Batches come from StepBatchSampler: step s of the run takes positions [s * G, (s + 1) * G) of an endless
sequence of per-epoch shuffles (G = batch size x world size), rank r the r-th slice of those. So a
resumed run sees exactly the batches an uninterrupted one would have, and the ranks of a DDP run split
every global batch without overlap (what DistributedSampler does, minus its per-epoch restart).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from pld_robot.data.layout import rgb_key
from pld_robot.policy.pi0.preprocess import Pi0Layout, assemble_inputs


class StepBatchSampler(Sampler[list[int]]):
    def __init__(self, size: int, batch_size: int, *, rank: int = 0, world: int = 1, seed: int = 0,
                 start_step: int = 0, steps: int):
        if size < 1:
            raise ValueError("no samples to train on")
        self.size, self.batch_size, self.rank, self.world = size, batch_size, rank, world
        self.seed, self.start_step, self.steps = seed, start_step, steps
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def epoch(self, step: int) -> float:
        return step * self.batch_size * self.world / self.size

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.size)}
        return self._perms[epoch]

    def batch(self, step: int) -> list[int]:
        first = (step * self.world + self.rank) * self.batch_size
        return [int(self._perm(p // self.size)[p % self.size]) for p in range(first, first + self.batch_size)]

    def __iter__(self):
        for step in range(self.start_step, self.steps):
            yield self.batch(step)


class Pi0Collate:
    """SFTDataset items -> model inputs. Picklable: runs in the DataLoader's worker processes."""

    def __init__(self, cameras: Sequence[str], tokenizer: Any, layout: Pi0Layout, default_prompt: str,
                 max_prompt_tokens: int | None = None):
        self.keys = [rgb_key(c) for c in cameras]
        self.tokenizer, self.layout = tokenizer, layout
        self.default_prompt, self.max_prompt_tokens = default_prompt, max_prompt_tokens

    def __call__(self, items: list[dict]) -> dict:
        images = [torch.stack([item[key] for item in items]) for key in self.keys]
        prompts = [item["prompt"] or self.default_prompt for item in items]
        state = torch.stack([item["state"] for item in items])  # normalised by the dataset already
        actions = torch.stack([item["action"] for item in items])
        inputs = assemble_inputs(images, prompts, state, self.layout, self.tokenizer, None, actions=actions,
                                 max_length=self.max_prompt_tokens)
        return {"inputs": inputs.model_kwargs(), "action_is_pad": torch.stack([item["action_is_pad"] for item in items])}


def make_loader(dataset: Dataset, indices: np.ndarray, collate: Pi0Collate, sampler: StepBatchSampler,
                num_workers: int, pin_memory: bool = False) -> DataLoader:
    subset = Subset(dataset, indices.tolist())
    return DataLoader(subset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                      pin_memory=pin_memory, persistent_workers=False,
                      prefetch_factor=4 if num_workers else None)
