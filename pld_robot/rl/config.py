"""Residual SAC configuration: PLD's numbers (arXiv 2511.00091, Table 5) as frozen dataclass defaults.

`config/rl/residual_sac.yaml` spells out exactly these defaults (tests/test_rl.py checks that the two
agree); `load_rl_config` reads it, or an edited copy, with the project's strict typed loader. Where
the paper is silent, the default follows HIL-SERL / RLPD / DrQ / Cal-QL practice and the comment
says whose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pld_robot.config import from_dict, load_yaml

IMAGE_ENCODERS = ("none", "cnn", "pretrained")


@dataclass(frozen=True)
class EncoderConfig:
    """What the actor and critic see of an observation: image features and/or proprioception."""

    image_encoder: str = "cnn"  # none | cnn (from scratch) | pretrained (frozen tower at pretrained_path)
    cameras: tuple[str, ...] = ("front", "wrist")  # store camera names, in this order
    image_size: int = 128  # frames are resized to this square size (the sim cameras' size)
    channels: tuple[int, ...] = (16, 32, 64, 64)  # cnn: one stride-2 conv block per entry
    image_features: int = 50  # DrQ: image features projected to 50 dims (LayerNorm + tanh)
    shift_px: int = 4  # DrQ random shift (pad and crop) during updates; 0: none
    pretrained_path: str = ""  # a local Hugging Face folder, for image_encoder: pretrained
    use_state: bool = True  # proprioception (the store's `state`)
    state_hidden: int = 0  # 0: proprioception passed as is; > 0: one Linear + LayerNorm + tanh this wide

    def __post_init__(self):
        if self.image_encoder not in IMAGE_ENCODERS:
            raise ValueError(f"image_encoder must be one of {list(IMAGE_ENCODERS)}, not '{self.image_encoder}'")
        if self.image_encoder == "none" and not self.use_state:
            raise ValueError("image_encoder is 'none' and use_state is false: the networks would see nothing")
        if self.image_encoder != "none" and not self.cameras:
            raise ValueError(f"cameras is empty but image_encoder is '{self.image_encoder}'")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras repeat: {list(self.cameras)}")
        if self.image_encoder == "pretrained" and not self.pretrained_path:
            raise ValueError("image_encoder 'pretrained' needs pretrained_path (a local Hugging Face folder)")
        if self.image_size < 32:
            raise ValueError(f"image_size {self.image_size} is below the minimum of 32")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be positive, got {list(self.channels)}")
        if self.image_features < 1:
            raise ValueError(f"image_features must be positive, got {self.image_features}")
        if self.shift_px < 0 or self.state_hidden < 0:
            raise ValueError(f"shift_px ({self.shift_px}) and state_hidden ({self.state_hidden}) must be >= 0")


@dataclass(frozen=True)
class NetworkConfig:
    hidden: tuple[int, ...] = (256, 256, 256)  # PLD: 3 layers of 256 with LayerNorm, actor and critics
    log_std_min: float = -5.0  # DrQ's bounds on the actor's log standard deviation
    log_std_max: float = 2.0

    def __post_init__(self):
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must be positive layer widths, got {list(self.hidden)}")
        if not self.log_std_min < self.log_std_max:
            raise ValueError(f"log_std_min ({self.log_std_min}) must be below log_std_max ({self.log_std_max})")


@dataclass(frozen=True)
class ResidualScaleConfig:
    """xi in a = a_base + xi * delta, in normalized action units (the action bounds map to [-1, 1])."""

    start: float = 0.5  # PLD default (0.1 for some benchmarks)
    end: float = 0.5
    ramp_steps: int = 0  # env steps over which xi goes linearly from start to end; 0: end from the start
    # The action names the residual may change; the others it leaves as the base sent them. Empty: all
    # (PLD). HIL-SERL acts in x, y, z and the gripper on tasks that need no turn of the hand.
    dims: tuple[str, ...] = ()

    def __post_init__(self):
        if len(set(self.dims)) != len(self.dims):
            raise ValueError(f"dims repeat: {list(self.dims)}")
        for name in ("start", "end"):
            if not 0.0 <= getattr(self, name) <= 2.0:
                raise ValueError(f"{name} must be in [0, 2] (a fraction of the action range), "
                                 f"got {getattr(self, name)}")
        if self.ramp_steps < 0:
            raise ValueError(f"ramp_steps must be >= 0, got {self.ramp_steps}")

    def at(self, step: int) -> float:
        if self.ramp_steps == 0:
            return self.end
        progress = min(max(step, 0) / self.ramp_steps, 1.0)
        return self.start + (self.end - self.start) * progress


@dataclass(frozen=True)
class SACConfig:
    batch_size: int = 256
    lr: float = 3e-4  # actor, critics and temperature
    gamma: float = 0.99
    n_step: int = 3  # not in PLD: n-step returns, as DrQ-v2; see rl/episodes.py
    tau: float = 0.005  # Polyak rate of the target critics
    utd: int = 2  # critic updates per env step; with critic_actor_ratio 2, one actor update per step (HIL-SERL)
    critic_actor_ratio: int = 2  # PLD: 2 critic updates per actor update
    initial_temperature: float = 1.0
    target_entropy: float | None = None  # None: -|A|
    # HIL-SERL's SAC (and Cal-QL's reference code) leave the entropy bonus out of the TD target: with a
    # sparse 0/1 reward and temperature 1, -alpha log pi summed over the horizon swamps the reward.
    backup_entropy: bool = False
    # Not in PLD: adds this times the mean squared delta (normalized, before xi) to the actor loss, so the
    # residual stays at zero wherever the critic sees no gain in moving it (bench/residual_rl.py needed it).
    residual_l2: float = 0.0

    def __post_init__(self):
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}")
        if self.lr <= 0 or self.initial_temperature <= 0:
            raise ValueError(f"lr ({self.lr}) and initial_temperature ({self.initial_temperature}) must be positive")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")
        if not self.residual_l2 >= 0:
            raise ValueError(f"residual_l2 must be >= 0, got {self.residual_l2}")
        if not isinstance(self.n_step, int) or self.n_step < 1:
            raise ValueError(f"n_step must be an integer >= 1, got {self.n_step!r}")
        if self.utd < 1 or self.critic_actor_ratio < 1:
            raise ValueError(f"utd ({self.utd}) and critic_actor_ratio ({self.critic_actor_ratio}) must be >= 1")


@dataclass(frozen=True)
class CalQLConfig:
    """Critic pre-training on successful base rollouts (Cal-QL, Nakamoto et al. 2023)."""

    weight: float = 5.0  # of the conservative regularizer (Cal-QL's reference code default)
    sampled_actions: int = 10  # per state, from each of: uniform, policy at s, policy at s' (Cal-QL)
    temperature: float = 1.0  # of the logsumexp over sampled actions (CQL)
    offline_episodes: int = 50  # PLD: ~50 successful base rollouts
    pretrain_updates: int = 5000  # critic updates before online RL; not in the paper

    def __post_init__(self):
        if self.weight < 0 or self.temperature <= 0:
            raise ValueError(f"weight ({self.weight}) must be >= 0 and temperature ({self.temperature}) positive")
        if self.sampled_actions < 1 or self.offline_episodes < 0 or self.pretrain_updates < 0:
            raise ValueError("sampled_actions must be >= 1, offline_episodes and pretrain_updates >= 0")


@dataclass(frozen=True)
class ReplayConfig:
    capacity: int = 250_000  # transitions per buffer
    offline_fraction: float = 0.5  # RLPD symmetric sampling: half of every batch from the offline buffer
    # Human steps (HIL-SERL) get their own share, taken from the online half; while the intervention
    # buffer is empty its share goes to the online buffer. Not in the paper.
    intervention_fraction: float = 0.25
    warmup_episodes: int = 100  # PLD (sim): base-only episodes before the residual acts

    def __post_init__(self):
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {self.capacity}")
        for name in ("offline_fraction", "intervention_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.offline_fraction + self.intervention_fraction > 1.0:
            raise ValueError(f"offline_fraction ({self.offline_fraction}) + intervention_fraction "
                             f"({self.intervention_fraction}) exceed 1")
        if self.warmup_episodes < 0:
            raise ValueError(f"warmup_episodes must be >= 0, got {self.warmup_episodes}")


@dataclass(frozen=True)
class ResidualSACConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    networks: NetworkConfig = field(default_factory=NetworkConfig)
    residual_scale: ResidualScaleConfig = field(default_factory=ResidualScaleConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    calql: CalQLConfig = field(default_factory=CalQLConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    seed: int = 0  # network initialisation


def load_rl_config(path: str | Path) -> ResidualSACConfig:
    return from_dict(ResidualSACConfig, load_yaml(path), where=str(path))
