"""The safety layer of the arm driver as pure logic: no franky, no sim, no ROS.

EEDeltaSafetyFilter turns a requested end-effector delta into a safe absolute target; Watchdog and
EStopLatch decide when the arm must stop. Each test states the limit it checks in numbers.
"""

import re

import numpy as np
import pytest

from pld_robot.robots.action_spec import FRANKA_EE_DELTA_NAMES
from pld_robot.robots.safety import (
    EEDeltaSafetyFilter,
    EStopEngaged,
    EStopLatch,
    SafetyLimits,
    UnsafeCommand,
    Watchdog,
)
from pld_robot.robots.transforms import (
    matrix_to_rotvec,
    rotvec_to_matrix,
)

NAMES = FRANKA_EE_DELTA_NAMES
LIMITS = SafetyLimits(
    workspace_low=(0.25, -0.35, 0.02),
    workspace_high=(0.75, 0.35, 0.55),
    max_translation_per_step=0.02,
    max_rotation_per_step=0.1,
    max_linear_speed=0.25,
    max_angular_speed=1.0,
)
CENTRE = np.array([0.5, 0.0, 0.3])
# A hand pointing down (as at home): a non-trivial current rotation, so composition order matters.
DOWN = rotvec_to_matrix([np.pi, 0.0, 0.0])


def action(dx=0.0, dy=0.0, dz=0.0, droll=0.0, dpitch=0.0, dyaw=0.0, gripper=0.0):
    return np.array([dx, dy, dz, droll, dpitch, dyaw, gripper], dtype=float)


def make_filter(limits=LIMITS, hz=10.0):
    return EEDeltaSafetyFilter(limits, NAMES, hz)


def assert_executed_matches_target(target, position, rotation):
    """What the driver reports as executed is exactly the delta the sent target implies."""
    np.testing.assert_allclose(target.executed[:3], target.position - position, atol=1e-12)
    np.testing.assert_allclose(
        target.executed[3:6], matrix_to_rotvec(target.rotation @ rotation.T), atol=1e-9
    )
    assert target.executed[6] == target.gripper


# -- translation and rotation caps ----------------------------------------------------------

def test_a_small_step_passes_unchanged():
    f = make_filter()
    a = action(dx=0.005, dy=-0.003, dz=0.002, dyaw=0.05, gripper=1.0)
    t = f.apply(a, CENTRE, DOWN)
    assert t.clipped == ()
    np.testing.assert_allclose(t.position, CENTRE + a[:3], atol=1e-12)
    np.testing.assert_allclose(t.rotation, rotvec_to_matrix(a[3:6]) @ DOWN, atol=1e-12)
    np.testing.assert_allclose(t.executed, a, atol=1e-9)
    assert_executed_matches_target(t, CENTRE, DOWN)


def test_translation_is_capped_per_step_keeping_its_direction():
    # 10 Hz: per-step cap 0.02 m is tighter than 0.25 m/s * 0.1 s = 0.025 m.
    f = make_filter(hz=10.0)
    a = action(dx=0.06, dy=0.08)  # 0.1 m requested, direction (0.6, 0.8)
    t = f.apply(a, CENTRE, DOWN)
    step = t.position - CENTRE
    assert np.linalg.norm(step) == pytest.approx(0.02, abs=1e-12)
    np.testing.assert_allclose(step / np.linalg.norm(step), [0.6, 0.8, 0.0], atol=1e-12)
    assert "translation step" in t.clipped
    assert_executed_matches_target(t, CENTRE, DOWN)


def test_translation_cap_is_the_speed_limit_when_that_is_tighter():
    # 30 Hz: 0.25 m/s / 30 Hz = 8.33 mm per step, tighter than the 20 mm per-step cap.
    f = make_filter(hz=30.0)
    t = f.apply(action(dz=0.015), CENTRE, DOWN)
    assert np.linalg.norm(t.position - CENTRE) == pytest.approx(0.25 / 30, abs=1e-12)
    assert "translation step" in t.clipped
    # Just under the speed limit passes untouched.
    t = f.apply(action(dz=0.008), CENTRE, DOWN)
    assert t.clipped == ()
    assert t.position[2] == pytest.approx(CENTRE[2] + 0.008, abs=1e-12)


