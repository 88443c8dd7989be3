"""The fast gymnasium env of the sim lab's pick-up task: the gymnasium contract, seeding, the action
space's motion and limits, the scripted experts' success rates, images and speed."""

import time
import warnings
from pathlib import Path

import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from pld_robot.config import from_dict, load_node_params
from pld_robot.robots.safety import SafetyLimits
from pld_robot.sim.fast_env import SIM_SAFETY, FastEnvConfig, ImperfectExpert, PickCubeEnv

SIM_YAML = Path(__file__).resolve().parents[1] / "config" / "sim.yaml"
# Measured: the TCP lands within 0.16 mm (per axis) of each 2 cm step of the test below, and never
# more than 0.03 mm outside the workspace box.
TRACKING_TOLERANCE = 0.0005


@pytest.fixture(scope="module")
def env():
    env = PickCubeEnv()
    yield env
    env.close()


@pytest.fixture(scope="module")
def image_env():
    env = PickCubeEnv(FastEnvConfig(observation="image"))
    yield env
    env.close()


def run_episode(env, policy, seed):
    obs, info = env.reset(seed=seed)
    policy.reset()
    rewards = []
    terminated = truncated = False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(policy.act(obs))
        rewards.append(reward)
    return info, terminated, rewards


def success_rate(env, policy, seeds):
    return np.mean([run_episode(env, policy, seed)[0]["success"] for seed in seeds])


def test_defaults_are_the_sim_labs():
    arm = load_node_params(SIM_YAML, "arm_node")["arm"]
    lab = load_node_params(SIM_YAML, "sim_node")["lab"]
    assert from_dict(SafetyLimits, arm["safety"]) == SIM_SAFETY
    c = FastEnvConfig()
    for key in ("cube_size", "cube_x_range", "cube_y_range", "cube_yaw_range", "lift_height"):
        assert np.allclose(getattr(c, key), lab[key]), key
    assert c.control_hz == arm["action"]["control_hz"]


def test_action_space_is_the_sim_drivers(env):
    action = load_node_params(SIM_YAML, "arm_node")["arm"]["action"]
    assert env.action_spec.names == tuple(action["names"])
    assert np.allclose(env.action_space.low, action["low"])
    assert np.allclose(env.action_space.high, action["high"])


@pytest.mark.parametrize("changes, message", [
    ({"cube_size": 0.0}, "cube_size"),
    ({"cube_x_range": (0.6, 0.45)}, "cube_x_range"),
    ({"cube_y_range": (-0.5, 0.0)}, "workspace box"),
    ({"cube_yaw_range": (0.0,)}, "two numbers"),
    ({"lift_height": -0.01}, "lift_height"),
    ({"control_hz": 0.0}, "control_hz"),
    ({"max_steps": 0}, "max_steps"),
    ({"observation": "pixels"}, "observation"),
    ({"observation": "image", "cameras": {}}, "at least one camera"),
    ({"cameras": {"state": FastEnvConfig().cameras["front"]}}, "observation key"),
    ({"home_joints": (0.0,) * 6}, "home_joints"),
])
def test_config_errors_name_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        FastEnvConfig(**changes)


@pytest.mark.parametrize("which", ["env", "image_env"])
def test_gymnasium_env_checker_passes(which, request):
    # Rendering is not checked: the env has no render modes, its images are in the observation.
    # The only warnings allowed are about the unbounded (metres, free cube) observation boxes.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(request.getfixturevalue(which), skip_render_check=True)
    unexpected = [str(w.message) for w in caught if "infinity" not in str(w.message)]
    assert not unexpected


