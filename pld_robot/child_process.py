"""Children that die with their parent."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal


def interrupt_when_parent_dies() -> None:
    """`preexec_fn` of a child process: a killed parent must not leave a simulator or a server
    holding its ports (the child gets SIGINT when the parent dies; Linux only)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