def test_rotation_is_capped_per_step_keeping_its_axis():
    f = make_filter(hz=10.0)  # min(0.1 rad, 1.0 rad/s * 0.1 s) = 0.1 rad
    a = action(droll=0.3, dyaw=0.4)  # 0.5 rad about (0.6, 0, 0.8)
    t = f.apply(a, CENTRE, DOWN)
    applied = matrix_to_rotvec(t.rotation @ DOWN.T)
    assert np.linalg.norm(applied) == pytest.approx(0.1, abs=1e-9)
    np.testing.assert_allclose(applied / np.linalg.norm(applied), [0.6, 0.0, 0.8], atol=1e-9)
    assert "rotation step" in t.clipped
    np.testing.assert_allclose(t.position, CENTRE, atol=1e-12)  # no translation was asked
    assert_executed_matches_target(t, CENTRE, DOWN)


def test_rotation_cap_is_the_angular_speed_limit_when_that_is_tighter():
    # 30 Hz: 1 rad/s / 30 Hz = 33 mrad per step, tighter than the 0.1 rad per-step cap.
    f = make_filter(hz=30.0)
    t = f.apply(action(dpitch=-0.08), CENTRE, DOWN)
    assert np.linalg.norm(matrix_to_rotvec(t.rotation @ DOWN.T)) == pytest.approx(1.0 / 30, abs=1e-9)
    assert "rotation step" in t.clipped


def test_the_tighter_of_the_two_limits_is_used_whichever_it_is():
    slow = SafetyLimits(max_translation_per_step=0.05, max_linear_speed=0.1,
                        max_rotation_per_step=0.02, max_angular_speed=3.0)
    f = make_filter(slow, hz=10.0)
    t = f.apply(action(dx=0.05, dyaw=0.05), CENTRE, DOWN)
    assert np.linalg.norm(t.position - CENTRE) == pytest.approx(0.01, abs=1e-12)  # speed*period
    assert np.linalg.norm(matrix_to_rotvec(t.rotation @ DOWN.T)) == pytest.approx(0.02, abs=1e-9)  # per step


def test_a_capped_step_inside_the_box_reports_only_the_step_cap():
    # Capping to exactly max_step must not count as capped twice ("return to workspace") by
    # rounding: (position + delta) - position differs from delta by an ulp at most heights.
    f = make_filter()
    for z in np.linspace(0.1, 0.5, 800):  # well inside the box; x as measured in franky-sim
        position = np.array([0.307, 0.0, z])
        t = f.apply(action(dz=-0.03), position, DOWN)
        assert t.clipped == ("translation step",), (z, t.clipped)
        assert np.linalg.norm(t.executed[:3]) == pytest.approx(0.02, abs=1e-12)


# -- workspace box --------------------------------------------------------------------------
# A step toward a face covers at most approach_gain (0.5 here) of the distance left to it, per
# axis: the arm slows to a stop at the face instead of arriving at full speed and braking past it.
# So a push converges to the face (never reaching it exactly) and never passes it.

LOW, HIGH = np.array(LIMITS.workspace_low), np.array(LIMITS.workspace_high)
FACES = [(axis, sign) for axis in range(3) for sign in (+1, -1)]


def face_of(axis, sign):
    return HIGH[axis] if sign > 0 else LOW[axis]


def test_limits_default_approach_gain_is_a_half():
    assert SafetyLimits().approach_gain == 0.5


def test_a_step_toward_a_face_covers_at_most_half_the_distance_left():
    f = make_filter()
    near = np.array([0.745, 0.0, 0.3])  # 5 mm inside the +x face
    t = f.apply(action(dx=0.02), near, DOWN)  # the box would allow 5 mm, the approach 2.5 mm
    assert t.position[0] == pytest.approx(0.7475, abs=1e-12)
    assert t.executed[0] == pytest.approx(0.0025, abs=1e-12)
    assert t.clipped == ("workspace box", "approaching workspace face")
    assert_executed_matches_target(t, near, DOWN)


