"""The Franka hand in a thread of its own: gripper commands block for hundreds of milliseconds in
libfranka, so the control tick only flips a desired state and reads a cached width."""

from __future__ import annotations

import logging
import threading

import franky

log = logging.getLogger(__name__)


class GripperWorker:
    def __init__(self, gripper: franky.Gripper, *, open_width: float, speed: float, force: float,
                 poll_s: float = 0.05):
        self._gripper = gripper
        self._open_width = open_width
        self._speed = speed
        self._force = force
        self._poll_s = poll_s
        self._wanted_closed: bool | None = None
        self._done_closed: bool | None = None
        self._width = float(gripper.width)
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="franka-gripper", daemon=True)
        self._thread.start()

    @property
    def width(self) -> float:
        return self._width

    def command(self, close: bool) -> None:
        """Edge-triggered: only a change of the desired state reaches the hand."""
        if close != self._wanted_closed:
            self._wanted_closed = close
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._poll_s)
            self._wake.clear()
            wanted = self._wanted_closed
            try:
                if wanted is not None and wanted != self._done_closed:
                    if wanted:
                        # Grasp at width 0 with a wide tolerance: succeeds on any object size.
                        self._gripper.grasp(0.0, self._speed, self._force, epsilon_outer=1.0)
                    else:
                        self._gripper.move(self._open_width, self._speed)
                    self._done_closed = wanted
                self._width = float(self._gripper.width)
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - a gripper fault must not kill the thread
                if self.last_error != str(exc):
                    log.error("gripper command failed: %s", exc)
                self.last_error = str(exc)
                self._done_closed = wanted

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=2.0)
