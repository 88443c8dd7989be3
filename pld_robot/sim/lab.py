"""The sim lab: franky-sim's FR3 (real libfranka protocol on loopback), a table, a randomized cube,
and offscreen cameras. The Franka driver reaches it exactly as it reaches a real robot; only the
address differs. The cube pose is ground truth for tests and for judging success.

Physics runs in one thread at 1 kHz; rendering runs in another from a snapshot of the joint state,
so a slow render never stalls the 1 kHz protocol loop.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import mujoco
import numpy as np

from pld_robot.cameras.base import CameraError, CameraIntrinsics, Frame
from pld_robot.sim.scene import CUBE_BODY, CUBE_JOINT, DEFAULT_CAMERAS, SimCameraConfig, add_lab_scene

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimLabConfig:
    host: str = "127.0.0.1"
    cube_size: float = 0.04
    cube_x_range: tuple[float, float] = (0.45, 0.6)
    cube_y_range: tuple[float, float] = (-0.12, 0.12)
    cube_yaw_range: tuple[float, float] = (-0.5, 0.5)
    lift_height: float = 0.05  # the cube's bottom this far above the table counts as lifted
    seed: int = 0
    realtime_factor: float = 1.0  # 1.0 = wall-clock 1 kHz, as a real robot
    cameras: dict[str, SimCameraConfig] = field(default_factory=lambda: dict(DEFAULT_CAMERAS))


class SimLab:
    def __init__(self, config: SimLabConfig = SimLabConfig()):
        from franky_sim import SimulationServer
        from franky_sim.mujoco_simulator import MujocoSimulator

        self.config = config
        self._rng = np.random.default_rng(config.seed)
        self._sim = MujocoSimulator()
        self._sim.init()
        self._sim.add_robot()
        add_lab_scene(self._sim.scene, self._sim.worldbody, config.cube_size, config.cameras)
        self._server = SimulationServer(self._sim, hostname_candidates=[config.host])
        self._lock = threading.Lock()
        self._running = False
        self._physics: threading.Thread | None = None
        self.cameras = {name: SimCamera(name, c, self) for name, c in config.cameras.items()}
        self._renderer: _RenderThread | None = None

    @property
    def host(self) -> str:
        return self.config.host

    def start(self) -> "SimLab":
        self._server.init()
        model = self._sim.model
        self._cube_qpos = int(model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, CUBE_JOINT)])
        self._cube_qvel = int(model.jnt_dofadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, CUBE_JOINT)])
        self._cube_body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, CUBE_BODY)
        self.reset_cube()
        self._running = True
        self._physics = threading.Thread(target=self._run_physics, name="sim-physics", daemon=True)
        self._physics.start()
        if self.cameras:
            self._renderer = _RenderThread(self)
            self._renderer.start()
        return self

    def stop(self) -> None:
        self._running = False
        if self._renderer is not None:
            self._renderer.stop()
        if self._physics is not None:
            self._physics.join(timeout=2.0)
        self._server.cleanup()

    def __enter__(self) -> "SimLab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- ground truth ----------------------------------------------------------------------
    def cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Cube centre (m, world) and quaternion [x, y, z, w]."""
        with self._lock:
            q = self._sim.data.qpos[self._cube_qpos:self._cube_qpos + 7].copy()
        return q[:3], np.array([q[4], q[5], q[6], q[3]])

    def cube_lifted(self) -> bool:
        position, _ = self.cube_pose()
        return bool(position[2] - self.config.cube_size / 2 > self.config.lift_height)

    def reset_cube(self) -> np.ndarray:
        """Put the cube at a fresh random pose on the table; returns [x, y, yaw]."""
        c = self.config
        x, y = self._rng.uniform(*c.cube_x_range), self._rng.uniform(*c.cube_y_range)
        yaw = self._rng.uniform(*c.cube_yaw_range)
        with self._lock:
            data = self._sim.data
            data.qpos[self._cube_qpos:self._cube_qpos + 7] = [
                x, y, c.cube_size / 2, np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)
            ]
            data.qvel[self._cube_qvel:self._cube_qvel + 6] = 0.0
            mujoco.mj_forward(self._sim.model, data)
        return np.array([x, y, yaw])

    def snapshot(self) -> tuple[np.ndarray, float]:
        with self._lock:
            return self._sim.data.qpos.copy(), time.time()

    @property
    def model(self) -> mujoco.MjModel:
        return self._sim.model

    # -- physics loop ----------------------------------------------------------------------
    def _run_physics(self) -> None:
        dt = 0.001 / self.config.realtime_factor
        next_tick = time.perf_counter()
        while self._running:
            with self._lock:
                self._server.run_once(realtime=False)
            next_tick += dt
            delay = next_tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.05:
                next_tick = time.perf_counter()  # fell far behind: don't sprint to catch up


