"""The Franka driver against franky-sim, through the real franky/libfranka client on loopback.

Every test asserts what the simulated arm actually did, read from ground truth: the MuJoCo state of
the sim (joint positions; the TCP computed from the `robot0_hand` body, which is where franky's
end-effector pose is: 0.1034 m along the hand's z) and franky's own reported state. Tolerances are
stated in each test with the values measured on the 2-core dev machine (3 runs) they derive from.

One lab and one connected arm serve the whole module (franky-sim binds fixed ports on its address,
and connecting costs a second); tests home the arm first. No ROS here, so the in-process sim's
1 kHz Python physics loop is not competing with an executor.
"""

from __future__ import annotations

import time

import franky
import mujoco
import numpy as np
import pytest

from pld_robot.robots.arm import ArmFault
from pld_robot.robots.franka import FrankaArm, FrankaConfig
from pld_robot.robots.safety import EStopEngaged, SafetyLimits, UnsafeCommand
from pld_robot.robots.transforms import matrix_to_rotvec, quat_to_matrix
from pld_robot.sim.expert import PickUpExpert
from pld_robot.sim.lab import SimLab, SimLabConfig

HOST = "127.0.0.51"  # franky-sim binds fixed ports: an address of this module's own
HZ = 10.0
# The box of config/sim.yaml (z low 0.01: the cube's centre is at 0.02 and the expert grasps there).
LIMITS = SafetyLimits(workspace_low=(0.25, -0.35, 0.01), workspace_high=(0.75, 0.35, 0.55))
TCP_OFFSET = 0.1034  # franky's default end-effector frame: this far along the hand's z axis
REST_SPEED = 0.01  # rad/s, max over the 7 arm joints from positions 50 ms apart (see `Truth`)


def act(dx=0.0, dy=0.0, dz=0.0, droll=0.0, dpitch=0.0, dyaw=0.0, gripper=0.0) -> np.ndarray:
    return np.array([dx, dy, dz, droll, dpitch, dyaw, gripper], dtype=float)


class Truth:
    """Ground truth from the sim's MuJoCo state (a private MjData: the lab's own is the physics')."""

    def __init__(self, lab: SimLab):
        self.lab = lab
        self.model = lab.model
        self.data = mujoco.MjData(self.model)
        self.hand = self.model.body("robot0_hand").id
        fingers = {self.model.body(n).id for n in ("robot0_left_finger", "robot0_right_finger")}
        # Collision geoms of the fingers: boxes and one mesh each.
        self.finger_geoms = [
            g for g in range(self.model.ngeom)
            if self.model.geom_bodyid[g] in fingers and self.model.geom_contype[g] != 0
        ]

    def _forward(self) -> np.ndarray:
        qpos, _ = self.lab.snapshot()
        self.data.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, self.data)
        return qpos

    def joints(self) -> np.ndarray:
        return self.lab.snapshot()[0][:7]

    def tcp(self) -> np.ndarray:
        self._forward()
        rotation = self.data.xmat[self.hand].reshape(3, 3)
        return self.data.xpos[self.hand] + rotation @ [0.0, 0.0, TCP_OFFSET]

    def fingertip_low_z(self) -> float:
        """Lowest point of any finger collision geom (exact: box corners, mesh vertices)."""
        self._forward()
        lowest = np.inf
        for g in self.finger_geoms:
            if self.model.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX:
                signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
                points = signs * self.model.geom_size[g]
            else:
                mesh = self.model.geom_dataid[g]
                start = self.model.mesh_vertadr[mesh]
                points = self.model.mesh_vert[start:start + self.model.mesh_vertnum[mesh]]
            world = self.data.geom_xpos[g] + points @ self.data.geom_xmat[g].reshape(3, 3).T
            lowest = min(lowest, float(world[:, 2].min()))
        return lowest

    def joint_speed(self, window: float = 0.05) -> float:
        """Max joint speed from two positions `window` apart. franky-sim's joint 7 chatters at rest
        (qvel +-0.077 rad/s with its position constant to 1e-4 rad), so velocities from qvel or
        franky's joint state never read zero; positions do."""
        q0 = self.joints()
        t0 = time.perf_counter()
        time.sleep(window)
        q1 = self.joints()
        return float(np.abs(q1 - q0).max() / (time.perf_counter() - t0))

    def wait_for_rest(self, timeout: float = 3.0) -> float:
        """Seconds until the arm is at rest (two consecutive windows under REST_SPEED)."""
        start = time.perf_counter()
        calm = 0
        while time.perf_counter() - start < timeout:
            calm = calm + 1 if self.joint_speed() < REST_SPEED else 0
            if calm >= 2:
                return time.perf_counter() - start
        raise AssertionError(f"the arm did not come to rest within {timeout} s")


