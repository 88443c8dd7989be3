"""I2RT YAM arm over CAN (Damiao motors in MIT mode), and simulated motors for tests and the sim."""

from pld_robot.robots.yam.arm import YamArm
from pld_robot.robots.yam.config import JointLimits, YamConfig

__all__ = ["JointLimits", "YamArm", "YamConfig"]
