"""Saving the residual learner, and handing its actor to the robot.

`save_agent` / `load_agent`: the whole agent (networks, target critics, optimizers, temperature,
step counters) in one file, `<folder>/agent.pt`, so that a learner resumes where it stopped.

`export_actor` / `load_latest_actor`: the residual policy alone (encoder, actor, action bounds, xi) as
`<folder>/actor-<version>.safetensors`, versions 1, 2, 3, ... for the residual node to hot-load.
Every file is written beside its destination under a name no reader matches and renamed into
place (os.replace is atomic), so a reader sees a whole file or none. A frozen pretrained vision
tower is not copied: the files name its folder (the config's pretrained_path).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from pld_robot.config import ConfigError, from_dict
from pld_robot.rl.config import EncoderConfig, NetworkConfig, ResidualSACConfig
from pld_robot.rl.policy import ResidualPolicy, build_policy
from pld_robot.rl.sac import ResidualSAC
from pld_robot.robots.action_spec import ActionSpec

AGENT_FILE = "agent.pt"
AGENT_FORMAT = 1
ACTOR_FORMAT = "1"
ACTOR_NAME = re.compile(r"^actor-(\d+)\.safetensors$")


class RLCheckpointError(RuntimeError):
    """A saved agent or exported actor is missing, incomplete or inconsistent; the message says which."""


def save_agent(agent: ResidualSAC, folder: str | Path) -> Path:
    folder = Path(folder)
    doc = {
        "format": AGENT_FORMAT,
        "config": dataclasses.asdict(agent.config),
        "action_spec": dataclasses.asdict(agent.action_spec),
        "state_dim": agent.state_dim,
        "policy": agent.policy.trainable_state(),
        "critic": agent.critic.state_dict(),
        "critic_target": agent.critic_target.state_dict(),
        "log_temperature": agent.log_temperature.detach(),
        "optimizers": {"critic": agent.critic_optimizer.state_dict(), "actor": agent.actor_optimizer.state_dict(),
                       "temperature": agent.temperature_optimizer.state_dict()},
        "counters": {"env_steps": agent.env_steps, "critic_updates": agent.critic_updates,
                     "actor_updates": agent.actor_updates},
    }
    path = folder / AGENT_FILE
    _write_atomically(path, lambda tmp: torch.save(doc, tmp))
    return path


def load_agent(folder: str | Path, device: str | torch.device = "cpu") -> ResidualSAC:
    path = Path(folder) / AGENT_FILE
    try:
        doc = torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise RLCheckpointError(f"{path}: cannot read a saved agent: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != AGENT_FORMAT:
        raise RLCheckpointError(f"{path}: not a format-{AGENT_FORMAT} residual SAC agent")
    try:
        config = from_dict(ResidualSACConfig, doc["config"], where=f"{path}: config")
        spec = from_dict(ActionSpec, doc["action_spec"], where=f"{path}: action_spec")
        agent = ResidualSAC(config, spec, int(doc["state_dim"]), device)
        _load_policy(agent.policy, doc["policy"], path)
        agent.critic.load_state_dict(doc["critic"])
        agent.critic_target.load_state_dict(doc["critic_target"])
        with torch.no_grad():
            agent.log_temperature.copy_(doc["log_temperature"])
        agent.critic_optimizer.load_state_dict(doc["optimizers"]["critic"])
        agent.actor_optimizer.load_state_dict(doc["optimizers"]["actor"])
        agent.temperature_optimizer.load_state_dict(doc["optimizers"]["temperature"])
        counters = doc["counters"]
    except (KeyError, TypeError, ValueError, RuntimeError, ConfigError) as exc:
        raise RLCheckpointError(f"{path}: incomplete or inconsistent: {exc}") from exc
    agent.env_steps, agent.critic_updates, agent.actor_updates = (
        int(counters["env_steps"]), int(counters["critic_updates"]), int(counters["actor_updates"]))
    agent.policy.scale = config.residual_scale.at(agent.env_steps)
    return agent


@dataclass
class ExportedActor:
    version: int
    policy: ResidualPolicy  # in eval mode; policy.residual(obs, base_action) is the correction to add
    path: Path
    action_spec: ActionSpec  # what it was trained for: the robot checks the names before using it


def export_actor(agent: ResidualSAC, folder: str | Path, keep: int = 5) -> int:
    """Write the agent's residual policy as the next version; keep the newest `keep` versions. Returns
    the version (1 for the first export)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    folder = Path(folder)
    version = (latest_actor_version(folder) or 0) + 1
    weights = {k: v.detach().cpu().contiguous() for k, v in agent.policy.trainable_state().items()}
    metadata = {"format": ACTOR_FORMAT, "version": str(version), "residual_scale": repr(agent.policy.scale),
                "state_dim": str(agent.state_dim),
                "residual_dims": json.dumps(list(agent.config.residual_scale.dims)),
                "encoder": json.dumps(dataclasses.asdict(agent.config.encoder)),
                "networks": json.dumps(dataclasses.asdict(agent.config.networks)),
                "action_spec": json.dumps(dataclasses.asdict(agent.action_spec))}
    _write_atomically(folder / _actor_name(version), lambda tmp: save_file(weights, tmp, metadata=metadata))
    for old in sorted(_actor_versions(folder))[:-keep]:
        (folder / _actor_name(old)).unlink(missing_ok=True)
    return version