def stop_and_stay(truth: Truth, since: float, still_for: float = 0.5):
    """After a stop request at perf_counter `since`: (seconds until at rest, metres travelled until
    then, metres travelled in the following `still_for` seconds)."""
    p0 = truth.tcp()
    truth.wait_for_rest()
    rest_at = time.perf_counter() - since - 0.1  # wait_for_rest ends after two calm 50 ms windows
    p1 = truth.tcp()
    time.sleep(still_for)
    return rest_at, float(np.linalg.norm(p1 - p0)), float(np.linalg.norm(truth.tcp() - p1))


def stream(arm: FrankaArm, actions, hz: float = HZ):
    """Send actions at a fixed rate, as the orchestrator does; returns the SafeTargets."""
    targets = []
    t0 = time.perf_counter()
    for k, a in enumerate(actions):
        targets.append(arm.step(a))
        time.sleep(max(0.0, t0 + (k + 1) / hz - time.perf_counter()))
    return targets


def push_into_face(arm: FrankaArm, action: np.ndarray, on_face, max_steps: int = 60, hz: float = HZ):
    """Stream `action` until 5 targets in a row were `on_face` (the arm lags its targets, so it is
    on the face by then); returns the SafeTargets."""
    targets = []
    t0 = time.perf_counter()
    for k in range(max_steps):
        targets.append(arm.step(action))
        if len(targets) >= 5 and all(on_face(t) for t in targets[-5:]):
            break
        time.sleep(max(0.0, t0 + (k + 1) / hz - time.perf_counter()))
    else:
        raise AssertionError(f"{max_steps} steps did not reach the face: {targets[-1].position}")
    return targets


def yaw_between(q0, q1) -> np.ndarray:
    """Rotation vector (base frame) taking orientation q0 to q1 ([x, y, z, w] quaternions)."""
    return matrix_to_rotvec(quat_to_matrix(q1) @ quat_to_matrix(q0).T)


# -- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab():
    lab = SimLab(SimLabConfig(host=HOST, cameras={})).start()
    yield lab
    lab.stop()


@pytest.fixture(scope="module")
def arm(lab):
    arm = FrankaArm(FrankaConfig(
        host=HOST, realtime=False, safety=LIMITS, home_dynamics_factor=0.3, connect_timeout_s=10.0,
    ))
    arm.connect()
    yield arm
    arm.close()


@pytest.fixture(scope="module")
def truth(lab):
    return Truth(lab)


@pytest.fixture
def homed(arm, truth):
    arm.reset_estop()
    arm.home()
    truth.wait_for_rest()
    return arm


@pytest.fixture
def ready(arm, truth):
    """Inside the box with the hand pointing down: homes only if not (homing from far costs
    several seconds at the driver's effective dynamics factor)."""
    arm.reset_estop()
    s = arm.state()
    inside = np.all(s.ee_position >= LIMITS.workspace_low) and np.all(s.ee_position <= LIMITS.workspace_high)
    hand_down = quat_to_matrix(s.ee_quaternion)[2, 2] < -0.95  # the hand's z within ~18 deg of -z
    if not (inside and hand_down):
        arm.home()
    truth.wait_for_rest()
    return arm


# -- a. deltas move the arm by the delta ----------------------------------------------------

