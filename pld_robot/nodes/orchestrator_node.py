"""orchestrator_node: the rollout's ROS shell. One timer at control_hz owns the loop; each tick it
gathers the latest inputs, lets the Rollout state machine decide, sends the command and records the
step exactly as it was executed.

In:  /pld/base/chunk, /pld/base/status (policy_node); /pld/teleop/action, /pld/teleop/intervening,
     /pld/teleop/event (teleop_node, or a simulated operator); /pld/reward/success (Header: the reward
     node declared stage `frame_id` done, on frames captured at `stamp`), /pld/reward/success_prob
     (Float32, recorded); /pld/success_label (Bool); /arm/status, /arm/estop, /arm/executed and the
     observation topics; /pld/residual/action (residual_node's replies, residual and hybrid modes)
Out: /arm/command; /pld/episode/status (String, JSON: episode, state, step, mode, success rate, timing);
     /pld/reward/stage (Int32, latched: the stage now running, for the reward node);
     /pld/residual/request (each residual tick: its base action, stamped with its observation)
Services: /pld/orchestrator/resume (Trigger: the same as pressing START)
Calls: /arm/home, /arm/hold

A residual tick waits for residual_node's reply up to `residual_deadline_s` (nodes/residual_client.py);
that wait needs the reply callback to run beside the tick, so the node spins on a multi-threaded executor.
"""

from __future__ import annotations

import json
import threading
from collections import deque
import time
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_msgs.msg import Bool, Float32, Header, Int32, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from pld_robot.calibration.record import episode_calibration
from pld_robot.data import CameraSpec, EpisodeInfo, EpisodeWriter, Outcome, Source, StoreSchema
from pld_robot.episode.modes import Mode
from pld_robot.episode.rollout import Event, Rollout, RolloutConfig, State, TickInputs
from pld_robot.nodes.action_msgs import chunk_to_msg, msg_to_chunk
from pld_robot.nodes.arm_node import ESTOP_QOS
from pld_robot.nodes.image_msgs import from_time
from pld_robot.nodes.observation import EE_STATE_NAMES, ObservationTap
from pld_robot.nodes.params import node_config
from pld_robot.nodes.qos import LATCHED
from pld_robot.nodes.residual_client import ResidualClient
from pld_robot.nodes.spin import run_node
from pld_robot.nodes.step_recorder import StepRecorder
from pld_robot.policy.broker import Chunk, select_action
from pld_robot.reward.labels import STAGE_STARTS_KEY
from pld_robot.robots.action_spec import FRANKA_EE_DELTA_NAMES



@dataclass(frozen=True)
class OrchestratorConfig:
    mode: str = "base"  # base / residual / hybrid / teleop
    max_steps: int = 200
    alpha: float = 0.6
    stages: int = 1  # of the task; one reward classifier per stage
    seed: int = 0
    control_hz: float = 10.0  # the arm's action rate
    action_names: tuple[str, ...] = FRANKA_EE_DELTA_NAMES
    cameras: dict[str, tuple[int, int]] = field(default_factory=dict)  # recorded: name -> (height, width)
    store: str = "pld_data/episodes.zarr"
    task: str = ""
    prompt: str = "pick up the cube"
    camera_timeout_s: float = 1.0  # an observation older than this is a fault
    max_chunk_age_s: float = 6.0
    # The residual of a tick is applied only if residual_node's reply comes this soon after the request;
    # otherwise the base acts alone. The command goes out after the wait: keep it well under a period.
    residual_deadline_s: float = 0.03
    status_hz: float = 2.0
    calibration: tuple[str, ...] = ()  # intrinsics / hand-eye YAMLs, stored with every episode

    def rollout(self) -> RolloutConfig:
        return RolloutConfig(mode=Mode(self.mode), max_steps=self.max_steps, alpha=self.alpha,
                             stages=self.stages, seed=self.seed)

    def __post_init__(self):
        self.rollout()  # validates the rollout fields
        if self.control_hz <= 0 or self.camera_timeout_s <= 0:
            raise ValueError("control_hz and camera_timeout_s must be positive")
        if not 0 < self.residual_deadline_s < 0.5 / self.control_hz:
            raise ValueError(f"residual_deadline_s must be positive and under half a control period "
                             f"({0.5 / self.control_hz:g} s), got {self.residual_deadline_s}")


