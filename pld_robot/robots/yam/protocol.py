"""Damiao motors in MIT mode: the CAN frames as bytes, both ways (no I/O here).

A command goes to the motor's CAN id; the motor answers each frame it receives with one feedback
frame on its feedback ("master") id. Every quantity travels as an unsigned integer mapped linearly
onto a range: position, velocity and torque ranges depend on the motor type, kp and kd do not.

    command:  p[16] v[12] kp[12] kd[12] t_ff[12]                      (8 bytes, big-endian bits)
    feedback: error[4] id[4] | p[16] v[12] t[12] | T_mos[8] T_rotor[8]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KP_MAX = 500.0
KD_MAX = 5.0

# Special frames, sent to the motor's CAN id. SAVE_ZERO makes the current position the motor's new
# zero: only a person calibrating the arm sends it, never the driver.
ENABLE = bytes([0xFF] * 7 + [0xFC])
DISABLE = bytes([0xFF] * 7 + [0xFD])
SAVE_ZERO = bytes([0xFF] * 7 + [0xFE])
CLEAR_ERROR = bytes([0xFF] * 7 + [0xFB])

DISABLED, ENABLED, COMM_LOST = 0x0, 0x1, 0xD
ERROR_NAMES = {
    0x0: "disabled",
    0x1: "enabled",
    0x8: "over-voltage",
    0x9: "under-voltage",
    0xA: "over-current",
    0xB: "MOS over-temperature",
    0xC: "rotor over-temperature",
    0xD: "communication lost (its own command timeout expired)",
    0xE: "overload",
}


def error_name(code: int) -> str:
    return ERROR_NAMES.get(code, f"unknown error code 0x{code:X}")


@dataclass(frozen=True)
class MotorType:
    """The ranges a motor type maps its integers onto (Damiao's PMAX, VMAX, TMAX)."""

    p_max: float = 12.5  # rad
    v_max: float = 30.0  # rad/s
    t_max: float = 10.0  # Nm

    def __post_init__(self):
        for name in ("p_max", "v_max", "t_max"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"motor type: {name} must be a positive number, got {value}")


@dataclass(frozen=True)
class MitCommand:
    position: float
    velocity: float
    kp: float
    kd: float
    torque: float


@dataclass(frozen=True)
class Feedback:
    motor_id: int  # the low 4 bits of the motor's CAN id
    error: int
    position: float
    velocity: float
    torque: float
    temp_mos: int  # degrees C
    temp_rotor: int


def to_uint(x: float, lo: float, hi: float, bits: int) -> int:
    """Nearest integer of the linear map [lo, hi] -> [0, 2^bits - 1]; out-of-range values saturate."""
    top = (1 << bits) - 1
    return round((min(max(x, lo), hi) - lo) / (hi - lo) * top)


def from_uint(u: int, lo: float, hi: float, bits: int) -> float:
    return lo + u * (hi - lo) / ((1 << bits) - 1)


def pack_command(cmd: MitCommand, motor: MotorType) -> bytes:
    p = to_uint(cmd.position, -motor.p_max, motor.p_max, 16)
    v = to_uint(cmd.velocity, -motor.v_max, motor.v_max, 12)
    kp = to_uint(cmd.kp, 0.0, KP_MAX, 12)
    kd = to_uint(cmd.kd, 0.0, KD_MAX, 12)
    t = to_uint(cmd.torque, -motor.t_max, motor.t_max, 12)
    return bytes([
        p >> 8, p & 0xFF,
        v >> 4, ((v & 0xF) << 4) | (kp >> 8), kp & 0xFF,
        kd >> 4, ((kd & 0xF) << 4) | (t >> 8), t & 0xFF,
    ])


def unpack_command(data: bytes, motor: MotorType) -> MitCommand:
    _check_length(data, "MIT command")
    p = (data[0] << 8) | data[1]
    v = (data[2] << 4) | (data[3] >> 4)
    kp = ((data[3] & 0xF) << 8) | data[4]
    kd = (data[5] << 4) | (data[6] >> 4)
    t = ((data[6] & 0xF) << 8) | data[7]
    return MitCommand(
        position=from_uint(p, -motor.p_max, motor.p_max, 16),
        velocity=from_uint(v, -motor.v_max, motor.v_max, 12),
        kp=from_uint(kp, 0.0, KP_MAX, 12),
        kd=from_uint(kd, 0.0, KD_MAX, 12),
        torque=from_uint(t, -motor.t_max, motor.t_max, 12),
    )


def pack_feedback(fb: Feedback, motor: MotorType) -> bytes:
    p = to_uint(fb.position, -motor.p_max, motor.p_max, 16)
    v = to_uint(fb.velocity, -motor.v_max, motor.v_max, 12)
    t = to_uint(fb.torque, -motor.t_max, motor.t_max, 12)
    return bytes([
        ((fb.error & 0xF) << 4) | (fb.motor_id & 0xF),
        p >> 8, p & 0xFF,
        v >> 4, ((v & 0xF) << 4) | (t >> 8), t & 0xFF,
        min(max(fb.temp_mos, 0), 255), min(max(fb.temp_rotor, 0), 255),
    ])


def unpack_feedback(data: bytes, motor: MotorType) -> Feedback:
    _check_length(data, "feedback")
    p = (data[1] << 8) | data[2]
    v = (data[3] << 4) | (data[4] >> 4)
    t = ((data[4] & 0xF) << 8) | data[5]
    return Feedback(
        motor_id=data[0] & 0xF,
        error=data[0] >> 4,
        position=from_uint(p, -motor.p_max, motor.p_max, 16),
        velocity=from_uint(v, -motor.v_max, motor.v_max, 12),
        torque=from_uint(t, -motor.t_max, motor.t_max, 12),
        temp_mos=data[6],
        temp_rotor=data[7],
    )


def is_special(data: bytes) -> bool:
    """ENABLE, DISABLE, SAVE_ZERO, CLEAR_ERROR and the like: seven 0xFF bytes, then the code."""
    return len(data) == 8 and data[:7] == b"\xff" * 7


def _check_length(data: bytes, what: str) -> None:
    if len(data) != 8:
        raise ValueError(f"a Damiao {what} frame has 8 data bytes, got {len(data)}")
