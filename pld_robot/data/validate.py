"""`validate`: every way a store can be wrong, each named with where it is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from pld_robot.data.layout import (EpisodeInfo, Source, StoreError, chunk_files, committed_ends, open_root,
                                   read_schema)
from pld_robot.data.repair import uncommitted_tail


@dataclass(frozen=True)
class Problem:
    kind: str  # a stable identifier, e.g. "missing_array", "uncommitted_tail"
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.where}: {self.message}"


def validate(path: str | Path, *, deep: bool = False) -> list[Problem]:
    """All problems found in the store at `path` (empty: the store is sound). `deep` also decodes
    every committed chunk, which reads the whole store."""
    path = Path(path)
    try:
        root = open_root(path)
        schema = read_schema(root)
    except (StoreError, KeyError, TypeError, ValueError) as exc:
        return [Problem("not_a_store", str(path), str(exc).removeprefix(f"{path}: "))]
    problems: list[Problem] = []
    meta = _group(root, "meta", problems)
    data = _group(root, "data", problems)
    if meta is None or data is None:
        return problems
    try:
        ends_array, infos = meta["episode_ends"], meta["episode_info"]
    except KeyError as exc:
        return problems + [Problem("missing_array", f"meta/{exc.args[0]}", "the commit record is missing")]
    raw = ends_array[:]
    ends = committed_ends(raw)
    if len(raw) > len(ends):
        bad = len(ends)
        if bad == len(raw) - 1 and raw[bad] == ends_array.fill_value:
            problems.append(Problem("torn_commit", "meta/episode_ends",
                                    f"entry {bad} was never written (a crash during a commit)"))
        else:
            problems.append(Problem("bad_episode_ends", "meta/episode_ends",
                                    f"not increasing at entry {bad}: {raw[max(0, bad - 1):bad + 2].tolist()}; "
                                    f"only the first {bad} episode(s) count"))
    end = int(ends[-1]) if len(ends) else 0

    arrays = {}
    for key, spec in schema.arrays().items():
        where = f"data/{key}"
        if key not in data:
            problems.append(Problem("missing_array", where, "the schema has it, the store does not"))
            continue
        array = data[key]
        if not isinstance(array, zarr.Array):
            problems.append(Problem("missing_array", where, "is a group, not an array"))
        elif array.dtype != np.dtype(spec.dtype):
            problems.append(Problem("bad_dtype", where, f"dtype {array.dtype}, expected {spec.dtype}"))
        elif tuple(array.shape[1:]) != spec.step_shape:
            problems.append(Problem("bad_shape", where, f"step shape {tuple(array.shape[1:])}, "
                                                        f"expected {spec.step_shape}"))
        elif array.shape[0] < end:
            problems.append(Problem("length_mismatch", where, f"holds {array.shape[0]} steps but "
                                                              f"meta/episode_ends commits {end}"))
        else:
            arrays[key] = array

    problems += _check_metadata(infos, ends)
    if "source" in arrays and end:
        source = arrays["source"][:end]
        if source.size and source.max() > max(Source):
            step = int(np.argmax(source > max(Source)))
            problems.append(Problem("bad_value", "data/source", f"step {step} has source {source[step]}, "
                                                                f"valid: {[s.value for s in Source]}"))
    tail = uncommitted_tail(root)
    if tail is not None:
        problems.append(Problem("uncommitted_tail", str(path), f"{tail.describe()}; "
                                f"`pld-robot episodes repair {path}` truncates it (--keep-tail keeps it)"))
    for stray in sorted(path.rglob("*.partial")):
        problems.append(Problem("interrupted_write", str(stray.relative_to(path)),
                                "a temporary file from a write that never finished (repair removes it)"))
    for key, array in arrays.items():
        problems += _check_chunks(path, key, array, ends, deep)
    return problems


def _group(root: zarr.Group, name: str, problems: list[Problem]) -> zarr.Group | None:
    try:
        group = root[name]
    except KeyError:
        problems.append(Problem("missing_group", name, "the store has no such group"))
        return None
    return group if isinstance(group, zarr.Group) else None


def _check_metadata(infos: zarr.Array, ends: np.ndarray) -> list[Problem]:
    problems = []
    if infos.shape[0] < len(ends):
        problems.append(Problem("missing_metadata", "meta/episode_info",
                                f"{infos.shape[0]} entries for {len(ends)} committed episodes"))
    lengths = np.diff(ends, prepend=0)
    for index, text in enumerate(infos[: len(ends)]):
        try:
            info = EpisodeInfo.from_json(str(text))
        except (ValueError, TypeError, StoreError) as exc:
            problems.append(Problem("bad_metadata", f"episode {index}", f"unreadable metadata: {exc}"))
            continue
        if info.length != lengths[index]:
            problems.append(Problem("metadata_length", f"episode {index}", f"metadata says {info.length} steps, "
                                                                           f"episode_ends says {lengths[index]}"))
    return problems


def _check_chunks(path: Path, key: str, array: zarr.Array, ends: np.ndarray, deep: bool) -> list[Problem]:
    end = int(ends[-1]) if len(ends) else 0
    chunk = array.chunks[0]
    problems = []
    for c, file in enumerate(chunk_files(array, 0, end)):
        a, b = c * chunk, min(end, (c + 1) * chunk)
        episode = int(np.searchsorted(ends, a, side="right"))
        where = f"data/{key}"
        if not (path / "data" / key / file).is_file():
            problems.append(Problem("missing_chunk", where, f"chunk {c} (steps {a}-{b - 1}, episode {episode}) "
                                                            "is missing"))
        elif deep:
            try:
                array[a:b]
            except Exception as exc:  # noqa: BLE001 - any decode failure is the finding
                problems.append(Problem("unreadable_chunk", where, f"chunk {c} (steps {a}-{b - 1}, episode "
                                                                   f"{episode}): {type(exc).__name__}: {exc}"))
    return problems
