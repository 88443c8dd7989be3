"""`validate` names each problem of a damaged store, and the `episodes` commands report them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import zarr

from pld_robot.cli import main
from pld_robot.data import EpisodeWriter, WriterConfig, validate
from store_procs import SCHEMA, record


@pytest.fixture(scope="module")
def sound_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("sound") / "store.zarr"
    with EpisodeWriter.open(store, SCHEMA, config=WriterConfig(sync_on_commit=False)) as writer:
        for episode in range(3):
            record(writer, episode)
    return store


@pytest.fixture
def store(sound_store, tmp_path) -> Path:
    copy = tmp_path / "store.zarr"
    shutil.copytree(sound_store, copy)
    return copy


def kinds(store: Path, deep: bool = False) -> list[tuple[str, str]]:
    return [(p.kind, p.where) for p in validate(store, deep=deep)]


def test_a_sound_store_has_no_problems(store):
    assert validate(store, deep=True) == []


def test_missing_array(store):
    shutil.rmtree(store / "data" / "action")
    assert kinds(store) == [("missing_array", "data/action")]


def test_length_mismatch(store):
    zarr.open_array(store / "data" / "state", mode="r+").resize((50, 4))
    problems = validate(store)
    assert [(p.kind, p.where) for p in problems] == [("length_mismatch", "data/state")]
    assert "holds 50 steps but meta/episode_ends commits 90" in problems[0].message


@pytest.mark.parametrize("key, shape, dtype, kind, message", [
    ("reward", (90,), "float64", "bad_dtype", "dtype float64, expected float32"),
    ("action", (90, 7), "float32", "bad_shape", "step shape (7,), expected (4,)"),
])
def test_an_array_replaced_by_a_different_one(store, key, shape, dtype, kind, message):
    group = zarr.open_group(store / "data", mode="r+")
    del group[key]
    group.create_array(key, shape=shape, dtype=dtype)
    problems = validate(store)
    assert [(p.kind, p.where) for p in problems] == [(kind, f"data/{key}")]
    assert message in problems[0].message


def test_uncommitted_tail_and_torn_commit(store):
    meta = zarr.open_group(store / "meta", mode="r+")
    meta.attrs["pending"] = {"start": 90, "flushed": 0, "info": "{}"}
    meta["episode_ends"].resize((4,))  # a commit record whose value never landed
    assert kinds(store) == [("torn_commit", "meta/episode_ends"), ("uncommitted_tail", str(store))]


def test_episode_ends_out_of_order(store):
    zarr.open_array(store / "meta" / "episode_ends", mode="r+")[1] = 5
    problems = validate(store)
    assert problems[0].kind == "bad_episode_ends" and "not increasing at entry 1" in problems[0].message


def test_missing_and_bad_metadata(store):
    infos = zarr.open_array(store / "meta" / "episode_info", mode="r+")
    infos[1] = "{not json"
    infos[2] = json.dumps({"length": 3, "outcome": "success"})
    problems = {(p.kind, p.where): p.message for p in validate(store)}
    assert problems.keys() == {("bad_metadata", "episode 1"), ("metadata_length", "episode 2")}
    assert "metadata says 3 steps, episode_ends says 37" in problems[("metadata_length", "episode 2")]
    infos.resize((1,))
    assert ("missing_metadata", "meta/episode_info") in kinds(store)


def test_missing_chunk_names_the_episode(store):
    (store / "data" / "front_rgb" / "c" / "10" / "0" / "0" / "0").unlink()  # steps 40-43: episode 1
    problems = validate(store)
    assert [(p.kind, p.where) for p in problems] == [("missing_chunk", "data/front_rgb")]
    assert "chunk 10 (steps 40-43, episode 1)" in problems[0].message


def test_corrupt_chunk_is_found_by_deep_validation(store):
    chunk = store / "data" / "wrist_depth" / "c" / "2" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:40] + b"garbage" * 20)
    assert validate(store) == []  # present, so only decoding finds it
    problems = validate(store, deep=True)
    assert [(p.kind, p.where) for p in problems] == [("unreadable_chunk", "data/wrist_depth")]
    assert "steps 8-11, episode 0" in problems[0].message


def test_bad_source_value(store):
    array = zarr.open_array(store / "data" / "source", mode="r+")
    array[30] = 9
    problems = validate(store)
    assert [(p.kind, p.where) for p in problems] == [("bad_value", "data/source")]
    assert "step 30 has source 9" in problems[0].message


def test_interrupted_write_file(store):
    (store / "data" / "state" / "c" / "0.1234abcd.partial").write_bytes(b"x")
    assert kinds(store) == [("interrupted_write", "data/state/c/0.1234abcd.partial")]


def test_not_a_store(tmp_path):
    problems = validate(tmp_path)
    assert [p.kind for p in problems] == ["not_a_store"] and "no zarr.json" in problems[0].message


def test_cli_validate_repair_info(store, capsys):
    meta = zarr.open_group(store / "meta", mode="r+")
    meta.attrs["pending"] = {"start": 90, "flushed": 0, "info": "{}"}
    assert main(["episodes", "validate", str(store)]) == 1
    out = capsys.readouterr().out
    assert "uncommitted_tail" in out and "1 problem(s)" in out
    assert main(["episodes", "repair", str(store)]) == 0
    assert "truncated an uncommitted tail" in capsys.readouterr().out
    assert main(["episodes", "validate", str(store), "--deep"]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["episodes", "info", str(store), "--list"]) == 0
    out = capsys.readouterr().out
    assert "3 committed, 90 steps" in out and "outcomes: success 2, failure 1" in out
    assert main(["episodes", "export", str(store), "7"]) == 2
    assert "episode 7 does not exist" in capsys.readouterr().err
    assert main(["episodes", "info", str(store / "nope")]) == 1
    assert "not an episode store" in capsys.readouterr().err
