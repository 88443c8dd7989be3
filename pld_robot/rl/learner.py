"""The residual learner (`pld-robot learn`): tails episode stores, trains residual SAC, exports actors.

    learner = Learner(["robot_a.zarr", "robot_b.zarr"], "runs/pick", load_rl_config(...), LearnerConfig())
    learner.run(stop_event)        # until stop_event is set, or config.max_updates

Phases. Warm-up: until `replay.warmup_episodes` episodes are recorded the base acts alone and the
learner only reads. Then Cal-QL pre-trains the critic on the successful base episodes (if any) and
actor version 1 is exported. Then it trains continuously, paced by the robot: `sac.utd` critic
updates per newly recorded env step, in steps of one env step so that it polls the stores and stops
promptly. A new actor version is exported once the updates for a newly recorded episode are done,
at most every `export_every_s`. Every export is atomic (`checkpoint.export_actor`) and the robot
never waits for the learner: a stopped learner leaves the residual node on the last version.

Data. Every committed episode goes through `episodes.route_episode` (the probe prefix left out, human
steps to the intervention buffer), base episodes too: they are the warm-up. Successful base episodes
(every step the base's), up to `calql.offline_episodes`, also fill the offline buffer that Cal-QL
pre-trains on and RLPD samples half of every batch from; until there is one, batches are all online.

What the learner knows of the robot. The store records the action names and the state size, not the
action bounds; those come from the robot's config (`--robot-config`: its `arm_node.arm.action`), and
default to the Franka end-effector-delta ActionSpec of config/franka.yaml and config/sim.yaml. Every
store must record exactly that ActionSpec's action names and rate, else the learner refuses it.

Resume (`resume=True`): `DIR/agent.pt` has the networks, optimizers and counters; the buffers are
refilled by re-reading the stores. Steps recorded while the learner was stopped fill the buffers but
are not paid for in updates: pacing restarts from the steps recorded now. Stopping during Cal-QL
pre-training saves nothing (a restart pre-trains again).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pld_robot.config import ConfigError, from_dict, load_yaml
from pld_robot.data.layout import EpisodeInfo, Outcome, Source, StoreError, StoreSchema
from pld_robot.episode.modes import Mode
from pld_robot.rl.buffers import MixedSampler, ReplayBuffer
from pld_robot.rl.calql import discounted_returns, pretrain_critic
from pld_robot.rl.checkpoint import (
    AGENT_FILE,
    export_actor,
    latest_actor_version,
    load_agent,
    save_agent,
)
from pld_robot.rl.config import ResidualSACConfig
from pld_robot.rl.episodes import episode_keys, episode_transitions, route_episode
from pld_robot.rl.metrics import EpisodeStats, Means, MetricsLog, Progress
from pld_robot.rl.sac import ResidualSAC
from pld_robot.rl.tail import StoreTail
from pld_robot.robots.action_spec import ActionSpec

log = logging.getLogger(__name__)

PRETRAIN_CHUNK = 50  # Cal-QL updates between checks of the stop flag


@dataclass(frozen=True)
class LearnerConfig:
    """How the learner runs (config/rl/learner.yaml, section `learner:`); what it learns is ResidualSACConfig."""

    poll_s: float = 1.0
    export_every_s: float = 10.0
    save_every_s: float = 300.0
    keep_actors: int = 5
    max_updates: int | None = None  # critic updates of the agent in all (a resumed run counts on); None: no limit
    device: str = "cpu"

    def __post_init__(self):
        for name in ("poll_s", "save_every_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.export_every_s >= 0:
            raise ValueError(f"export_every_s must be >= 0, got {self.export_every_s}")
        if self.keep_actors < 1:
            raise ValueError(f"keep_actors must be >= 1, got {self.keep_actors}")
        if self.max_updates is not None and self.max_updates < 1:
            raise ValueError(f"max_updates must be >= 1 or null, got {self.max_updates}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be cpu, cuda or cuda:N, got '{self.device}'")


def load_learner_config(path: str | Path) -> LearnerConfig:
    data = load_yaml(path)
    if set(data) != {"learner"}:
        raise ConfigError(f"{path}: expected exactly one section, 'learner:', found {sorted(data)}")
    return from_dict(LearnerConfig, data["learner"] or {}, where=f"{path}: learner")


def check_out_folder(out: Path, resume: bool) -> None:
    """A new run needs an empty or new folder; --resume needs a saved agent in it."""
    has_agent = (out / AGENT_FILE).is_file()
    if resume and not has_agent:
        raise ConfigError(f"--out {out}: no {AGENT_FILE} to resume from")
    if not resume and out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = f"holds a learner run ({AGENT_FILE}); pass --resume to continue it" if has_agent \
            else "exists and is not a learner folder"
        raise ConfigError(f"--out {out}: {what}, or choose another folder")


class Learner:
    """The learner's state: the agent, the three buffers, what was read (`episodes`, `recorded_steps`,
    `counts` of transitions per buffer, `skipped`) and the exported `version`. `poll()` reads new
    episodes; `run()` is the whole loop."""

    def __init__(self, stores: Sequence[str | Path], out: str | Path, rl_config: ResidualSACConfig,
                 config: LearnerConfig = LearnerConfig(), action_spec: ActionSpec | None = None,
                 resume: bool = False, progress: bool = False):
        if not stores:
            raise ConfigError("the learner needs at least one episode store")
        if config.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {config.device}: this machine has no CUDA device torch can use")
        self.out, self.config = Path(out), config
        check_out_folder(self.out, resume)
        self.tails = [StoreTail(p) for p in stores]  # a path that is not a store fails here, before any work
        self.agent: ResidualSAC | None = None  # built for the first store's state size, or loaded (resume)
        self._shapes: dict | None = None  # state size and camera sizes every store must share
        self.action_spec = action_spec or ActionSpec()
        self.rl_config = rl_config
        if resume:
            self.agent = load_agent(self.out, config.device)
            if action_spec is not None and action_spec != self.agent.action_spec:
                raise ConfigError(f"{self.out / AGENT_FILE} was trained for {self.agent.action_spec}, "
                                  f"not the given {action_spec}")
            if self.agent.config != rl_config:
                log.warning("%s was trained with a different residual SAC config; continuing with its own",
                            self.out / AGENT_FILE)
            self.action_spec, self.rl_config = self.agent.action_spec, self.agent.config
        replay = self.rl_config.replay
        self.offline = ReplayBuffer(replay.capacity, "offline")
        self.online = ReplayBuffer(replay.capacity, "online")
        self.intervention = ReplayBuffer(replay.capacity, "intervention")
        # RLPD's offline half needs offline data: until a successful base episode arrives, all online
        self.sampler = MixedSampler(self.offline, self.online, self.intervention, self.rl_config.sac.batch_size,
                                    dataclasses.replace(replay, offline_fraction=0.0), seed=self.rl_config.seed)
        self._rng = np.random.default_rng(self.rl_config.seed + 1)  # Cal-QL's offline batches
        self.counts = {"offline": 0, "online": 0, "intervention": 0, "probe": 0}  # transitions
        self.offline_episodes = 0
        self.episodes = 0
        self.recorded_steps = 0
        self._episode_ends: list[int] = []  # recorded_steps at the end of each episode, in arrival order
        self._half_range = (np.asarray(self.action_spec.high) - np.asarray(self.action_spec.low)) / 2
        self.stats, self.means = EpisodeStats(), Means()
        self.metrics = MetricsLog(self.out)
        self.version = latest_actor_version(self.out) or 0
        self.training = False
        self._paid_offset = 0  # recorded steps the updates are not paced on (warm-up; before a resume)
        self._exported_through = 0  # episodes trained on when the current version was exported
        self._exported_updates = -1  # critic updates at the last export
        self._started = time.monotonic()
        self._last_export = self._last_save = -float("inf")
        self._progress = Progress(progress, self.agent.critic_updates if self.agent else 0)
        self._resume_pending = resume  # a saved agent is past warm-up and pre-training

    # --- ingestion ---

    def poll(self) -> int:
        """Read every newly committed episode of every store into the buffers; returns how many."""
        new = 0
        for tail in self.tails:
            tail.open(self._check_schema)
            if self.agent is None:
                continue
            for _, info, steps in tail.new_episodes(episode_keys(self.agent.policy.encoder.obs_keys)):
                self._ingest(info, steps)
                new += 1
        return new

    @property
    def skipped(self) -> int:
        """Episodes that could not be read."""
        return sum(t.skipped for t in self.tails)

    def _check_schema(self, path: Path, schema: StoreSchema) -> None:
        spec = self.action_spec
        if tuple(schema.action_names) != tuple(spec.names):
            raise StoreError(f"{path}: records actions {list(schema.action_names)}, but the learner's action spec "
                             f"has {list(spec.names)} (set --robot-config to the robot's config)")
        if schema.control_hz != spec.control_hz:
            raise StoreError(f"{path}: recorded at {schema.control_hz} Hz, the action spec is for {spec.control_hz} Hz")
        cameras = self.rl_config.encoder.cameras if self.rl_config.encoder.image_encoder != "none" else ()
        missing = [c for c in cameras if c not in schema.cameras]
        if missing:
            raise StoreError(f"{path}: has no camera {missing} (it has {sorted(schema.cameras)}); the residual SAC "
                             "config's encoder.cameras names them")
        # one replay buffer holds every store's steps: the same state size and frame sizes throughout
        shapes = {"state": len(schema.state_names), **{c: dataclasses.astuple(schema.cameras[c]) for c in cameras}}
        if self._shapes is not None and shapes != self._shapes:
            raise StoreError(f"{path}: records state size and (height, width, depth) of cameras {shapes}, "
                             f"but the store(s) read before recorded {self._shapes}")
        self._shapes = shapes
        if self.agent is None:
            self.agent = ResidualSAC(self.rl_config, spec, shapes["state"], self.config.device)
        elif shapes["state"] != self.agent.state_dim:
            raise StoreError(f"{path}: records {shapes['state']} state dimensions, the learner's agent takes "
                             f"{self.agent.state_dim}")

    def _ingest(self, info: EpisodeInfo, steps: dict[str, np.ndarray]) -> None:
        obs_keys, gamma = self.agent.policy.encoder.obs_keys, self.rl_config.sac.gamma
        success = info.outcome == Outcome.SUCCESS.value
        source = np.asarray(steps["source"])
        if (success and info.mode == Mode.BASE.value and (source == Source.PROBE).all()
                and self.offline_episodes < self.rl_config.calql.offline_episodes):
            transitions, _ = episode_transitions(steps, info, obs_keys, self.rl_config.sac)
            self.offline.add(transitions)
            self.counts["offline"] += len(transitions["action"])
            self.offline_episodes += 1
            self.sampler.config = self.rl_config.replay
        for key, n in route_episode(steps, info, obs_keys, self.online, self.intervention, self.rl_config.sac).items():
            self.counts[key] += n
        length = len(source)
        self.episodes += 1
        self.recorded_steps += length
        self._episode_ends.append(self.recorded_steps)
        rewards = np.zeros(length, np.float32)
        rewards[-1:] = float(success)
        residual = source == Source.RESIDUAL
        magnitude = float(np.mean(np.abs(steps["residual_action"][residual]) / self._half_range)) \
            if residual.any() else None
        self.stats.add(success, float(discounted_returns(rewards, gamma)[0]) if length else 0.0, magnitude)

    # --- the loop ---

    def run(self, stop: threading.Event | None = None) -> dict:
        """Learn until `stop` is set or `max_updates` is reached; then save the agent and export the
        last actor. Returns `summary()`."""
        stop = stop or threading.Event()
        try:
            self._loop(stop)
        finally:
            self._finish()
        return self.summary()

    def _loop(self, stop: threading.Event) -> None:
        next_poll = time.monotonic()
        while not stop.is_set() and not self._budget_spent():
            if time.monotonic() >= next_poll:
                self.poll()
                next_poll = time.monotonic() + self.config.poll_s
            if not self.training and not self._start_training(stop):
                self._show()
                stop.wait(max(next_poll - time.monotonic(), 0.0))
                continue
            export_due = self._trained_episodes() > self._exported_through
            if self._pending_steps() > 0:
                self.means.add(self.agent.update(self.sampler.sample, env_steps=1))
            else:  # nothing to learn from until the next poll, or an export held back by export_every_s
                wake = min(next_poll, self._export_time()) if export_due else next_poll
                stop.wait(max(wake - time.monotonic(), 0.0))
            if export_due and time.monotonic() >= self._export_time():
                self._export()
            if time.monotonic() - self._last_save >= self.config.save_every_s:
                self._save()
            self._show()

    def _start_training(self, stop: threading.Event) -> bool:
        """After warm-up: Cal-QL pre-training and actor version 1 (on resume: neither). False while
        still warming up, or if stopped during pre-training."""
        if self._resume_pending:
            self._resume_pending = False
            self._exported_updates = self.agent.critic_updates  # its actor is the last one exported at exit
            log.info("resumed from %s: %d critic updates, actor version %d", self.out / AGENT_FILE,
                     self.agent.critic_updates, self.version)
        else:
            warmup = self.rl_config.replay.warmup_episodes
            if self.agent is None or self.episodes < warmup or not len(self.online):
                return False
            log.info("warm-up done: %d episode(s), %d steps; %d successful base episode(s) for Cal-QL",
                     self.episodes, self.recorded_steps, self.offline_episodes)
            if not self._pretrain(stop):
                return False
        self.training = True
        self._paid_offset = self.recorded_steps - self.agent.env_steps
        if not self.version:
            self._export()
        self._exported_through = self._trained_episodes()
        return True

    def _pretrain(self, stop: threading.Event) -> bool:
        calql = self.rl_config.calql
        total = calql.pretrain_updates if len(self.offline) else 0
        if total:
            log.info("Cal-QL critic pre-training: %d updates on %d offline transitions", total, len(self.offline))

        def sample() -> dict:
            return self.offline.sample(self.rl_config.sac.batch_size, self._rng)

        for done in range(0, total, PRETRAIN_CHUNK):
            if stop.is_set():
                log.warning("stopped during Cal-QL pre-training: nothing saved; a restart pre-trains again")
                return False
            self.means.add(pretrain_critic(self.agent, sample, calql, updates=min(PRETRAIN_CHUNK, total - done)))
            self._show("pre-training")
        return True

    def _pending_steps(self) -> int:
        """Recorded env steps whose updates are still due."""
        return self.recorded_steps - self._paid_offset - self.agent.env_steps

    def _trained_episodes(self) -> int:
        return bisect.bisect_right(self._episode_ends, self._paid_offset + self.agent.env_steps)

    def _export_time(self) -> float:
        return self._last_export + self.config.export_every_s

    def _budget_spent(self) -> bool:
        limit = self.config.max_updates
        return limit is not None and self.training and self.agent.critic_updates >= limit

    def _export(self) -> None:
        self.version = export_actor(self.agent, self.out, keep=self.config.keep_actors)
        self._last_export = time.monotonic()
        self._exported_through = self._trained_episodes()
        self._exported_updates = self.agent.critic_updates
        self.metrics.append(self._row())
        self.metrics.plot(force=self.version == 1)

    def _save(self) -> None:
        save_agent(self.agent, self.out)
        self._last_save = time.monotonic()

    def _finish(self) -> None:
        try:
            if self.training:
                if self.agent.critic_updates != self._exported_updates:
                    self._export()
                self._save()
                self.metrics.plot(force=True)
                log.info("saved %s; actor version %d in %s", self.out / AGENT_FILE, self.version, self.out)
        finally:
            self._progress.close()

    def _row(self) -> dict[str, float]:
        a = self.agent
        return {"time": time.time(), "elapsed_s": time.monotonic() - self._started, "actor_version": self.version,
                "episodes": self.episodes, "recorded_steps": self.recorded_steps, "env_steps": a.env_steps,
                "critic_updates": a.critic_updates, "actor_updates": a.actor_updates, **self.stats.as_row(),
                "offline_transitions": len(self.offline), "online_transitions": len(self.online),
                "intervention_transitions": len(self.intervention), **self.means.take(),
                "temperature": a.temperature.item()}  # the current value, not a batch mean

    def _show(self, phase: str | None = None) -> None:
        if phase is None:
            phase = "learning" if self.training else \
                f"warm-up {self.episodes}/{self.rl_config.replay.warmup_episodes}"
        success = self.stats.as_row()["success_rate"]
        self._progress.show(phase, self.agent.critic_updates if self.agent else 0, episodes=self.episodes,
                            steps=self.recorded_steps, success=f"{success:.2f}", actor=self.version)

    def summary(self) -> dict:
        a = self.agent
        return {"episodes": self.episodes, "recorded_steps": self.recorded_steps, "skipped_episodes": self.skipped,
                "env_steps": a.env_steps if a else 0, "critic_updates": a.critic_updates if a else 0,
                "actor_updates": a.actor_updates if a else 0, "actor_version": self.version,
                "transitions": dict(self.counts)}
