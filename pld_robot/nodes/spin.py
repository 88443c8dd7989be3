"""The `main()` of every node executable: init, spin until Ctrl-C or shutdown, clean up."""

from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from pld_robot.nodes.executor import MultiThreadedExecutor


def run_node(factory: Callable[[], Node], args=None, threads: int = 1) -> None:
    """`threads` > 1 for nodes whose callbacks may block (homing, camera reads) while others must run.

    rclpy's own SIGINT handler shuts the context down at once, under callbacks that may still be
    publishing; here Ctrl-C is a KeyboardInterrupt in the spinning thread instead, so the node
    stops its callbacks first and the context goes last."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = factory()
        executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        try:
            executor.spin()
        finally:
            executor.remove_node(node)
            executor.shutdown(timeout_sec=5.0)  # waits for callbacks still running
            node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()
