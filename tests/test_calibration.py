"""Calibration against images whose truth is known: a ChArUco board rendered by OpenCV
(tests/charuco_render.py) under known intrinsics, distortion and poses.

Tolerances (the issue's): focal lengths and principal point within 1 %, RMS reprojection error
under 0.5 px; hand-eye rotation error under 1 degree and translation error under 5 mm, for
eye-in-hand and eye-to-hand, with exact arm poses and with arm poses perturbed by 1 mm / 0.1 degree
(per axis, standard deviation).
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from charuco_render import BoardRenderer, look_at_board

from pld_robot.calibration import CalibrationError
from pld_robot.calibration.board import BoardDetector, BoardSpec, load_board
from pld_robot.calibration.camera_info import load_camera_yaml, save_camera_yaml
from pld_robot.calibration.hand_eye import load_hand_eye, save_hand_eye, solve_hand_eye
from pld_robot.calibration.intrinsics import board_pose, calibrate_intrinsics
from pld_robot.calibration.views import ViewWriter, load_views
from pld_robot.cameras.base import CameraIntrinsics
from pld_robot.config import ConfigError
from pld_robot.robots.transforms import matrix_to_rotvec, rotvec_to_matrix

BOARD = BoardSpec()  # the shipped board: calibration/boards/charuco_5x7_40mm.yaml
# a RealSense-like colour camera at 512x384, with a visible barrel distortion
TRUE = CameraIntrinsics(512, 384, 478.0, 474.5, 259.3, 188.6, (0.09, -0.21, 0.0012, -0.0008, 0.0))
PINHOLE = CameraIntrinsics(512, 384, 478.0, 474.5, 259.3, 188.6)
NOISE_M, NOISE_RAD = 1e-3, np.radians(0.1)


def pose(rotvec=(0.0, 0.0, 0.0), translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rotvec_to_matrix(np.asarray(rotvec, float)), translation
    return out


def inverse(t: np.ndarray) -> np.ndarray:
    return np.linalg.inv(t)


def errors(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(rotation error in degrees, translation error in mm)"""
    angle = np.degrees(np.linalg.norm(matrix_to_rotvec(truth[:3, :3].T @ found[:3, :3])))
    return float(angle), float(1e3 * np.linalg.norm(found[:3, 3] - truth[:3, 3]))


def random_views(rng: np.random.Generator, count: int, distance=(0.38, 0.6), spread=0.06) -> list[np.ndarray]:
    """camera <- board poses that keep the board in view, tilted up to ~35 deg about varied axes."""
    return [look_at_board(BOARD, rng.uniform(*distance),
                          [*rng.uniform(-0.6, 0.6, 2), rng.uniform(-0.5, 0.5)], rng.uniform(-spread, spread, 2))
            for _ in range(count)]


@pytest.fixture(scope="module")
def distorted():
    return BoardRenderer(BOARD, TRUE)


@pytest.fixture(scope="module")
def pinhole():
    return BoardRenderer(BOARD, PINHOLE)


# --- the board --------------------------------------------------------------------------------------


