"""Calibration views from the sim lab, for trying the calibration workflow without a robot.

The sim lab's scene (franky-sim's FR3 MJCF with scene.py's table and cameras) gets a ChArUco board:
on the table for the wrist camera (eye-in-hand), held by the hand for the front camera
(eye-to-hand). The arm is posed by IK so the camera sees the board from varied angles; each view
records the rendered image and the tcp pose exactly as the Franka driver reports it (franky's
end-effector frame, fast_control.FrankaController.tcp_pose). No physics runs: the arm
is placed kinematically, which is what a real arm at rest during a capture amounts to.

The scene's true intrinsics and camera pose are written beside the views (truth.yaml), so the
solvers' results can be checked against them.
"""

from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import mujoco
import numpy as np
import yaml
from franky_sim.mujoco_simulator import MujocoSimulator

from pld_robot.calibration import CalibrationError
from pld_robot.calibration.board import BoardDetector, BoardSpec
from pld_robot.calibration.views import ViewWriter
from pld_robot.cameras.base import CameraIntrinsics
from pld_robot.robots.franka import FrankaConfig
from pld_robot.robots.transforms import matrix_to_quat, rotvec_to_matrix
from pld_robot.sim.fast_control import FrankaController
from pld_robot.sim.lab import SimCamera, SimLabConfig
from pld_robot.sim.scene import ROBOT_PREFIX, add_lab_scene

TRUTH = "truth.yaml"
BOARD_ON_TABLE = (0.5, 0.0)  # eye-in-hand: the board's centre on the table (m, base frame)
# A view must show most of the board: partial views near the image border calibrate worse.
MIN_CORNER_FRACTION = 0.6
# MuJoCo's camera looks along its -z with y up; OpenCV's optical frame looks along +z with y down.
MUJOCO_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])
# camera <- board for a board squarely facing the camera: its textured +z face points back at it
FACING = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class SimTruth:
    camera: str
    mode: str
    intrinsics: CameraIntrinsics
    transform: np.ndarray  # 4x4: tcp <- camera (eye_in_hand) or base <- camera (eye_to_hand)

    def save(self, path: Path) -> None:
        i, t = self.intrinsics, self.transform
        path.write_text("# the sim scene's true camera, for checking the calibration against\n" + yaml.safe_dump({
            "camera": self.camera, "mode": self.mode,
            "intrinsics": {"width": i.width, "height": i.height,
                           **{k: float(getattr(i, k)) for k in ("fx", "fy", "cx", "cy")}},
            "translation": [float(v) for v in t[:3, 3]],
            "quaternion_xyzw": [float(v) for v in matrix_to_quat(t[:3, :3])]}, sort_keys=False))


def collect_sim_views(folder: str | Path, camera: str, lab: SimLabConfig, board: BoardSpec, *, views: int = 15,
                      width: int = 640, height: int = 480, seed: int = 0, max_tries: int = 200) -> SimTruth:
    if camera not in lab.cameras:
        raise CalibrationError(f"the sim lab has no camera {camera!r}; it has {sorted(lab.cameras)}")
    cam = replace(lab.cameras[camera], width=width, height=height)
    mode = "eye_in_hand" if cam.mount == "wrist" else "eye_to_hand"
    with tempfile.TemporaryDirectory() as tmp:
        texture = Path(tmp) / "board.png"
        cv2.imwrite(str(texture), board.render(100))
        model = _model(lab, camera, cam, board, mode, texture)
    data = mujoco.MjData(model)
    arm = FrankaController(model, data, FrankaConfig.home_joints, substeps=1)
    arm.reset()
    mujoco.mj_forward(model, data)
    arm_qpos = [int(model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"{ROBOT_PREFIX}fr3_joint{i}")])
                for i in range(1, 8)]
    cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    board_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "calibration_board")
    tcp = _pose(*arm.tcp_pose())
    cam_pose = _camera_pose(data, cam_id)
    board_pose = _pose(data.xpos[board_id], data.xmat[board_id].reshape(3, 3))
    # eye-in-hand: the camera moves with the tcp; eye-to-hand: the board does
    fixed = np.linalg.inv(tcp) @ (cam_pose if mode == "eye_in_hand" else board_pose)
    truth = SimTruth(camera, mode, SimCamera(camera, cam, None).intrinsics,
                     fixed if mode == "eye_in_hand" else cam_pose)
    detector = BoardDetector(board)
    rng = np.random.default_rng(seed)
    writer = ViewWriter(folder, camera, mode=mode, source="sim")
    renderer = mujoco.Renderer(model, height=height, width=width)
    try:
        for _ in range(max_tries):
            if len(writer) >= views:
                break
            camera_from_board = _random_view(rng, mode)
            if mode == "eye_in_hand":
                target = board_pose @ np.linalg.inv(camera_from_board) @ np.linalg.inv(fixed)
            else:
                target = cam_pose @ camera_from_board @ np.linalg.inv(fixed)
            arm.reset()
            for _ in range(10):  # solve_ik takes a few Gauss-Newton steps from the current joints
                data.qpos[arm_qpos] = arm.solve_ik(target[:3, 3], target[:3, :3])
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera=camera)
            image = renderer.render()
            found = detector.detect(image)
            if found is not None and len(found.ids) >= MIN_CORNER_FRACTION * detector.corner_count:
                writer.add(image, _pose(*arm.tcp_pose()))
    finally:
        renderer.close()
    if len(writer) < views:
        raise CalibrationError(f"only {len(writer)} of {views} sim views showed the board in {max_tries} tries")
    truth.save(Path(folder) / TRUTH)
    return truth