class SimCamera:
    """A rendered camera of the sim lab, with the same contract as the RealSense and UVC cameras."""

    def __init__(self, name: str, config: SimCameraConfig, lab: SimLab):
        self.name = name
        self.config = config
        self._lab = lab
        self._frame: Frame | None = None
        self._new = threading.Condition()
        self._last_read_seq = -1

    @property
    def intrinsics(self) -> CameraIntrinsics:
        c = self.config
        f = 0.5 * c.height / np.tan(np.deg2rad(c.fovy) / 2)  # MuJoCo's fovy is vertical
        return CameraIntrinsics(c.width, c.height, f, f, (c.width - 1) / 2, (c.height - 1) / 2)

    def start(self) -> None:
        """Rendering starts with the lab."""

    def stop(self) -> None:
        """Rendering stops with the lab."""

    def read(self, timeout: float = 1.0) -> Frame:
        with self._new:
            if not self._new.wait_for(
                lambda: self._frame is not None and self._frame.seq != self._last_read_seq, timeout
            ):
                raise CameraError(f"sim camera '{self.name}': no new frame within {timeout:.1f} s")
            self._last_read_seq = self._frame.seq
            return self._frame

    def _deliver(self, frame: Frame) -> None:
        with self._new:
            self._frame = frame
            self._new.notify_all()


class _RenderThread:
    """Renders every camera at its own rate from joint-state snapshots (own MjData, own GL context)."""

    def __init__(self, lab: SimLab):
        self._lab = lab
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-render", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=2.0)

    def _run(self) -> None:
        model = self._lab.model
        data = mujoco.MjData(model)
        cams = list(self._lab.cameras.values())
        try:
            renderers = {
                c.name: mujoco.Renderer(model, height=c.config.height, width=c.config.width) for c in cams
            }
        except Exception as exc:  # noqa: BLE001 - no GL: say how to fix it, keep physics running
            log.error("sim cameras disabled: cannot create a MuJoCo renderer (%s); set MUJOCO_GL=osmesa "
                      "or egl and install libosmesa6", exc)
            return
        next_due = {c.name: time.perf_counter() for c in cams}
        seq = {c.name: 0 for c in cams}
        while not self._stopping.is_set():
            now = time.perf_counter()
            due = [c for c in cams if next_due[c.name] <= now]
            if not due:
                self._stopping.wait(min(next_due.values()) - now)
                continue
            qpos, stamp = self._lab.snapshot()
            data.qpos[:] = qpos
            mujoco.mj_kinematics(model, data)
            mujoco.mj_camlight(model, data)
            for cam in due:
                renderer = renderers[cam.name]
                renderer.update_scene(data, camera=cam.name)
                image = renderer.render()
                cam._deliver(Frame(color=image, stamp=stamp, seq=seq[cam.name]))
                seq[cam.name] += 1
                next_due[cam.name] = max(next_due[cam.name] + 1.0 / cam.config.fps, now)
        for r in renderers.values():
            r.close()