def test_translation_steps_move_the_arm_by_their_sum(homed, truth):
    arm = homed
    p0, m0 = arm.state().ee_position, truth.tcp()
    # franky's end-effector pose is the MuJoCo hand + 0.1034 m along its z: same point, two
    # sources (measured at home: 0.1-0.4 mm apart).
    np.testing.assert_allclose(p0, m0, atol=0.002)
    targets = stream(arm, [act(dx=0.005)] * 10)
    assert all(t.clipped == () for t in targets)
    truth.wait_for_rest()
    moved, moved_truth = arm.state().ee_position - p0, truth.tcp() - m0
    print(f"\n10 x 5 mm along x: franky {1000 * moved} mm, MuJoCo TCP {1000 * moved_truth} mm")
    # Measured: x 47.7-48.6 mm (the arm lags the 50 mm/s stream; each delta is applied to the
    # measured pose and the watchdog stops the last step 300 ms after it), off-axis <= 0.4 mm.
    # Tolerance: 50 mm +- 5 mm along x, 2 mm off-axis. franky and MuJoCo disagree by 0.3-0.45 mm
    # on the displacement (franky-sim reports a pose a hair off the settled joints): 1.5 mm.
    for d in (moved, moved_truth):
        assert d[0] == pytest.approx(0.050, abs=0.005)
        assert np.abs(d[1:]).max() < 0.002
    np.testing.assert_allclose(moved, moved_truth, atol=0.0015)


def test_rotation_steps_turn_the_hand_by_their_sum(homed, truth):
    arm = homed
    s0 = arm.state()
    stream(arm, [act(dyaw=0.01)] * 10)
    truth.wait_for_rest()
    s1 = arm.state()
    turned = yaw_between(s0.ee_quaternion, s1.ee_quaternion)
    print(f"\n10 x 10 mrad yaw: turned {turned} rad, moved {1000 * (s1.ee_position - s0.ee_position)} mm")
    # Measured: 0.0965 rad about z, 0 about x and y, position unchanged. Tolerance: 0.1 +- 0.015 rad
    # about z, 5 mrad about x/y, 2 mm of translation.
    assert turned[2] == pytest.approx(0.1, abs=0.015)
    assert np.abs(turned[:2]).max() < 0.005
    assert np.linalg.norm(s1.ee_position - s0.ee_position) < 0.002


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="driver bug: FrankaArm sets robot.relative_dynamics_factor = dynamics_factor AND passes "
    "dynamics_factor to every CartesianMotion; franky multiplies them (0.3 x 0.3 = 0.09), so one "
    "0.1 rad step needs ~0.57 s and the watchdog's hold() cuts it off at ~0.33 s: it turns "
    "0.051-0.062 rad. With one factor of 0.3 the same motion takes ~0.25 s.",
)
def test_one_full_rotation_step_turns_the_hand_by_the_step(homed, truth):
    arm = homed
    s0 = arm.state()
    target = arm.step(act(dyaw=0.1))  # the ActionSpec's bound, equal to the safety per-step cap
    assert target.clipped == ()
    truth.wait_for_rest()
    turned = yaw_between(s0.ee_quaternion, arm.state().ee_quaternion)
    print(f"\none 0.1 rad yaw step: turned {turned} rad")
    assert turned[2] == pytest.approx(0.1, abs=0.015)


# -- b. the workspace box holds --------------------------------------------------------------

def test_pushing_down_into_the_table_stops_at_the_box_floor(homed, truth):
    arm = homed
    low_z = LIMITS.workspace_low[2]
    # From home (TCP z 0.487) to the floor (0.01): 30 mm steps (capped to 20 mm) until on it.
    targets = push_into_face(arm, act(dz=-0.03), lambda t: "workspace box" in t.clipped)
    truth.wait_for_rest()
    below = [(k, t.position, t.executed, t.clipped) for k, t in enumerate(targets)
             if not t.position[2] >= low_z - 1e-9]  # NaN counts as below
    assert not below, below
    z_franky, z_truth = arm.state().ee_position[2], truth.tcp()[2]
    tips = truth.fingertip_low_z()
    print(f"\n{len(targets)} steps; floor {low_z}: TCP z franky {z_franky:.4f} MuJoCo {z_truth:.4f}, fingertips {tips:.4f}")
    # Measured: TCP z at the floor 0.0100-0.0101 m (franky and MuJoCo alike); the finger pads reach
    # 8.9 mm below the TCP, so the lowest fingertip point sits ~1 mm above the table top (z = 0).
    # Tolerance: TCP within 3 mm of the floor and never below it by more than 2 mm; fingertips
    # above z = -1 mm (not through the table).
    for z in (z_franky, z_truth):
        assert low_z - 0.002 <= z <= low_z + 0.003
    assert tips > -0.001


