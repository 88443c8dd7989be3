"""Camera calibration: intrinsics from ChArUco views, hand-eye (eye-in-hand and eye-to-hand), and the
YAML files the camera node and the episode recorder read. ROS-free."""


class CalibrationError(RuntimeError):
    """Calibration input that cannot give a trustworthy result; the message says which and why."""