def test_reset_is_seeded_and_within_the_ranges(env):
    c = env.config
    first = env.reset(seed=7)[1]["cube_pose"]
    assert np.array_equal(env.reset(seed=7)[1]["cube_pose"], first)
    poses = [env.reset(seed=seed)[1]["cube_pose"] for seed in range(20)]
    assert len({tuple(p) for p in poses}) == 20
    for x, y, z, qx, qy, qz, qw in poses:
        assert c.cube_x_range[0] <= x <= c.cube_x_range[1]
        assert c.cube_y_range[0] <= y <= c.cube_y_range[1]
        assert z == pytest.approx(c.cube_size / 2)
        assert qx == qy == 0.0
        assert c.cube_yaw_range[0] <= 2 * np.arctan2(qz, qw) <= c.cube_yaw_range[1]


def test_reset_puts_the_arm_at_home_with_the_hand_open(env):
    obs, _ = env.reset(seed=0)
    # FrankaConfig.home_joints: the TCP 49 cm above the table, pointing down
    assert np.allclose(obs["state"][:3], [0.307, 0.0, 0.487], atol=1e-3)
    assert np.allclose(obs["state"][3:7], [1.0, 0.0, 0.0, 0.0], atol=1e-3)
    assert obs["state"][7] == pytest.approx(0.08)


def test_the_tcp_is_frankys(env):
    """The state's pose is the one franky reports in the sim lab: franky-sim's TCP frame."""
    from franky_sim.mujoco_simulator import FrankaMujocoRobot

    franky = FrankaMujocoRobot()
    low, high = env.model.jnt_range[:7].T
    for q in np.random.default_rng(0).uniform(low, high, (5, 7)):
        env.data.qpos[:7] = q
        mujoco.mj_forward(env.model, env.data)
        position, rotation = env.arm.tcp_pose()
        expected = franky.kinematics(q)
        assert np.allclose(position, expected.translation, atol=1e-9)
        assert np.allclose(rotation, expected.rotation, atol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_translation_step_moves_the_tcp_by_that_much(env, axis, sign):
    env.reset(seed=0)
    for _ in range(8):  # away from the box's faces, where the filter slows steps down
        obs, *_ = env.step(np.array([0.014, 0.0, -0.014, 0.0, 0.0, 0.0, 0.0]))
    action = np.zeros(7, np.float32)
    action[axis] = 0.02 * sign
    for _ in range(3):
        before = obs["state"][:3].astype(float)
        obs, _, _, _, info = env.step(action)
        assert info["clipped"] == ()
        assert np.allclose(obs["state"][:3] - before, action[:3], atol=TRACKING_TOLERANCE)


def test_steps_are_capped_like_the_drivers(env):
    obs, _ = env.reset(seed=0)
    before = obs["state"][:3].astype(float)
    obs, _, _, _, info = env.step(np.array([0.5, 0.5, -0.5, 0.0, 0.0, 0.5, 0.0]))  # far outside the space
    assert np.linalg.norm(info["executed_action"][:3]) == pytest.approx(0.02)
    assert np.linalg.norm(obs["state"][:3] - before) < 0.02 + TRACKING_TOLERANCE
    # 0.07 rad: max_angular_speed 0.7 rad/s at 10 Hz is tighter than the per-step 0.1 rad
    assert info["executed_action"][5] == pytest.approx(0.07)
    assert "translation step" in info["clipped"] and "rotation step" in info["clipped"]


@pytest.mark.parametrize("direction", np.vstack([np.eye(3), -np.eye(3)]).tolist())
def test_the_workspace_box_is_never_left(env, direction):
    low, high = np.array(SIM_SAFETY.workspace_low), np.array(SIM_SAFETY.workspace_high)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=1)
    for _ in range(50):
        action = np.zeros(7)
        action[:3] = 0.02 * np.asarray(direction) + rng.normal(0.0, 0.01, 3)
        obs, *_ = env.step(action)
        position = obs["state"][:3]
        assert np.all(position >= low - TRACKING_TOLERANCE) and np.all(position <= high + TRACKING_TOLERANCE)


