"""The rollout state machine: homing -> waiting for reset -> running -> ended -> committing -> homing.

Pure logic. The shell (orchestrator_node) feeds it ticks and events and carries out its plans: home
the arm, send a command, begin / end an episode in the store. A fault (policy server gone, camera
stale, arm error) during an episode stops the arm and ends the episode as `aborted`; the machine then
waits in `faulted` until the fault clears and the operator presses start (or calls the resume
service), and the next episode begins with homing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from pld_robot.data.layout import Outcome, Source
from pld_robot.episode.modes import Mode, compose, residual_acts, sample_probe_steps


class State(str, enum.Enum):
    HOMING = "homing"
    WAITING_FOR_RESET = "waiting_for_reset"
    RUNNING = "running"
    COMMITTING = "committing"
    FAULTED = "faulted"


class Event(str, enum.Enum):
    START = "start"  # the scene is reset (the gamepad's START, or the resume service)
    SUCCESS = "success"  # the operator: the task is done
    REWARD_SUCCESS = "reward_success"  # the reward classifier: the current stage is done
    FAILURE = "failure"
    ESTOP = "estop"


@dataclass(frozen=True)
class RolloutConfig:
    mode: Mode = Mode.BASE
    max_steps: int = 200  # T
    alpha: float = 0.6  # hybrid: the base probes alone for T_base ~ U[0, alpha T] steps
    stages: int = 1  # a multi-stage task succeeds when the reward has declared each stage done in turn
    seed: int = 0

    def __post_init__(self):
        if self.max_steps < 1 or self.stages < 1:
            raise ValueError("max_steps and stages must be at least 1")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError("alpha must be in [0, 1]")


@dataclass(frozen=True)
class TickInputs:
    base: np.ndarray | None  # the base policy's action for this tick, None if it has none
    residual: np.ndarray | None
    teleop: np.ndarray | None  # the person's action while the dead-man is held
    hold: np.ndarray  # zero motion, gripper as last executed
    events: tuple[Event, ...] = ()
    fault: str | None = None  # what is wrong right now, None when all is well


@dataclass
class Plan:
    """What the shell does this tick, in this order."""

    home: bool = False  # start homing (the shell reports `homed()` when it is done)
    begin: bool = False  # begin a new episode in the store (probe_steps says its probe prefix)
    command: np.ndarray | None = None  # send to the arm, and record the step
    source: Source = Source.PROBE
    stage: int | None = None  # the stage now running, when it changed (the reward node switches classifier)
    end: Outcome | None = None  # stop the arm and commit the episode as this
    message: str | None = None  # for the operator (status line / log), when something changed


@dataclass
class Session:
    outcomes: dict[str, int] = field(default_factory=lambda: {o.value: 0 for o in Outcome})
    starved_ticks: int = 0
    human_steps: int = 0
    last: dict | None = None  # how the last episode ended: outcome, steps, probe_steps

    @property
    def episodes(self) -> int:
        return sum(self.outcomes.values())

    @property
    def success_rate(self) -> float:
        return self.outcomes[Outcome.SUCCESS.value] / self.episodes if self.episodes else 0.0


class Rollout:
    def __init__(self, config: RolloutConfig):
        self.config = config
        self.state = State.HOMING
        self.step = 0
        self.probe_steps = 0
        self.session = Session()
        self.fault: str | None = None
        self._rng = np.random.default_rng(config.seed)
        self._homing_requested = False
        self.stage = 0
        self.stage_starts: list[int] = [0]  # the step at which each stage began, this episode

    def tick(self, inputs: TickInputs) -> Plan:
        self.fault = inputs.fault
        if self.state is State.RUNNING:
            return self._running(inputs)
        if self.fault is not None and self.state is not State.COMMITTING:
            return self._fault_outside_episode()
        if self.state is State.FAULTED:
            if Event.START in inputs.events:
                self.state, self._homing_requested = State.HOMING, False
                return Plan(message="fault cleared: homing")
            return Plan()
        if self.state is State.HOMING and not self._homing_requested:
            self._homing_requested = True
            return Plan(home=True, message="homing")
        if self.state is State.WAITING_FOR_RESET and Event.START in inputs.events:
            return self._begin()
        return Plan()

    @property
    def residual_due(self) -> bool:
        """Whether a running tick now would compose base + residual: the shell fetches the residual
        only then (never in base mode or the probe prefix)."""
        return self.state is State.RUNNING and residual_acts(self.config.mode, self.step, self.probe_steps)

    def homed(self) -> None:
        if self.state is State.HOMING:
            self.state = State.WAITING_FOR_RESET

    def committed(self) -> None:
        """The shell's commit of the ended episode finished (or failed and was reported)."""
        if self.state is State.COMMITTING:
            self.state, self._homing_requested = (State.FAULTED if self.fault else State.HOMING), False

    def _begin(self) -> Plan:
        c = self.config
        self.state, self.step, self.stage, self.stage_starts = State.RUNNING, 0, 0, [0]
        self.probe_steps = sample_probe_steps(self._rng, c.alpha, c.max_steps) if c.mode is Mode.HYBRID else 0
        return Plan(begin=True, stage=0, message=f"episode {self.session.episodes + 1} running ({c.mode.value})")

    def _running(self, inputs: TickInputs) -> Plan:
        if self.fault is not None:
            return self._end(Outcome.ABORTED, f"aborted: {self.fault}; press START (or call resume) "
                                              "once it is fixed")
        if Event.ESTOP in inputs.events:
            return self._end(Outcome.ABORTED, "aborted: e-stop")
        if Event.FAILURE in inputs.events:
            return self._end(Outcome.FAILURE, "failure (operator)")
        if Event.SUCCESS in inputs.events:
            return self._end(Outcome.SUCCESS, "success (operator)")
        if Event.REWARD_SUCCESS in inputs.events and self.stage == self.config.stages - 1:
            return self._end(Outcome.SUCCESS, "success" if self.config.stages == 1 else
                             f"success: stage {self.stage + 1} of {self.config.stages} done")
        action, source, starved = compose(self.config.mode, self.step, self.probe_steps, inputs.base,
                                          inputs.residual, inputs.teleop, inputs.hold)
        self.session.starved_ticks += starved
        self.session.human_steps += source is Source.HUMAN
        self.step += 1
        plan = Plan(command=action, source=source)
        if Event.REWARD_SUCCESS in inputs.events:  # a stage before the last: the next one runs from here
            self.stage += 1
            self.stage_starts.append(self.step - 1)
            plan.stage, plan.message = self.stage, f"stage {self.stage} of {self.config.stages} done"
        if self.step >= self.config.max_steps:
            plan.end, plan.message = Outcome.TIMEOUT, f"timeout after {self.step} steps"
        if plan.end is not None:
            self._finish(plan.end)
        return plan

    def _end(self, outcome: Outcome, message: str) -> Plan:
        self._finish(outcome)
        return Plan(end=outcome, message=message)

    def _finish(self, outcome: Outcome) -> None:
        self.session.last = {"outcome": outcome.value, "steps": self.step, "probe_steps": self.probe_steps}
        self.session.outcomes[outcome.value] += 1
        self.state = State.COMMITTING

    def _fault_outside_episode(self) -> Plan:
        if self.state is State.FAULTED:
            return Plan()
        self.state = State.FAULTED
        return Plan(message=f"fault: {self.fault}; press START (or call resume) once it is fixed")