def test_slowing_starts_before_the_box_would_clip_the_step():
    f = make_filter()
    position = np.array([0.72, 0.0, 0.3])  # 30 mm from the +x face: a 20 mm step stays inside
    t = f.apply(action(dx=0.02), position, DOWN)
    assert t.executed[0] == pytest.approx(0.015, abs=1e-12)  # half of the 30 mm left
    assert t.clipped == ("approaching workspace face",)
    # 40 mm or more from the face a full 20 mm step is not slowed.
    t = f.apply(action(dx=0.02), np.array([0.71, 0.0, 0.3]), DOWN)
    assert t.executed[0] == pytest.approx(0.02, abs=1e-12) and t.clipped == ()


FACE_IDS = [f"{'xyz'[a]}{'+' if s > 0 else '-'}" for a, s in FACES]


@pytest.mark.parametrize("axis, sign", FACES, ids=FACE_IDS)
def test_pushing_into_a_face_converges_to_it_and_never_passes_it(axis, sign):
    f = make_filter()
    face = face_of(axis, sign)
    position = CENTRE.copy()
    a = action()
    a[axis] = sign * 0.03  # more than the 20 mm step cap, held
    gaps = []
    for _ in range(30):
        t = f.apply(a, position, DOWN)
        step = t.position - position
        assert np.linalg.norm(step) <= 0.02 + 1e-12
        np.testing.assert_allclose(np.delete(step, axis), 0.0, atol=1e-15)  # straight at the face
        gap = sign * (face - t.position[axis])  # distance left to the face
        assert gap > 0.0, (axis, sign, t.position)  # never on it, never past it
        # Each step covers at most half of what was left, and is slowed exactly when that binds.
        before = sign * (face - position[axis])
        assert sign * step[axis] <= 0.5 * before + 1e-12
        assert ("approaching workspace face" in t.clipped) == (0.5 * before < 0.02 - 1e-12)
        assert np.all(t.position >= LOW) and np.all(t.position <= HIGH)
        assert_executed_matches_target(t, position, DOWN)
        gaps.append(gap)
        position = t.position
    assert np.all(np.diff(gaps) < 0)  # it always gets closer
    # From the centre (250-350 mm away): full 20 mm steps until within 40 mm, then the gap halves
    # every step: within 1 mm of the face after 16-21 steps, at most six after the slowing starts.
    first_slowed = next(k for k, g in enumerate([sign * (face - CENTRE[axis])] + gaps) if g < 0.04)
    assert gaps[first_slowed + 5] < 0.001
    assert gaps[-1] < 1e-5


def test_a_push_from_just_inside_a_face_halves_the_gap_every_step():
    f = make_filter()
    position = np.array([0.5, 0.0, 0.021])  # 1 mm above the floor (z_low = 0.02)
    zs = []
    for _ in range(6):
        position = f.apply(action(dz=-0.02), position, DOWN).position
        zs.append(position[2])
    np.testing.assert_allclose(np.array(zs) - 0.02, 0.001 / 2 ** np.arange(1, 7), atol=1e-12)


def test_approach_gain_one_lets_a_step_land_exactly_on_the_face():
    f = make_filter(SafetyLimits(approach_gain=1.0))
    for axis, sign in FACES:
        position = CENTRE.copy()
        position[axis] = face_of(axis, sign) - sign * 0.001
        a = action()
        a[axis] = sign * 0.02
        t = f.apply(a, position, DOWN)
        assert t.position[axis] == pytest.approx(face_of(axis, sign), abs=1e-12), (axis, sign)
        assert t.clipped == ("workspace box",)


def test_a_smaller_approach_gain_slows_down_earlier():
    f = make_filter(SafetyLimits(approach_gain=0.2))
    position = np.array([0.5, 0.0, 0.3])  # 250 mm from the +x face: 20 mm is under 0.2 * 250 mm
    assert f.apply(action(dx=0.02), position, DOWN).clipped == ()
    position = np.array([0.65, 0.0, 0.3])  # 100 mm from it: at most 20 mm, i.e. exactly the cap
    t = f.apply(action(dx=0.02), position, DOWN)
    assert t.executed[0] == pytest.approx(0.02, abs=1e-12)
    position = np.array([0.70, 0.0, 0.3])  # 50 mm from it: at most 10 mm
    t = f.apply(action(dx=0.02), position, DOWN)
    assert t.executed[0] == pytest.approx(0.01, abs=1e-12)
    assert t.clipped == ("approaching workspace face",)


