"""Hand-eye calibration: where a camera sits relative to the arm, from pairs of (arm pose from the
driver, board pose from the camera).

eye_in_hand (wrist camera, board fixed on the table): the result is tcp <- camera, where tcp is the
  frame of the driver's end-effector pose (/arm/ee_pose).
eye_to_hand (front camera, board held by the hand): the result is base <- camera.

OpenCV 5.0's Python wheel has the CALIB_HAND_EYE_* constants but not cv2.calibrateHandEye, so the
solver is Park & Martin's (IEEE T-RA 1994; OpenCV's CALIB_HAND_EYE_PARK) in numpy, over all pairs
of views rather than consecutive ones, which averages the noise of each pose over every motion.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml

from pld_robot.calibration import CalibrationError
from pld_robot.config import ConfigError, load_yaml
from pld_robot.robots.transforms import matrix_to_quat, matrix_to_rotvec, quat_to_matrix

Mode = Literal["eye_in_hand", "eye_to_hand"]
MODES: tuple[str, ...] = ("eye_in_hand", "eye_to_hand")
PARENT_FRAME = {"eye_in_hand": "tcp", "eye_to_hand": "base"}
MIN_VIEWS = 5
# Rotations about one axis only leave the translation along it unobservable; smaller ones drown in noise.
MIN_ROTATION_DEG = 10.0


@dataclass(frozen=True)
class HandEyeResult:
    mode: str
    transform: np.ndarray  # 4x4, parent (tcp or base) <- camera optical frame
    views: int
    # The fixed board's pose recomputed from every view through the result: its spread says how well
    # the views agree (a few mm and a few tenths of a degree for a good calibration).
    spread_mm: float
    spread_deg: float

    @property
    def parent_frame(self) -> str:
        return PARENT_FRAME[self.mode]


def solve_hand_eye(arm_poses: Sequence[np.ndarray], board_poses: Sequence[np.ndarray], mode: Mode) -> HandEyeResult:
    """`arm_poses`: base <- tcp per view (4x4); `board_poses`: camera <- board per view (4x4)."""
    if mode not in MODES:
        raise CalibrationError(f"hand-eye mode must be one of {MODES}, not {mode!r}")
    if len(arm_poses) != len(board_poses):
        raise CalibrationError(f"{len(arm_poses)} arm poses but {len(board_poses)} board poses")
    if len(arm_poses) < MIN_VIEWS:
        raise CalibrationError(f"too few views for hand-eye: {len(arm_poses)} (need {MIN_VIEWS}, better 15)")
    # With the arm poses inverted, eye-to-hand is the eye-in-hand problem with base and tcp swapped.
    hands = [np.asarray(p, float) if mode == "eye_in_hand" else _inverse(np.asarray(p, float)) for p in arm_poses]
    cams = [np.asarray(p, float) for p in board_poses]
    pairs = list(itertools.combinations(range(len(hands)), 2))
    # A X = X B with A = hand motion, B = camera motion, X = hand <- camera
    a = [_inverse(hands[j]) @ hands[i] for i, j in pairs]
    b = [cams[j] @ _inverse(cams[i]) for i, j in pairs]
    alphas = np.array([matrix_to_rotvec(m[:3, :3]) for m in a])
    betas = np.array([matrix_to_rotvec(m[:3, :3]) for m in b])
    _check_motion(alphas)
    m = betas.T @ alphas  # sum of beta_i alpha_i^T
    rotation = _inverse_sqrt(m.T @ m) @ m.T
    lhs = np.vstack([am[:3, :3] - np.eye(3) for am in a])
    rhs = np.concatenate([rotation @ bm[:3, 3] - am[:3, 3] for am, bm in zip(a, b)])
    translation = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    x = np.eye(4)
    x[:3, :3], x[:3, 3] = rotation, translation
    fixed = [h @ x @ c for h, c in zip(hands, cams)]
    mean = _mean_pose(fixed)
    spread_mm = 1e3 * float(np.sqrt(np.mean([np.sum((f[:3, 3] - mean[:3, 3]) ** 2) for f in fixed])))
    spread_deg = float(np.degrees(np.sqrt(np.mean(
        [np.sum(matrix_to_rotvec(mean[:3, :3].T @ f[:3, :3]) ** 2) for f in fixed]))))
    return HandEyeResult(mode, x, len(hands), spread_mm, spread_deg)


def _check_motion(alphas: np.ndarray) -> None:
    angles = np.degrees(np.linalg.norm(alphas, axis=1))
    big = alphas[angles >= MIN_ROTATION_DEG]
    if len(big) < 2:
        raise CalibrationError(f"the hand barely rotates between views (largest relative rotation "
                               f"{angles.max():.1f} deg): tilt it by {MIN_ROTATION_DEG:g}-30 deg about "
                               "different axes between views")
    axes = big / np.linalg.norm(big, axis=1, keepdims=True)
    if np.linalg.svd(axes, compute_uv=False)[1] < 0.2:
        raise CalibrationError("every rotation between views is about nearly the same axis: tilt the hand "
                               "about at least two different axes (e.g. roll and pitch) between views")


def _inverse(t: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = t[:3, :3].T
    out[:3, 3] = -t[:3, :3].T @ t[:3, 3]
    return out


def _inverse_sqrt(m: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(m)
    return vectors @ np.diag(1.0 / np.sqrt(values)) @ vectors.T


def _mean_pose(poses: Sequence[np.ndarray]) -> np.ndarray:
    u, _, vt = np.linalg.svd(sum(p[:3, :3] for p in poses))
    mean = np.eye(4)
    mean[:3, :3] = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    mean[:3, 3] = np.mean([p[:3, 3] for p in poses], axis=0)
    return mean


# --- the result file: calibration/<camera>_hand_eye.yaml ------------------------------------------


def save_hand_eye(path: str | Path, result: HandEyeResult, camera_name: str) -> None:
    t = result.transform
    data = {
        "camera_name": camera_name,
        "mode": result.mode,
        "parent_frame": result.parent_frame,
        "child_frame": f"{camera_name}_color_optical_frame",
        "translation": [round(float(v), 6) for v in t[:3, 3]],
        "quaternion_xyzw": [round(float(v), 8) for v in matrix_to_quat(t[:3, :3])],
        "views": result.views,
        "spread_mm": round(result.spread_mm, 3),
        "spread_deg": round(result.spread_deg, 4),
    }
    header = (f"# hand-eye calibration ({result.mode}): {data['parent_frame']} <- {data['child_frame']}, "
              "metres; quaternion [x, y, z, w]\n# written by `pld-robot calibrate hand-eye`\n")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(header + yaml.safe_dump(data, sort_keys=False))


def load_hand_eye(path: str | Path) -> tuple[str, HandEyeResult]:
    """(camera name, result) from a file written by `save_hand_eye`."""
    data = load_yaml(path)
    missing = sorted({"camera_name", "mode", "translation", "quaternion_xyzw", "views"} - set(data))
    if missing:
        raise ConfigError(f"{path}: not a hand-eye calibration, missing {missing}")
    if data["mode"] not in MODES:
        raise ConfigError(f"{path}: mode must be one of {MODES}, not {data['mode']!r}")
    try:
        translation = np.array(data["translation"], float).reshape(3)
        quaternion = np.array(data["quaternion_xyzw"], float).reshape(4)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: translation needs 3 numbers and quaternion_xyzw 4 ({exc})") from None
    if not abs(np.linalg.norm(quaternion) - 1.0) < 1e-3:
        raise ConfigError(f"{path}: quaternion_xyzw {quaternion.tolist()} is not a unit quaternion")
    t = np.eye(4)
    t[:3, :3], t[:3, 3] = quat_to_matrix(quaternion), translation
    return str(data["camera_name"]), HandEyeResult(data["mode"], t, int(data["views"]),
                                                   float(data.get("spread_mm", 0.0)), float(data.get("spread_deg", 0.0)))
