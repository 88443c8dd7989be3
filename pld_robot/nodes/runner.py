"""Runs a graph description: every node on one multi-threaded executor in this process, talking over
real DDS exactly as separate processes would, except the nodes named in `processes`, which run as
child processes the way `ros2 run` starts them. `pld-robot sim` and the end-to-end tests use it,
because `ros2 launch` is not available on every dev machine.

The sim lab goes in a child process: its 1 kHz physics loop is Python, and sharing a GIL with the
executor's threads slows it to a fraction of real time.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import yaml

import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter

from pld_robot.child_process import interrupt_when_parent_dies
from pld_robot.config import deep_merge, flatten, from_dict, load_yaml, node_params
from pld_robot.nodes.executor import MultiThreadedExecutor
from pld_robot.nodes.graph import EXECUTABLES, graph_from_config
from pld_robot.paths import use_fastdds_profile


class GraphRunner:
    def __init__(self, config_path: str | Path, overrides: dict[str, dict] | None = None,
                 exclude: tuple[str, ...] = (), processes: tuple[str, ...] = ("sim_node",)):
        self.config_path = Path(config_path)
        self._data = load_yaml(self.config_path)
        self._overrides = overrides or {}
        mode = self._overrides.get("orchestrator_node", {}).get("mode")  # pld-robot sim --mode
        self.specs = [s for s in graph_from_config(self.config_path, mode) if s.name not in exclude]
        self._processes = processes
        self.children: dict[str, subprocess.Popen] = {}
        self._params_dir: tempfile.TemporaryDirectory | None = None
        self.nodes: dict[str, Node] = {}
        self.configs: dict[str, object] = {}  # node name -> its validated config dataclass
        self._executor: MultiThreadedExecutor | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._owns_rclpy = False

    def params(self, spec) -> dict:
        return deep_merge(node_params(self._data, spec.name, source=str(self.config_path)),
                          self._overrides.get(spec.name, {}))

    def validate(self) -> None:
        """Check every node's parameters before anything starts: a typo in the YAML is a ConfigError
        naming the node and the key, not a child process dying while the others wait for it."""
        for spec in self.specs:
            module, _, config_cls = EXECUTABLES[spec.executable]
            cls = getattr(importlib.import_module(module), config_cls)
            self.configs[spec.name] = from_dict(cls, self.params(spec), spec.name)

    def check_children(self, cause: Exception | None = None) -> None:
        """Raise RuntimeError naming any child node that has exited (its own output says why)."""
        died = {name: child.returncode for name, child in self.children.items() if child.poll() is not None}
        if died:
            codes = ", ".join(f"{name} (exit code {code})" for name, code in died.items())
            then = f"; then: {cause}" if cause else ""
            raise RuntimeError(f"{codes} stopped (its output above says why){then}") from cause

    def start(self) -> "GraphRunner":
        self.validate()
        use_fastdds_profile()
        if not rclpy.ok():
            rclpy.init()
            self._owns_rclpy = True
        self._executor = MultiThreadedExecutor(num_threads=6)
        try:
            for spec in self.specs:
                params = self.params(spec)
                if spec.name in self._processes:
                    self._spawn(spec, params)
                    continue
                module, cls, _ = EXECUTABLES[spec.executable]
                node_cls = getattr(importlib.import_module(module), cls)
                node = node_cls(
                    node_name=spec.name,
                    parameter_overrides=[Parameter(k, value=v) for k, v in flatten(params).items()],
                )
                self.add_node(node)
        except Exception as exc:
            try:
                self.check_children(exc)
            finally:
                self.shutdown()
            raise
        self._thread = threading.Thread(target=self._spin, name="graph-executor", daemon=True)
        self._thread.start()
        return self

    def _spawn(self, spec, params: dict) -> None:
        if self._params_dir is None:
            self._params_dir = tempfile.TemporaryDirectory(prefix="pld-graph-")
        params_file = Path(self._params_dir.name) / f"{spec.name}.yaml"
        params_file.write_text(yaml.safe_dump({spec.name: {"ros__parameters": params}}))
        module = EXECUTABLES[spec.executable][0]
        self.children[spec.name] = subprocess.Popen(
            [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={spec.name}",
             "--params-file", str(params_file)],
            env=os.environ.copy(),
            preexec_fn=interrupt_when_parent_dies,
        )

    def add_node(self, node: Node) -> Node:
        self.nodes[node.get_name()] = node
        self._executor.add_node(node)
        return node

    def _spin(self) -> None:
        # Our own loop rather than executor.spin(): shutdown() can then stop it between two waits,
        # so no callback is dispatched to a node that is being destroyed.
        try:
            while not self._stopping.is_set():
                self._executor.spin_once(timeout_sec=0.05)
        except rclpy.executors.ExternalShutdownException:
            pass

    def shutdown(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._executor is not None:
            self._executor.shutdown(timeout_sec=5.0)  # waits for callbacks still running
        # Reverse order: the arm lets go of the sim before the sim stops.
        for node in reversed(list(self.nodes.values())):
            node.destroy_node()
        self.nodes.clear()
        for child in reversed(list(self.children.values())):
            _stop_child(child)
        self.children.clear()
        if self._params_dir is not None:
            self._params_dir.cleanup()
        if self._owns_rclpy:
            rclpy.try_shutdown()

    def __enter__(self) -> "GraphRunner":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()


def _stop_child(child: subprocess.Popen, timeout: float = 5.0) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