def _model(lab: SimLabConfig, name: str, cam, board: BoardSpec, mode: str, texture: Path) -> mujoco.MjModel:
    sim = MujocoSimulator()
    sim.init()
    sim.add_robot()
    add_lab_scene(sim.scene, sim.worldbody, lab.cube_size, {name: cam})
    visual = sim.scene.find("visual")
    ET.SubElement(visual, "global", offwidth=str(max(640, cam.width)), offheight=str(max(480, cam.height)))
    asset = sim.scene.find("asset")
    ET.SubElement(asset, "texture", name="charuco", type="2d", file=str(texture))
    ET.SubElement(asset, "material", name="charuco", texture="charuco", texrepeat="1 1", texuniform="false",
                  specular="0", shininess="0", reflectance="0")
    if mode == "eye_in_hand":
        parent, pos, quat = sim.worldbody, (*BOARD_ON_TABLE, 0.0006), (1.0, 0.0, 0.0, 0.0)
    else:
        parent = next(b for b in sim.worldbody.iter("body") if b.get("name") == f"{ROBOT_PREFIX}hand")
        pos, quat = _held_board_pose(sim, name)
    body = ET.SubElement(parent, "body", name="calibration_board", pos=_vec(pos), quat=_vec(quat))
    w, h = board.size_m
    # textured +z face toward the camera; no collisions: the arm is only ever placed, never simulated
    ET.SubElement(body, "geom", type="box", size=f"{w / 2} {h / 2} 0.0005", material="charuco",
                  contype="0", conaffinity="0", mass="0.001")
    return mujoco.MjModel.from_xml_string(ET.tostring(sim.scene, encoding="unicode"))


def _held_board_pose(sim: MujocoSimulator, camera: str) -> tuple[np.ndarray, np.ndarray]:
    """The board's pose in the hand frame: in front of the fingers, facing the camera at home."""
    model = mujoco.MjModel.from_xml_string(ET.tostring(sim.scene, encoding="unicode"))
    data = mujoco.MjData(model)
    arm = FrankaController(model, data, FrankaConfig.home_joints, substeps=1)
    arm.reset()
    mujoco.mj_forward(model, data)
    tcp_position, hand_rotation = arm.tcp_pose()
    cam_position = data.cam_xpos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)]
    toward = cam_position - tcp_position
    centre = tcp_position + 0.12 * toward / np.linalg.norm(toward)
    z = toward / np.linalg.norm(toward)
    x = np.cross([0.0, 0.0, 1.0], z)
    x /= np.linalg.norm(x)
    rotation = np.column_stack([x, np.cross(z, x), z])
    hand = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, f"{ROBOT_PREFIX}hand")
    hand_position = data.xpos[hand]
    local_rotation = hand_rotation.T @ rotation
    quat = matrix_to_quat(local_rotation)
    return hand_rotation.T @ (centre - hand_position), np.array([quat[3], *quat[:3]])  # MJCF quat is w x y z


def _random_view(rng: np.random.Generator, mode: str) -> np.ndarray:
    """camera <- board geom, looking at the textured face from a random distance and angle."""
    distance = rng.uniform(0.3, 0.42) if mode == "eye_in_hand" else rng.uniform(0.7, 0.95)
    offset = rng.uniform(-0.04, 0.04, 2) if mode == "eye_in_hand" else rng.uniform(-0.08, 0.08, 2)
    tilt = np.concatenate([rng.uniform(-0.45, 0.45, 2), rng.uniform(-0.5, 0.5, 1)])
    pose = np.eye(4)
    pose[:3, :3] = FACING @ rotvec_to_matrix(tilt)
    pose[:3, 3] = [offset[0], offset[1], distance]
    return pose


def _camera_pose(data: mujoco.MjData, cam_id: int) -> np.ndarray:
    return _pose(data.cam_xpos[cam_id], data.cam_xmat[cam_id].reshape(3, 3) @ MUJOCO_TO_OPTICAL)


def _pose(position, rotation) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, position
    return pose


def _vec(values) -> str:
    return " ".join(f"{float(v):.9g}" for v in values)
