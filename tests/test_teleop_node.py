"""TeleopNode in-process over real ROS 2 pub/sub: the recorded session in, messages out."""

import ctypes
import os
import threading
import time
from pathlib import Path

import pytest
import rclpy
import sdl2
import yaml
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Joy
from std_msgs.msg import Bool, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from pld_robot.config import ConfigError, from_dict, load_node_params
from pld_robot.nodes.image_msgs import to_time
from pld_robot.nodes.teleop_node import TeleopNode, TeleopNodeConfig

ROOT = Path(__file__).resolve().parents[1]
SEQUENCE = yaml.safe_load((ROOT / "tests/data/joy_sequence.yaml").read_text())["frames"]
FRANKA_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
# A domain of its own keeps other tests' /joy and /arm/estop out of this module (IDs above 101
# can collide with Linux ephemeral ports).
DOMAIN_ID = 2 + os.getpid() % 100
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


class Probe(Node):
    """Stands in for the joy node and the consumers of teleop's output."""

    def __init__(self, context):
        super().__init__("teleop_probe", context=context)
        self.lock = threading.Lock()
        self.actions: list[JointTrajectory] = []
        self.events: list[str] = []
        self.intervening: list[bool] = []
        self.joy: list[Joy] = []
        self.joy_pub = self.create_publisher(Joy, "/joy", 10)
        self.arm_command_pub = self.create_publisher(JointTrajectory, "/arm/command", 10)
        self._listen(JointTrajectory, "/pld/teleop/action", self.actions)
        self._listen(String, "/pld/teleop/event", self.events, lambda m: m.data)
        self._listen(Bool, "/pld/teleop/intervening", self.intervening, lambda m: m.data)

    def listen_joy(self):
        self._listen(Joy, "/joy", self.joy)

    def _listen(self, msg_type, topic, into, convert=lambda m: m):
        def store(msg):
            with self.lock:
                into.append(convert(msg))

        self.create_subscription(msg_type, topic, store, QoSProfile(depth=1000))

    def wait(self, predicate, what, timeout=3.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return
            time.sleep(0.005)
        raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def ros():
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    executor = SingleThreadedExecutor(context=context)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    nodes = []

    def add(node):
        nodes.append(node)
        executor.add_node(node)
        return node

    yield context, add
    executor.shutdown()
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown(context=context)
    thread.join(timeout=5)


def wait_connected(probe: Probe, teleop: TeleopNode, with_joy_pub=True):
    def connected():
        outputs = [p for p in teleop.publishers if p.topic_name.startswith("/pld/teleop/")]
        joy_ok = not with_joy_pub or probe.joy_pub.get_subscription_count() > 0
        return joy_ok and len(outputs) == 3 and all(p.get_subscription_count() for p in outputs)

    probe.wait(connected, "teleop and probe to discover each other")


def joy(t: float, axes, buttons) -> Joy:
    msg = Joy(axes=[float(a) for a in axes], buttons=list(buttons))
    msg.header.stamp = to_time(t)
    return msg


def test_recorded_session_over_ros(ros):
    context, add = ros
    probe = add(Probe(context))
    teleop = add(
        TeleopNode(
            context=context,
            # The real config file, through ROS's own YAML parser (arrays come back typed).
            cli_args=["--ros-args", "--params-file", str(ROOT / "config/teleop.yaml")],
            # Lockstep publishing below leaves gaps; the input watchdog must not fire in them.
            parameter_overrides=[Parameter("input_timeout_s", value=30.0)],
        )
    )
    assert teleop.config.mapping.control_hz == 10.0
    wait_connected(probe, teleop)

    for i, frame in enumerate(SEQUENCE):
        probe.joy_pub.publish(joy(frame["t"], frame["axes"], frame["buttons"]))
        # Every update publishes `intervening` once: wait for it so no frame is coalesced or lost.
        probe.wait(lambda: len(probe.intervening) == i + 1, f"frame {i} to be handled")
    expected_events = [e for frame in SEQUENCE for e in frame["expect"]["events"]]
    probe.wait(lambda: len(probe.events) == len(expected_events), "all events")

    moving = [frame for frame in SEQUENCE if frame["expect"]["action"] is not None]
    assert probe.intervening == [frame["expect"]["action"] is not None for frame in SEQUENCE]
    assert probe.events == expected_events
    assert len(probe.actions) == len(moving)
    for msg, frame in zip(probe.actions, moving):
        assert msg.header.stamp == to_time(frame["t"])
        assert list(msg.joint_names) == FRANKA_NAMES
        assert len(msg.points) == 1
        point = msg.points[0]
        assert (point.time_from_start.sec, point.time_from_start.nanosec) == (0, 100_000_000)
        # Joy axes are float32: 0.55 arrives as 0.550000011..., a 1e-10 m difference at most.
        assert list(point.positions) == pytest.approx(frame["expect"]["action"], abs=1e-9)

    # An arm node that starts after the e-stop was pressed still gets it.
    late = add(Node("late_arm", context=context))
    estops = []
    late.create_subscription(Bool, "/arm/estop", lambda m: estops.append(m.data), LATCHED)
    probe.wait(lambda: estops, "the latched e-stop")
    time.sleep(0.1)
    assert estops == [True]


def test_joy_silence_ends_the_intervention_and_takeover_keeps_the_gripper(ros):
    context, add = ros
    probe = add(Probe(context))
    teleop = add(
        TeleopNode(context=context, parameter_overrides=[Parameter("input_timeout_s", value=0.3)])
    )
    wait_connected(probe, teleop)
    probe.wait(lambda: probe.arm_command_pub.get_subscription_count(), "teleop on /arm/command")

    # The policy has the gripper closed when the human takes over.
    executed = JointTrajectory(
        joint_names=FRANKA_NAMES, points=[JointTrajectoryPoint(positions=[0.0] * 6 + [1.0])]
    )
    probe.arm_command_pub.publish(executed)
    time.sleep(0.2)
    lb_held = [0] * 9 + [1] + [0] * 11
    probe.joy_pub.publish(joy(5.0, [0.0] * 6, lb_held))
    probe.wait(lambda: probe.actions, "the takeover action")
    assert probe.actions[0].points[0].positions[6] == 1.0

    started = time.monotonic()
    probe.wait(lambda: "intervene_end" in probe.events, "the watchdog to end the intervention")
    assert time.monotonic() - started < 1.5
    assert probe.events == ["intervene_start", "intervene_end"]
    assert probe.intervening == [True, False]


def test_sdl_source_reads_the_gamepad_publishes_joy_and_reports_unplug(ros):
    context, add = ros
    subsystems = sdl2.SDL_INIT_GAMECONTROLLER | sdl2.SDL_INIT_JOYSTICK
    assert sdl2.SDL_InitSubSystem(subsystems) == 0, sdl2.SDL_GetError()
    try:
        desc = sdl2.SDL_VirtualJoystickDesc(
            version=sdl2.SDL_VIRTUAL_JOYSTICK_DESC_VERSION,
            type=sdl2.SDL_JOYSTICK_TYPE_GAMECONTROLLER,
            naxes=6,
            nbuttons=21,
            name=b"Node Test Pad",
        )
        index = sdl2.SDL_JoystickAttachVirtualEx(ctypes.byref(desc))
        assert index >= 0, sdl2.SDL_GetError()
        pad = sdl2.SDL_JoystickOpen(index)
        sdl2.SDL_JoystickSetVirtualButton(pad, 9, 1)  # LB: dead-man
        sdl2.SDL_JoystickSetVirtualAxis(pad, 1, -32768)  # left stick fully up

        probe = add(Probe(context))
        probe.listen_joy()
        teleop = add(
            TeleopNode(
                context=context,
                parameter_overrides=[
                    Parameter("source", value="sdl"),
                    Parameter("device_name", value="node test"),
                ],
            )
        )
        wait_connected(probe, teleop, with_joy_pub=False)
        probe.wait(lambda: probe.actions and probe.joy, "actions and /joy from the gamepad")
        with probe.lock:
            joy_msg, action = probe.joy[-1], probe.actions[-1]
        assert joy_msg.axes[1] == 1.0 and joy_msg.buttons[9] == 1 and len(joy_msg.buttons) == 21
        assert list(action.points[0].positions) == pytest.approx([0.01] + [0.0] * 6)
        assert probe.events == ["intervene_start"]

        sdl2.SDL_JoystickClose(pad)
        sdl2.SDL_JoystickDetachVirtual(index)
        probe.wait(lambda: "intervene_end" in probe.events, "the unplug to end the intervention")
        assert probe.events == ["intervene_start", "intervene_end"]
        assert probe.intervening[-1] is False
    finally:
        sdl2.SDL_QuitSubSystem(subsystems)


def test_action_names_must_have_seven_dimensions(ros):
    context, _ = ros
    with pytest.raises(ConfigError, match="action_names must name 7 dimensions"):
        TeleopNode(
            context=context,
            parameter_overrides=[Parameter("action_names", value=["j1", "j2", "gripper"])],
        )


def test_node_config_defaults_match_the_config_file():
    params = load_node_params(ROOT / "config/teleop.yaml", "teleop_node")
    assert from_dict(TeleopNodeConfig, params) == TeleopNodeConfig()
