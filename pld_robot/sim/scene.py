"""The sim lab's scene, added to franky-sim's MJCF before it starts: the FR3 mounted on a table, a
cube to pick up, a front camera and a wrist camera."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

ROBOT_PREFIX = "robot0_"
CUBE_BODY = "cube"
CUBE_JOINT = "cube_joint"
TABLE_HEIGHT = 0.75  # the arm's base sits on the table top, which is z = 0


@dataclass(frozen=True)
class SimCameraConfig:
    mount: str = "world"  # "world" (fixed) or "wrist" (on the hand)
    width: int = 128
    height: int = 128
    fps: float = 10.0
    fovy: float = 45.0  # degrees
    position: tuple[float, float, float] = (1.25, 0.0, 0.55)  # world: camera position
    look_at: tuple[float, float, float] = (0.5, 0.0, 0.05)  # world: point at the image centre

    def __post_init__(self):
        if self.mount not in ("world", "wrist"):
            raise ValueError(f"sim camera: mount must be 'world' or 'wrist', not '{self.mount}'")
        if self.width <= 0 or self.height <= 0 or self.fps <= 0:
            raise ValueError("sim camera: width, height and fps must be positive")


DEFAULT_CAMERAS = {
    "front": SimCameraConfig(),
    "wrist": SimCameraConfig(mount="wrist", fovy=70.0),
}


def add_lab_scene(scene: ET.Element, worldbody: ET.Element, cube_size: float,
                  cameras: dict[str, SimCameraConfig]) -> None:
    _cheap_rendering(scene, worldbody)
    _lower_floor(worldbody)
    table = ET.SubElement(worldbody, "body", name="table", pos=f"0.3 0 {-TABLE_HEIGHT / 2}")
    ET.SubElement(
        table, "geom", name="table_top", type="box", size=f"0.6 0.7 {TABLE_HEIGHT / 2}",
        rgba="0.62 0.5 0.36 1", friction="1 0.005 0.0001",
    )
    half = cube_size / 2
    cube = ET.SubElement(worldbody, "body", name=CUBE_BODY, pos=f"0.5 0 {half}")
    ET.SubElement(cube, "freejoint", name=CUBE_JOINT)
    ET.SubElement(
        cube, "geom", name="cube_geom", type="box", size=f"{half} {half} {half}",
        mass="0.05", rgba="0.85 0.1 0.1 1", friction="1.5 0.01 0.001", condim="4",
    )
    for name, cam in cameras.items():
        if cam.mount == "world":
            ET.SubElement(
                worldbody, "camera", name=name, pos=_vec(cam.position),
                xyaxes=_vec(_look_at_axes(cam.position, cam.look_at)), fovy=str(cam.fovy),
            )
        else:
            hand = _find_body(worldbody, f"{ROBOT_PREFIX}hand")
            # Behind and above the fingers, looking along the hand's +z (where the fingers point).
            ET.SubElement(
                hand, "camera", name=name, pos="0.07 0 0.0", xyaxes="0 -1 0 -1 0 0",
                fovy=str(cam.fovy),
            )


def _cheap_rendering(scene: ET.Element, worldbody: ET.Element) -> None:
    # franky-sim asks for 4096 px shadow maps and 8x multisampling: ~230 ms per 224 px frame on a CPU
    # rasterizer. Without them a frame costs a few ms and the policy sees the same scene.
    for quality in scene.iter("quality"):
        quality.set("shadowsize", "0")
        quality.set("offsamples", "0")
    for light in worldbody.iter("light"):
        light.set("castshadow", "false")


def _lower_floor(worldbody: ET.Element) -> None:
    for geom in worldbody.iter("geom"):
        if geom.get("name") == "ground":
            geom.set("pos", f"0 0 {-TABLE_HEIGHT}")


def _find_body(root: ET.Element, name: str) -> ET.Element:
    for body in root.iter("body"):
        if body.get("name") == name:
            return body
    raise ValueError(f"body '{name}' not in the franky-sim scene")


def _look_at_axes(position, target) -> np.ndarray:
    forward = np.asarray(target, float) - np.asarray(position, float)
    forward /= np.linalg.norm(forward)
    x = np.cross(forward, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(x, forward)
    return np.concatenate([x, y])


def _vec(v) -> str:
    return " ".join(f"{float(c):.6g}" for c in v)