def test_pushing_back_and_up_stops_at_the_box_faces(ready, truth):
    arm = ready
    low_x, high_z = LIMITS.workspace_low[0], LIMITS.workspace_high[2]
    # Runs after the floor test, from the floor (x 0.307): 57 mm to the back face and 540 mm up to
    # the ceiling, which also brings the arm back near home cheaply. Steps of (-6.3, +19) mm.
    targets = push_into_face(
        arm, act(dx=-0.01, dz=0.03),
        lambda t: t.position[0] <= low_x + 1e-9 and t.position[2] >= high_z - 1e-9,
    )
    truth.wait_for_rest()
    outside = [(k, t.position, t.clipped) for k, t in enumerate(targets)
               if not (t.position[0] >= low_x - 1e-9 and t.position[2] <= high_z + 1e-9)]
    assert not outside, outside
    tcp_franky, tcp_truth = arm.state().ee_position, truth.tcp()
    print(f"\n{len(targets)} steps; back face x {low_x} / ceiling z {high_z}: franky {tcp_franky}, MuJoCo {tcp_truth}")
    # Measured: x 0.2500-0.2504, z 0.5496-0.5500. Tolerance: within 3 mm inside each face, at
    # most 2 mm outside.
    for p in (tcp_franky, tcp_truth):
        assert low_x - 0.002 <= p[0] <= low_x + 0.003
        assert high_z - 0.003 <= p[2] <= high_z + 0.002
        assert abs(p[1]) < 0.002


# -- c. the watchdog stops a stream that stops -----------------------------------------------

def test_watchdog_stops_the_arm_when_commands_stop(homed, truth):
    arm = homed
    stops = arm.watchdog_stops
    stream(arm, [act(dy=0.015)] * 7)  # 150 mm/s asked, along +y
    arm.step(act(dy=0.015))
    last_command = time.perf_counter()
    # Joint positions every ~10 ms for 1.5 s; speed over 50 ms windows.
    samples = []
    fired_at = None
    while (now := time.perf_counter()) - last_command < 1.5:
        samples.append((now - last_command, truth.joints()))
        if fired_at is None and arm.watchdog_stops > stops:
            fired_at = now - last_command
        time.sleep(0.01)
    times = np.array([t for t, _ in samples])
    joints = np.array([q for _, q in samples])
    speeds = []
    for i, t in enumerate(times):
        j = np.searchsorted(times, t + 0.05)
        if j < len(times):
            speeds.append((t, np.abs(joints[j] - joints[i]).max() / (times[j] - t)))
    moving = speeds[0][1]
    at_rest = max((t for t, v in speeds if v >= REST_SPEED), default=0.0) + 0.05
    print(f"\nspeed at the last command {moving:.3f} rad/s; watchdog fired {fired_at:.3f} s and the arm "
          f"was at rest {at_rest:.3f} s after the last command")
    # Measured: 0.13-0.35 rad/s when the stream stops; the watchdog fires 0.30-0.35 s after the
    # last command and the arm is at rest (< 0.01 rad/s on every joint) 0.35-0.55 s after it.
    # Tolerance: moving faster than 0.05 rad/s; fired within 300 ms + 200 ms; at rest within
    # 300 ms + 500 ms; exactly one watchdog stop; still at rest until 1.5 s.
    assert moving > 0.05
    assert fired_at is not None and 0.28 <= fired_at < 0.5
    assert at_rest < 0.8
    assert arm.watchdog_stops == stops + 1


# -- d. NaN is refused and the arm holds -----------------------------------------------------

