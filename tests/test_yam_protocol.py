"""The Damiao MIT-mode frames, against byte strings worked out by hand from the public protocol,
and round trips within one quantisation step for both motor types of the YAM."""

from __future__ import annotations

import numpy as np
import pytest

from pld_robot.robots.yam.config import YamConfig
from pld_robot.robots.yam.protocol import (
    CLEAR_ERROR, DISABLE, ENABLE, ERROR_NAMES, SAVE_ZERO, Feedback, MitCommand, MotorType, error_name,
    is_special, pack_command, pack_feedback, unpack_command, unpack_feedback,
)

TYPES = YamConfig().motor_types
DM4340, DM4310 = TYPES["DM4340"], TYPES["DM4310"]


def test_the_motor_types_carry_the_published_ranges():
    assert (DM4340.p_max, DM4340.v_max, DM4340.t_max) == (12.5, 8.0, 28.0)
    assert (DM4310.p_max, DM4310.v_max, DM4310.t_max) == (12.5, 30.0, 10.0)
    with pytest.raises(ValueError, match="v_max"):
        MotorType(v_max=0.0)


def test_special_frames_are_seven_ff_and_a_code():
    assert ENABLE.hex() == "fffffffffffffffc"
    assert DISABLE.hex() == "fffffffffffffffd"
    assert SAVE_ZERO.hex() == "fffffffffffffffe"
    assert CLEAR_ERROR.hex() == "fffffffffffffffb"
    assert all(is_special(f) for f in (ENABLE, DISABLE, SAVE_ZERO, CLEAR_ERROR))
    assert not is_special(pack_command(MitCommand(0.0, 0.0, 80.0, 5.0, 0.0), DM4340))


@pytest.mark.parametrize(
    "cmd, motor, expected",
    [
        # every field at its midpoint: p 0x8000 (32767.5 rounds to even), v 0x800, kp 0, kd 0, t 0x800
        (MitCommand(0.0, 0.0, 0.0, 0.0, 0.0), DM4340, "8000800000000800"),
        # p at +P_MAX (0xFFFF), v at -V_MAX (0), kp 500 (0xFFF), kd 0, t at +T_MAX (0xFFF)
        (MitCommand(12.5, -8.0, 500.0, 0.0, 28.0), DM4340, "ffff000fff000fff"),
        # p at -P_MAX, v at +V_MAX (0xFFF), kp 0, kd 5 (0xFFF), t at -T_MAX
        (MitCommand(-12.5, 30.0, 0.0, 5.0, -10.0), DM4310, "0000fff000fff000"),
        # v 15 of +-30 -> round(3071.25) = 0xBFF, kp 80 -> round(655.2) = 0x28F,
        # kd 1.5 -> round(1228.5) = 1228 (to even) = 0x4CC
        (MitCommand(0.0, 15.0, 80.0, 1.5, 0.0), DM4310, "8000bff28f4cc800"),
    ],
    ids=["zeros", "extremes-dm4340", "extremes-dm4310", "typical-gains"],
)
def test_command_bytes_match_the_hand_packed_frame(cmd, motor, expected):
    assert pack_command(cmd, motor).hex() == expected


def test_out_of_range_commands_saturate_instead_of_wrapping():
    assert pack_command(MitCommand(100.0, 99.0, 900.0, 9.0, 99.0), DM4340) == \
        pack_command(MitCommand(12.5, 8.0, 500.0, 5.0, 28.0), DM4340)
    assert pack_command(MitCommand(-100.0, -99.0, -1.0, -1.0, -99.0), DM4340) == \
        pack_command(MitCommand(-12.5, -8.0, 0.0, 0.0, -28.0), DM4340)


def test_feedback_bytes_decode_to_error_id_state_and_temperatures():
    # error 0xB in the high nibble, id 3 in the low; p 0x8000; v 0x800; t 0xFFF (+T_MAX); 45 and 40 C
    fb = unpack_feedback(bytes.fromhex("b38000800fff2d28"), DM4340)
    assert (fb.error, fb.motor_id, fb.temp_mos, fb.temp_rotor) == (0xB, 3, 45, 40)
    assert fb.position == pytest.approx(12.5 / 65535, abs=1e-12)  # 32768 is half a step above 0
    assert fb.velocity == pytest.approx(8.0 / 4095, abs=1e-12)
    assert fb.torque == pytest.approx(28.0)
    assert error_name(fb.error) == "MOS over-temperature"


def test_every_documented_error_code_has_a_name():
    assert set(ERROR_NAMES) == {0x0, 0x1, 0x8, 0x9, 0xA, 0xB, 0xC, 0xD, 0xE}
    assert "command timeout" in error_name(0xD)
    assert error_name(0x3) == "unknown error code 0x3"


def _steps(motor: MotorType) -> dict[str, float]:
    """One quantisation step of each field."""
    return {"position": 2 * motor.p_max / 65535, "velocity": 2 * motor.v_max / 4095,
            "torque": 2 * motor.t_max / 4095, "kp": 500 / 4095, "kd": 5 / 4095}


@pytest.mark.parametrize("name", ["DM4340", "DM4310"])
def test_commands_round_trip_within_half_a_step(name):
    motor, step = TYPES[name], _steps(TYPES[name])
    rng = np.random.default_rng(0)
    for _ in range(500):
        cmd = MitCommand(rng.uniform(-motor.p_max, motor.p_max), rng.uniform(-motor.v_max, motor.v_max),
                         rng.uniform(0, 500), rng.uniform(0, 5), rng.uniform(-motor.t_max, motor.t_max))
        back = unpack_command(pack_command(cmd, motor), motor)
        for field in ("position", "velocity", "kp", "kd", "torque"):
            assert abs(getattr(back, field) - getattr(cmd, field)) <= step[field] / 2 + 1e-12, field


@pytest.mark.parametrize("name", ["DM4340", "DM4310"])
def test_feedback_round_trips_within_half_a_step(name):
    motor, step = TYPES[name], _steps(TYPES[name])
    rng = np.random.default_rng(1)
    for _ in range(500):
        fb = Feedback(int(rng.integers(16)), int(rng.integers(16)), rng.uniform(-motor.p_max, motor.p_max),
                      rng.uniform(-motor.v_max, motor.v_max), rng.uniform(-motor.t_max, motor.t_max),
                      int(rng.integers(256)), int(rng.integers(256)))
        back = unpack_feedback(pack_feedback(fb, motor), motor)
        assert (back.motor_id, back.error, back.temp_mos, back.temp_rotor) == \
            (fb.motor_id, fb.error, fb.temp_mos, fb.temp_rotor)
        for field in ("position", "velocity", "torque"):
            assert abs(getattr(back, field) - getattr(fb, field)) <= step[field] / 2 + 1e-12, field


def test_the_same_integer_means_different_speeds_on_the_two_motor_types():
    frame = pack_command(MitCommand(0.0, 4.0, 0.0, 0.0, 0.0), DM4340)
    assert unpack_command(frame, DM4340).velocity == pytest.approx(4.0, abs=0.002)
    assert unpack_command(frame, DM4310).velocity == pytest.approx(15.0, abs=0.008)


def test_a_short_frame_is_rejected():
    with pytest.raises(ValueError, match="8 data bytes"):
        unpack_feedback(b"\x01\x02", DM4310)
