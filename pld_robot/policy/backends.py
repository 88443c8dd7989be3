"""Policy backends by name, for `pld-robot serve-policy` and in-process use."""

from __future__ import annotations

from pathlib import Path

from pld_robot.config import ConfigError, from_dict, load_yaml
from pld_robot.policy.spec import Policy

BACKENDS = ("pi0", "scripted", "replay")


def load_policy(backend: str, *, checkpoint: str | Path | None = None, episode: int = 0,
                config: str | Path | None = None, device: str | None = None) -> Policy:
    """`pi0`: a checkpoint folder (Hugging Face or LeRobot layout). `scripted`: the sim expert, tuned by
    an optional YAML of ScriptedPolicyConfig fields. `replay`: episode `episode` of the store `checkpoint`."""
    if backend == "pi0":
        if checkpoint is None:
            raise ConfigError("the pi0 backend needs --checkpoint DIR")
        from pld_robot.policy.pi0.backend import Pi0Policy

        return Pi0Policy(checkpoint, device=device)
    if backend == "scripted":
        from pld_robot.policy.scripted import ScriptedPolicy, ScriptedPolicyConfig

        data = load_yaml(config) if config else {}
        return ScriptedPolicy(from_dict(ScriptedPolicyConfig, data, where=str(config or "scripted")))
    if backend == "replay":
        if checkpoint is None:
            raise ConfigError("the replay backend needs --checkpoint STORE (an episode store)")
        from pld_robot.policy.replay import ReplayPolicy

        return ReplayPolicy(checkpoint, episode)
    raise ConfigError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
