"""The `main()` of every node executable: init, spin until Ctrl-C or shutdown, clean up."""

from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node


def run_node(factory: Callable[[], Node], args=None, threads: int = 1) -> None:
    """`threads` > 1 for nodes whose callbacks may block (homing, camera reads) while others must run."""
    rclpy.init(args=args)
    try:
        node = factory()
        executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        try:
            executor.spin()
        finally:
            # Let running callbacks finish before the node's publishers and timers go away.
            executor.remove_node(node)
            executor.shutdown(timeout_sec=2.0)
            node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()
