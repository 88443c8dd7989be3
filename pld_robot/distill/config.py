"""DistillConfig: what `pld-robot distill` trains on and how (config/distill/pi0.yaml, section
`distill:`).

    config = load_distill_config(shipped_config("distill/pi0.yaml"))
    config = dataclasses.replace(config, steps=2000)       # command-line overrides

Defaults follow PLD (SFT of the VLA on successful episodes, LoRA rank 32) and openpi's pi0 fine-tuning
recipe (AdamW, betas 0.9/0.95, weight decay 1e-10, warmup then cosine decay, gradient norm clipped at 1,
bf16 on a GPU) where PLD says nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pld_robot.config import ConfigError, from_dict, load_yaml
from pld_robot.data.normalization import StdFloor

Interventions = Literal["keep", "drop_steps", "drop_episodes"]
StatsChoice = Literal["auto", "base", "recompute"]


@dataclass(frozen=True)
class SelectionConfig:
    """Which episodes (and steps) of the stores become SFT samples."""

    outcomes: list[str] | None = field(default_factory=lambda: ["success"])  # None: any outcome
    # the PLD stage an episode was recorded in (EpisodeInfo.mode: base, residual, hybrid, teleop); None: any
    modes: list[str] | None = None
    # keep an episode only if it has a step from one of these sources (probe, residual, human); None: any
    sources: list[str] | None = None
    # human takeovers (source human): keep them (HIL-SERL: the human's action is the executed one),
    # drop the samples that start on a human step, or drop every episode with a human step
    interventions: Interventions = "keep"
    max_episodes: int | None = None  # the most recent ones of each store first; None: all

    def __post_init__(self):
        if self.max_episodes is not None and self.max_episodes < 1:
            raise ValueError(f"max_episodes must be >= 1 or null, got {self.max_episodes}")


@dataclass(frozen=True)
class LoraConfig:
    rank: int = 32
    alpha: float = 32.0  # scale alpha / rank = 1, as openpi's LoRA variants
    dropout: float = 0.0
    # LoRA on the attention and MLP projections of the VLM's Gemma and of the action expert; the small
    # state / action / time projections around the expert are trained in full (they are new for a new
    # robot), as openpi does
    vision: Literal["frozen", "lora", "full"] = "lora"  # the SigLIP tower

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"lora.rank must be >= 1, got {self.rank}")
        if not self.alpha > 0:
            raise ValueError(f"lora.alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class DistillConfig:
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    finetune: Literal["lora", "full"] = "lora"
    lora: LoraConfig = field(default_factory=LoraConfig)
    # normalisation statistics: auto keeps the base checkpoint's when it was trained on the same
    # state/action names (continuing a fine-tuned model), else recomputes them from the selected episodes
    stats: StatsChoice = "auto"
    std_floor: StdFloor = field(default_factory=StdFloor)  # of recomputed statistics (normalization.StdFloor)
    norm_mode: Literal["mean_std", "quantile"] | None = None  # None: the base checkpoint's
    cameras: list[str] | None = None  # store cameras in model order; None: the base's (else the store's)
    steps: int = 30000  # optimizer steps in all (a resumed run counts on)
    batch_size: int = 32  # per process (GPU); the global batch is batch_size x world size
    lr: float = 2.5e-5
    min_lr: float = 2.5e-6  # the cosine decays to this at `steps`
    warmup_steps: int = 1000
    weight_decay: float = 1e-10
    betas: tuple[float, float] = (0.9, 0.95)
    max_grad_norm: float = 1.0
    bf16: bool = True  # autocast in bfloat16 on CUDA (never on the CPU)
    gradient_checkpointing: bool = True  # of the vision tower, when it trains
    num_workers: int = 4  # DataLoader worker processes per training process
    save_every: int = 1000  # steps between training-state saves (resume); also on Ctrl-C
    log_every: int = 10  # steps between metrics rows
    seed: int = 0
    device: str = "auto"  # auto (CUDA when there is one) | cpu | cuda | cuda:N; torchrun: cuda:LOCAL_RANK

    def __post_init__(self):
        for name in ("steps", "batch_size", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.num_workers < 0:
            raise ValueError("warmup_steps and num_workers must be >= 0")
        if not self.lr > 0 or not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if not self.max_grad_norm > 0 or self.weight_decay < 0:
            raise ValueError("max_grad_norm must be positive and weight_decay >= 0")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {self.betas}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got '{self.device}'")


def load_distill_config(path: str | Path) -> DistillConfig:
    data = load_yaml(path)
    if set(data) != {"distill"}:
        raise ConfigError(f"{path}: expected exactly one section, 'distill:', found {sorted(data)}")
    return from_dict(DistillConfig, data["distill"] or {}, where=f"{path}: distill")
