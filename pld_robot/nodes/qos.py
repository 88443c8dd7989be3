"""QoS shared by publisher and subscriber of a topic, which must agree on it."""

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

# Reliable and latched: a node that starts (or reconnects) late still receives the last value
# (the e-stop state, the stage of the task).
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
