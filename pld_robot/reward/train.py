"""Training the success classifier from episode stores: labelled frames, a held-out split by episode,
balanced batches with augmentation, then the threshold for the target precision, the report and the
checkpoint."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from pld_robot.reward.augment import AugmentConfig, augment
from pld_robot.reward.checkpoint import save_reward_checkpoint
from pld_robot.reward.labels import (LabelConfig, LabelledFrames, balance_mask, episode_labels, load_frames,
                                     open_stores, split_episodes)
from pld_robot.reward.metrics import average_precision, choose_threshold, scores
from pld_robot.reward.model import RewardClassifier, RewardModelConfig, frames_to_input
from pld_robot.reward.report import contact_sheet, plot_pr_curve


@dataclass(frozen=True)
class OptimConfig:
    steps: int = 1500
    batch_size: int = 64  # half positives, half negatives
    lr: float = 1e-3
    weight_decay: float = 1e-4
    target_precision: float = 0.99  # on the held-out frames
    min_threshold: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 2 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("optim: steps >= 1, batch_size >= 2, lr > 0, weight_decay >= 0")
        if not 0.0 < self.target_precision <= 1.0 or not 0.0 < self.min_threshold < 1.0:
            raise ValueError("optim: target_precision must be in (0, 1] and min_threshold in (0, 1)")


@dataclass(frozen=True)
class RewardTrainingConfig:
    model: RewardModelConfig = field(default_factory=RewardModelConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def train_reward(stores: Sequence[str | Path], out: str | Path, config: RewardTrainingConfig,
                 progress: bool = True) -> dict:
    """Train, evaluate on held-out episodes, write the checkpoint folder; returns the metrics."""
    started = time.monotonic()
    c = config
    torch.manual_seed(c.optim.seed)
    readers = open_stores(stores, c.model.cameras)
    episodes = [e for i, r in enumerate(readers) for e in episode_labels(r, i, c.labels)]
    if not episodes:
        raise ValueError(f"no usable episodes in {list(map(str, stores))} (outcomes {list(c.labels.outcomes)}, "
                         f"stage {c.labels.stage_index})")
    train_eps, val_eps = split_episodes(episodes, c.labels)
    if not val_eps or not any(e.has_positive for e in train_eps) or not any(e.has_positive for e in val_eps):
        raise ValueError(f"{len(episodes)} usable episode(s), {sum(e.has_positive for e in episodes)} with success "
                         "frames: need at least two with success frames and one more, so that both the "
                         "training and the held-out episodes contain success")
    train = load_frames(readers, train_eps, c.model.cameras,
                        balance_mask(train_eps, c.labels.max_negative_ratio, c.labels.seed), "training frames", progress)
    val = load_frames(readers, val_eps, c.model.cameras, desc="held-out frames", progress=progress)
    model = RewardClassifier(c.model)
    losses = _fit(model, train, c, progress)
    probs = predict_frames(model, val)
    clear = ~val.ambiguous
    threshold, reached = choose_threshold(val.labels[clear], probs[clear], c.optim.target_precision,
                                          c.optim.min_threshold)
    metrics = {
        "stores": [str(s) for s in stores],
        "episodes": {"train": len(train_eps), "held_out": len(val_eps)},
        "frames": {"train": len(train), "train_positive": train.positives,
                   "held_out": len(val), "held_out_positive": val.positives,
                   "held_out_ambiguous": int(val.ambiguous.sum())},
        "threshold": round(threshold, 4), "target_precision": c.optim.target_precision,
        "target_precision_reached": reached,
        "held_out": scores(val.labels, probs, threshold).as_dict(),
        "held_out_unambiguous": scores(val.labels[clear], probs[clear], threshold).as_dict(),
        "held_out_at_0.5": scores(val.labels, probs, 0.5).as_dict(),
        "average_precision": round(average_precision(val.labels, probs), 4),
        "final_train_loss": round(float(np.mean(losses[-50:])), 4),
        "train_seconds": round(time.monotonic() - started, 1),
        "config": asdict(c),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        plot_pr_curve(val.labels, probs, threshold, c.optim.target_precision, tmp / "pr_curve.png")
        contact_sheet(val, probs, threshold, [str(s) for s in stores], tmp / "misclassified.png")
        metrics["version"] = save_reward_checkpoint(
            model, threshold, out,
            trained_on={"stores": metrics["stores"], "episodes": metrics["episodes"], "stage_index": c.labels.stage_index},
            extra_files={name: tmp / name for name in ("metrics.json", "pr_curve.png", "misclassified.png")})
    return metrics


def _fit(model: RewardClassifier, train: LabelledFrames, c: RewardTrainingConfig, progress: bool) -> list[float]:
    generator = torch.Generator().manual_seed(c.optim.seed)
    rng = np.random.default_rng(c.optim.seed)
    positives, negatives = np.flatnonzero(train.labels), np.flatnonzero(train.labels == 0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=c.optim.lr, weight_decay=c.optim.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=c.optim.lr, total_steps=c.optim.steps,
                                                   pct_start=0.1)
    half = c.optim.batch_size // 2
    losses: list[float] = []
    model.train()
    bar = tqdm(range(c.optim.steps), desc="training reward classifier", unit="step", disable=None if progress else True)  # None: off when not a terminal
    for step in bar:
        rows = np.r_[rng.choice(positives, half), rng.choice(negatives, c.optim.batch_size - half)]
        x = frames_to_input({k: v[rows] for k, v in train.frames.items()}, c.model.cameras, c.model.image_size)
        x = augment(x, c.augment, generator)
        target = torch.as_tensor(train.labels[rows], dtype=torch.float32)
        loss = F.binary_cross_entropy_with_logits(model(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    model.eval()
    return losses


@torch.no_grad()
def predict_frames(model: RewardClassifier, frames: LabelledFrames, batch: int = 128) -> np.ndarray:
    model.eval()
    out = [model.predict({k: v[i:i + batch] for k, v in frames.frames.items()}) for i in range(0, len(frames), batch)]
    return np.concatenate(out)
