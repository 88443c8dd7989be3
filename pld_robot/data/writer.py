"""The background episode writer: the control loop hands it steps and never waits for the disk.

    writer = EpisodeWriter.open("pick_cube.zarr", schema, task="pick up the cube")
    writer.begin_episode(EpisodeInfo(prompt="pick up the cube", mode="hybrid"))
    for each tick:
        writer.add_step({"front_rgb": rgb, "state": s, "action": a, ...})   # returns at once
    committed = writer.end_episode(Outcome.SUCCESS)   # a Future: the episode index once on disk
    writer.close()

One thread owns the store. Images are written a chunk at a time as they arrive; low-dimensional data
is buffered and flushed every `flush_interval_s` (so a crash loses at most that much of the tail);
committing writes what is left, then the episode's metadata, then appends to `meta/episode_ends`.
Back-pressure is explicit: when more than `max_queued_mb` of camera frames wait for the disk, new
frames are dropped (the previous frame stands in, the step's `dropped` bits say so), counted, and
logged; the step itself, with all its low-dimensional data, is always kept.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Mapping

import numpy as np
import zarr

from pld_robot.data.durability import Durability
from pld_robot.data.layout import (GROW_STEPS, ArraySpec, EpisodeInfo, Outcome, StoreError, StoreSchema,
                                   WRITER_LOCK, chunk_files, committed_ends, create_store, is_store, open_root, read_schema)
from pld_robot.data.repair import repair, uncommitted_tail

log = logging.getLogger(__name__)


class RecorderError(StoreError):
    """The writer thread failed (disk full, store removed, ...); nothing more is being recorded."""


@dataclass(frozen=True)
class WriterConfig:
    max_queued_mb: float = 256.0  # camera frames waiting for the disk: ~4 s of two 640x480 cameras at 30 Hz
    flush_interval_s: float = 1.0
    # an uncommitted tail found on open (the last run crashed): keep it as an aborted episode,
    # truncate it, or refuse to record until someone runs `pld-robot episodes repair`
    on_uncommitted_tail: Literal["keep", "truncate", "refuse"] = "keep"
    sync_on_commit: bool = True  # the episode is on the disk before its commit record: survives power loss


@dataclass
class WriterStats:
    episodes_committed: int = 0
    steps: int = 0
    dropped_frames: int = 0
    queued_mb: float = 0.0  # camera frames waiting for the disk


class _Stop:
    pass


@dataclass
class _Commit:
    outcome: str
    note: str | None
    actor_version: int | None
    extra: dict
    future: Future


class EpisodeWriter:
    def __init__(self, root: zarr.Group, path: Path, lock_fd: int, config: WriterConfig):
        self.path = path
        self.schema = read_schema(root)
        self.config = config
        self._root = root
        self._lock_fd = lock_fd
        self._specs = self.schema.arrays()
        self._image_keys = [k for k, s in self._specs.items() if s.image]
        self._camera_bit = {k: 1 << i for i, k in enumerate(self._image_keys)}
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queued_bytes = 0
        self._count_lock = threading.Lock()
        self.stats = WriterStats()
        self._recording = False  # caller side: between begin_episode and end_episode
        self._error: BaseException | None = None
        self._durability = Durability(config.sync_on_commit)
        self._thread = threading.Thread(target=self._run, name="episode-writer", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, path: str | Path, schema: StoreSchema, *, task: str = "",
             config: WriterConfig = WriterConfig()) -> "EpisodeWriter":
        """Open the store at `path` for recording, creating it if it does not exist."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        lock_fd = _take_lock(path)
        try:
            if not is_store(path):
                create_store(path, schema, task)
            root = open_root(path, mode="r+")
            stored = read_schema(root)
            if stored != schema:
                raise StoreError(f"{path}: recorded with a different schema; stored {stored.to_json()}, "
                                 f"asked for {schema.to_json()}. Record into a new store.")
            tail = uncommitted_tail(root)
            if tail is not None:
                if config.on_uncommitted_tail == "refuse":
                    raise StoreError(f"{path}: {tail.describe()}; run `pld-robot episodes repair {path}` "
                                     "(add --keep-tail to keep it as an aborted episode)")
                keep = config.on_uncommitted_tail == "keep"
                log.warning("%s: %s; %s", path, tail.describe(),
                            "keeping it as an aborted episode" if keep else "truncating it")
                repair(path, keep_tail=keep, root=root)
            return cls(root, path, lock_fd, config)
        except BaseException:
            os.close(lock_fd)
            raise

    # --- caller side (the control loop): never blocks on the disk ---

    def begin_episode(self, info: EpisodeInfo) -> None:
        self._check_alive()
        if self._recording:
            raise StoreError("begin_episode: an episode is already being recorded; end it first")
        self._recording = True
        self._queue.put(replace(info, start_time=info.start_time or time.time()))

    def add_step(self, step: Mapping[str, object]) -> None:
        """Queue one step. Keys are `data/` array names; low-dimensional keys left out take their
        fill value, camera frames are required. Never blocks; raises RecorderError if the writer died."""
        self._check_alive()
        if not self._recording:
            raise StoreError("add_step outside an episode: call begin_episode first")
        allowed = set(self._specs) - {"dropped"}  # the writer's own record of what it dropped
        unknown = set(step) - allowed
        if unknown:
            raise StoreError(f"add_step: unknown key(s) {sorted(unknown)}; the store takes {sorted(allowed)}")
        frames = {}
        for key in self._image_keys:
            if key not in step:
                raise StoreError(f"add_step: camera frame {key!r} missing")
            frames[key] = _checked(key, step[key], self._specs[key], copy=False)
        lowdim = {k: _checked(k, v, self._specs[k], copy=True) for k, v in step.items() if k not in frames}
        size = sum(f.nbytes for f in frames.values())
        with self._count_lock:
            room = self._queued_bytes + size <= self.config.max_queued_mb * 1e6
            if room:
                self._queued_bytes += size
        # the caller may reuse its buffers: keep copies, and copy only what will be written
        frames = {k: f.copy() for k, f in frames.items()} if room else {}  # no room: the step without frames
        self._queue.put((lowdim, frames))

    def end_episode(self, outcome: Outcome | str, *, note: str | None = None, actor_version: int | None = None,
                    **extra) -> Future:
        """Commit the episode being recorded. The Future resolves to its index once it is on disk, or
        to None for an episode without steps (one aborted before its first tick), which is not
        committed. `note` and `actor_version` (known only once the residual has acted) replace the info's."""
        self._check_alive()
        if not self._recording:
            raise StoreError("end_episode: no episode is being recorded")
        self._recording = False
        future: Future = Future()
        self._queue.put(_Commit(Outcome(outcome).value, note, actor_version, extra, future))
        return future

    def close(self, timeout: float = 60.0) -> None:
        """Finish what is queued and release the store. An episode still open is left uncommitted:
        the next open finds it as a tail."""
        if self._thread.is_alive():
            self._queue.put(_Stop())
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("episode writer: still writing after %.0f s; giving up on it", timeout)
        self._durability.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_alive(self) -> None:
        if self._error is not None:
            raise RecorderError(f"the episode writer for {self.path} failed: {self._error}") from self._error
        if not self._thread.is_alive():
            raise RecorderError(f"the episode writer for {self.path} is closed")

    # --- writer thread: owns the store ---

    def _run(self) -> None:
        episode: _EpisodeBuffer | None = None
        try:
            while True:
                item = self._queue.get()
                if isinstance(item, _Stop):
                    return
                if isinstance(item, EpisodeInfo):
                    episode = _EpisodeBuffer(self._root, self.path, self._specs, item, self.config.flush_interval_s,
                                             self._durability)
                elif isinstance(item, _Commit):
                    self._commit(episode, item)
                    episode = None
                else:
                    self._write_step(episode, *item)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller, never swallowed
            self._error = exc
            log.error("episode writer for %s failed: %s: %s; recording has stopped",
                      self.path, type(exc).__name__, exc)
            while True:  # fail every pending commit so nobody waits forever
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Commit):
                    item.future.set_exception(RecorderError(f"episode not committed: {exc}"))

    def _write_step(self, episode: "_EpisodeBuffer", lowdim: dict, frames: dict) -> None:
        size = sum(f.nbytes for f in frames.values())
        with self._count_lock:
            self._queued_bytes -= size
        dropped = 0
        for key in self._image_keys:
            if key in frames:
                episode.add_frame(key, frames[key])
            else:
                episode.repeat_frame(key)
                dropped |= self._camera_bit[key]
        if dropped:
            if episode.dropped_frames == 0:
                log.error("episode writer: the disk is not keeping up with the cameras; dropping frames "
                          "(the previous frame stands in; counted in the episode's dropped_frames)")
            episode.dropped_frames += bin(dropped).count("1")
            self.stats.dropped_frames += bin(dropped).count("1")
        episode.add_lowdim({**lowdim, "dropped": np.uint8(dropped)})
        self.stats.steps += 1
        self.stats.queued_mb = self._queued_bytes / 1e6

    def _commit(self, episode: "_EpisodeBuffer", commit: _Commit) -> None:
        try:
            index = episode.commit(commit)
        except BaseException as exc:
            commit.future.set_exception(exc)
            raise
        if index is not None:
            self.stats.episodes_committed += 1
        commit.future.set_result(index)


