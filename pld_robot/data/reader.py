"""Reading committed episodes, including while a writer in another process keeps recording.

    reader = EpisodeReader("pick_cube.zarr")
    reader.num_episodes, reader.info(3).outcome
    reader.episode(3, keys=["front_rgb", "action"])     # dict of arrays, time first
    reader.step(3, 10)                                   # one step of every key
    reader.select(outcome="success", source="human")    # episode indices
    for index in reader.follow(): ...                   # each new episode as it commits

Only `meta/episode_ends` decides what exists: a reader never sees an episode before its commit.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import zarr

from pld_robot.data.layout import EpisodeInfo, Outcome, Source, StoreError, committed_ends, open_root, read_schema


class EpisodeReader:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        root = open_root(self.path)
        self.schema = read_schema(root)
        self.task = root.attrs.get("task", "")
        self.keys = tuple(self.schema.arrays())
        self._ends = np.zeros(0, dtype=np.int64)
        self._infos: list[EpisodeInfo] = []
        self._arrays: dict[str, zarr.Array] = {}
        self.refresh()

    def refresh(self) -> list[int]:
        """Look for newly committed episodes; returns their indices."""
        ends = committed_ends(zarr.open_array(self.path / "meta" / "episode_ends", mode="r")[:])
        if len(ends) < len(self._ends):
            raise StoreError(f"{self.path}: episodes disappeared ({len(self._ends)} -> {len(ends)}); "
                             "was the store repaired or replaced under this reader?")
        new = list(range(len(self._ends), len(ends)))
        if new:
            infos = zarr.open_array(self.path / "meta" / "episode_info", mode="r")
            texts = infos[new[0]:new[-1] + 1]
            self._infos += [EpisodeInfo.from_json(str(t)) for t in texts]
            self._ends = ends
            self._arrays.clear()  # their cached shapes predate the new episodes
        return new

    def follow(self, poll_s: float = 0.5, timeout_s: float | None = None,
               stop: Callable[[], bool] = lambda: False) -> Iterator[int]:
        """Every committed episode, then each new one as it commits (a learner tailing the store).
        Ends after `timeout_s` without a new episode, or when `stop()` is true."""
        yield from range(len(self._ends))
        last = time.monotonic()
        while not stop():
            new = self.refresh()
            if new:
                last = time.monotonic()
                yield from new
            elif timeout_s is not None and time.monotonic() - last > timeout_s:
                return
            else:
                time.sleep(poll_s)

    @property
    def num_episodes(self) -> int:
        return len(self._ends)

    @property
    def num_steps(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def episode_ends(self) -> np.ndarray:
        return self._ends.copy()

    def info(self, episode: int) -> EpisodeInfo:
        return self._infos[self._index(episode)]

    def episode_range(self, episode: int) -> tuple[int, int]:
        """[start, end) of `episode` on the store's time axis."""
        i = self._index(episode)
        return (int(self._ends[i - 1]) if i else 0), int(self._ends[i])

    def __len__(self) -> int:
        return self.num_episodes

    def episode(self, episode: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        start, end = self.episode_range(episode)
        return {key: self.array(key)[start:end] for key in self._keys(keys)}

    def step(self, episode: int, t: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        start, end = self.episode_range(episode)
        if not 0 <= t < end - start:
            raise IndexError(f"step {t} is outside episode {episode} (length {end - start})")
        return {key: self.array(key)[start + t] for key in self._keys(keys)}

    def array(self, key: str) -> zarr.Array:
        """The raw `data/<key>` array (its shape is capacity: index it below `num_steps`)."""
        if key not in self._arrays:
            if key not in self.keys:
                raise KeyError(f"{self.path} has no array {key!r}; it has {list(self.keys)}")
            self._arrays[key] = zarr.open_array(self.path / "data" / key, mode="r")
        return self._arrays[key]

    def select(self, *, outcome: str | Sequence[str] | None = None, source: str | Sequence[str] | None = None,
               where: Callable[[EpisodeInfo], bool] | None = None) -> list[int]:
        """Indices of the episodes with one of these outcomes, containing a step from one of these
        sources, and for which `where(info)` is true. Names: Outcome values, Source names (lower case)."""
        outcomes = _names(outcome, {o.value for o in Outcome}, "outcome")
        sources = _names(source, {s.name.lower() for s in Source}, "source")
        chosen = [i for i, info in enumerate(self._infos)
                  if (outcomes is None or info.outcome in outcomes) and (where is None or where(info))]
        if sources is not None and chosen:
            codes = [Source[s.upper()].value for s in sources]
            column = self.array("source")[: self.num_steps]
            chosen = [i for i in chosen if np.isin(column[slice(*self.episode_range(i))], codes).any()]
        return chosen

    def _index(self, episode: int) -> int:
        n = len(self._ends)
        if not -n <= episode < n:
            raise IndexError(f"episode {episode} does not exist; {self.path} has {n} committed episode(s)")
        return episode % n

    def _keys(self, keys: Iterable[str] | None) -> list[str]:
        return list(self.keys if keys is None else keys)


def _names(value, valid: set[str], what: str) -> set[str] | None:
    if value is None:
        return None
    names = {value} if isinstance(value, str) else set(value)
    unknown = names - valid
    if unknown:
        raise ValueError(f"unknown {what}(s) {sorted(unknown)}; valid: {sorted(valid)}")
    return names
