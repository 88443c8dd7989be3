"""A Joy sequence with the dead-man held over known ticks drives a rollout on the Franka driver
against franky-sim: exactly those steps are recorded as `human`, and their executed actions are the
teleop actions as the safety filter let them through.

The tick loop here is the orchestrator's, without ROS, so that ticks are exact: JoyMapper (the
gamepad mapping teleop_node uses), the Rollout machine, FrankaArm.step and the EpisodeWriter."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from pld_robot.config import from_dict, load_node_params
from pld_robot.data import EpisodeInfo, EpisodeReader, EpisodeWriter, Source, StoreSchema, WriterConfig
from pld_robot.episode.modes import Mode
from pld_robot.episode.rollout import Event, Rollout, RolloutConfig, TickInputs
from pld_robot.nodes.observation import EE_STATE_NAMES
from pld_robot.robots.franka import FrankaArm, FrankaConfig
from pld_robot.sim.lab import SimLab, SimLabConfig
from pld_robot.teleop.mapping import JoyMapper, TeleopConfig

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.54"  # franky-sim binds fixed ports: an address of this module's own
CONFIG = dataclasses.replace(
    from_dict(FrankaConfig, load_node_params(ROOT / "config/sim.yaml", "arm_node")["arm"], where="arm"),
    host=HOST, connect_timeout_s=10.0)
TELEOP = TeleopConfig()
HUMAN_TICKS = set(range(5, 12)) | set(range(20, 24))  # the dead-man is held on exactly these ticks
TICKS = 30


def joy(tick: int) -> tuple[list[float], list[int]]:
    """Left stick pushed forward and to the side, the right stick turning, LB (dead-man) as scheduled."""
    axes = [0.0] * 8
    axes[1], axes[0], axes[2] = 1.0, -0.6, 0.5
    axes[4] = axes[5] = 1.0  # triggers released
    buttons = [0] * 15
    buttons[TELEOP.deadman_button] = int(tick in HUMAN_TICKS)
    return axes, buttons


def test_joy_sequence_with_the_deadman_is_recorded_as_human_exactly(tmp_path):
    base = np.array([0.0, 0.0, -0.004, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)  # a slow descent
    schema = StoreSchema({}, EE_STATE_NAMES, CONFIG.action.names, CONFIG.action.control_hz)
    with SimLab(SimLabConfig(host=HOST, cameras={})):
        arm = FrankaArm(CONFIG)
        arm.connect()
        try:
            arm.home()
            mapper, rollout = JoyMapper(TELEOP), Rollout(RolloutConfig(mode=Mode.BASE, max_steps=TICKS))
            rollout.tick(TickInputs(base, None, None, base))
            rollout.homed()
            with EpisodeWriter.open(tmp_path / "s.zarr", schema, config=WriterConfig(sync_on_commit=False)) as w:
                teleop_sent = {}
                hold = np.zeros(7, dtype=np.float32)
                for tick in range(-1, TICKS):
                    out = mapper.update(*joy(max(tick, 0)), stamp=time.time())
                    events = (Event.START,) if tick == -1 else ()
                    plan = rollout.tick(TickInputs(base, None, out.action, hold, events=events))
                    if plan.begin:
                        w.begin_episode(EpisodeInfo(mode="base"))
                        continue
                    s = arm.state()
                    target = arm.step(plan.command)
                    if plan.source is Source.HUMAN:
                        teleop_sent[tick] = out.action
                    w.add_step({"state": np.concatenate([s.ee_position, s.ee_quaternion, [s.gripper_width]]),
                                "action": target.executed, "base_action": base,
                                "teleop_action": out.action if out.action is not None else hold,
                                "source": plan.source})
                    if plan.end is not None:
                        w.end_episode(plan.end).result(10)
                    time.sleep(CONFIG.action.period)
        finally:
            arm.hold()
            arm.close()
    ep = EpisodeReader(tmp_path / "s.zarr").episode(0)
    human = set(np.flatnonzero(ep["source"] == Source.HUMAN))
    assert human == HUMAN_TICKS
    assert set(np.flatnonzero(ep["source"] == Source.PROBE)) == set(range(TICKS)) - HUMAN_TICKS
    for tick in sorted(HUMAN_TICKS):
        sent = teleop_sent[tick]
        np.testing.assert_allclose(ep["teleop_action"][tick], sent, atol=1e-7)
        assert np.abs(sent[:6]).max() > 0.004, "a real push, not a zero action"
        # within the limits and the box, the safety filter lets the person's step through as it is
        np.testing.assert_allclose(ep["action"][tick], sent, atol=1e-6)
    for tick in set(range(TICKS)) - HUMAN_TICKS:
        np.testing.assert_allclose(ep["action"][tick][:3], base[:3], atol=1e-6)