def test_nan_is_refused_naming_the_dimension_and_the_arm_holds(homed, truth):
    arm = homed
    stream(arm, [act(dx=0.01)] * 3)  # moving at ~100 mm/s when the bad command arrives
    t0 = time.perf_counter()
    with pytest.raises(UnsafeCommand, match=r"\bdy\b") as info:
        arm.step(act(dx=0.01, dy=np.nan))
    refused_in = time.perf_counter() - t0
    assert "dx" not in str(info.value)
    rest_at, coast, drift = stop_and_stay(truth, t0)
    print(f"\nNaN refused in {1000 * refused_in:.0f} ms; at rest {1000 * rest_at:.0f} ms after it, "
          f"{1000 * coast:.1f} mm further on; then {1000 * drift:.3f} mm in 0.5 s")
    # Measured: refused (and hold() returned) in 5-15 ms, but the arm is not stopped yet: franky-sim
    # brings it to the last desired pose, 2-10 mm on, at rest 0.2-0.45 s after the refusal (see
    # the report on hold()); then it creeps 0.2-0.35 mm. Tolerance: at rest within 0.8 s and
    # 20 mm; then still within 1 mm over 0.5 s.
    assert rest_at < 0.8
    assert coast < 0.020
    assert drift < 0.001

    # The next valid command works.
    p1 = arm.state().ee_position
    arm.step(act(dx=0.01))
    truth.wait_for_rest()
    moved = arm.state().ee_position - p1
    print(f"then one 10 mm step: moved {1000 * moved} mm")
    # Measured: 9.9-10.0 mm along x (a single 10 mm step finishes before the watchdog).
    # Tolerance: 10 +- 2.5 mm along x, 2 mm off-axis.
    assert moved[0] == pytest.approx(0.010, abs=0.0025)
    assert np.abs(moved[1:]).max() < 0.002


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_inf_is_refused_too(ready, bad):
    with pytest.raises(UnsafeCommand, match=r"\bdpitch\b"):
        ready.step(act(dpitch=bad))
    with pytest.raises(UnsafeCommand, match="shape"):
        ready.step(np.zeros(6))


# -- e. the e-stop latches -------------------------------------------------------------------

def test_estop_latches_until_reset(homed, truth):
    arm = homed
    stream(arm, [act(dy=-0.015)] * 3)  # moving when the e-stop comes
    t0 = time.perf_counter()
    arm.estop("test")
    rest_at, coast, _ = stop_and_stay(truth, t0, still_for=0.0)
    assert arm.estop_reason == "test" and arm.state().estop
    p0 = truth.tcp()
    for _ in range(5):  # every attempt is refused, none moves the arm
        with pytest.raises(EStopEngaged, match="test"):
            arm.step(act(dx=0.02))
        time.sleep(0.1)
    with pytest.raises(EStopEngaged, match="test"):
        arm.home()
    time.sleep(0.2)
    drift = float(np.linalg.norm(truth.tcp() - p0))
    print(f"\ne-stop: at rest {1000 * rest_at:.0f} ms after it, {1000 * coast:.1f} mm on; refused "
          f"steps and home moved it {1000 * drift:.3f} mm")
    # Measured: at rest 0.2-0.45 s after estop(), 6-10 mm on (as for NaN above); the arm then
    # creeps 0.2-0.35 mm over the 0.7 s of refused commands. Tolerance: at rest within 0.8 s and
    # 20 mm; 1 mm.
    assert rest_at < 0.8 and coast < 0.020
    assert drift < 0.001
    assert arm.estop_reason == "test"  # refused commands do not clear it

    arm.reset_estop()
    assert arm.estop_reason is None and not arm.state().estop
    p1 = arm.state().ee_position
    arm.step(act(dx=0.01))
    truth.wait_for_rest()
    moved = arm.state().ee_position - p1
    print(f"after reset, one 10 mm step: moved {1000 * moved} mm")
    assert moved[0] == pytest.approx(0.010, abs=0.0025)


# -- f. a scripted pick-up through the driver ------------------------------------------------