def test_moving_away_from_a_face_is_not_slowed():
    f = make_filter()
    for axis, sign in FACES:
        position = CENTRE.copy()
        position[axis] = face_of(axis, sign) - sign * 0.001  # 1 mm inside the face
        a = action()
        a[axis] = -sign * 0.02  # straight away from it
        t = f.apply(a, position, DOWN)
        assert t.clipped == (), (axis, sign, t.clipped)
        assert t.executed[axis] == pytest.approx(-sign * 0.02, abs=1e-12)
    # On the face itself too.
    t = f.apply(action(dx=-0.02), np.array([0.75, 0.0, 0.3]), DOWN)
    assert t.clipped == () and t.executed[0] == pytest.approx(-0.02, abs=1e-12)


def test_only_the_axis_that_approaches_a_face_is_slowed():
    f = make_filter()
    position = np.array([0.745, 0.0, 0.3])  # 5 mm inside +x, far from every other face
    t = f.apply(action(dx=0.004, dy=0.01, dz=-0.01), position, DOWN)
    np.testing.assert_allclose(t.executed[:3], [0.0025, 0.01, -0.01], atol=1e-12)
    assert t.clipped == ("approaching workspace face",)
    # Into a corner: each axis halves its own gap.
    corner = np.array([0.74, 0.34, 0.54])  # 10 mm from +x, +y and +z
    t = f.apply(action(dx=0.01, dy=0.01, dz=0.01), corner, DOWN)
    np.testing.assert_allclose(t.position, [0.745, 0.345, 0.545], atol=1e-12)


def test_an_arm_at_a_face_pushing_outward_stays_there_but_may_slide_along_it():
    f = make_filter()
    at_face = np.array([0.75, 0.0, 0.3])
    t = f.apply(action(dx=0.02, dy=0.01), at_face, DOWN)
    # The tangential component survives the clamp; the normal one does not.
    assert t.position[0] == pytest.approx(0.75, abs=1e-12)
    # (20, 10) mm is 22.4 mm: first capped to 20 mm, i.e. (17.9, 8.9) mm, then x is clamped; y is
    # 350 mm from its face, so it is not slowed.
    assert t.position[1] == pytest.approx(0.01 * 0.02 / np.hypot(0.02, 0.01), abs=1e-12)
    assert t.clipped == ("translation step", "workspace box")


def test_an_arm_outside_the_box_walks_back_in_at_the_step_limit():
    f = make_filter()
    position = np.array([0.85, 0.0, 0.3])  # moved by hand 10 cm past the +x face
    path = [position[0]]
    for _ in range(10):
        t = f.apply(action(), position, DOWN)  # a zero command
        step = t.position - position
        assert np.linalg.norm(step) <= 0.02 + 1e-12  # never jumps
        outside = position[0] > 0.75 + 1e-12
        assert ("workspace box" in t.clipped) == outside
        if position[0] > 0.775:  # more than one step outside: the walk back itself is capped
            assert "return to workspace" in t.clipped
        assert "approaching workspace face" not in t.clipped  # walking back in is not slowed
        assert_executed_matches_target(t, position, DOWN)
        position = t.position
        path.append(position[0])
    # 0.85 -> 0.75 in five steps of exactly 20 mm, then it stays on the face.
    np.testing.assert_allclose(path[:6], [0.85, 0.83, 0.81, 0.79, 0.77, 0.75], atol=1e-12)
    np.testing.assert_allclose(path[6:], 0.75, atol=1e-12)


def test_a_command_back_in_from_just_outside_is_not_slowed():
    f = make_filter()
    for axis, sign in FACES:
        position = CENTRE.copy()
        position[axis] = face_of(axis, sign) + sign * 0.001  # 1 mm outside the face
        a = action()
        a[axis] = -sign * 0.02  # back in, and on toward the far face
        t = f.apply(a, position, DOWN)
        assert t.clipped == (), (axis, sign, t.clipped)
        assert t.executed[axis] == pytest.approx(-sign * 0.02, abs=1e-12)


