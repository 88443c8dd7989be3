"""Intrinsics <-> the YAML layout of ROS's camera_calibration_parsers (what camera_calibration writes
and camera_info_manager reads), so a file from either side works on the other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from pld_robot.cameras.base import CameraIntrinsics
from pld_robot.config import ConfigError, load_yaml

_MATRICES = {"camera_matrix": (3, 3), "distortion_coefficients": (1, None), "rectification_matrix": (3, 3),
             "projection_matrix": (3, 4)}


def to_yaml(intrinsics: CameraIntrinsics, camera_name: str) -> dict:
    i = intrinsics
    def matrix(rows, cols, values):
        return {"rows": rows, "cols": cols, "data": [round(float(v), 9) for v in values]}
    return {
        "image_width": i.width,
        "image_height": i.height,
        "camera_name": camera_name,
        "camera_matrix": matrix(3, 3, [i.fx, 0, i.cx, 0, i.fy, i.cy, 0, 0, 1]),
        "distortion_model": i.distortion_model,
        "distortion_coefficients": matrix(1, len(i.distortion), i.distortion),
        "rectification_matrix": matrix(3, 3, np.eye(3).reshape(-1)),
        # monocular: P = [K | 0]; the image is not rectified
        "projection_matrix": matrix(3, 4, [i.fx, 0, i.cx, 0, 0, i.fy, i.cy, 0, 0, 0, 1, 0]),
    }


def save_camera_yaml(path: str | Path, intrinsics: CameraIntrinsics, camera_name: str, comment: str = "") -> None:
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(header + yaml.safe_dump(to_yaml(intrinsics, camera_name), sort_keys=False))


def load_camera_yaml(path: str | Path) -> tuple[str, CameraIntrinsics]:
    """(camera name, intrinsics); every problem is a ConfigError naming the file and the key."""
    data = load_yaml(path)
    missing = sorted({"image_width", "image_height", "camera_matrix", "distortion_coefficients"} - set(data))
    if missing:
        raise ConfigError(f"{path}: not a camera calibration (camera_calibration_parsers layout), missing {missing}")
    m = {key: _matrix(path, key, data[key]) for key in _MATRICES if key in data}
    k = m["camera_matrix"]
    model = data.get("distortion_model", "plumb_bob")
    if model != "plumb_bob":
        raise ConfigError(f"{path}: distortion_model {model!r} is not supported (plumb_bob only)")
    width, height = data["image_width"], data["image_height"]
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ConfigError(f"{path}: image_width and image_height must be positive integers")
    if not (k[0, 0] > 0 and k[1, 1] > 0):
        raise ConfigError(f"{path}: camera_matrix has non-positive focal lengths {k[0, 0]}, {k[1, 1]}")
    intrinsics = CameraIntrinsics(width, height, float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]),
                                  tuple(float(c) for c in m["distortion_coefficients"].reshape(-1)), model)
    return str(data.get("camera_name", Path(path).stem)), intrinsics


def _matrix(path, key: str, value) -> np.ndarray:
    rows, cols = _MATRICES[key]
    if not isinstance(value, dict) or not {"rows", "cols", "data"} <= set(value):
        raise ConfigError(f"{path}: {key} must be a mapping with rows, cols and data")
    try:
        array = np.array(value["data"], dtype=float).reshape(value["rows"], value["cols"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {key}: {exc}") from None
    if array.shape[0] != rows or (cols is not None and array.shape[1] != cols) or not np.isfinite(array).all():
        raise ConfigError(f"{path}: {key} must be {rows}x{cols or 'N'} finite numbers, got shape {array.shape}")
    return array


def calibrated_intrinsics(path: str | Path, streamed: CameraIntrinsics) -> CameraIntrinsics:
    """The calibration at `path` for a camera streaming at `streamed`'s size; a calibration made at
    another resolution does not apply (the focal lengths in pixels scale with it)."""
    _, intrinsics = load_camera_yaml(path)
    if (intrinsics.width, intrinsics.height) != (streamed.width, streamed.height):
        raise ConfigError(f"{path}: calibrated at {intrinsics.width}x{intrinsics.height}, but the camera streams "
                          f"{streamed.width}x{streamed.height}; calibrate at the streaming size")
    return intrinsics
