"""reward_node over DDS: it judges the frames a camera publishes, declares success after k ticks (once),
follows the orchestrator's stage, picks up checkpoints as they appear or are replaced, and stops
judging when the camera goes quiet."""

from __future__ import annotations

import os
import random
import threading
import time

import numpy as np
import pytest
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Float32, Header, Int32

from pld_robot.nodes.image_msgs import from_time, numpy_to_image
from pld_robot.nodes.qos import LATCHED
from pld_robot.nodes.reward_node import RewardNode
from pld_robot.reward.checkpoint import save_reward_checkpoint
from pld_robot.reward.model import RewardClassifier, RewardModelConfig
from waiting import wait_for

DOMAIN_ID = random.Random(os.getpid()).randint(2, 230)
MODEL = RewardModelConfig(cameras=("front",), image_size=32, channels=(8,), hidden=8)


def constant_classifier(logit: float) -> RewardClassifier:
    """Says success (or not) whatever it sees: the node's behaviour, not the model's, is under test."""
    model = RewardClassifier(MODEL)
    torch.nn.init.zeros_(model.head[-1].weight)
    torch.nn.init.constant_(model.head[-1].bias, logit)
    return model


class Camera(Node):
    def __init__(self, context):
        super().__init__("front_camera_and_probe", context=context)
        self.lock = threading.Lock()
        self.publishing = True
        self.probs: list[float] = []
        self.successes: list[Header] = []
        self.status: list[DiagnosticStatus] = []
        self._image = self.create_publisher(Image, "/camera/front/color/image_raw", 10)
        self.stage = self.create_publisher(Int32, "/pld/reward/stage", LATCHED)
        self.create_subscription(Float32, "/pld/reward/success_prob", lambda m: self._keep(self.probs, m.data), 10)
        self.create_subscription(Header, "/pld/reward/success", lambda m: self._keep(self.successes, m), 10)
        self.create_subscription(DiagnosticStatus, "/pld/reward/status", lambda m: self._keep(self.status, m), 10)
        self.frame = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
        self.create_timer(0.02, self._publish)

    def _keep(self, into: list, item) -> None:
        with self.lock:
            into.append(item)

    def _publish(self) -> None:
        if self.publishing:
            self._image.publish(numpy_to_image(self.frame, time.time(), "front"))

    def count(self, what: list) -> int:
        with self.lock:
            return len(what)


@pytest.fixture
def graph(tmp_path):
    """A reward_node with two stages whose checkpoint folders do not exist yet, and a camera."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    executor = SingleThreadedExecutor(context=context)  # as run_node spins it
    params = {"checkpoints": [str(tmp_path / "stage0"), str(tmp_path / "stage1")], "rate_hz": 20.0,
              "success_ticks": 3, "reload_check_s": 0.2, "camera_timeout_s": 0.2}
    node = RewardNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    camera = Camera(context)
    for n in (node, camera):
        executor.add_node(n)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node, camera, tmp_path
    executor.shutdown()
    for n in (camera, node):
        n.destroy_node()
    rclpy.shutdown(context=context)
    thread.join(timeout=5)


def test_the_node_judges_declares_once_follows_stages_and_reloads(graph):
    node, camera, folder = graph
    wait_for(lambda: any(s.level == DiagnosticStatus.WARN and "no classifier yet" in s.message
                         for s in list(camera.status)), 5, "a status saying stage 0 has no classifier")
    assert camera.count(camera.probs) == 0, "nothing is judged without a classifier"

    save_reward_checkpoint(constant_classifier(-10.0), 0.5, folder / "stage0")  # appears while running
    wait_for(lambda: camera.count(camera.probs) >= 10, 5, "success probabilities once stage 0's checkpoint appears")
    assert max(camera.probs) < 0.01 and camera.count(camera.successes) == 0

    save_reward_checkpoint(constant_classifier(10.0), 0.5, folder / "stage1")
    camera.stage.publish(Int32(data=1))  # the orchestrator moved on to stage 1
    wait_for(lambda: camera.count(camera.successes) == 1, 5, "stage 1 declared done")
    declared = camera.successes[0]
    assert declared.frame_id == "1" and time.time() - from_time(declared.stamp) < 1.0
    time.sleep(0.5)
    assert camera.count(camera.successes) == 1, "success stays true: declared once, not every tick"

    version = save_reward_checkpoint(constant_classifier(10.0), 0.5, folder / "stage0")  # retrained in place
    wait_for(lambda: node.classifier.versions[0] == version, 5, "stage 0's new version loaded")
    camera.stage.publish(Int32(data=0))
    wait_for(lambda: camera.count(camera.successes) == 2, 5, "stage 0 declared done with its new classifier")
    assert camera.successes[1].frame_id == "0"
    wait_for(lambda: any(dict((v.key, v.value) for v in s.values).get("version") == version
                         for s in list(camera.status)), 3, "the status to name the new version")

    camera.publishing = False  # the camera goes quiet: no judging on frames older than camera_timeout_s
    time.sleep(0.4)
    judged = camera.count(camera.probs)
    time.sleep(0.5)
    assert camera.count(camera.probs) == judged and node.stale_ticks > 5
    camera.publishing = True
    wait_for(lambda: camera.count(camera.successes) == 3, 5, "a new run of ticks after the gap declares again")
