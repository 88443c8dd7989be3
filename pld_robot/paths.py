"""Where the shipped robot configs live: the colcon install's share folder, or the source tree."""

from __future__ import annotations

import os
from pathlib import Path

from pld_robot.config import ConfigError

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def shipped_config(name: str, folder: str = "config") -> Path:
    """`folder` is a shipped data folder: config, or calibration for the board definitions."""
    candidates = [SOURCE_ROOT / folder / name]
    if os.environ.get("AMENT_PREFIX_PATH"):  # a sourced colcon install or ROS 2 underlay
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            candidates.insert(0, Path(get_package_share_directory("pld_robot")) / folder / name)
        except PackageNotFoundError:
            pass
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(f"config '{name}' not found in {', '.join(str(c.parent) for c in candidates)}")


def use_fastdds_profile() -> None:
    """Point Fast DDS at the shipped transport profile (big shared-memory segment for images) unless
    the user chose one. Must run before the first ROS participant of the process is created."""
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(shipped_config("fastdds.xml")))
