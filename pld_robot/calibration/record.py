"""The calibration stored with each recorded episode (EpisodeInfo.cameras), so a dataset keeps the
camera model and mounting it was recorded with even after the lab recalibrates."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pld_robot.calibration.camera_info import load_camera_yaml
from pld_robot.calibration.hand_eye import load_hand_eye
from pld_robot.config import ConfigError, load_yaml


def episode_calibration(paths: Iterable[str | Path]) -> dict[str, dict]:
    """camera name -> {"intrinsics": ..., "hand_eye": ...}: each file's contents as written, plus its
    path under "file". Every file is validated (a broken one fails at start, not in the dataset)."""
    cameras: dict[str, dict] = {}
    for path in paths:
        data = load_yaml(path)
        if "camera_matrix" in data:
            kind, (camera, _) = "intrinsics", load_camera_yaml(path)
        elif "quaternion_xyzw" in data:
            kind, (camera, _) = "hand_eye", load_hand_eye(path)
        else:
            raise ConfigError(f"{path}: neither a camera calibration (camera_matrix) nor a hand-eye "
                              "calibration (quaternion_xyzw)")
        if kind in cameras.get(camera, {}):
            raise ConfigError(f"{path}: a second {kind} calibration of camera '{camera}' "
                              f"(the first is {cameras[camera][kind]['file']})")
        cameras.setdefault(camera, {})[kind] = {**data, "file": str(path)}
    return cameras
