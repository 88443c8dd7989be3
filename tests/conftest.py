"""Test-session environment, set before any test module imports rclpy or MuJoCo."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# DDS discovery stays on this machine; tests pick their own ROS_DOMAIN_ID where they need isolation.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# The same Fast DDS transports as the graph runner and launch files (large SHM segment for images).
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds.xml"))
# Offscreen rendering on the CPU.
os.environ.setdefault("MUJOCO_GL", "osmesa")