def test_shipped_board_definition_loads(tmp_path):
    from pld_robot.paths import shipped_config

    assert load_board(shipped_config("boards/charuco_5x7_40mm.yaml", folder="calibration")) == BOARD
    bad = tmp_path / "board.yaml"
    bad.write_text("squares_x: 5\nsquares_y: 7\nsquare_length_m: 0.04\nmarker_length_m: 0.05\n")
    with pytest.raises(ConfigError, match="marker_length_m .* must be positive and smaller than square_length_m"):
        load_board(bad)
    bad.write_text("squares_x: 5\nsquares_y: 7\ndictionary: DICT_7X7_13\n")
    with pytest.raises(ConfigError, match="unknown ArUco dictionary 'DICT_7X7_13'"):
        load_board(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_board(tmp_path / "missing.yaml")


def test_detected_corners_are_where_the_camera_model_puts_them(distorted):
    """The renderer and the detector agree with cv2.projectPoints: the test images are truthful."""
    import cv2

    view = look_at_board(BOARD, 0.5, [0.3, -0.2, 0.1], (0.02, -0.01))
    found = BoardDetector(BOARD).detect(distorted.render(view))
    assert found is not None and len(found.ids) == 24
    k = np.array([[TRUE.fx, 0, TRUE.cx], [0, TRUE.fy, TRUE.cy], [0, 0, 1]])
    projected, _ = cv2.projectPoints(found.object_points, cv2.Rodrigues(view[:3, :3])[0], view[:3, 3], k,
                                     np.asarray(TRUE.distortion))
    assert np.abs(projected.reshape(-1, 2) - found.image_points).max() < 0.3


# --- intrinsics -------------------------------------------------------------------------------------


def test_intrinsics_recover_the_true_camera(distorted):
    rng = np.random.default_rng(1)
    images = {f"view_{i:02d}": distorted.render(p) for i, p in enumerate(random_views(rng, 12, spread=0.1))}
    images["blank"] = np.full((TRUE.height, TRUE.width), 110, np.uint8)
    result = calibrate_intrinsics(images, BoardDetector(BOARD))
    found = result.intrinsics
    for key in ("fx", "fy", "cx", "cy"):
        assert getattr(found, key) == pytest.approx(getattr(TRUE, key), rel=0.01), key
    assert result.rms_px < 0.5
    assert max(result.view_errors_px.values()) < 0.5
    assert found.distortion[0] == pytest.approx(TRUE.distortion[0], abs=0.03)
    assert result.skipped == {"blank": "board not detected"}
    print("intrinsics errors (%): " + ", ".join(
        f"{k} {100 * (getattr(found, k) - getattr(TRUE, k)) / getattr(TRUE, k):+.3f}" for k in ("fx", "fy", "cx", "cy"))
        + f"; RMS {result.rms_px:.3f} px; k1 {found.distortion[0]:+.4f} (true {TRUE.distortion[0]:+.4f})")


def test_intrinsics_name_the_images_without_a_board(pinhole):
    rng = np.random.default_rng(2)
    images = {f"good_{i}": pinhole.render(p) for i, p in enumerate(random_views(rng, 3))}
    images.update({f"empty_{i}.png": np.full((PINHOLE.height, PINHOLE.width, 3), 90, np.uint8) for i in range(2)})
    with pytest.raises(CalibrationError, match=r"too few usable views: 3 of 5 images show the board \(need 6\); "
                                               r"not used: empty_0.png \(board not detected\), empty_1.png"):
        calibrate_intrinsics(images, BoardDetector(BOARD))
    with pytest.raises(CalibrationError, match="images differ in size"):
        calibrate_intrinsics({"a": images["good_0"], "b": images["good_1"][:100]}, BoardDetector(BOARD))


# --- hand-eye ---------------------------------------------------------------------------------------

# eye-in-hand: a wrist camera 6 cm beside and 4 cm behind the tcp, looking roughly along the tcp's z
TCP_FROM_WRIST_CAMERA = pose([0.05, -0.08, 1.55], [0.062, -0.018, -0.045])
BASE_FROM_TABLE_BOARD = pose([np.pi, 0.0, 0.0], [0.45, 0.12, 0.0])
# eye-to-hand: a front camera 1.2 m in front of the arm looking back at it, the board held by the hand
BASE_FROM_FRONT_CAMERA = pose([1.2, -1.2, 1.2], [1.15, 0.05, 0.45])
TCP_FROM_HELD_BOARD = pose([0.0, 1.3, 0.2], [0.03, -0.1, 0.08])


def hand_eye_views(mode: str, rng: np.random.Generator, renderer: BoardRenderer, count: int):
    """(arm poses base <- tcp, images) for views consistent with the true mounting."""
    arm, images = [], []
    for camera_from_board in random_views(rng, count, distance=(0.35, 0.55)):
        if mode == "eye_in_hand":
            base_from_camera = BASE_FROM_TABLE_BOARD @ inverse(camera_from_board)
            arm.append(base_from_camera @ inverse(TCP_FROM_WRIST_CAMERA))
        else:
            base_from_board = BASE_FROM_FRONT_CAMERA @ camera_from_board
            arm.append(base_from_board @ inverse(TCP_FROM_HELD_BOARD))
        images.append(renderer.render(camera_from_board))
    return arm, images


@pytest.fixture(scope="module")
def hand_eye_data(pinhole):
    rng = np.random.default_rng(3)
    return {mode: hand_eye_views(mode, rng, pinhole, 12) for mode in ("eye_in_hand", "eye_to_hand")}


@pytest.mark.parametrize("noisy", [False, True], ids=["exact-arm-poses", "noisy-arm-poses"])
@pytest.mark.parametrize("mode", ["eye_in_hand", "eye_to_hand"])
def test_hand_eye_recovers_the_true_mounting(mode, noisy, hand_eye_data):
    arm, images = hand_eye_data[mode]
    if noisy:
        rng = np.random.default_rng(4)
        arm = [a @ pose(rng.normal(0, NOISE_RAD, 3), rng.normal(0, NOISE_M, 3)) for a in arm]
    detector = BoardDetector(BOARD)
    boards = [board_pose(detector.detect(image), PINHOLE)[0] for image in images]
    result = solve_hand_eye(arm, boards, mode)
    truth = TCP_FROM_WRIST_CAMERA if mode == "eye_in_hand" else BASE_FROM_FRONT_CAMERA
    rotation_deg, translation_mm = errors(result.transform, truth)
    print(f"{mode} {'noisy' if noisy else 'exact'}: rotation error {rotation_deg:.4f} deg, translation error "
          f"{translation_mm:.3f} mm, spread {result.spread_mm:.2f} mm / {result.spread_deg:.3f} deg")
    assert rotation_deg < 1.0
    assert translation_mm < 5.0
    assert result.spread_mm < (5.0 if noisy else 1.0)


def test_hand_eye_refuses_motions_that_cannot_determine_the_mounting():
    boards = [pose([0.0, 0.0, a], [0.0, 0.0, 0.5]) for a in np.linspace(0, 1, 6)]
    about_z = [pose([0.0, 0.0, a], [0.4, 0.0, 0.3]) for a in np.linspace(0, 1, 6)]
    with pytest.raises(CalibrationError, match="about nearly the same axis"):
        solve_hand_eye(about_z, boards, "eye_in_hand")
    still = [pose([0.0, 0.01 * i, 0.0], [0.4, 0.0, 0.3]) for i in range(6)]
    with pytest.raises(CalibrationError, match="the hand barely rotates"):
        solve_hand_eye(still, boards, "eye_in_hand")
    with pytest.raises(CalibrationError, match="too few views for hand-eye: 3"):
        solve_hand_eye(still[:3], boards[:3], "eye_in_hand")


# --- result files -------------------------------------------------------------------------------------


def test_camera_yaml_is_the_ros_camera_calibration_layout(tmp_path):
    path = tmp_path / "front.yaml"
    save_camera_yaml(path, TRUE, "front", comment="test")
    data = yaml.safe_load(path.read_text())
    assert data["camera_matrix"] == {"rows": 3, "cols": 3, "data": [478.0, 0.0, 259.3, 0.0, 474.5, 188.6, 0.0, 0.0, 1.0]}
    assert data["projection_matrix"]["data"] == [478.0, 0.0, 259.3, 0.0, 0.0, 474.5, 188.6, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert (data["image_width"], data["image_height"], data["distortion_model"]) == (512, 384, "plumb_bob")
    assert load_camera_yaml(path) == ("front", TRUE)
    # a file as ROS's camera_calibration writes it
    ros = tmp_path / "ost.yaml"
    ros.write_text("image_width: 640\nimage_height: 480\ncamera_name: narrow_stereo\ncamera_matrix:\n  rows: 3\n"
                   "  cols: 3\n  data: [615.2, 0, 320.5, 0, 614.8, 240.1, 0, 0, 1]\ndistortion_model: plumb_bob\n"
                   "distortion_coefficients:\n  rows: 1\n  cols: 5\n  data: [0.1, -0.2, 0, 0, 0]\n"
                   "rectification_matrix:\n  rows: 3\n  cols: 3\n  data: [1, 0, 0, 0, 1, 0, 0, 0, 1]\n"
                   "projection_matrix:\n  rows: 3\n  cols: 4\n  data: [615.2, 0, 320.5, 0, 0, 614.8, 240.1, 0, 0, 0, 1, 0]\n")
    name, intrinsics = load_camera_yaml(ros)
    assert (name, intrinsics.fx, intrinsics.cy, intrinsics.distortion[1]) == ("narrow_stereo", 615.2, 240.1, -0.2)
    ros.write_text("image_width: 640\nimage_height: 480\ncamera_matrix: {rows: 3, cols: 3, data: [1, 2, 3]}\n"
                   "distortion_coefficients: {rows: 1, cols: 5, data: [0, 0, 0, 0, 0]}\n")
    with pytest.raises(ConfigError, match="ost.yaml: camera_matrix: cannot reshape"):
        load_camera_yaml(ros)
    ros.write_text("image_width: 640\n")
    with pytest.raises(ConfigError, match=r"not a camera calibration .* missing \['camera_matrix'"):
        load_camera_yaml(ros)


def test_hand_eye_yaml_round_trip(tmp_path, hand_eye_data):
    arm, images = hand_eye_data["eye_to_hand"]
    detector = BoardDetector(BOARD)
    result = solve_hand_eye(arm, [board_pose(detector.detect(i), PINHOLE)[0] for i in images], "eye_to_hand")
    save_hand_eye(tmp_path / "front_hand_eye.yaml", result, "front")
    name, loaded = load_hand_eye(tmp_path / "front_hand_eye.yaml")
    assert (name, loaded.mode, loaded.parent_frame, loaded.views) == ("front", "eye_to_hand", "base", 12)
    np.testing.assert_allclose(loaded.transform, result.transform, atol=1e-6)


def test_cli_calibrates_a_folder_of_views(tmp_path, hand_eye_data, capsys):
    """collect's folder layout -> `pld-robot calibrate intrinsics` and `hand-eye` -> the result files."""
    from pld_robot.cli import main

    arm, images = hand_eye_data["eye_in_hand"]
    writer = ViewWriter(tmp_path / "views", "wrist", mode="eye_in_hand")
    for a, image in zip(arm, images):
        writer.add(np.repeat(image[:, :, None], 3, axis=2), a)
    found = load_views(tmp_path / "views")
    views = found.views
    assert (found.camera, found.mode, len(views)) == ("wrist", "eye_in_hand", 12)
    np.testing.assert_allclose(views[5].tcp_pose, arm[5], atol=1e-6)
    out = tmp_path / "calibration"
    assert main(["calibrate", "intrinsics", str(tmp_path / "views"), "--out", str(out / "wrist.yaml")]) == 0
    assert main(["calibrate", "hand-eye", str(tmp_path / "views"), "--intrinsics", str(out / "wrist.yaml"),
                 "--out", str(out / "wrist_hand_eye.yaml")]) == 0
    _, result = load_hand_eye(out / "wrist_hand_eye.yaml")
    rotation_deg, translation_mm = errors(result.transform, TCP_FROM_WRIST_CAMERA)
    # the intrinsics come from the same 12 views here, not from the truth
    assert rotation_deg < 1.0 and translation_mm < 5.0
    assert "RMS reprojection error" in capsys.readouterr().out
    assert main(["calibrate", "hand-eye", str(tmp_path / "views"), "--intrinsics", str(tmp_path / "nope.yaml"),
                 "--out", str(out / "x.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


# --- the sim lab: the board rendered in the MuJoCo scene, the truth read from the scene ------------------


@pytest.mark.timeout(600)
@pytest.mark.parametrize("camera", ["wrist", "front"])
def test_sim_lab_calibration_recovers_the_scene_camera(camera, tmp_path):
    """`pld-robot calibrate collect --sim` views of config/sim.yaml's cameras: intrinsics and hand-eye
    (wrist: eye-in-hand, front: eye-to-hand) against the scene's own camera."""
    from pld_robot.calibration.sim_views import collect_sim_views
    from pld_robot.config import from_dict, load_node_params
    from pld_robot.paths import shipped_config
    from pld_robot.sim.lab import SimLabConfig

    lab = from_dict(SimLabConfig, load_node_params(shipped_config("sim.yaml"), "sim_node")["lab"])
    truth = collect_sim_views(tmp_path, camera, lab, BOARD, views=12, seed=5)
    views = load_views(tmp_path).views
    detector = BoardDetector(BOARD)
    result = calibrate_intrinsics({v.name: v.image for v in views}, detector)
    for key in ("fx", "fy", "cx", "cy"):
        assert getattr(result.intrinsics, key) == pytest.approx(getattr(truth.intrinsics, key), rel=0.01), key
    assert result.rms_px < 0.5
    boards = [board_pose(detector.detect(v.image), result.intrinsics)[0] for v in views]
    found = solve_hand_eye([v.tcp_pose for v in views], boards, truth.mode)
    rotation_deg, translation_mm = errors(found.transform, truth.transform)
    print(f"sim {camera} ({truth.mode}): fx {result.intrinsics.fx:.2f} (true {truth.intrinsics.fx:.2f}), RMS "
          f"{result.rms_px:.3f} px; rotation error {rotation_deg:.3f} deg, translation error {translation_mm:.2f} mm")
    assert rotation_deg < 1.0
    assert translation_mm < 5.0
