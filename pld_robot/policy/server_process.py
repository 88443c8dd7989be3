"""A policy server in a child process (`pld-robot serve-policy`), for `pld-robot sim` and the tests:
the server gets a core and a GIL of its own, as on its own box, and dies with its parent."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from pld_robot.child_process import interrupt_when_parent_dies


class PolicyServerProcess:
    def __init__(self, backend: str, *, config: str | Path | None = None, checkpoint: str | Path | None = None,
                 port: int | None = None, start_timeout_s: float = 60.0):
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args = [sys.executable, "-m", "pld_robot.cli", "serve-policy", "--backend", backend,
                      "--port", str(self.port)]
        if config:
            self._args += ["--config", str(config)]
        if checkpoint:
            self._args += ["--checkpoint", str(checkpoint)]
        self._timeout = start_timeout_s
        self._log = tempfile.TemporaryFile(mode="w+")
        self.process: subprocess.Popen | None = None

    def start(self) -> "PolicyServerProcess":
        self.process = subprocess.Popen(self._args, stdout=self._log, stderr=subprocess.STDOUT,
                                        preexec_fn=interrupt_when_parent_dies)
        deadline = time.monotonic() + self._timeout
        while not self.healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the policy server did not start ({' '.join(self._args[2:])}): {self.output()}")
            time.sleep(0.1)
        return self

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read()[-3000:]

    def __enter__(self) -> "PolicyServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self._log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