def test_the_hand_closes_above_one_half_and_opens_again(env):
    env.reset(seed=0)
    for _ in range(10):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    assert obs["state"][7] < 0.002  # nothing between the fingers
    for _ in range(10):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, 0.5]))  # 0.5 is open, as in the driver
    assert obs["state"][7] == pytest.approx(0.08, abs=0.002)


def test_bad_input_is_refused(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(6))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.nan, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="options"):
        env.reset(options={"cube": [0.5, 0.0, 0.0]})


def test_episodes_truncate_after_max_steps():
    env = PickCubeEnv(FastEnvConfig(max_steps=3))
    env.reset(seed=0)
    results = [env.step(np.zeros(7))[2:4] for _ in range(3)]
    assert results == [(False, False), (False, False), (False, True)]


def test_the_exact_expert_lifts_the_cube(env):
    expert = ImperfectExpert(cube_offset=(0.0, 0.0, 0.0), action_noise=0.0)
    for seed in range(5):
        info, terminated, rewards = run_episode(env, expert, seed)
        assert info["success"] and terminated, f"seed {seed}: not lifted"
        assert rewards[-1] == 1.0 and sum(rewards) == 1.0
        assert info["cube_pose"][2] - env.config.cube_size / 2 > env.config.lift_height


@pytest.mark.slow
def test_success_rates_of_the_exact_and_the_imperfect_expert(env):
    exact = success_rate(env, ImperfectExpert(cube_offset=(0.0, 0.0, 0.0), action_noise=0.0), range(100))
    imperfect = success_rate(env, ImperfectExpert(), range(100))
    assert exact >= 0.9
    assert 0.2 <= imperfect <= 0.6


class CorrectedOnTheWayDown:
    """The imperfect expert plus a fixed correction of its 2 cm belief, added only while it descends:
    what a residual has to learn. The base must keep it, not servo it away before grasping."""

    def __init__(self, correction_x: float):
        self.base, self.correction_x = ImperfectExpert(action_noise=0.0), correction_x

    def reset(self):
        self.base.reset()

    def act(self, obs):
        action = self.base.act(obs)
        if self.base.phase == "descend":
            action[0] += self.correction_x
        return action


def test_a_correction_added_during_the_descent_makes_the_imperfect_expert_succeed(env):
    seeds = range(10)
    assert success_rate(env, CorrectedOnTheWayDown(0.0), seeds) <= 0.7
    # half the action range (the residual's bound at xi 0.5): the grasp lands ~1.7 cm nearer the cube
    assert success_rate(env, CorrectedOnTheWayDown(-0.01), seeds) == 1.0


def test_image_observations(image_env):
    obs, _ = image_env.reset(seed=0)
    assert obs in image_env.observation_space
    for name in ("front", "wrist"):
        image = obs[name]
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert image.std() > 20, f"{name} looks blank"
    red = (obs["front"][..., 0] > 150) & (obs["front"][..., 1] < 80) & (obs["front"][..., 2] < 80)
    assert red.sum() >= 4, "the front camera does not see the cube"
    step_obs, *_ = image_env.step(np.array([0.02, 0, 0, 0, 0, 0, 0]))
    assert not np.array_equal(step_obs["wrist"], obs["wrist"])  # the wrist camera moved with the hand


def steps_per_cpu_second(env, steps):
    """CPU time, not wall time: the machine may be shared, and the env runs on one core."""
    expert = ImperfectExpert()
    obs, _ = env.reset(seed=0)
    start = time.process_time()
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step(expert.act(obs))
        if terminated or truncated:
            obs, _ = env.reset()
            expert.reset()
    return steps / (time.process_time() - start)


def test_stepping_is_faster_than_real_time(env, image_env):
    # Measured ~420 steps/s with state and ~39 with two 64x64 images (software GL: the FR3's 240k
    # visual triangles cost ~14 ms per camera frame). 10 steps/s is real time.
    real_time = env.config.control_hz
    assert steps_per_cpu_second(env, 200) >= 10 * real_time
    assert steps_per_cpu_second(image_env, 20) >= 2 * real_time