def test_a_command_outward_from_outside_still_only_walks_back():
    f = make_filter()
    position = np.array([0.5, 0.0, -0.05])  # below the table-top limit (z_low = 0.02)
    t = f.apply(action(dz=-0.02), position, DOWN)
    assert t.position[2] == pytest.approx(-0.03, abs=1e-12)  # 20 mm up, not further down
    assert t.clipped == ("workspace box", "return to workspace")


def test_walking_back_in_from_far_outside_is_not_slowed():
    f = make_filter(SafetyLimits(approach_gain=0.2))
    position = np.array([0.90, 0.40, 0.30])  # moved by hand 15 cm past +x and 5 cm past +y
    t = f.apply(action(), position, DOWN)  # a zero command
    straight = np.clip(position, LOW, HIGH) - position  # toward the nearest point of the box
    step = t.position - position
    assert np.linalg.norm(step) == pytest.approx(0.02, abs=1e-12)
    np.testing.assert_allclose(step / 0.02, straight / np.linalg.norm(straight), atol=1e-9)
    assert t.clipped == ("workspace box", "return to workspace")


# -- refusing bad input ---------------------------------------------------------------------

@pytest.mark.parametrize("index", range(7))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused_naming_the_dimension(index, bad):
    f = make_filter()
    a = action()
    a[index] = bad
    with pytest.raises(UnsafeCommand, match=rf"\b{NAMES[index]}\b") as info:
        f.apply(a, CENTRE, DOWN)
    for other in NAMES:  # only the bad dimension is named
        if other != NAMES[index]:
            assert not re.search(rf"\b{other}\b", str(info.value)), (other, str(info.value))
    with pytest.raises(UnsafeCommand):
        f.check_finite(a)


def test_every_non_finite_dimension_is_named():
    f = make_filter()
    with pytest.raises(UnsafeCommand) as info:
        f.check_finite(action(dx=np.nan, dyaw=np.inf))
    message = str(info.value)
    assert re.search(r"\bdx\b", message) and re.search(r"\bdyaw\b", message)
    assert not re.search(r"\bdy\b", message) and not re.search(r"\bdz\b", message)


def test_unsafe_command_is_a_value_error():
    # Callers that catch ValueError (e.g. the arm node) also catch refusals.
    assert issubclass(UnsafeCommand, ValueError)


@pytest.mark.parametrize("shape", [(6,), (8,), (1, 7), (7, 1), ()])
def test_a_wrongly_shaped_action_is_refused(shape):
    f = make_filter()
    with pytest.raises(UnsafeCommand, match="shape"):
        f.apply(np.zeros(shape), CENTRE, DOWN)


def test_a_list_is_accepted_like_an_array():
    t = make_filter().apply([0.01, 0, 0, 0, 0, 0, 0], CENTRE, DOWN)
    assert t.position[0] == pytest.approx(0.51)


def test_gripper_command_is_clamped_to_open_closed():
    f = make_filter()
    assert f.apply(action(gripper=3.0), CENTRE, DOWN).gripper == 1.0
    assert f.apply(action(gripper=-1.0), CENTRE, DOWN).executed[6] == 0.0
    assert f.apply(action(gripper=0.3), CENTRE, DOWN).gripper == pytest.approx(0.3)


def test_executed_matches_the_target_over_random_commands():
    rng = np.random.default_rng(7)
    f = make_filter()
    low, high = np.array(LIMITS.workspace_low), np.array(LIMITS.workspace_high)
    for _ in range(500):
        position = rng.uniform(low - 0.1, high + 0.1)
        rotation = rotvec_to_matrix(rng.normal(size=3))
        a = np.concatenate([rng.normal(scale=0.03, size=3), rng.normal(scale=0.15, size=3),
                            [rng.uniform(-0.5, 1.5)]])
        t = f.apply(a, position, rotation)
        assert_executed_matches_target(t, position, rotation)
        assert np.linalg.norm(t.executed[:3]) <= 0.02 + 1e-12
        assert np.linalg.norm(t.executed[3:6]) <= 0.1 + 1e-9
        inside = np.all((position >= low) & (position <= high))
        if inside:
            # Strictly inside stays strictly inside (the approach never reaches a face it was not
            # already on), and toward a face each axis covers at most half the distance left.
            assert np.all(t.position >= low) and np.all(t.position <= high)
            step = t.executed[:3]
            assert np.all(step <= 0.5 * (high - position) + 1e-12)
            assert np.all(-step <= 0.5 * (position - low) + 1e-12)


