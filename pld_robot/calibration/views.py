"""A folder of calibration views, what `pld-robot calibrate collect` writes and the solvers read:

    <folder>/views.yaml    camera name, and per view its image file and the arm's tcp pose
                           (base <- tcp, from /arm/ee_pose) when the view was taken
    <folder>/view_000.png  the camera image (RGB as captured; PNG keeps it lossless)

A folder without views.yaml is read as a plain set of images (any *.png / *.jpg), which is enough
for intrinsics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from pld_robot.calibration import CalibrationError
from pld_robot.config import ConfigError, load_yaml
from pld_robot.robots.transforms import matrix_to_quat, quat_to_matrix

INDEX = "views.yaml"


@dataclass(frozen=True)
class View:
    name: str  # the image's file name
    image: np.ndarray  # RGB
    tcp_pose: np.ndarray | None  # 4x4 base <- tcp, or None for an image-only view


class ViewWriter:
    """Appends views to a folder, rewriting views.yaml after each so an interrupted session keeps
    what it has."""

    def __init__(self, folder: str | Path, camera: str, **info):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if (self.folder / INDEX).exists():
            raise CalibrationError(f"{self.folder} already holds views ({INDEX}); collect into a new folder")
        self._index = {"camera": camera, **info, "views": []}

    def add(self, image: np.ndarray, tcp_pose: np.ndarray | None) -> str:
        name = f"view_{len(self._index['views']):03d}.png"
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
        if not cv2.imwrite(str(self.folder / name), bgr):
            raise CalibrationError(f"could not write {self.folder / name}")
        entry: dict = {"image": name}
        if tcp_pose is not None:
            entry["tcp_pose"] = {"position": [round(float(v), 6) for v in tcp_pose[:3, 3]],
                                 "quaternion_xyzw": [round(float(v), 8) for v in matrix_to_quat(tcp_pose[:3, :3])]}
        self._index["views"].append(entry)
        (self.folder / INDEX).write_text(yaml.safe_dump(self._index, sort_keys=False))
        return name

    def __len__(self) -> int:
        return len(self._index["views"])


@dataclass(frozen=True)
class ViewSet:
    camera: str  # "" when the folder does not say
    mode: str  # eye_in_hand / eye_to_hand as recorded by collect --sim, else ""
    views: list[View]  # in capture order


def load_views(folder: str | Path) -> ViewSet:
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"calibration views: {folder} is not a folder")
    if not (folder / INDEX).is_file():
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not files:
            raise ConfigError(f"calibration views: {folder} has no {INDEX} and no .png/.jpg images")
        return ViewSet("", "", [View(p.name, _read(p), None) for p in files])
    index = load_yaml(folder / INDEX)
    entries = index.get("views")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{folder / INDEX}: 'views' must be a non-empty list")
    views = []
    for i, entry in enumerate(entries):
        where = f"{folder / INDEX}: views[{i}]"
        if not isinstance(entry, dict) or "image" not in entry:
            raise ConfigError(f"{where}: needs an 'image'")
        views.append(View(str(entry["image"]), _read(folder / str(entry["image"])), _pose(entry.get("tcp_pose"), where)))
    return ViewSet(str(index.get("camera", "")), str(index.get("mode", "")), views)


def _pose(value, where: str) -> np.ndarray | None:
    if value is None:
        return None
    try:
        position = np.array(value["position"], float).reshape(3)
        quaternion = np.array(value["quaternion_xyzw"], float).reshape(4)
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{where}: tcp_pose needs position [x, y, z] and quaternion_xyzw [x, y, z, w]") from None
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = quat_to_matrix(quaternion), position
    return pose


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ConfigError(f"calibration views: cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
