"""Ctrl-C and SIGTERM as a request to stop, for the long runs (`pld-robot learn`, `pld-robot distill`)
that save their state before they exit. A second signal acts as usual: Ctrl-C twice stops at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stop_requested() -> Iterator[threading.Event]:
    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
