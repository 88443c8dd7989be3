"""Camera backends behind one protocol (`Camera`); `make_camera` picks one from a `CameraConfig`."""

from __future__ import annotations

from pld_robot.cameras.base import Camera, CameraConfig, CameraError, CameraIntrinsics, Frame
from pld_robot.config import ConfigError

__all__ = ["Camera", "CameraConfig", "CameraError", "CameraIntrinsics", "Frame", "make_camera"]


def make_camera(config: CameraConfig, **kwargs) -> Camera:
    """The camera for `config.driver`; `kwargs` go to the backend (e.g. `devices=` for RealSense).

    Backends are imported here so that a robot with only webcams needs no pyrealsense2, and vice versa.
    """
    if config.driver == "realsense":
        from pld_robot.cameras.realsense import RealSenseCamera

        return RealSenseCamera(config, **kwargs)
    if config.driver == "opencv":
        from pld_robot.cameras.opencv_uvc import OpenCVCamera

        return OpenCVCamera(config, **kwargs)
    if config.driver == "sim":
        raise ConfigError(
            f"camera '{config.name}': driver 'sim' has no standalone camera; "
            "sim cameras are rendered and published by sim_node"
        )
    raise ConfigError(
        f"camera '{config.name}': unknown driver '{config.driver}'; known: realsense, opencv, sim"
    )