class _EpisodeBuffer:
    """One episode on its way to disk: image blocks aligned to chunk boundaries, low-dimensional
    columns in memory until flushed."""

    def __init__(self, root: zarr.Group, path: Path, specs: dict[str, ArraySpec], info: EpisodeInfo,
                 flush_interval_s: float, durability: Durability):
        self._root = root
        self._path = path
        self._durability = durability
        self._specs = specs
        # every chunk gets a file, even an all-zero one, so that validate can tell a lost chunk
        self._arrays = {k: root["data"][k].with_config({"write_empty_chunks": True}) for k in specs}
        self._meta = root["meta"]
        ends = committed_ends(self._meta["episode_ends"][:])
        self.start = int(ends[-1]) if len(ends) else 0
        self.info = info
        self.length = 0
        self.dropped_frames = 0
        self._flush_interval = flush_interval_s
        self._last_flush = time.monotonic()
        self._lowdim: dict[str, list] = {k: [] for k, s in specs.items() if not s.image}
        self._lowdim_flushed = 0
        self._defaults = {k: np.full(specs[k].step_shape, specs[k].fill, specs[k].dtype) for k in self._lowdim}
        self._blocks: dict[str, list[np.ndarray]] = {k: [] for k, s in specs.items() if s.image}
        self._frames_written = {k: 0 for k in self._blocks}
        self._last_frame: dict[str, np.ndarray] = {}
        self._write_pending()

    def add_frame(self, key: str, frame: np.ndarray) -> None:
        self._last_frame[key] = frame
        block = self._blocks[key]
        block.append(frame)
        chunk = self._specs[key].chunks()[0]
        if (self.start + self._frames_written[key] + len(block)) % chunk == 0:
            self._write_block(key)

    def repeat_frame(self, key: str) -> None:
        spec = self._specs[key]
        self.add_frame(key, self._last_frame.get(key, np.zeros(spec.step_shape, spec.dtype)))

    def add_lowdim(self, values: dict) -> None:
        for key, column in self._lowdim.items():
            column.append(values.get(key, self._defaults[key]))
        self.length += 1
        if time.monotonic() - self._last_flush >= self._flush_interval:
            self._flush_lowdim()
            self._write_pending()

    def commit(self, commit: _Commit) -> int | None:
        if self.length == 0:
            # An end equal to the previous one would break episode_ends' strict increase, and readers
            # trust only the increasing prefix: every later episode would be lost from view.
            log.warning("episode writer: an episode with no steps (%s%s) is not committed", commit.outcome,
                        f": {commit.note}" if commit.note else "")
            self._meta.attrs.pop("pending", None)
            return None
        for key in self._blocks:
            self._write_block(key)
        self._flush_lowdim()
        self._durability.wait()  # the episode is on the disk before the commit record points at it
        info = replace(self.info, outcome=commit.outcome, length=self.length,
                       duration_s=time.time() - self.info.start_time, dropped_frames=self.dropped_frames,
                       extra={**self.info.extra, **commit.extra})
        if commit.note is not None:
            info = replace(info, operator_note=commit.note)
        if commit.actor_version is not None:
            info = replace(info, actor_version=commit.actor_version)
        ends, infos = self._meta["episode_ends"], self._meta["episode_info"]
        index = ends.shape[0]
        infos.resize((index + 1,))
        infos[index] = info.to_json()
        # the commit record, last: before this line the episode does not exist
        ends.append(np.array([self.start + self.length], dtype=np.int64))
        meta = self._path / "meta"
        for name, array in (("episode_info", infos), ("episode_ends", ends)):
            files = ("zarr.json", *chunk_files(array, index, index + 1))
            self._durability.written(*(meta / name / f for f in files))
        self._durability.wait()
        self._meta.attrs.pop("pending", None)
        return index

    def _write_block(self, key: str) -> None:
        block = self._blocks[key]
        if not block:
            return
        a = self.start + self._frames_written[key]
        self._write(key, a, np.stack(block))
        self._frames_written[key] += len(block)
        block.clear()

    def _flush_lowdim(self) -> None:
        n = self.length - self._lowdim_flushed
        if n == 0:
            return
        a = self.start + self._lowdim_flushed
        for key, column in self._lowdim.items():
            self._write(key, a, np.asarray(column[self._lowdim_flushed:], dtype=self._specs[key].dtype))
        self._lowdim_flushed = self.length
        self._last_flush = time.monotonic()

    def _write(self, key: str, start: int, values: np.ndarray) -> None:
        array = self._arrays[key]
        end = start + len(values)
        if end > array.shape[0]:
            array.resize((end + GROW_STEPS, *array.shape[1:]))
            self._durability.written(self._path / "data" / key / "zarr.json")
        array[start:end] = values
        self._durability.written(*(self._path / "data" / key / f for f in chunk_files(array, start, end)))

    def _write_pending(self) -> None:
        """Record how far this episode is on disk, so that repair can keep the tail after a crash."""
        flushed = min([self._lowdim_flushed, *self._frames_written.values()])
        self._meta.attrs["pending"] = {"start": self.start, "flushed": flushed, "info": self.info.to_json()}


def _checked(key: str, value, spec: ArraySpec, copy: bool) -> np.ndarray:
    array = np.array(value, copy=copy) if copy else np.asarray(value)
    if array.shape != spec.step_shape:
        raise StoreError(f"add_step: {key} has shape {array.shape}, the store expects {spec.step_shape}")
    if spec.image:
        if array.dtype != np.dtype(spec.dtype):
            raise StoreError(f"add_step: {key} has dtype {array.dtype}, the store expects {spec.dtype}")
    elif array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise StoreError(f"add_step: {key} is not finite: {array}")
    return array


def _take_lock(path: Path) -> int:
    fd = os.open(path / WRITER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise StoreError(f"{path}: already being recorded by {owner}; one writer per store") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
    return fd
