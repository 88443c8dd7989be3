"""Tailing one episode store for the learner, as the robot records into it.

    tail = StoreTail("robot_a.zarr")
    tail.open(check)                   # nothing while the store does not exist yet (logged once)
    for index, info, steps in tail.new_episodes(keys): ...

A store that does not exist yet is waited for: the robot may start recording after the learner. A
path that holds something other than a store (or a store being created) is an error at once. An
episode that cannot be read is reported and skipped; the next one is read as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from pld_robot.data.layout import (
    WRITER_LOCK,
    EpisodeInfo,
    StoreError,
    StoreSchema,
    is_store,
)
from pld_robot.data.reader import EpisodeReader

log = logging.getLogger(__name__)

STORE_ENTRIES = {WRITER_LOCK, "zarr.json", "data", "meta"}  # all a store holds, also while being created


class StoreTail:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.reader: EpisodeReader | None = None
        self.read = 0  # episodes handed out or skipped
        self.skipped = 0
        self._waiting_logged = False
        self._refresh_error = ""
        check_store_path(self.path)

    def open(self, check: Callable[[Path, StoreSchema], None]) -> None:
        """Open the store if it exists by now; `check(path, schema)` raises if the learner cannot use it."""
        if self.reader is not None:
            return
        check_store_path(self.path)
        try:
            reader = EpisodeReader(self.path) if is_store(self.path) else None
        except KeyError:  # zarr's attrs.update writes the root attributes one at a time: `schema` comes after `format`
            reader = None
        if reader is None:
            if not self._waiting_logged:
                log.info("waiting for the episode store %s to be created", self.path)
                self._waiting_logged = True
            return
        check(self.path, reader.schema)
        self.reader = reader
        log.info("episode store %s: %d committed episode(s)", self.path, reader.num_episodes)

    def new_episodes(self, keys: Sequence[str]) -> Iterator[tuple[int, EpisodeInfo, dict[str, np.ndarray]]]:
        """Every committed episode not read yet, with the arrays `keys`."""
        if self.reader is None:
            return
        try:
            self.reader.refresh()
            self._refresh_error = ""
        except Exception as exc:  # noqa: BLE001 - a store being repaired or replaced: try again at the next poll
            if str(exc) != self._refresh_error:  # once per problem, not once per poll
                log.error("%s: cannot look for new episodes: %s", self.path, exc)
                self._refresh_error = str(exc)
            return
        while self.read < self.reader.num_episodes:
            index = self.read
            self.read += 1
            try:
                yield index, self.reader.info(index), self.reader.episode(index, keys)
            except Exception as exc:  # noqa: BLE001 - one damaged episode must not stop the learner
                self.skipped += 1
                log.error("%s: episode %d cannot be read (%s: %s); skipped", self.path, index, type(exc).__name__, exc)


def check_store_path(path: Path) -> None:
    """Raise StoreError if `path` exists and is not, and is not becoming, an episode store."""
    if not path.exists() or is_store(path):
        return
    if not path.is_dir():
        raise StoreError(f"{path}: not an episode store (a file, not a Zarr folder)")
    # zarr writes zarr.json as zarr.<uuid>.partial and renames it: a store being created may hold one
    foreign = sorted(p.name for p in path.iterdir() if p.name not in STORE_ENTRIES and not p.name.endswith(".partial"))
    if foreign:
        raise StoreError(f"{path}: not an episode store (it holds {', '.join(foreign[:5])})")
