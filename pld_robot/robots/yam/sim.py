"""Simulated Damiao motors on a python-can virtual channel: the driver runs unchanged against them.

A thread answers the same frames a real motor does (enable, disable, clear error, save zero, MIT
commands; one feedback frame per frame received, on the motor's feedback id) and integrates each
joint: inertia and viscous friction, driven by the MIT law the motor itself runs,
tau = kp (p_des - p) + kd (v_des - v) + t_ff, saturated at the motor type's torque. With a MuJoCo
model the six arm joints move in it instead (gravity included); the gripper stays a simple joint.
A motor that hears nothing for `motor_timeout_s` disables itself and reports communication lost.

Faults to inject: `silence(i)` (the motor neither hears nor answers, as with a cut cable),
`fail(i, code)` (an error code such as over-temperature; the motor stops driving), and
`send_error_frame()` (a CAN error frame on the bus).
"""

from __future__ import annotations

import threading
import time

import can
import mujoco
import numpy as np

from pld_robot.robots.yam.config import JOINTS, MOTORS, YamConfig
from pld_robot.robots.yam.protocol import (
    CLEAR_ERROR, COMM_LOST, DISABLE, DISABLED, ENABLE, ENABLED, SAVE_ZERO, Feedback, is_special,
    pack_feedback, unpack_command,
)

MAX_CATCH_UP_S = 0.05  # a thread starved for longer than this skips time instead of integrating it


