"""The motor loop: one thread that owns the CAN bus and commands all seven motors at `loop_hz`.

Every tick sends one MIT frame per motor and reads the answers. Between the control-rate targets
the position setpoint moves linearly over one control period, with the matching velocity as
feed-forward, and the model's gravity torques (if a model is configured) as torque feed-forward.

Modes: TRACK follows the targets; HOLD keeps a fixed setpoint; DAMP sets kp to 0 and keeps kd, so
the arm yields and comes to rest instead of dropping. The loop supervises itself: no target for
`watchdog_periods` control periods -> HOLD, then after `hold_s` -> DAMP; a motor that stops
answering, reports an error, or a CAN error frame -> a latched fault and DAMP for every motor.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from dataclasses import dataclass

import can
import numpy as np

from pld_robot.robots.arm import ArmFault
from pld_robot.robots.yam.config import JOINT_NAMES, JOINTS, MOTORS, YamConfig
from pld_robot.robots.yam.model import ArmModel
from pld_robot.robots.yam.protocol import (
    CLEAR_ERROR, COMM_LOST, DISABLE, DISABLED, ENABLE, ENABLED, Feedback, MitCommand, error_name, pack_command,
    unpack_feedback,
)

log = logging.getLogger(__name__)

MOTOR_NAMES = (*JOINT_NAMES, "gripper")
REPLY_FRACTION = 0.75  # of a tick spent waiting for the motors' answers; the rest is sleep
TICK_HISTORY = 10_000

# SocketCAN error classes (linux/can/error.h), for a readable fault message.
_CAN_ERROR_CLASSES = {
    0x001: "TX timeout", 0x002: "lost arbitration", 0x004: "controller problem",
    0x008: "protocol violation", 0x010: "transceiver problem", 0x020: "no ACK on transmission",
    0x040: "bus off", 0x080: "bus error", 0x100: "controller restarted",
}


class Mode(enum.Enum):
    TRACK = "track"
    HOLD = "hold"
    DAMP = "damp"


@dataclass(frozen=True)
class MotorReadings:
    """The latest feedback of every motor (six joints, then the gripper), in motor units."""

    stamp: float  # wall clock of the tick that collected it
    position: np.ndarray  # rad
    velocity: np.ndarray  # rad/s
    torque: np.ndarray  # Nm
    temp_mos: np.ndarray  # degrees C
    temp_rotor: np.ndarray
    errors: tuple[int, ...]  # the motors' status codes (protocol.ERROR_NAMES)
    ee_pose: tuple[np.ndarray, np.ndarray] | None  # from the model, at `position`


class MotorLoop:
    def __init__(self, bus: can.BusABC, config: YamConfig, model: ArmModel | None = None):
        self._bus = bus
        self._config = config
        self._model = model
        self._types = [config.motor_type(i) for i in range(MOTORS)]
        self._index = {fid: i for i, fid in enumerate(config.feedback_ids)}
        self._kp = np.asarray(config.kp, dtype=float)
        self._kd = np.asarray(config.kd, dtype=float)
        self._gravity_scale = np.asarray(config.gravity_scale, dtype=float)
        self.period = 1.0 / config.loop_hz
        self._control_period = config.action.period
        self._watchdog_s = config.limits.watchdog_periods * self._control_period

        self._lock = threading.Lock()  # command state, shared with the arm's thread
        self._mode = Mode.DAMP
        self._from = np.zeros(MOTORS)
        self._to = np.zeros(MOTORS)
        self._t0 = 0.0
        self._last_target = 0.0
        self._damp_at: float | None = None
        self._fault: str | None = None
        self.watchdog_stops = 0

        # feedback: written by whoever runs the bus (bring-up, then the loop thread)
        self._fb = np.zeros((5, MOTORS))  # position, velocity, torque, temp_mos, temp_rotor
        self._errors = [0] * MOTORS
        self._heard = np.zeros(MOTORS)
        self._gravity = np.zeros(MOTORS)  # torque feed-forward, from the latest readings
        self._readings: MotorReadings | None = None
        self._last_tick: float | None = None  # across stop/start: commands stop then too
        self._longest_gap = 0.0
        self._ticks: collections.deque[float] = collections.deque(maxlen=TICK_HISTORY)

        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- bring-up (the loop is not running) -------------------------------------------------
    def bring_up(self, clear_errors: bool) -> None:
        """Enable every motor and read where it is; then the loop holds that pose. Raises ArmFault
        naming each motor that did not answer or reports an error."""
        with self._lock:
            self._fault = None
        self._drain()
        if clear_errors:
            self._send_all(CLEAR_ERROR)
            answers = self._enable(clearable=lambda code: code not in (DISABLED, ENABLED))
        else:
            # Motors still commanded when the last session ended have timed out since: "communication
            # lost" is stale news, cleared here. Every other error needs a person and recover().
            answers = self._enable(clearable=lambda code: code == COMM_LOST)
        missing = [i for i in range(MOTORS) if i not in answers]
        if missing:
            raise ArmFault(
                f"no answer from {', '.join(self.describe(i) for i in missing)} within "
                f"{self._config.connect_timeout_s:.1f} s on {self._config.channel}: check the motors' "
                "power, the CAN wiring and termination, and the ids in the config"
            )
        bad = [i for i in range(MOTORS) if answers[i].error != ENABLED]
        if bad:
            raise ArmFault(
                "motor error: " + "; ".join(f"{self.describe(i)}: {error_name(answers[i].error)}" for i in bad)
                + "; call recover() once the cause is gone"
            )
        now = time.monotonic()
        for i, fb in answers.items():
            self._store(i, fb, now)
        self._last_tick, self._longest_gap = None, 0.0
        self._publish(now)
        with self._lock:
            self._hold_locked(now, self._fb[0].copy(), damp_after=None)

    def disable(self) -> None:
        """Disable every motor (the loop is not running): the arm goes limp."""
        self._send_all(DISABLE)
        self._drain(settle_s=0.01)

    # -- the thread -----------------------------------------------------------------------
    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="yam-motor-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stopping.is_set():
            now = time.monotonic()
            self._ticks.append(now)
            if self._last_tick is not None:
                self._note_gap(now - self._last_tick)
            self._last_tick = now
            try:
                self._tick(now)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive anything a tick raises
                if self._fault is None:  # once, not at every tick while it lasts
                    log.exception("motor loop tick failed")
                self.fail(f"motor loop error: {exc!r}")
            next_tick += self.period
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -self.period:  # fell behind by more than a tick: do not try to catch up
                next_tick = time.monotonic()

    def _tick(self, now: float) -> None:
        commands = self._commands(now)
        for i, cmd in enumerate(commands):
            self._send(i, pack_command(cmd, self._types[i]))
        self._collect(now + REPLY_FRACTION * self.period)
        self._supervise_feedback(time.monotonic())

    # -- what the arm asks for (thread-safe) ------------------------------------------------
    def track(self, target: np.ndarray) -> None:
        """Move the setpoint to `target` (7 motor positions) over one control period."""
        with self._lock:
            now = time.monotonic()
            start = self._fb[0].copy() if self._mode is Mode.DAMP else self._setpoint(now)[0]
            self._from, self._to = start, np.asarray(target, dtype=float).copy()
            self._t0 = self._last_target = now
            self._damp_at = None
            self._mode = Mode.TRACK

    def hold(self, damp_after: float | None = None) -> None:
        """Keep the current setpoint (the measured pose when damped); damp after `damp_after` s."""
        with self._lock:
            now = time.monotonic()
            pose = self._fb[0].copy() if self._mode is Mode.DAMP else self._setpoint(now)[0]
            self._hold_locked(now, pose, damp_after)

    def damp(self) -> None:
        with self._lock:
            self._mode = Mode.DAMP

    def fail(self, reason: str) -> None:
        """Latch a fault (the first one wins) and damp every motor."""
        with self._lock:
            if self._fault is None:
                self._fault = reason
                log.error("YAM fault, damping: %s", reason)
            self._mode = Mode.DAMP

    def moving_target(self) -> np.ndarray | None:
        """The joint target being tracked, or None when the arm starts from a stop."""
        with self._lock:
            return self._to[:JOINTS].copy() if self._mode is Mode.TRACK else None

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def fault(self) -> str | None:
        return self._fault

    @property
    def readings(self) -> MotorReadings:
        return self._readings

    def tick_times(self) -> np.ndarray:
        """Start times (monotonic) of the most recent ticks, for rate and jitter."""
        return np.array(self._ticks)

    def describe(self, i: int) -> str:
        c = self._config
        return f"{MOTOR_NAMES[i]} (CAN id {c.can_ids[i]}, feedback id 0x{c.feedback_ids[i]:02X})"

    # -- internals --------------------------------------------------------------------------
    def _hold_locked(self, now: float, pose: np.ndarray, damp_after: float | None) -> None:
        self._from = self._to = pose
        self._t0 = now
        self._mode = Mode.HOLD
        self._damp_at = None if damp_after is None else now + damp_after

    def _setpoint(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        span = self._to - self._from
        alpha = (now - self._t0) / self._control_period
        if alpha >= 1.0:
            return self._to.copy(), np.zeros(MOTORS)
        return self._from + max(alpha, 0.0) * span, span / self._control_period

    def _commands(self, now: float) -> list[MitCommand]:
        torque = self._gravity
        with self._lock:
            if self._mode is Mode.TRACK and now - self._last_target > self._watchdog_s:
                log.warning("no command for %.0f ms: holding, damping in %.1f s",
                            1000 * self._watchdog_s, self._config.limits.hold_s)
                self.watchdog_stops += 1
                self._hold_locked(now, self._setpoint(now)[0], self._config.limits.hold_s)
            if self._mode is Mode.HOLD and self._damp_at is not None and now >= self._damp_at:
                log.warning("still no command: damping the arm")
                self._mode = Mode.DAMP
            if self._mode is Mode.DAMP:
                position, velocity, kp = self._fb[0].copy(), np.zeros(MOTORS), np.zeros(MOTORS)
            else:
                (position, velocity), kp = self._setpoint(now), self._kp
        return [MitCommand(position[i], velocity[i], kp[i], self._kd[i], torque[i]) for i in range(MOTORS)]

    def _send(self, i: int, data: bytes) -> None:
        msg = can.Message(arbitration_id=self._config.can_ids[i], data=data, is_extended_id=False)
        try:
            self._bus.send(msg)
        except can.CanError as exc:
            self.fail(f"sending to {self.describe(i)} failed: {exc}")

    def _send_all(self, data: bytes, motors=range(MOTORS)) -> None:
        for i in motors:
            self._send(i, data)

    def _collect(self, deadline: float) -> None:
        """Read answers until every motor has answered (then whatever else is queued) or until the
        deadline; a motor that stays silent shows in `_heard`."""
        pending = set(range(MOTORS))
        while True:
            timeout = max(deadline - time.monotonic(), 0.0) if pending else 0.0
            msg = self._bus.recv(timeout=timeout)
            if msg is None:
                return
            fb = self._decode(msg)
            if fb is not None:
                pending.discard(fb[0])

    def _decode(self, msg: can.Message) -> tuple[int, Feedback] | None:
        if msg.is_error_frame:
            kinds = [name for bit, name in _CAN_ERROR_CLASSES.items() if msg.arbitration_id & bit]
            self.fail(f"CAN error frame on {self._config.channel} ({', '.join(kinds) or 'unclassified'}, "
                      f"id 0x{msg.arbitration_id:X}, data {bytes(msg.data).hex()})")
            return None
        i = self._index.get(msg.arbitration_id)
        if i is None or msg.is_remote_frame or len(msg.data) != 8:
            return None
        fb = unpack_feedback(bytes(msg.data), self._types[i])
        self._store(i, fb, time.monotonic())
        return i, fb

    def _store(self, i: int, fb: Feedback, now: float) -> None:
        self._fb[:, i] = (fb.position, fb.velocity, fb.torque, fb.temp_mos, fb.temp_rotor)
        self._errors[i] = fb.error
        self._heard[i] = now

    def _supervise_feedback(self, now: float) -> None:
        for i in range(MOTORS):
            silent = now - self._heard[i]
            if silent > self._config.silent_after_s:
                self.fail(f"no feedback from {self.describe(i)} for {1000 * silent:.0f} ms: "
                          "check its power, cable and connectors")
            elif self._errors[i] != ENABLED:
                reason = f"{self.describe(i)} reports {error_name(self._errors[i])}"
                if self._errors[i] == COMM_LOST:
                    reason += (f" (motor_timeout_s {self._config.motor_timeout_s} s; the longest gap "
                               f"between this loop's commands was {1000 * self._longest_gap:.0f} ms)")
                self.fail(reason)
        self._publish(now)

    def _publish(self, now: float) -> None:
        """Readings for the arm's thread, and the model evaluated at them: the gravity torques that
        the next tick sends and the end-effector pose."""
        pose = None
        if self._model is not None:
            self._model.update(self._fb[0, :JOINTS])
            self._gravity[:JOINTS] = self._gravity_scale * self._model.gravity()
            pose = self._model.ee_pose()
        fb = self._fb.copy()
        self._readings = MotorReadings(time.time(), fb[0], fb[1], fb[2], fb[3], fb[4], tuple(self._errors), pose)

    def _note_gap(self, gap: float) -> None:
        self._longest_gap = max(self._longest_gap, gap)
        timeout = self._config.motor_timeout_s
        if timeout and gap > timeout:
            log.error("the motor loop stalled for %.0f ms, longer than the motors' own command timeout "
                      "(%.0f ms): they will report communication lost", 1000 * gap, 1000 * timeout)

    def _enable(self, clearable) -> dict[int, Feedback]:
        """Enable every motor and wait until each reports "enabled", resending every 0.1 s (with a
        clear-error first to a motor whose error is `clearable`), until connect_timeout_s. Returns
        each motor's latest answer. Answers that are not "enabled" only count at the end: a late
        answer to an earlier frame (a clear-error's "disabled", a damping command's old error) may
        arrive after the enable was sent."""
        latest: dict[int, Feedback] = {}
        waiting = set(range(MOTORS))
        deadline = time.monotonic() + self._config.connect_timeout_s
        while waiting and time.monotonic() < deadline:
            for i in sorted(waiting):
                if i in latest and clearable(latest[i].error):
                    self._send(i, CLEAR_ERROR)
                self._send(i, ENABLE)
            resend = min(time.monotonic() + 0.1, deadline)
            while waiting and time.monotonic() < resend:
                msg = self._bus.recv(timeout=max(resend - time.monotonic(), 0.0))
                if msg is None:
                    break
                fb = self._decode(msg)
                if fb is not None and fb[0] in waiting:
                    latest[fb[0]] = fb[1]
                    if fb[1].error == ENABLED:
                        waiting.discard(fb[0])
        if self._fault is not None:  # an error frame, or a failed send, during bring-up
            raise ArmFault(self._fault)
        return latest

    def _drain(self, settle_s: float = 0.0) -> None:
        """Drop whatever is queued on the bus (stale answers), after waiting `settle_s` for late ones."""
        deadline = time.monotonic() + settle_s
        while self._bus.recv(timeout=max(deadline - time.monotonic(), 0.0)) is not None:
            pass
