"""The episode store's layout: one Zarr v3 group per task, in the spirit of diffusion_policy's
ReplayBuffer.

    <store>/                      attrs: format, schema_version, task, schema (cameras, names, rate)
      data/<key>                  time-first arrays, all episodes back to back
        <camera>_rgb              (T, H, W, 3) uint8
        <camera>_depth            (T, H, W) uint16, millimetres (cameras with depth only)
        state                     (T, S) float32
        action                    (T, A) float32  what the arm executed, after the safety filter
        base_action               (T, A) float32
        residual_action           (T, A) float32
        teleop_action             (T, A) float32
        source                    (T,) uint8      Source: probe / residual / human
        success_prob              (T,) float32
        success_label             (T,) uint8      1 while the operator held the success button
        reward                    (T,) float32
        actor_version             (T,) int32      residual actor weights in use (-1: none)
        timestamp                 (T,) float64    wall-clock time of the observation, seconds
        loop_latency              (T,) float32    tick start to command sent, seconds
        dropped                   (T,) uint8      bit i set: camera i's frame was dropped by the writer
                                                  and the previous frame stands in for it
      meta/episode_info           (E,) str        one JSON object per episode (EpisodeInfo)
      meta/episode_ends           (E,) int64      written last: the commit record
      meta attrs["pending"]       the episode being recorded, if any: its info and how far it was flushed

Arrays are grown in large steps ahead of the data, so an array's shape is capacity, not content: only
`episode_ends` says what exists. Everything past `episode_ends[-1]` is an uncommitted tail.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs

FORMAT = "pld_robot.episode_store"
WRITER_LOCK = ".writer.lock"  # flock-ed by the one writer of a store
SCHEMA_VERSION = 1


class StoreError(RuntimeError):
    """The store cannot be used as asked; the message says what is wrong and where."""


class Source(enum.IntEnum):
    PROBE = 0  # the base policy acted alone
    RESIDUAL = 1  # base + residual correction
    HUMAN = 2  # the operator's teleop action replaced the policy's


class Outcome(str, enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    ABORTED = "aborted"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class CameraSpec:
    height: int
    width: int
    depth: bool = False


@dataclass(frozen=True)
class StoreSchema:
    """What every episode of a store has; fixed when the store is created."""

    cameras: dict[str, CameraSpec]
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    control_hz: float

    def __post_init__(self):
        for name in self.cameras:
            if not name.isidentifier():
                raise StoreError(f"camera name {name!r} must be an identifier (it becomes an array name)")
        if not self.state_names or not self.action_names:
            raise StoreError("a store needs at least one state and one action dimension")
        if not (math.isfinite(self.control_hz) and self.control_hz > 0):
            raise StoreError(f"control_hz must be positive, got {self.control_hz}")

    def to_json(self) -> dict:
        return {"cameras": {n: dataclasses.asdict(c) for n, c in self.cameras.items()},
                "state_names": list(self.state_names), "action_names": list(self.action_names),
                "control_hz": self.control_hz}

    @classmethod
    def from_json(cls, data: dict) -> "StoreSchema":
        return cls(cameras={n: CameraSpec(**c) for n, c in data["cameras"].items()},
                   state_names=tuple(data["state_names"]), action_names=tuple(data["action_names"]),
                   control_hz=float(data["control_hz"]))

    def arrays(self) -> dict[str, "ArraySpec"]:
        """Every `data/` array of this schema, by key."""
        S, A = len(self.state_names), len(self.action_names)
        specs = {}
        for name, cam in self.cameras.items():
            specs[rgb_key(name)] = ArraySpec((cam.height, cam.width, 3), "uint8", image=True)
            if cam.depth:
                specs[depth_key(name)] = ArraySpec((cam.height, cam.width), "uint16", image=True)
        specs.update({
            "state": ArraySpec((S,), "float32"),
            "action": ArraySpec((A,), "float32"),
            "base_action": ArraySpec((A,), "float32"),
            "residual_action": ArraySpec((A,), "float32"),
            "teleop_action": ArraySpec((A,), "float32"),
            "source": ArraySpec((), "uint8"),
            "success_prob": ArraySpec((), "float32"),
            "success_label": ArraySpec((), "uint8"),
            "reward": ArraySpec((), "float32"),
            "actor_version": ArraySpec((), "int32", fill=-1),
            "timestamp": ArraySpec((), "float64"),
            "loop_latency": ArraySpec((), "float32"),
            "dropped": ArraySpec((), "uint8"),
        })
        return specs


@dataclass(frozen=True)
class ArraySpec:
    step_shape: tuple[int, ...]
    dtype: str
    image: bool = False
    fill: float = 0

    def chunks(self) -> tuple[int, ...]:
        # Images: 4 frames a chunk, whole frames (bench/store_layout.py, docs/episode_store.md).
        # Low-dimensional data: long chunks, since it is written once per episode or flush.
        return (IMAGE_CHUNK_FRAMES if self.image else LOWDIM_CHUNK_STEPS, *self.step_shape)


IMAGE_CHUNK_FRAMES = 4
LOWDIM_CHUNK_STEPS = 1024
GROW_STEPS = 1024  # arrays grow ahead of the data in steps this large: one metadata write per ~30 s


def compressors(spec: ArraySpec) -> tuple:
    """Compression, then a CRC32C of every chunk: `validate --deep` can tell a corrupted chunk from a
    valid one, which the compressor alone cannot."""
    if spec.image:  # chosen by measurement: bench/store_layout.py, docs/episode_store.md
        codec = zarr.codecs.ZstdCodec(level=1)
    else:
        codec = zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")
    return codec, zarr.codecs.Crc32cCodec()


def chunk_files(array: zarr.Array, start: int, end: int) -> list[str]:
    """Paths, relative to the array, of the chunk files holding steps [start, end) (a chunk spans
    whole steps; Zarr v3's default chunk key encoding)."""
    chunk = array.chunks[0]
    rest = "/0" * (array.ndim - 1)
    return [f"c/{c}{rest}" for c in range(start // chunk, (end - 1) // chunk + 1)] if end > start else []


def rgb_key(camera: str) -> str:
    return f"{camera}_rgb"


def depth_key(camera: str) -> str:
    return f"{camera}_depth"


@dataclass
class EpisodeInfo:
    """Per-episode metadata, stored as one JSON object in `meta/episode_info`."""

    prompt: str = ""
    outcome: str = Outcome.ABORTED.value
    mode: str = ""  # base / residual / hybrid / teleop
    start_time: float = 0.0  # wall clock, seconds
    duration_s: float = 0.0
    length: int = 0
    policy_version: str = ""
    actor_version: int = -1
    operator_note: str = ""
    dropped_frames: int = 0
    robot: dict = field(default_factory=dict)
    cameras: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        valid = {o.value for o in Outcome}
        if self.outcome not in valid:
            raise StoreError(f"outcome {self.outcome!r} is not one of {sorted(valid)}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "EpisodeInfo":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def committed_ends(raw: np.ndarray) -> np.ndarray:
    """The committed prefix of an `episode_ends` array.

    An append is a shape update followed by a chunk write; a crash between the two leaves a slot that
    reads as the fill value (-1). The commit record is the longest strictly increasing prefix.
    """
    raw = np.asarray(raw, dtype=np.int64)
    ok = np.ones(len(raw), dtype=bool)
    if len(raw):
        ok[0] = raw[0] > 0
        ok[1:] = raw[1:] > raw[:-1]
    bad = np.flatnonzero(~ok)
    return raw[: bad[0]] if len(bad) else raw


def open_root(path: str | Path, mode: str = "r") -> zarr.Group:
    """Open an existing store, checking that it is one and that this code can read its schema."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: not an episode store (no zarr.json)")
    try:
        root = zarr.open_group(path, mode=mode)
    except Exception as exc:  # zarr raises several types for a damaged root
        raise StoreError(f"{path}: cannot open as a Zarr group: {exc}") from exc
    attrs = root.attrs.asdict()
    if attrs.get("format") != FORMAT:
        raise StoreError(f"{path}: not an episode store (root attribute format={attrs.get('format')!r})")
    version = attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(f"{path}: schema version {version}, this pld_robot reads version {SCHEMA_VERSION}")
    return root


def read_schema(root: zarr.Group) -> StoreSchema:
    return StoreSchema.from_json(root.attrs["schema"])


def is_store(path: str | Path) -> bool:
    """True once creation finished: the root attributes are written last."""
    try:
        return json.loads((Path(path) / "zarr.json").read_text())["attributes"].get("format") == FORMAT
    except (OSError, ValueError, KeyError, AttributeError):
        return False


def create_store(path: str | Path, schema: StoreSchema, task: str = "") -> zarr.Group:
    """Create the store at `path` (an empty directory, or one left by an interrupted creation)."""
    path = Path(path)
    if is_store(path):
        raise StoreError(f"{path}: already an episode store; open it instead of creating it")
    foreign = sorted(p.name for p in path.iterdir() if p.name not in {WRITER_LOCK, "zarr.json", "data", "meta"}) \
        if path.is_dir() else []
    if foreign:
        raise StoreError(f"{path}: holds other files ({', '.join(foreign[:5])}); choose an empty directory")
    root = zarr.open_group(path, mode="a")
    data, meta = root.require_group("data"), root.require_group("meta")
    for key, spec in schema.arrays().items():
        data.create_array(key, shape=(0, *spec.step_shape), chunks=spec.chunks(), dtype=spec.dtype,
                          fill_value=spec.fill, overwrite=True, compressors=compressors(spec))
    meta.create_array("episode_info", shape=(0,), chunks=(256,), dtype=str, overwrite=True)
    # the commit record; -1 is what a torn append reads as (see committed_ends)
    meta.create_array("episode_ends", shape=(0,), chunks=(4096,), dtype="int64", fill_value=-1, overwrite=True)
    # root attributes last: until they exist this is not a store, and creating it again is safe.
    # put, not update: zarr's update writes zarr.json once per key, so "format" could be seen before "schema"
    root.attrs.put({"format": FORMAT, "schema_version": SCHEMA_VERSION, "task": task,
                       "schema": schema.to_json()})
    return root