class SimMotors:
    def __init__(self, config: YamConfig, *, initial=None, inertia=(0.02,) * 3 + (0.005,) * 4,
                 friction=(0.05,) * MOTORS, model_path: str = "", step_s: float = 0.0005,
                 temperatures: tuple[int, int] = (35, 30)):
        self.config = config
        self._types = [config.motor_type(i) for i in range(MOTORS)]
        self._index = {cid: i for i, cid in enumerate(config.can_ids)}
        self._t_max = np.array([t.t_max for t in self._types])
        self._inertia = np.asarray(inertia, dtype=float)
        self._friction = np.asarray(friction, dtype=float)
        self._step = step_s
        self.temperatures = temperatures
        self._q = np.zeros(MOTORS) if initial is None else np.asarray(initial, dtype=float).copy()
        self._v = np.zeros(MOTORS)
        self._tau = np.zeros(MOTORS)
        self._offset = np.zeros(MOTORS)  # SAVE_ZERO: reported position = true position - offset
        self._cmd = np.zeros((5, MOTORS))  # p_des, v_des, kp, kd, t_ff (motor frame)
        self._state = [DISABLED] * MOTORS
        self._silent = [False] * MOTORS
        self._heard = np.zeros(MOTORS)
        self._lock = threading.Lock()
        self._mj = self._load(model_path) if model_path else None
        self._bus = can.Bus(interface="virtual", channel=config.channel, receive_own_messages=False)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="yam-sim-motors", daemon=True)
        self._t = time.monotonic()

    def start(self) -> SimMotors:
        self._t = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=2.0)
        self._bus.shutdown()

    def __enter__(self) -> SimMotors:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- ground truth and fault injection ---------------------------------------------------
    @property
    def positions(self) -> np.ndarray:
        with self._lock:
            return self._q - self._offset

    @property
    def states(self) -> list[int]:
        with self._lock:
            return list(self._state)

    def silence(self, i: int, silent: bool = True) -> None:
        with self._lock:
            self._silent[i] = silent

    def fail(self, i: int, code: int) -> None:
        with self._lock:
            self._state[i] = code

    def send_error_frame(self, error_class: int = 0x040) -> None:
        """A SocketCAN error frame; 0x040 is "bus off"."""
        self._bus.send(can.Message(arbitration_id=error_class, is_error_frame=True, is_extended_id=True,
                                   data=bytes(8)))

    # -- the thread -------------------------------------------------------------------------
    def _run(self) -> None:
        # A motor on the wire hears each frame when it is sent; this thread may get to it much later
        # on a busy machine. So a frame is handled at its send time, and the motors' timeouts are
        # judged only at times up to which the queue is known to have been empty: a backlog, or a
        # pause of this thread, is never mistaken for silence.
        while not self._stopping.is_set():
            asked = time.monotonic()
            msg = self._bus.recv(timeout=self._step)
            with self._lock:
                if msg is None:  # nothing arrived until at least asked + step
                    self._expire(asked + self._step)
                    self._advance(time.monotonic())
                    continue
                sent = time.monotonic() - max(time.time() - msg.timestamp, 0.0)
                self._expire(sent)
                self._advance(sent)
                reply = self._handle(msg, sent)
            if reply is not None:
                self._bus.send(reply)

    def _handle(self, msg: can.Message, now: float) -> can.Message | None:
        i = self._index.get(msg.arbitration_id)
        if i is None or msg.is_error_frame or self._silent[i]:
            return None
        data = bytes(msg.data)
        healthy = self._state[i] in (DISABLED, ENABLED)
        if is_special(data):
            if data == ENABLE and healthy:
                self._state[i] = ENABLED
                self._cmd[:, i] = 0.0  # enabled, but no torque until the first command
            elif data == DISABLE and healthy:
                self._state[i] = DISABLED
            elif data == CLEAR_ERROR and not healthy:
                self._state[i] = DISABLED
            elif data == SAVE_ZERO:
                self._offset[i] = self._q[i]
        elif self._state[i] == ENABLED:
            cmd = unpack_command(data, self._types[i])
            self._cmd[:, i] = (cmd.position + self._offset[i], cmd.velocity, cmd.kp, cmd.kd, cmd.torque)
        self._heard[i] = now
        fb = Feedback(motor_id=self.config.can_ids[i] & 0xF, error=self._state[i],
                      position=self._q[i] - self._offset[i], velocity=self._v[i], torque=self._tau[i],
                      temp_mos=self.temperatures[0], temp_rotor=self.temperatures[1])
        return can.Message(arbitration_id=self.config.feedback_ids[i], is_extended_id=False,
                           data=pack_feedback(fb, self._types[i]))

    def _expire(self, t: float) -> None:
        """The motors' own command timeout, as of time t."""
        timeout = self.config.motor_timeout_s
        for i in range(MOTORS):
            if timeout and self._state[i] == ENABLED and t - self._heard[i] > timeout:
                self._state[i] = COMM_LOST

    def _advance(self, now: float) -> None:
        self._t = max(self._t, now - MAX_CATCH_UP_S)
        driving = np.array([s == ENABLED for s in self._state])
        while self._t + self._step <= now:
            self._t += self._step
            p, v, kp, kd, t_ff = self._cmd
            tau = kp * (p - self._q) + kd * (v - self._v) + t_ff
            self._tau = np.where(driving, np.clip(tau, -self._t_max, self._t_max), 0.0)
            if self._mj is None:
                self._integrate(slice(None))
            else:
                self._integrate(slice(JOINTS, None))
                self._step_mujoco()

    def _integrate(self, joints: slice) -> None:
        acc = (self._tau[joints] - self._friction[joints] * self._v[joints]) / self._inertia[joints]
        self._v[joints] += acc * self._step
        self._q[joints] += self._v[joints] * self._step

    # -- MuJoCo dynamics for the arm joints ---------------------------------------------------
    def _load(self, path: str):
        model = mujoco.MjModel.from_xml_path(path)
        model.opt.timestep = self._step
        data = mujoco.MjData(model)
        ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in self.config.model_joints]
        if min(ids) < 0:
            raise ValueError(f"{path} lacks one of the joints {self.config.model_joints}")
        qpos = np.array([model.jnt_qposadr[j] for j in ids])
        dof = np.array([model.jnt_dofadr[j] for j in ids])
        data.qpos[qpos] = self._q[:JOINTS]
        return model, data, qpos, dof

    def _step_mujoco(self) -> None:
        model, data, qpos, dof = self._mj
        data.qfrc_applied[dof] = self._tau[:JOINTS]
        mujoco.mj_step(model, data)
        self._q[:JOINTS] = data.qpos[qpos]
        self._v[:JOINTS] = data.qvel[dof]
