"""Waiting in tests for something a graph does in its own time, with a message that says what."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float, what: str, poll_s: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll_s)
