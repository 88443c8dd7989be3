"""JoyMapper on a recorded gamepad session and on the edges of its contract (no ROS, no SDL)."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from pld_robot.config import ConfigError, from_dict, load_node_params
from pld_robot.teleop.mapping import JoyLayoutError, JoyMapper, TeleopConfig, TeleopEvent

ROOT = Path(__file__).resolve().parents[1]
SEQUENCE = yaml.safe_load((ROOT / "tests/data/joy_sequence.yaml").read_text())["frames"]

IDLE_AXES = [0.0] * 6
LB, RB, A, B, START, DPAD_RIGHT = 9, 10, 0, 1, 6, 14


def buttons(*pressed: int) -> list[int]:
    return [int(i in pressed) for i in range(21)]


def default_mapping() -> TeleopConfig:
    params = load_node_params(ROOT / "config/teleop.yaml", "teleop_node")
    return from_dict(TeleopConfig, params["mapping"], where="teleop_node.mapping")


def test_config_file_matches_the_documented_defaults():
    assert default_mapping() == TeleopConfig()


def test_recorded_session_gives_exactly_the_expected_commands_and_events():
    mapper = JoyMapper(default_mapping())
    for frame in SEQUENCE:
        out = mapper.update(frame["axes"], frame["buttons"], frame["t"])
        expected = frame["expect"]
        where = f"frame at t={frame['t']} ({frame['note']})"
        if expected["action"] is None:
            assert out.action is None, where
            assert not out.deadman, where
        else:
            assert out.deadman, where
            assert out.action.shape == (7,), where
            np.testing.assert_allclose(
                out.action, expected["action"], rtol=0, atol=1e-12, err_msg=where
            )
        assert [e.value for e in out.events] == expected["events"], where
        assert out.stamp == frame["t"]


def test_deadzone_is_cut_and_the_rest_rescaled():
    mapper = JoyMapper(TeleopConfig(deadzone=0.2, max_translation_m=0.01))
    held = buttons(LB)

    def dx(stick: float) -> float:
        return mapper.update([0.0, stick, 0, 0, 0, 0], held, 0.0).action[0]

    assert dx(0.2) == 0.0
    assert dx(-0.19) == 0.0
    assert dx(0.6) == pytest.approx(0.005)
    assert dx(-0.6) == pytest.approx(-0.005)
    assert dx(1.0) == pytest.approx(0.01)
    assert dx(0.2001) == pytest.approx(0.01 * 0.0001 / 0.8)  # continuous at the edge


def test_too_few_axes_names_the_missing_index():
    mapper = JoyMapper(TeleopConfig())
    with pytest.raises(JoyLayoutError) as info:
        mapper.update([0.0] * 4, buttons(), 0.0)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "4 axes" in message
    assert "axis 4 (z)" in message and "axis 5 (z)" in message
    assert "axis 3" not in message


def test_too_few_buttons_names_the_missing_index():
    # The legacy Xbox layout of joy_node has 11 buttons: no d-pad buttons.
    mapper = JoyMapper(TeleopConfig())
    with pytest.raises(JoyLayoutError, match=r"button 13 \(roll\), button 14 \(roll\)"):
        mapper.update(IDLE_AXES, [0] * 11, 0.0)


def test_a_bad_message_changes_no_state():
    mapper = JoyMapper(TeleopConfig())
    with pytest.raises(JoyLayoutError):
        mapper.update(IDLE_AXES, [1] * 11, 0.0)
    out = mapper.update(IDLE_AXES, buttons(LB), 0.1)
    assert out.events == (TeleopEvent.INTERVENE_START,)


def test_simultaneous_presses_fire_estop_first_then_intervention_then_labels():
    mapper = JoyMapper(TeleopConfig())
    out = mapper.update(IDLE_AXES, buttons(START, A, LB, B), 0.0)
    assert out.events == (
        TeleopEvent.ESTOP,
        TeleopEvent.INTERVENE_START,
        TeleopEvent.SUCCESS,
        TeleopEvent.START,
    )


def test_gripper_toggle_needs_the_deadman():
    mapper = JoyMapper(TeleopConfig())
    mapper.update(IDLE_AXES, buttons(RB), 0.0)
    mapper.update(IDLE_AXES, buttons(), 0.1)
    assert mapper.update(IDLE_AXES, buttons(LB), 0.2).action[6] == 0.0
    assert mapper.update(IDLE_AXES, buttons(LB, RB), 0.3).action[6] == 1.0
    mapper.update(IDLE_AXES, buttons(LB), 0.4)
    assert mapper.update(IDLE_AXES, buttons(LB, RB), 0.5).action[6] == 0.0


def test_takeover_keeps_the_gripper_the_arm_has():
    mapper = JoyMapper(TeleopConfig())
    mapper.sync_gripper(0.93)
    assert mapper.update(IDLE_AXES, buttons(LB), 0.0).action[6] == 1.0
    mapper.sync_gripper(0.0)  # our own command echoed back while the human drives
    assert mapper.update(IDLE_AXES, buttons(LB), 0.1).action[6] == 1.0


def test_release_ends_the_intervention_and_a_held_deadman_restarts_it():
    mapper = JoyMapper(TeleopConfig())
    mapper.update(IDLE_AXES, buttons(LB), 0.0)
    out = mapper.release(0.5)
    assert out.action is None and not out.deadman
    assert out.events == (TeleopEvent.INTERVENE_END,)
    assert mapper.release(0.6).events == ()
    assert mapper.update(IDLE_AXES, buttons(LB), 1.0).events == (TeleopEvent.INTERVENE_START,)


def test_rotation_norm_is_capped():
    mapper = JoyMapper(TeleopConfig(max_rotation_rad=0.05))
    out = mapper.update([0.0, 0.0, 1.0, 1.0, 0.0, 0.0], buttons(LB, DPAD_RIGHT), 0.0)
    assert np.linalg.norm(out.action[3:6]) == pytest.approx(0.05)
    np.testing.assert_allclose(out.action[3:6], [0.05 / np.sqrt(3)] * 3)


@pytest.mark.parametrize(
    "mapping, complaint",
    [
        ({"gripper_button": 9}, "button 9 is bound to both deadman_button and gripper_button"),
        ({"estop_button": 14}, "button 14 is bound to both estop_button and roll"),
        ({"x": {"axes": [1, 2], "axis_signs": [1.0]}}, "2 axes but 1 axis_signs"),
        ({"deadzone": 1.0}, "deadzone must be in [0, 1)"),
        ({"max_translation_m": 0.0}, "max_translation_m must be positive"),
    ],
)
def test_bad_configs_say_what_is_wrong(mapping, complaint):
    with pytest.raises(ConfigError) as info:
        from_dict(TeleopConfig, mapping, where="teleop_node.mapping")
    assert complaint in str(info.value)


def test_the_success_label_is_true_exactly_while_its_button_is_held():
    mapper = JoyMapper(TeleopConfig())
    buttons = [0] * 15
    assert not mapper.update([0.0] * 6, buttons, 0.0).success_label
    buttons[3] = 1  # Y
    held = [mapper.update([0.0] * 6, buttons, t).success_label for t in (0.1, 0.2)]
    assert held == [True, True], "a held label, not an edge"
    assert mapper.update([0.0] * 6, buttons, 0.3).events == (), "holding it is no episode event"
    assert not mapper.release(0.4).success_label, "an unplugged pad labels nothing"
