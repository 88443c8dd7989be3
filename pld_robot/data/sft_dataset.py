"""Supervised fine-tuning samples from episode stores: an observation and the action chunk after it.

    stats = load_stats(default_stats_path("pick_cube.zarr"))
    dataset = SFTDataset(["pick_cube.zarr"], horizon=50, stats=stats)
    item = dataset[0]   # front_rgb (3, H, W) uint8, state (S,), action (50, A), action_is_pad (50,),
                        # prompt, store, episode, step

Every step of every selected episode starts a sample, as in diffusion_policy and LeRobot; near the end
of an episode the chunk is padded with its last action (the arm holds still) and `action_is_pad` marks
the padding, so a loss can leave it out. Images stay uint8 at recorded size: the model's processor
resizes and scales them, and uint8 moves between DataLoader workers at a quarter of the cost.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset

from pld_robot.data.layout import CameraSpec, open_root, rgb_key
from pld_robot.data.normalization import MODES, Mode, NormStats
from pld_robot.data.reader import EpisodeReader

PathLike = str | Path
ACTION_KEYS = ("action", "base_action", "residual_action", "teleop_action")


class SFTDataset(Dataset):
    def __init__(self, stores: PathLike | Sequence[PathLike], *, horizon: int = 50,
                 outcomes: Sequence[str] | None = ("success",), sources: Sequence[str] | None = None,
                 cameras: Sequence[str] | None = None, stats: NormStats | None = None,
                 norm_mode: Mode = "mean_std", action_key: str = "action"):
        """Samples from the episodes of `stores` with one of `outcomes` (None: any) and containing a
        step from one of `sources` (None: any). `stats`: normalize state and actions with them."""
        if action_key not in ACTION_KEYS:
            raise ValueError(f"action_key {action_key!r} is not one of {list(ACTION_KEYS)}")
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1, got {horizon}")
        self.stores = [Path(stores)] if isinstance(stores, (str, Path)) else [Path(s) for s in stores]
        if not self.stores:
            raise ValueError("SFTDataset needs at least one store")
        self.horizon = horizon
        self.action_key = action_key
        self.stats = stats
        self.norm_mode = norm_mode
        readers = [EpisodeReader(p) for p in self.stores]
        self.schema = readers[0].schema
        self.cameras = tuple(self.schema.cameras if cameras is None else cameras)
        for reader in readers:
            self._check_schema(reader)
        if stats is not None:
            self._check_stats(stats)
        selected = [(s, e) for s, r in enumerate(readers) for e in r.select(outcome=outcomes, source=sources)]
        if not selected:
            raise ValueError(_no_match(readers, outcomes, sources))
        # one row per selected episode: store, episode, start and end on the store's time axis; numpy
        # rather than a list of tuples, since every DataLoader worker gets a copy
        self.episodes = np.array([(s, e, *readers[s].episode_range(e)) for s, e in selected], dtype=np.int64)
        self._prompts = [readers[s].info(e).prompt for s, e in selected]
        # sample i is step i - offsets[k] of episode row k, for the k with offsets[k] <= i < offsets[k+1]
        self._offsets = np.concatenate([[0], np.cumsum(self.episodes[:, 3] - self.episodes[:, 2])])
        self._arrays: dict[int, dict[str, zarr.Array]] = {}
        self._pid = -1

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[int, int, int]:
        """(store, episode, step) of sample `index`."""
        row, t = self._row(index)
        store, episode = self.episodes[row, :2]
        return int(store), int(episode), t

    def __getitem__(self, index: int) -> dict:
        row, t = self._row(index)
        store, episode, start, end = map(int, self.episodes[row])
        arrays = self._open(store)
        now = start + t
        item = {key: torch.from_numpy(np.ascontiguousarray(arrays[key][now].transpose(2, 0, 1)))
                for key in map(rgb_key, self.cameras)}
        state = np.asarray(arrays["state"][now], dtype=np.float32)
        actions = np.asarray(arrays[self.action_key][now:min(now + self.horizon, end)], dtype=np.float32)
        pad = self.horizon - len(actions)
        actions = np.concatenate([actions, np.repeat(actions[-1:], pad, axis=0)])
        if self.stats is not None:
            state = self.stats.normalize("state", state, self.norm_mode)
            actions = self.stats.normalize(self.action_key, actions, self.norm_mode)
        item.update(state=torch.from_numpy(state), action=torch.from_numpy(actions),
                    action_is_pad=torch.arange(self.horizon) >= self.horizon - pad,
                    prompt=self._prompts[row], store=store, episode=episode, step=t)
        return item

    def __getstate__(self) -> dict:
        # open zarr arrays stay in the process that opened them; a worker reopens its own
        return {**self.__dict__, "_arrays": {}, "_pid": -1}

    def _open(self, store: int) -> dict[str, zarr.Array]:
        # keyed by process: a forked DataLoader worker inherits the parent's handles without pickling
        if self._pid != os.getpid():
            self._arrays, self._pid = {}, os.getpid()
        if store not in self._arrays:
            data = open_root(self.stores[store])["data"]
            keys = [*map(rgb_key, self.cameras), "state", self.action_key]
            self._arrays[store] = {key: data[key] for key in keys}
        return self._arrays[store]

    def _row(self, index: int) -> tuple[int, int]:
        """The episode row of sample `index`, and its step in that episode."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} does not exist; the dataset has {len(self)}")
        index %= len(self)
        row = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return row, int(index - self._offsets[row])

    def _check_schema(self, reader: EpisodeReader) -> None:
        """Every store must give samples of one shape and one meaning, or batches would mix them."""
        schema = reader.schema
        for name in self.cameras:
            if name not in schema.cameras:
                raise ValueError(f"{reader.path}: no camera {name!r}; it has {sorted(schema.cameras)}")
            size, first = _size(schema.cameras[name]), _size(self.schema.cameras[name])
            if size != first:
                raise ValueError(f"{reader.path}: camera {name!r} is {size[0]}x{size[1]}, "
                                 f"in {self.stores[0]} it is {first[0]}x{first[1]}")
        if (schema.state_names, schema.action_names) != (self.schema.state_names, self.schema.action_names):
            raise ValueError(f"{reader.path}: state/action names {schema.state_names}/{schema.action_names} "
                             f"differ from {self.stores[0]}'s {self.schema.state_names}/{self.schema.action_names}")

    def _check_stats(self, stats: NormStats) -> None:
        if self.norm_mode not in MODES:
            raise ValueError(f"unknown normalization mode {self.norm_mode!r}; valid: {list(MODES)}")
        for key, names in (("state", self.schema.state_names), (self.action_key, self.schema.action_names)):
            s = stats[key]
            # same count but another order would normalize each dimension with another's statistics
            if s.dim != len(names) or (s.names and s.names != names):
                raise ValueError(f"normalization statistics for {key} are for ({', '.join(s.names) or s.dim}), "
                                 f"the store has ({', '.join(names)})")


def _size(camera: CameraSpec) -> tuple[int, int]:
    return camera.height, camera.width


def _no_match(readers: list[EpisodeReader], outcomes, sources) -> str:
    counts = Counter(r.info(e).outcome for r in readers for e in range(r.num_episodes))
    have = ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "none"
    stores = ", ".join(f"{r.path} ({r.num_episodes})" for r in readers)
    return (f"no episode matches outcomes={_show(outcomes)} and sources={_show(sources)}; "
            f"the store(s) {stores} have {sum(counts.values())} episode(s): {have}")


def _show(names: Sequence[str] | None) -> str:
    return "any" if names is None else repr(list(names) if not isinstance(names, str) else [names])