# -- limits validation ----------------------------------------------------------------------

def test_limits_reject_an_empty_box():
    with pytest.raises(ValueError, match="workspace_low"):
        SafetyLimits(workspace_low=(0.25, -0.35, 0.6), workspace_high=(0.75, 0.35, 0.55))
    with pytest.raises(ValueError, match="workspace_low"):
        SafetyLimits(workspace_low=(0.5, 0.0, 0.1), workspace_high=(0.5, 0.1, 0.2))  # zero width


POSITIVE_LIMITS = ["max_translation_per_step", "max_rotation_per_step", "max_linear_speed",
                   "max_angular_speed", "watchdog_periods", "approach_gain"]


@pytest.mark.parametrize("name", POSITIVE_LIMITS)
@pytest.mark.parametrize("value", [0.0, -0.1])
def test_limits_reject_non_positive_values_naming_them(name, value):
    with pytest.raises(ValueError, match=name):
        SafetyLimits(**{name: value})


@pytest.mark.parametrize("value", [1.0 + 1e-9, 1.5, 2.0, np.inf])
def test_limits_reject_an_approach_gain_above_one(value):
    with pytest.raises(ValueError, match=r"approach_gain must be in \(0, 1\]"):
        SafetyLimits(approach_gain=value)


@pytest.mark.parametrize("value", [1e-3, 0.2, 0.5, 1.0])
def test_limits_accept_an_approach_gain_in_zero_one(value):
    assert SafetyLimits(approach_gain=value).approach_gain == value


@pytest.mark.parametrize("name", POSITIVE_LIMITS)
def test_limits_reject_nan_naming_it(name):
    try:
        SafetyLimits(**{name: float("nan")})
    except ValueError as exc:
        assert name in str(exc)
    else:
        raise AssertionError(f"SafetyLimits accepted {name}=nan")


# -- watchdog -------------------------------------------------------------------------------

def test_watchdog_is_quiet_until_first_fed():
    w = Watchdog(0.3)
    assert not w.expired(now=1e9)


def test_watchdog_expires_after_its_timeout_with_an_explicit_clock():
    w = Watchdog(0.3)
    w.feed(now=100.0)
    assert not w.expired(now=100.0)
    assert not w.expired(now=100.29)
    assert w.expired(now=100.31)
    w.feed(now=100.31)  # a fresh command re-arms it
    assert not w.expired(now=100.6)
    assert w.expired(now=100.62)


def test_watchdog_disarm_stops_it_expiring():
    w = Watchdog(0.3)
    w.feed(now=5.0)
    w.disarm()
    assert not w.expired(now=50.0)


def test_watchdog_uses_the_monotonic_clock_by_default():
    import time

    w = Watchdog(0.05)
    w.feed()
    assert not w.expired()
    time.sleep(0.08)
    assert w.expired()


# -- e-stop latch ---------------------------------------------------------------------------

def test_estop_latch_stays_engaged_until_reset_and_names_its_reason():
    latch = EStopLatch()
    assert not latch.engaged and latch.reason is None
    latch.check()  # nothing to raise
    latch.trigger("gamepad e-stop")
    for _ in range(3):  # checking does not clear it
        assert latch.engaged
        with pytest.raises(EStopEngaged, match="gamepad e-stop"):
            latch.check()
    latch.trigger("second press")  # the first reason is the one that matters
    assert latch.reason == "gamepad e-stop"
    latch.reset()
    assert not latch.engaged and latch.reason is None
    latch.check()
    latch.trigger("again")
    with pytest.raises(EStopEngaged, match="again"):
        latch.check()
