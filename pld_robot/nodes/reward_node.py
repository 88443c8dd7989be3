"""reward_node: the success classifier on the latest camera frames, at control rate.

In:  /camera/<name>/color/image_raw (the cameras the stage classifiers look at)
     /pld/reward/stage (Int32, latched; the orchestrator's current stage of a multi-stage task)
Out: /pld/reward/success_prob (Float32) every tick with fresh frames
     /pld/reward/success (Header) when the probability has been at or over the threshold for
       `success_ticks` ticks in a row: stamp = capture time of the frames that completed the run,
       frame_id = the stage; the orchestrator ends the episode (or moves to the next stage) on it
     /pld/reward/status (DiagnosticStatus, 1 Hz): versions, threshold, inference time, stale ticks
A checkpoint folder that a new `pld-robot train-reward` run writes or replaces is loaded within
`reload_check_s`, without a restart; until a stage has one, that stage is not judged (the operator's
buttons end its episodes) and the status says so.

Checkpoints load on a thread of their own (a pretrained tower takes seconds), and the node spins on a
single-threaded executor: measured on rclpy's MultiThreadedExecutor with a 50 Hz camera, one
inference of a few milliseconds now and then waited 0.1-1 s for the GIL (rclpy's busy loop that
nodes/executor.py works around).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Float32, Header, Int32

from pld_robot.nodes.image_msgs import from_time, image_to_numpy, to_time
from pld_robot.nodes.params import node_config
from pld_robot.nodes.qos import LATCHED
from pld_robot.nodes.reload_watcher import ReloadWatcher
from pld_robot.nodes.spin import run_node
from pld_robot.reward.serving import StagedClassifier


@dataclass(frozen=True)
class RewardNodeConfig:
    checkpoints: tuple[str, ...] = ()  # one reward checkpoint folder per stage, in stage order
    rate_hz: float = 10.0  # = the control rate
    success_ticks: int = 3
    threshold: float = 0.0  # 0: each checkpoint's own, chosen by train-reward for its target precision
    camera_timeout_s: float = 0.5  # frames older than this are not judged
    reload_check_s: float = 2.0
    torch_threads: int = 1  # leave the other cores to the control loop

    def __post_init__(self):
        if not self.checkpoints or not all(self.checkpoints):
            raise ValueError("checkpoints: one reward checkpoint folder per stage is needed "
                             "(train one: pld-robot train-reward STORE --out DIR)")
        if self.rate_hz <= 0 or self.success_ticks < 1 or self.camera_timeout_s <= 0 or self.reload_check_s <= 0:
            raise ValueError("rate_hz, camera_timeout_s and reload_check_s must be positive, success_ticks >= 1")
        if not 0.0 <= self.threshold <= 1.0 or self.torch_threads < 1:
            raise ValueError("threshold must be in [0, 1] (0: the checkpoint's) and torch_threads >= 1")


class RewardNode(Node):
    def __init__(self, node_name: str = "reward_node", **kwargs):
        super().__init__(node_name, automatically_declare_parameters_from_overrides=True, **kwargs)
        self.config = c = node_config(self, RewardNodeConfig)
        torch.set_num_threads(c.torch_threads)
        self.classifier = StagedClassifier(c.checkpoints, c.success_ticks, c.threshold)
        self._lock = threading.Lock()
        self._subscribed: set[str] = set()
        self._frames: dict[str, tuple[float, np.ndarray]] = {}
        self._infer_ms: deque[float] = deque(maxlen=100)
        self._judged: tuple[float, ...] = ()  # capture stamps of the frames judged last
        self.stale_ticks = 0
        self.late_ticks = 0
        self._prob = self.create_publisher(Float32, "/pld/reward/success_prob", 10)
        self._success = self.create_publisher(Header, "/pld/reward/success", 10)
        self._status = self.create_publisher(DiagnosticStatus, "/pld/reward/status", 10)
        self.create_subscription(Int32, "/pld/reward/stage", self._on_stage, LATCHED)
        self.create_timer(1.0 / c.rate_hz, self._tick)
        self.create_timer(1.0, self._publish_status)
        self._reload()
        self._subscribe_cameras()
        for stage, path in enumerate(self.classifier.paths):
            if self.classifier.versions[stage] is None:
                self.get_logger().warning(f"stage {stage}: no reward checkpoint in {path} yet; its episodes end by "
                                          "the operator's buttons until one appears (pld-robot train-reward)")
        self._watcher = ReloadWatcher(self._reload, self.config.reload_check_s, "reward-reload")

    def _on_frame(self, camera: str):
        def callback(msg: Image) -> None:
            frame = image_to_numpy(msg)
            with self._lock:
                self._frames[camera] = (from_time(msg.header.stamp), frame)
        return callback

    def _on_stage(self, msg: Int32) -> None:
        try:
            self.classifier.set_stage(msg.data)
        except ValueError as exc:
            self.get_logger().error(str(exc))

    def _tick(self) -> None:
        start = time.monotonic()
        self._subscribe_cameras()
        if self.classifier.current is None:
            return
        needed = self.classifier.current.config.cameras
        with self._lock:
            frames = {c: self._frames[c] for c in needed if c in self._frames}
        now = time.time()
        if len(frames) < len(needed) or now - min(s for s, _ in frames.values()) > self.config.camera_timeout_s:
            self.stale_ticks += 1
            self.classifier.miss_tick()
            return
        stamps = tuple(s for s, _ in frames.values())
        if stamps == self._judged:  # no new frame since the last tick: k ticks must be k observations
            return
        self._judged = stamps
        prob, declared = self.classifier.judge({c: f for c, (_, f) in frames.items()})
        self._prob.publish(Float32(data=prob))
        if declared:
            stamp = min(stamps)
            self._success.publish(Header(stamp=to_time(stamp), frame_id=str(self.classifier.stage)))
            self.get_logger().info(f"success (stage {self.classifier.stage}, p={prob:.3f})")
        elapsed = time.monotonic() - start
        self._infer_ms.append(elapsed * 1e3)
        self.late_ticks += elapsed > 1.0 / self.config.rate_hz

    def _reload(self) -> None:
        for loaded, message in self.classifier.reload_changed():
            (self.get_logger().info if loaded else self.get_logger().error)(message)

    def _subscribe_cameras(self) -> None:
        """Cameras of newly loaded classifiers (subscribed from the executor's thread)."""
        for camera in set(self.classifier.cameras) - self._subscribed:
            self._subscribed.add(camera)
            self.create_subscription(Image, f"/camera/{camera}/color/image_raw", self._on_frame(camera),
                                     qos_profile_sensor_data)

    def _publish_status(self) -> None:
        ms = np.array(self._infer_ms) if self._infer_ms else np.zeros(1)
        stage, checkpoint = self.classifier.stage, self.classifier.current
        if checkpoint is None:
            level, message = DiagnosticStatus.WARN, f"stage {stage}: no classifier yet ({self.classifier.paths[stage]})"
        elif self.stale_ticks and not self._infer_ms:
            level, message = DiagnosticStatus.WARN, f"no fresh frames from {', '.join(checkpoint.config.cameras)}"
        else:
            level, message = DiagnosticStatus.OK, f"stage {stage}, version {checkpoint.version}"
        status = DiagnosticStatus(name=self.get_name(), level=level, message=message)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in (
            ("version", checkpoint.version if checkpoint else ""), ("stage", stage),
            ("threshold", round(self.classifier.threshold_of(self.classifier.stage), 4)),
            ("infer_ms_p50", round(float(np.percentile(ms, 50)), 2)), ("infer_ms_max", round(float(ms.max()), 2)),
            ("stale_ticks", self.stale_ticks), ("late_ticks", self.late_ticks))]
        self._status.publish(status)

    def destroy_node(self):
        if hasattr(self, "_watcher"):
            self._watcher.stop()
        return super().destroy_node()


def main(args=None) -> None:
    run_node(RewardNode, args)


if __name__ == "__main__":
    main()
