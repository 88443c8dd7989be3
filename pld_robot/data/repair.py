"""Finding and repairing an uncommitted tail: what a writer that died mid-episode leaves behind.

A tail is never a damaged committed episode (those are untouched by construction, see writer.py); it
is the episode that was being recorded. `repair` either truncates it or keeps what reached the disk as
an `aborted` episode. If the crash came after the episode's metadata was written but before the
commit record, keeping it restores the whole episode with its real outcome.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from pld_robot.data.layout import EpisodeInfo, Outcome, StoreError, committed_ends, open_root


@dataclass(frozen=True)
class Tail:
    start: int  # first step of the uncommitted episode
    flushed: int  # steps of it known to be complete on disk
    info: EpisodeInfo | None  # what the writer knew of it
    complete: bool  # its metadata was written: only the commit record is missing

    def describe(self) -> str:
        what = "a fully written episode whose commit was interrupted" if self.complete else \
            f"an uncommitted tail ({self.flushed} step(s) flushed)"
        return f"{what} at step {self.start}"


@dataclass(frozen=True)
class RepairReport:
    actions: list[str]
    kept_episode: int | None


def uncommitted_tail(root: zarr.Group) -> Tail | None:
    meta = root["meta"]
    raw = meta["episode_ends"][:]
    ends = committed_ends(raw)
    start = int(ends[-1]) if len(ends) else 0
    pending = meta.attrs.get("pending")
    if pending is not None and int(pending["start"]) != start:
        pending = None  # its episode was committed; only the clean-up after the commit was missed
    torn = len(raw) > len(ends)
    written = _info_at(meta["episode_info"], len(ends))
    if pending is None and not torn and written is None:
        return None
    if written is not None and written.length > 0 and _capacity(root) >= start + written.length:
        return Tail(start, written.length, written, True)
    info = EpisodeInfo.from_json(pending["info"]) if pending else None
    flushed = int(pending["flushed"]) if pending else 0
    return Tail(start, flushed, info, False)


def repair(path: str | Path, *, keep_tail: bool = False, root: zarr.Group | None = None) -> RepairReport:
    """Make the store consistent: nothing past the last committed episode, no stray temporary files.
    With `keep_tail`, what reached the disk of the uncommitted episode becomes a committed episode."""
    path = Path(path)
    root = root if root is not None else open_root(path, mode="r+")
    actions = []
    for stray in path.rglob("*.partial"):  # a write the crash interrupted; the old file is intact
        stray.unlink()
        actions.append(f"removed interrupted write {stray.relative_to(path)}")
    meta = root["meta"]
    tail = uncommitted_tail(root)
    ends_array, infos = meta["episode_ends"], meta["episode_info"]
    ends = committed_ends(ends_array[:])
    if len(ends) < ends_array.shape[0]:
        ends_array.resize((len(ends),))
        actions.append("removed a half-written entry of meta/episode_ends")
    kept = None
    if keep_tail and tail is not None and tail.flushed > 0:
        kept = _commit_tail(infos, ends_array, tail, len(ends))
        ends = committed_ends(ends_array[:])
        actions.append(f"kept the tail as episode {kept} ({tail.flushed} steps, "
                       f"{'its recorded outcome' if tail.complete else 'outcome aborted'})")
    elif tail is not None:
        actions.append(f"truncated {tail.describe()}")
    end = int(ends[-1]) if len(ends) else 0
    if infos.shape[0] != len(ends):
        infos.resize((len(ends),))
    for key, array in root["data"].arrays():
        if array.shape[0] > end:  # frees the tail's chunks; the writer grows the arrays again
            array.resize((end, *array.shape[1:]))
    if "pending" in meta.attrs:
        del meta.attrs["pending"]
    return RepairReport(actions, kept)


def _commit_tail(infos: zarr.Array, ends: zarr.Array, tail: Tail, index: int) -> int:
    if tail.complete:
        info = tail.info
    else:
        info = dataclasses.replace(tail.info or EpisodeInfo(), outcome=Outcome.ABORTED.value, length=tail.flushed)
        note = "recovered by `episodes repair` after the recorder stopped mid-episode"
        info = dataclasses.replace(info, operator_note=f"{info.operator_note} [{note}]".strip())
    infos.resize((index + 1,))
    infos[index] = info.to_json()
    ends.append(np.array([tail.start + info.length], dtype=np.int64))
    return index


def _info_at(infos: zarr.Array, index: int) -> EpisodeInfo | None:
    if infos.shape[0] <= index:
        return None
    try:
        return EpisodeInfo.from_json(str(infos[index]))
    except (ValueError, TypeError, StoreError):
        return None  # a torn write: not usable, the pending record is


def _capacity(root: zarr.Group) -> int:
    return min(array.shape[0] for _, array in root["data"].arrays())