def latest_actor_version(folder: str | Path) -> int | None:
    """The newest exported version in `folder`, or None: cheap, for polling."""
    versions = _actor_versions(Path(folder))
    return max(versions) if versions else None


def load_latest_actor(folder: str | Path, newer_than: int = 0,
                      device: str | torch.device = "cpu") -> ExportedActor | None:
    """The newest exported actor if its version is above `newer_than`, else None (also when there is
    none yet, or when it was pruned between listing and reading: ask again at the next poll)."""
    version = latest_actor_version(folder)
    if version is None or version <= newer_than:
        return None
    path = Path(folder) / _actor_name(version)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        weights = load_file(path, device=str(device))
    except FileNotFoundError:
        return None
    except (OSError, SafetensorError) as exc:
        raise RLCheckpointError(f"{path}: cannot read an exported actor: {exc}") from exc
    if meta.get("format") != ACTOR_FORMAT:
        raise RLCheckpointError(f"{path}: not a format-{ACTOR_FORMAT} exported actor")
    try:
        spec = from_dict(ActionSpec, json.loads(meta["action_spec"]), where=f"{path}: action_spec")
        policy = build_policy(from_dict(EncoderConfig, json.loads(meta["encoder"]), where=f"{path}: encoder"),
                              from_dict(NetworkConfig, json.loads(meta["networks"]), where=f"{path}: networks"),
                              spec, int(meta["state_dim"]), float(meta["residual_scale"]),
                              json.loads(meta.get("residual_dims", "[]")))  # absent: exported before dims
    except (KeyError, ValueError, ConfigError) as exc:
        raise RLCheckpointError(f"{path}: metadata incomplete or invalid: {exc}") from exc
    _load_policy(policy, weights, path)
    return ExportedActor(version, policy.to(device).eval(), path, spec)


def _load_policy(policy: ResidualPolicy, weights: dict[str, torch.Tensor], path: Path) -> None:
    expected = policy.trainable_state()
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise RLCheckpointError(f"{path}: weights do not match the policy they describe "
                                f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    policy.load_state_dict(weights, strict=False)  # strict=False: a frozen tower came from its own folder


def _actor_name(version: int) -> str:
    return f"actor-{version:06d}.safetensors"


def _actor_versions(folder: Path) -> list[int]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return [int(m.group(1)) for m in map(ACTOR_NAME.match, names) if m]


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write through `write(tmp)` to a hidden file beside `path`, get it onto the disk, rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        tmp.chmod(0o644)  # mkstemp makes it private; the robot's nodes may run as another user
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)  # the rename is durable once its directory is
    try:
        os.fsync(directory)
    finally:
        os.close(directory)