@pytest.mark.slow
def test_scripted_pick_up_lifts_the_cube(arm, lab, truth):
    """PickUpExpert drives arm.step at 10 Hz from ground-truth cube poses, as a policy would."""
    outcomes = []
    for episode in range(3):
        arm.reset_estop()
        arm.home()
        cube = lab.reset_cube()
        expert = PickUpExpert(arm.spec)
        t0 = time.perf_counter()
        for k in range(150):
            s = arm.state()
            position, quaternion = lab.cube_pose()
            arm.step(expert.act(s.ee_position, s.ee_quaternion, position, quaternion))
            if expert.phase == "done":
                break
            time.sleep(max(0.0, t0 + (k + 1) / HZ - time.perf_counter()))
        time.sleep(0.5)
        outcomes.append(lab.cube_lifted())
        print(f"\nepisode {episode}: cube {cube.round(3)}, phase {expert.phase}, {k + 1} steps, "
              f"{time.perf_counter() - t0:.1f} s, lifted {outcomes[-1]} (cube z {lab.cube_pose()[0][2]:.3f})")
        if sum(outcomes) >= 2:
            break  # 2 of 3 reached: a third episode cannot change the verdict
    # Measured: lifted in 3 of 3 episodes (seed 0), 6-9 s each. Required: 2 of 3.
    assert sum(outcomes) >= 2, outcomes


# -- g. a motion franky refuses, and recovering from it --------------------------------------
# franky-sim raises no reflexes and never rejects a Move, so the only ControlException it produces
# is libfranka's "Move command preempted" (which the driver retries by design). What can be
# injected honestly is a motion franky's own planner refuses: a Cartesian target with a NaN,
# sent through the raw franky Robot underneath the driver (the safety filter would never send it).
# These run last: the last one (an expected failure) leaves the watchdog thread dead.

def _inject_refused_motion(arm: FrankaArm) -> None:
    robot = arm._robot
    pose = robot.current_pose.end_effector_pose
    bad = franky.Affine(np.array(pose.translation) + [np.nan, 0.0, 0.0], pose.quaternion)
    with arm._lock:
        robot.move(franky.CartesianMotion(bad, franky.ReferenceType.Absolute), asynchronous=True)
    time.sleep(0.1)  # the planner fails within ~10 ms


def test_recover_after_a_motion_franky_refused(ready, truth):
    arm = ready
    _inject_refused_motion(arm)
    # The next command meets the stored failure (today as franky's RuntimeError, see the xfail
    # below; the driver's contract says ArmFault).
    with pytest.raises((ArmFault, RuntimeError, franky.Exception)) as info:
        arm.step(act(dx=0.01))
    print(f"\nfirst step after the refused motion raised {type(info.value).__name__}: {info.value}")
    arm.recover()
    p0 = arm.state().ee_position
    arm.step(act(dx=0.01))
    truth.wait_for_rest()
    moved = arm.state().ee_position - p0
    print(f"after recover(), one 10 mm step: moved {1000 * moved} mm")
    assert moved[0] == pytest.approx(0.010, abs=0.0025)


@pytest.mark.xfail(
    strict=True,
    raises=RuntimeError,
    reason="driver bug: FrankaArm.step only converts franky.ControlException to ArmFault; a motion "
    "franky's planner refused surfaces as a raw RuntimeError ('Motion planner failed with error "
    "code -100') or InvalidMotionTypeException, against step()'s documented contract",
)
def test_a_refused_motion_surfaces_as_arm_fault(ready):
    arm = ready
    _inject_refused_motion(arm)
    try:
        with pytest.raises(ArmFault, match="recover"):
            arm.step(act(dx=0.01))
    finally:
        arm.recover()


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="driver bug: FrankaArm.hold() catches only franky.ControlException; when the watchdog's "
    "hold() meets a planner RuntimeError from poll_motion, the exception kills the "
    "'franka-watchdog' thread and the arm has no watchdog for the rest of its life",
)
def test_watchdog_survives_a_failure_while_stopping(ready):
    arm = ready
    stops = arm.watchdog_stops
    arm.step(act(dx=0.005))  # arms the watchdog
    _inject_refused_motion(arm)  # the failure is raised by the watchdog's hold()
    time.sleep(0.6)
    assert arm.watchdog_stops == stops + 1
    arm.recover()
    # A fresh stream that stops must still be stopped by the watchdog.
    stream(arm, [act(dx=0.01)] * 3)
    time.sleep(0.6)
    assert arm._watchdog_thread.is_alive(), "the watchdog thread died"
    assert arm.watchdog_stops == stops + 2
