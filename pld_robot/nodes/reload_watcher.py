"""A thread that polls for new weights (a checkpoint, an exported actor) and loads them off the
node's executor, so a slow load never delays a callback."""

from __future__ import annotations

import threading
from collections.abc import Callable


class ReloadWatcher:
    def __init__(self, reload: Callable[[], None], period_s: float, name: str, first_now: bool = False):
        self._reload, self._period_s, self._first_now = reload, period_s, first_now
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._first_now:
            self._reload()
        while not self._stopping.wait(self._period_s):
            self._reload()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        self._thread.join(timeout=timeout_s)
