"""Reward checkpoints: a folder with the classifier's weights (`model.safetensors`) and `reward.json`
(model config, decision threshold, stage, version, what it was trained on).

A checkpoint is written beside its destination and renamed into place, so a reward_node that polls
the folder for a new version never reads a half-written one. A frozen pretrained tower is not
copied: the checkpoint names its folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file

from pld_robot.config import ConfigError, from_dict
from pld_robot.reward.model import RewardClassifier, RewardModelConfig

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "reward.json"
FORMAT = 1


class RewardCheckpointError(RuntimeError):
    """A reward checkpoint folder is missing, incomplete or inconsistent; the message says which."""


@dataclass
class RewardCheckpoint:
    model: RewardClassifier
    threshold: float  # success when the probability is at or above this
    version: str
    path: Path

    @property
    def config(self) -> RewardModelConfig:
        return self.model.config


def save_reward_checkpoint(model: RewardClassifier, threshold: float, out_dir: str | Path,
                           trained_on: dict | None = None, extra_files: dict[str, Path] | None = None) -> str:
    """Write (or replace) the checkpoint in `out_dir`; returns its version. `extra_files` (name -> file)
    are moved in with it (metrics, plots), so the folder always describes the model it holds."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.trainable_state().items()}
        save_file(weights, tmp / WEIGHTS_FILE, metadata={"format": "pt"})
        digest = hashlib.sha256((tmp / WEIGHTS_FILE).read_bytes()).hexdigest()
        version = f"{time.strftime('%Y%m%d-%H%M%S')}-{digest[:8]}"
        doc = {"format": FORMAT, "version": version, "threshold": float(threshold),
               "model": dataclasses.asdict(model.config), "trained_on": trained_on or {}}
        (tmp / CONFIG_FILE).write_text(json.dumps(doc, indent=2) + "\n")
        for name, source in (extra_files or {}).items():
            shutil.copy2(source, tmp / name)
        tmp.chmod(0o755)  # mkdtemp makes it private
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version


def read_version(path: str | Path) -> str | None:
    """The version of the checkpoint in `path`, or None if there is none (yet): cheap, for polling."""
    try:
        return str(json.loads((Path(path) / CONFIG_FILE).read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_reward_checkpoint(path: str | Path) -> RewardCheckpoint:
    path = Path(path)
    if not path.is_dir():
        raise RewardCheckpointError(f"{path}: no such reward checkpoint folder (train one: pld-robot train-reward)")
    try:
        doc = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise RewardCheckpointError(f"{path}: cannot read {CONFIG_FILE}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RewardCheckpointError(f"{path}: {CONFIG_FILE} is not a format-{FORMAT} reward checkpoint")
    try:
        config = from_dict(RewardModelConfig, doc["model"], where=f"{path / CONFIG_FILE}: model")
        threshold = float(doc["threshold"])
        version = str(doc["version"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise RewardCheckpointError(f"{path}: {CONFIG_FILE} is incomplete or invalid: {exc}") from exc
    if not 0.0 < threshold <= 1.0:
        raise RewardCheckpointError(f"{path}: threshold {threshold} is outside (0, 1]")
    try:
        model = RewardClassifier(config)
    except ValueError as exc:
        raise RewardCheckpointError(f"{path}: {exc}") from exc
    try:
        weights = load_file(path / WEIGHTS_FILE)
    except (OSError, ValueError, RuntimeError) as exc:
        raise RewardCheckpointError(f"{path}: cannot read {WEIGHTS_FILE}: {exc}") from exc
    missing = set(model.trainable_state()) - set(weights)
    unexpected = set(weights) - set(model.trainable_state())
    if missing or unexpected:
        raise RewardCheckpointError(f"{path}: {WEIGHTS_FILE} does not match its config "
                                    f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    model.load_state_dict(weights, strict=False)  # strict=False: the frozen tower came from its own folder
    return RewardCheckpoint(model.eval(), threshold, version, path)


def _swap_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        tmp.rename(out)
        return
    if not (out / CONFIG_FILE).is_file() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not a reward checkpoint; choose another --out")
    old = out.with_name(f".{out.name}.old-{time.monotonic_ns()}")
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
