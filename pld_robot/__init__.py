"""pld_robot: Probe, Learn, Distill on a real arm, with a ROS-free core and thin ROS 2 nodes."""

__version__ = "0.1.0"
