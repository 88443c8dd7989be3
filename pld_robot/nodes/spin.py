"""The `main()` of every node executable: init, spin until Ctrl-C or shutdown, clean up."""

from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


def run_node(factory: Callable[[], Node], args=None, threads: int = 1) -> None:
    """`threads` > 1 for nodes whose callbacks may block (homing, camera reads) while others must run."""
    rclpy.init(args=args)
    try:
        node = factory()
        try:
            if threads > 1:
                executor = MultiThreadedExecutor(num_threads=threads)
                executor.add_node(node)
                executor.spin()
            else:
                rclpy.spin(node)
        finally:
            node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()