class OrchestratorNode(Node):
    def __init__(self, node_name: str = "orchestrator_node", **kwargs):
        self._writer = None  # before Node.__init__, which calls destroy_node() when it fails
        super().__init__(node_name, automatically_declare_parameters_from_overrides=True, **kwargs)
        self.config = c = node_config(self, OrchestratorConfig)
        self.rollout = Rollout(c.rollout())
        self.mode = Mode(c.mode)
        schema = StoreSchema({n: CameraSpec(h, w) for n, (h, w) in c.cameras.items()}, EE_STATE_NAMES,
                             c.action_names, c.control_hz)
        self._calibration = episode_calibration(c.calibration)
        self._writer = EpisodeWriter.open(c.store, schema, task=c.task or c.prompt)
        self._tap = ObservationTap(self, list(c.cameras), c.action_names)
        self._recorder = StepRecorder(self._tap, self._writer)
        self._lock = threading.Lock()
        self._chunks: list[Chunk] = []
        self._policy_version = ""
        self._policy_problem: str | None = None
        self._arm_problem: str | None = None
        self._teleop: tuple[float, np.ndarray] | None = None
        self._intervening = False
        self._events: list[Event] = []
        self._success_prob = 0.0
        self._success_label = False
        self._episode_start: float | None = None  # wall clock: a success declared on older frames is stale
        self._gripper = 0.0
        self._committed = threading.Event()
        self._homing = None  # the /arm/home call in flight
        self._tick_times: deque[float] = deque(maxlen=100)  # the last ticks' durations, for the status
        self._command = self.create_publisher(JointTrajectory, "/arm/command", 10)
        self._status_pub = self.create_publisher(String, "/pld/episode/status", 10)
        self._stage_pub = self.create_publisher(Int32, "/pld/reward/stage", LATCHED)
        self._residual = ResidualClient(self, c.action_names, c.control_hz, c.residual_deadline_s) \
            if self.mode in (Mode.RESIDUAL, Mode.HYBRID) else None
        subs = MutuallyExclusiveCallbackGroup()
        for msg_type, topic, callback, qos in (
                (JointTrajectory, "/pld/base/chunk", self._on_chunk, 10),
                (DiagnosticStatus, "/pld/base/status", self._on_policy_status, 10),
                (JointTrajectory, "/pld/teleop/action", self._on_teleop, 10),
                (Bool, "/pld/teleop/intervening", self._on_intervening, 10),
                (String, "/pld/teleop/event", self._on_event, 10),
                (Header, "/pld/reward/success", self._on_reward_success, 10),
                (Float32, "/pld/reward/success_prob", self._on_success_prob, 10),
                (Bool, "/pld/success_label", self._on_success_label, 10),
                (DiagnosticStatus, "/arm/status", self._on_arm_status, 10),
                (Bool, "/arm/estop", self._on_estop, ESTOP_QOS)):
            self.create_subscription(msg_type, topic, callback, qos, callback_group=subs)
        self.create_service(Trigger, "/pld/orchestrator/resume", self._on_resume, callback_group=subs)
        self._home = self.create_client(Trigger, "/arm/home", callback_group=subs)
        self._hold = self.create_client(Trigger, "/arm/hold", callback_group=subs)
        self.create_timer(1.0 / c.control_hz, self._tick, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(1.0 / c.status_hz, self._publish_status, callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(f"{c.mode} rollouts of up to {c.max_steps} steps at {c.control_hz:g} Hz into {c.store}")

    # --- inputs ---

    def _on_chunk(self, msg: JointTrajectory) -> None:
        chunk = Chunk(msg_to_chunk(msg, self.config.action_names), from_time(msg.header.stamp))
        with self._lock:
            self._chunks = [*self._chunks[-3:], chunk]

    def _on_policy_status(self, msg: DiagnosticStatus) -> None:
        with self._lock:
            self._policy_problem = msg.message if msg.level >= DiagnosticStatus.ERROR else None
            self._policy_version = next((v.value for v in msg.values if v.key == "version"), self._policy_version)

    def _on_teleop(self, msg: JointTrajectory) -> None:
        with self._lock:
            self._teleop = (time.monotonic(), msg_to_chunk(msg, self.config.action_names)[0])

    def _on_intervening(self, msg: Bool) -> None:
        with self._lock:
            self._intervening = msg.data

    def _on_event(self, msg: String) -> None:
        try:
            event = Event(msg.data)
        except ValueError:
            return  # intervene_start / intervene_end: carried by /pld/teleop/intervening
        with self._lock:
            self._events.append(event)

    def _on_reward_success(self, msg: Header) -> None:
        with self._lock:
            current = self._episode_start is not None and from_time(msg.stamp) >= self._episode_start \
                and msg.frame_id == str(self.rollout.stage)
            if current:
                self._events.append(Event.REWARD_SUCCESS)

    def _on_success_prob(self, msg: Float32) -> None:
        with self._lock:
            self._success_prob = float(msg.data)

    def _on_success_label(self, msg: Bool) -> None:
        with self._lock:
            self._success_label = msg.data

    def _on_arm_status(self, msg: DiagnosticStatus) -> None:
        with self._lock:
            self._arm_problem = (f"arm: {msg.message} (clear it: ros2 service call /arm/recover std_srvs/srv/Trigger)"
                                 if msg.level >= DiagnosticStatus.ERROR else None)

    def _on_estop(self, msg: Bool) -> None:
        if msg.data:
            with self._lock:
                self._events.append(Event.ESTOP)

    def _on_resume(self, _request, response):
        with self._lock:
            self._events.append(Event.START)
        response.success, response.message = True, "resume requested"
        return response

    # --- the loop ---

    def _tick(self) -> None:
        start = time.monotonic()
        now = time.time()
        if self._committed.is_set():
            self._committed.clear()
            self.rollout.committed()
        obs = self._tap.latest()
        with self._lock:
            events, self._events = tuple(self._events), []
            base = select_action(self._chunks, now, self.config.control_hz, self.config.max_chunk_age_s, None)
            teleop = self._teleop[1] if self._intervening and self._teleop and \
                start - self._teleop[0] < 3.0 / self.config.control_hz else None
            success_prob, label = self._success_prob, self._success_label
            fault = self._fault(obs, now)
        residual, actor_version = None, -1
        if self._residual is not None and base is not None and teleop is None and fault is None \
                and self.rollout.residual_due:
            residual, actor_version = self._residual.fetch(base, obs.stamp)
        hold = np.zeros(len(self.config.action_names), dtype=np.float32)
        hold[-1] = self._gripper
        plan = self.rollout.tick(TickInputs(base=base, residual=residual, teleop=teleop, hold=hold,
                                            events=events, fault=fault))
        if plan.message:
            self.get_logger().info(plan.message)
        if plan.home and (self._homing is None or self._homing.done()):  # one home motion at a time
            self._homing = self._call(self._home, self.rollout.homed)
        if plan.stage is not None:
            self._stage_pub.publish(Int32(data=plan.stage))
        if plan.begin:
            with self._lock:
                self._episode_start = now
            if self._residual is not None:
                self._residual.begin_episode()
            self._writer.begin_episode(EpisodeInfo(prompt=self.config.prompt, mode=self.mode.value,
                                                   policy_version=self._policy_version, cameras=self._calibration,
                                                   extra={"probe_steps": self.rollout.probe_steps}))
        if plan.command is not None and obs is not None:
            msg = chunk_to_msg(plan.command[None], self.config.action_names, self.config.control_hz, now)
            self._command.publish(msg)
            self._gripper = float(plan.command[-1] >= 0.5)
            absent = np.zeros_like(hold)  # a component that did not act this tick is recorded as 0
            applied = residual is not None and plan.source is Source.RESIDUAL
            self._recorder.add(from_time(msg.header.stamp), plan.command, {
                **obs.frames, "state": obs.state, "base_action": base if base is not None else absent,
                "teleop_action": teleop if teleop is not None else absent, "source": plan.source,
                "residual_action": residual if applied else absent, "actor_version": actor_version if applied else -1,
                "success_prob": success_prob, "success_label": label, "timestamp": obs.stamp,
                "loop_latency": time.monotonic() - start})
        if plan.end is not None:
            with self._lock:
                self._episode_start = None
            self._call(self._hold, lambda: None)
            self._recorder.flush(wait_s=0.3)
            note = plan.message if plan.end is Outcome.ABORTED else None  # why, for whoever reviews it
            by_residual = {} if self._residual is None else \
                {"actor_version": self._residual.episode_actor, **self._residual.counts(self._residual.episode)}
            future = self._writer.end_episode(plan.end, note=note, probe_steps=self.rollout.probe_steps,
                                              unanswered_commands=self._recorder.unanswered,
                                              **{STAGE_STARTS_KEY: list(self.rollout.stage_starts)}, **by_residual)
            self._recorder.unanswered = 0
            future.add_done_callback(lambda f: self._committed.set())
        self._tick_times.append(time.monotonic() - start)

    def _fault(self, obs, now: float) -> str | None:
        if self._arm_problem:
            return self._arm_problem
        if self.mode is not Mode.TELEOP and self._policy_problem:
            return f"policy: {self._policy_problem}"
        if obs is None:
            return "no observation yet (cameras, /arm/ee_pose, /joint_states)"
        if now - obs.stamp > self.config.camera_timeout_s:
            return f"observation {now - obs.stamp:.1f} s old (a camera or the arm state is stale)"
        return None

    def _call(self, client, then):
        if not client.service_is_ready():
            self.get_logger().error(f"{client.srv_name} is not available")
            return None
        future = client.call_async(Trigger.Request())
        future.add_done_callback(lambda f: then() if f.result().success else self.get_logger().error(f.result().message))
        return future

    # --- the operator's view ---

    def _publish_status(self) -> None:
        r = self.rollout
        ticks = np.array(list(self._tick_times)) * 1e3 if self._tick_times else np.zeros(1)  # list(): one C call
        status = {"episode": r.session.episodes + (r.state is State.RUNNING), "state": r.state.value,
                  "step": r.step, "mode": self.mode.value, "probe_steps": r.probe_steps,
                  "success_rate": round(r.session.success_rate, 3), "outcomes": r.session.outcomes,
                  "fault": r.fault, "tick_ms_p50": round(float(np.percentile(ticks, 50)), 2),
                  "tick_ms_max": round(float(ticks.max()), 2), "starved_ticks": r.session.starved_ticks,
                  "dropped_frames": self._writer.stats.dropped_frames, "last_episode": r.session.last}
        if self._residual is not None:
            status.update(self._residual.counts(self._residual.session))
            latency = np.array(list(self._residual.latency_ms)) if self._residual.latency_ms else np.zeros(1)
            status["residual_ms_p50"] = round(float(np.percentile(latency, 50)), 2)
            status["residual_ms_p99"] = round(float(np.percentile(latency, 99)), 2)
        self._status_pub.publish(String(data=json.dumps(status)))

    def summary(self) -> str:
        s = self.rollout.session
        outcomes = ", ".join(f"{o} {n}" for o, n in s.outcomes.items() if n)
        residual = ""
        if self._residual is not None:
            counts = self._residual.counts(self._residual.session)
            residual = ", residual ticks: " + ", ".join(f"{n} {k.removeprefix('residual_')}" for k, n in counts.items())
        return (f"session: {s.episodes} episode(s) ({outcomes or 'none'}), success rate {100 * s.success_rate:.0f}%, "
                f"{s.human_steps} human step(s), {s.starved_ticks} starved tick(s){residual}, store {self.config.store}")

    def destroy_node(self):
        if self._writer is not None:
            self.get_logger().info(self.summary())
            self._writer.close()
            self._writer = None
        return super().destroy_node()


def main(args=None) -> None:
    run_node(OrchestratorNode, args, threads=4)  # the tick waits for the residual reply's callback


if __name__ == "__main__":
    main()
