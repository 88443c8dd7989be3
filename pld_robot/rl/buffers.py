"""Replay: fixed-capacity ring buffers of transitions, and RLPD's symmetric sampling across them.

A transition is a mapping with the fields in TRANSITION_FIELDS, batched on the first axis:
`obs` / `next_obs` are dicts of arrays (the store's keys: `state`, `<camera>_rgb`), the actions are
in physical units as the store records them (`action` is what was executed: base + residual, or the
person's action on a human step), `mc_return` is the discounted return-to-go of the episode (Cal-QL's
lower bound; see `calql.discounted_returns`).

Every batch is drawn from the buffers in fixed counts (RLPD: half offline, half online), so the mix
is exact per batch rather than on average.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from pld_robot.rl.config import ReplayConfig

OBS_FIELDS = ("obs", "next_obs")
ARRAY_FIELDS = ("base_action", "residual_action", "action", "reward", "discount", "next_base_action", "mc_return")
TRANSITION_FIELDS = OBS_FIELDS + ARRAY_FIELDS


class ReplayBuffer:
    def __init__(self, capacity: int, name: str = "replay"):
        if capacity < 1:
            raise ValueError(f"{name} buffer: capacity must be >= 1, got {capacity}")
        self.capacity, self.name = capacity, name
        self._arrays: dict[tuple[str, str], np.ndarray] = {}  # (field, obs key or "") -> (capacity, ...)
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, transitions: Mapping) -> None:
        """Append a batch of transitions (first axis); the oldest are overwritten once full."""
        flat = _flatten(transitions, self.name)
        n = len(next(iter(flat.values())))
        if n == 0:
            return
        if not self._arrays:
            self._allocate(flat)
        elif set(flat) != set(self._arrays):
            raise ValueError(f"{self.name} buffer: transition keys {_names(flat)} differ from the stored "
                             f"{_names(self._arrays)}")
        for key, values in flat.items():
            if values.shape[1:] != self._arrays[key].shape[1:]:
                raise ValueError(f"{self.name} buffer: field {_name(key)} has step shape {values.shape[1:]}, "
                                 f"the buffer holds {self._arrays[key].shape[1:]}")
        keep = min(n, self.capacity)  # a batch larger than the buffer: only its newest steps survive
        slots = (self._next + np.arange(keep)) % self.capacity
        for key, values in flat.items():
            self._arrays[key][slots] = values[n - keep:]
        self._next = int((self._next + keep) % self.capacity)
        self._size = min(self._size + keep, self.capacity)

    def sample(self, n: int, rng: np.random.Generator) -> dict:
        if n and not self._size:
            raise ValueError(f"{self.name} buffer: cannot sample from an empty buffer")
        return self.gather(rng.integers(0, self._size, n))

    def gather(self, slots: np.ndarray) -> dict:
        out: dict = {f: {} for f in OBS_FIELDS}
        for (field, key), array in self._arrays.items():
            if key:
                out[field][key] = array[slots]
            else:
                out[field] = array[slots]
        return out

    def _allocate(self, flat: dict[tuple[str, str], np.ndarray]) -> None:
        per_step = sum(v[0].nbytes for v in flat.values())
        total = per_step * self.capacity
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if total > physical:
            raise ValueError(f"{self.name} buffer: capacity {self.capacity} x {per_step / 1e3:.1f} kB per transition "
                             f"= {total / 1e9:.1f} GB, more than this machine's {physical / 1e9:.1f} GB of memory; "
                             "lower replay.capacity or the image size")
        # np.zeros maps pages lazily: memory grows as the buffer fills, up to the total checked above
        self._arrays = {k: np.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype) for k, v in flat.items()}


class MixedSampler:
    """Batches with exact shares from the offline, online and intervention buffers."""

    def __init__(self, offline: ReplayBuffer, online: ReplayBuffer, intervention: ReplayBuffer | None,
                 batch_size: int, config: ReplayConfig, seed: int = 0):
        self.offline, self.online, self.intervention = offline, online, intervention
        self.batch_size, self.config = batch_size, config
        self.rng = np.random.default_rng(seed)

    def counts(self) -> dict[str, int]:
        """How many samples of the next batch come from each buffer."""
        b = self.batch_size
        offline = round(b * self.config.offline_fraction)
        has_interventions = self.intervention is not None and len(self.intervention) > 0
        intervention = round(b * self.config.intervention_fraction) if has_interventions else 0
        return {"offline": offline, "online": b - offline - intervention, "intervention": intervention}

    def sample(self) -> dict:
        parts = []
        for name, n in self.counts().items():
            if not n:
                continue
            buffer = getattr(self, name)
            if not len(buffer):
                raise ValueError(f"replay: the {name} buffer is empty but supplies {n} of every {self.batch_size} "
                                 "samples; fill it first, or set its fraction to 0")
            parts.append(buffer.sample(n, self.rng))
        return concatenate(parts)


def concatenate(batches: list[dict]) -> dict:
    first = batches[0]
    return {f: ({k: np.concatenate([b[f][k] for b in batches]) for k in first[f]} if f in OBS_FIELDS
                else np.concatenate([b[f] for b in batches])) for f in first}


def _flatten(transitions: Mapping, where: str) -> dict[tuple[str, str], np.ndarray]:
    missing = [f for f in TRANSITION_FIELDS if f not in transitions]
    if missing:
        raise ValueError(f"{where} buffer: transition lacks field(s) {missing}")
    if set(transitions["obs"]) != set(transitions["next_obs"]):
        raise ValueError(f"{where} buffer: obs keys {sorted(transitions['obs'])} differ from next_obs keys "
                         f"{sorted(transitions['next_obs'])}")
    flat = {(f, k): np.asarray(v) for f in OBS_FIELDS for k, v in transitions[f].items()}
    flat.update({(f, ""): np.asarray(transitions[f], dtype=np.float32) for f in ARRAY_FIELDS})  # float32, always
    lengths = {_name(k): len(v) if v.ndim else None for k, v in flat.items()}
    if len(set(lengths.values())) != 1 or None in lengths.values():
        raise ValueError(f"{where} buffer: fields must share one leading (batch) length, got {lengths}")
    return flat


def _name(key: tuple[str, str]) -> str:
    return f"{key[0]}.{key[1]}" if key[1] else key[0]


def _names(flat) -> list[str]:
    return sorted(_name(k) for k in flat)
