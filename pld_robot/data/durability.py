"""fsync of exactly the files an episode wrote, in the background while it records.

A system-wide `sync` at commit writes back every dirty page of the machine at once: on a busy disk
that stalled a commit for seconds and made the writer drop frames (bench/recorder.py). Instead, each
chunk file is fsynced by a helper thread soon after it is written, spreading the I/O over the episode,
and a commit only waits for what is left.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path


class Durability:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="episode-fsync") if enabled else None
        self._pending: list[Future] = []
        self._dirs: set[Path] = set()

    def written(self, *paths: Path) -> None:
        """These files were just written (replaced): get them onto the disk."""
        if not self.enabled:
            return
        for path in paths:
            self._dirs.add(path.parent)
            self._pending.append(self._pool.submit(_fsync, path))

    def wait(self) -> None:
        """Every file reported so far, and the directories holding them (a rename is durable only
        once its directory is), is on the disk."""
        if not self.enabled:
            return
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()
        dirs, self._dirs = self._dirs, set()
        for directory in dirs:
            _fsync(directory)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # never written: a chunk that zarr found equal to the fill value
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
