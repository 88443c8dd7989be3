"""The whole sim graph end to end: sim_node (franky-sim in a child process), arm_node, teleop_node,
driven over real DDS by the same runner `pld-robot sim` uses."""

import gc
import os
import random
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from pld_robot.data import EpisodeReader, Source, validate
from pld_robot.nodes.action_msgs import chunk_to_msg
from pld_robot.nodes.arm_node import ESTOP_QOS
from pld_robot.nodes.runner import GraphRunner
from scripted_pickup import ScriptedPickUpNode
from pld_robot.paths import shipped_config
from pld_robot.robots.action_spec import ActionSpec
from waiting import wait_for

pytestmark = pytest.mark.slow

HOST = "127.0.0.61"  # franky-sim binds fixed ports: an address of this module's own
PLD_NODES = ("policy_node", "orchestrator_node", "sim_operator")  # the lab alone: the tests drive it


class Probe(Node):
    def __init__(self):
        super().__init__("graph_probe")
        self.images: list[Image] = []
        self.status: list[DiagnosticStatus] = []
        self.create_subscription(Image, "/camera/front/color/image_raw", self.images.append, qos_profile_sensor_data)
        self.create_subscription(DiagnosticStatus, "/arm/status", self.status.append, 10)
        self.command = self.create_publisher(type(chunk_to_msg(np.zeros(7), ["a"] * 7, 10.0, 0.0)), "/arm/command", 10)
        self.estop = self.create_publisher(Bool, "/arm/estop", ESTOP_QOS)
        self.reset_estop = self.create_client(Trigger, "/arm/reset_estop")


@pytest.fixture(scope="module")
def graph():
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(20, 99))
    overrides = {"sim_node": {"lab": {"host": HOST}}, "arm_node": {"arm": {"host": HOST}}}
    with GraphRunner(shipped_config("sim.yaml"), overrides=overrides, exclude=PLD_NODES) as runner:
        probe = runner.add_node(Probe())
        driver = runner.add_node(ScriptedPickUpNode(ActionSpec(), lift_height=0.05, cube_size=0.04))
        driver.wait_for_inputs(timeout=30.0)
        yield runner, probe, driver
    # rclpy can leave a timer Task that raised after its node was destroyed; collect it here, where
    # its "exception was never retrieved" note is captured, not after pytest's summary line.
    gc.collect()


def test_sim_cameras_publish_rendered_frames(graph):
    _, probe, _ = graph
    wait_for(lambda: len(probe.images) >= 3, 10.0, "three front-camera images")
    msg = probe.images[-1]
    assert (msg.width, msg.height, msg.encoding) == (128, 128, "rgb8")
    image = np.frombuffer(bytes(msg.data), np.uint8).reshape(128, 128, 3)
    assert image.std() > 10, "a rendered scene, not a blank frame"


def test_scripted_pick_up_through_arm_command_lifts_the_cube(graph):
    _, _, driver = graph
    result = driver.run_episode(0, max_steps=200)
    assert result.lifted, f"cube only reached z={result.cube_height:.3f} m"


def test_nan_command_is_refused_and_reported(graph):
    _, probe, _ = graph
    probe.status.clear()
    action = np.zeros(7)
    action[1] = np.nan
    probe.command.publish(chunk_to_msg(action, ActionSpec().names, 10.0, time.time()))
    wait_for(lambda: any("dy" in s.message and "refused" in s.message for s in probe.status), 5.0,
             "/arm/status to report the refused NaN command")


def test_estop_message_latches_until_reset(graph):
    runner, probe, driver = graph
    arm = runner.nodes["arm_node"].arm
    probe.estop.publish(Bool(data=True))
    wait_for(lambda: arm.state().estop, 5.0, "the arm to latch the e-stop")
    before = arm.state().ee_position
    for _ in range(5):
        probe.command.publish(chunk_to_msg([0.01, 0, 0, 0, 0, 0, 0], ActionSpec().names, 10.0, time.time()))
        time.sleep(0.1)
    assert np.linalg.norm(arm.state().ee_position - before) < 0.002, "arm moved while e-stopped"
    assert arm.state().estop, "e-stop released itself"
    assert driver.call(probe.reset_estop) == "e-stop reset"
    assert not arm.state().estop


def test_pld_robot_sim_runs_the_whole_graph_and_records_hybrid_episodes(tmp_path):
    """`pld-robot sim --mode hybrid` as a user runs it (on its own address and domain): the scripted
    policy served in its own process, the orchestrator recording, the simulated operator resetting."""
    config = tmp_path / "sim.yaml"
    config.write_text(shipped_config("sim.yaml").read_text().replace('"127.0.0.1"', '"127.0.0.62"'))
    exact = tmp_path / "exact_policy.yaml"
    exact.write_text("chunk_length: 10\nmiss_probability: 0.0\n")
    store = tmp_path / "sim.zarr"
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(100, 160)))
    done = subprocess.run(
        [sys.executable, "-m", "pld_robot.cli", "sim", "--episodes", "2", "--mode", "hybrid", "--max-steps", "300",
         "--config", str(config), "--policy-config", str(exact), "--store", str(store),
         "--actors", str(tmp_path / "actors")],  # none there: the residual node answers with zero
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "session: 2 episode(s)" in done.stdout, done.stdout

    assert validate(store) == []
    reader = EpisodeReader(store)
    assert reader.num_episodes == 2
    starved_ticks = int(re.search(r"(\d+) starved tick\(s\)", done.stdout).group(1))
    recorded_starved = 0
    for i in range(2):
        info, ep = reader.info(i), reader.episode(i)
        probe = info.extra["probe_steps"]
        assert info.mode == "hybrid" and 0 <= probe <= 0.6 * 300
        # A tick with no base action (its chunk came late, as on a loaded CI machine) holds the arm and
        # is recorded as the probe's, with base_action 0; every other tick follows the probe split.
        starved = np.abs(ep["base_action"]).sum(axis=1) == 0
        assert (ep["action"][starved, :6] == 0).all(), "a starved tick moved the arm"
        recorded_starved += int(starved.sum())
        expected = np.where(np.arange(info.length) < probe, Source.PROBE, Source.RESIDUAL)
        expected[starved] = Source.PROBE
        np.testing.assert_array_equal(ep["source"], expected)
        assert ep["front_rgb"].shape == (info.length, 128, 128, 3) and ep["front_rgb"][-1].std() > 10
        assert ep["dropped"].sum() == 0 and (np.diff(ep["timestamp"]) >= 0).all()
        # executed = the policy's action as the safety filter let it through: same gripper, bounded deltas
        np.testing.assert_array_equal(ep["action"][~starved, 6], ep["base_action"][~starved, 6])
        assert np.abs(ep["action"][:, :3]).max() <= 0.02 + 1e-6
        assert info.outcome in ("success", "timeout"), info.operator_note
        if info.outcome == "success":  # ended by the ground-truth signal the label records
            assert ep["success_label"][-1] == 1 and ep["success_label"][0] == 0
    assert recorded_starved <= starved_ticks, "the summary counts every starved tick the store holds"
    assert recorded_starved <= 0.1 * sum(reader.info(i).length for i in range(2)), "the policy kept up"
