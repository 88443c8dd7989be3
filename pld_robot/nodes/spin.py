"""The `main()` of every node executable: init, spin until Ctrl-C or shutdown, clean up."""

from __future__ import annotations

import signal
import threading
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from pld_robot.nodes.executor import MultiThreadedExecutor

SPIN_PERIOD_S = 0.1  # how soon a Ctrl-C is noticed


def run_node(factory: Callable[[], Node], args=None, threads: int = 1) -> None:
    """`threads` > 1 for nodes whose callbacks may block (homing, camera reads) while others must run.

    rclpy's own SIGINT handler shuts the context down at once, under callbacks that may still be
    publishing. A KeyboardInterrupt instead is only raised once rclpy's wait returns to Python, which
    with nothing ready it did not do: Ctrl-C left teleop_node waiting forever, 25 of 25 times. So
    SIGINT and SIGTERM (what `ros2 launch` sends) only set a flag that the spin loop checks every
    SPIN_PERIOD_S; the node stops its callbacks first and the context goes last. A second signal
    is a KeyboardInterrupt, for a node whose clean-up hangs."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def request_stop(signum, frame):
        stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.default_int_handler)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        node = factory()
        executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while not stop.is_set() and executor.context.ok():
                executor.spin_once(timeout_sec=SPIN_PERIOD_S)
        finally:
            executor.remove_node(node)
            executor.shutdown(timeout_sec=5.0)  # waits for callbacks still running
            node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        rclpy.try_shutdown()
