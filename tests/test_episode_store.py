"""The episode store's promises: a killed writer never damages committed episodes, a reader in another
process sees episodes exactly when they commit, and the control loop never waits for the disk."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pld_robot.data import (CameraSpec, EpisodeInfo, EpisodeReader, EpisodeWriter, RecorderError, StoreError,
                            StoreSchema, WriterConfig, repair, validate)
from pld_robot.data.layout import is_store
from store_procs import KEYS, SCHEMA, episode_length, expected_episode, digest, make_step, record

PROCS = str(Path(__file__).with_name("store_procs.py"))
FAST = WriterConfig(sync_on_commit=False)


def start_writer(store: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, PROCS, "write", str(store), *args], stdout=subprocess.PIPE, text=True)


def read_until(proc: subprocess.Popen, prefix: str, timeout: float = 60.0) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"process ended before printing {prefix!r}: {lines[-5:]}")
        lines.append(line.strip())
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"no {prefix!r} within {timeout} s")


def assert_episodes_intact(store: Path, count: int) -> None:
    """The first `count` episodes hold exactly what store_procs recorded."""
    reader = EpisodeReader(store)
    assert reader.num_episodes >= count
    for episode in range(count):
        got = reader.episode(episode, KEYS)
        for key, want in expected_episode(episode).items():
            np.testing.assert_array_equal(got[key], want, err_msg=f"episode {episode} {key}")
        assert reader.info(episode).outcome == ("success" if episode % 2 == 0 else "failure")


@pytest.mark.parametrize("keep_tail", [False, True])
def test_sigkill_mid_episode_leaves_committed_episodes_bit_identical(tmp_path, keep_tail):
    store = tmp_path / "crash.zarr"
    writer = start_writer(store, "--episodes", "3", "--then-hang")
    read_until(writer, "committed 2")
    read_until(writer, "step 20")  # well into the next episode, with flushes behind it
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)

    assert_episodes_intact(store, 3)
    assert EpisodeReader(store).num_episodes == 3
    kinds = [p.kind for p in validate(store)]
    assert "uncommitted_tail" in kinds, kinds
    with pytest.raises(StoreError, match="uncommitted tail"):
        EpisodeWriter.open(store, SCHEMA, config=WriterConfig(on_uncommitted_tail="refuse"))

    report = repair(store, keep_tail=keep_tail)
    assert validate(store) == []
    assert_episodes_intact(store, 3)
    reader = EpisodeReader(store)
    if keep_tail:
        assert report.kept_episode == 3 and reader.num_episodes == 4
        tail = reader.info(3)
        assert tail.outcome == "aborted" and "recovered" in tail.operator_note
        got = reader.episode(3, ["action", "front_rgb"])
        for t in range(tail.length):  # what was kept is exactly what was recorded
            want = make_step(3, t % episode_length(3))
            np.testing.assert_array_equal(got["action"][t], want["action"])
            np.testing.assert_array_equal(got["front_rgb"][t], want["front_rgb"])
    else:
        assert report.kept_episode is None and reader.num_episodes == 3

    # recording continues into the same store
    first = reader.num_episodes
    with EpisodeWriter.open(store, SCHEMA, config=WriterConfig(sync_on_commit=False,
                                                               on_uncommitted_tail="refuse")) as w:
        assert record(w, first) == first
    assert validate(store) == []
    reader = EpisodeReader(store)
    got = reader.episode(first, KEYS)
    for key, want in expected_episode(first).items():
        np.testing.assert_array_equal(got[key], want)
    assert_episodes_intact(store, 3)


@pytest.mark.slow
def test_random_kills_never_damage_committed_episodes(tmp_path):
    """SIGKILL at random moments, including inside commits and inside writes to chunks that hold
    committed frames; the writer reopens (keeping tails) and goes on, over several rounds."""
    store, rng, committed = tmp_path / "kills.zarr", random.Random(7), 0
    for _ in range(5):
        writer = start_writer(store, "--episodes", "4", "--first", str(committed))
        time.sleep(rng.uniform(0.3, 2.5))
        writer.send_signal(signal.SIGKILL)
        acknowledged = committed + writer.communicate(timeout=10)[0].count("committed")
        if not is_store(store):  # killed before the store existed: nothing to protect yet
            continue
        repair(store)  # drop the tail, so the next round's episodes keep their expected indices
        assert validate(store) == []
        # A kill between a commit and its print leaves one more episode than was acknowledged; it is
        # whole all the same, and the next round goes on after it.
        committed = EpisodeReader(store).num_episodes
        assert committed >= acknowledged
        assert_episodes_intact(store, committed)
    assert committed > 0


def test_reader_process_sees_episodes_as_they_commit(tmp_path):
    store = tmp_path / "tail.zarr"
    with EpisodeWriter.open(store, SCHEMA, config=FAST) as writer:
        record(writer, 0)
        follower = subprocess.Popen([sys.executable, PROCS, "follow", str(store), "--timeout", "3"],
                                    stdout=subprocess.PIPE, text=True)
        seen = [json.loads(follower.stdout.readline())]
        for episode in (1, 2, 3):
            record(writer, episode)
            seen.append(json.loads(follower.stdout.readline()))  # blocks until the reader sees it
            assert seen[-1]["episode"] == episode
        writer.begin_episode(EpisodeInfo())  # an episode in progress is not visible to readers
        for t in range(30):
            writer.add_step(make_step(4, t))
        follower.wait(30)
        assert follower.stdout.read() == ""
    for episode, line in enumerate(seen):
        assert line == {"episode": episode, "length": episode_length(episode),
                        "digest": digest(expected_episode(episode)),
                        "outcome": "success" if episode % 2 == 0 else "failure"}


def test_a_second_writer_is_refused_while_the_first_records(tmp_path):
    store = tmp_path / "locked.zarr"
    with EpisodeWriter.open(store, SCHEMA, config=FAST):
        with pytest.raises(StoreError, match="already being recorded by pid"):
            EpisodeWriter.open(store, SCHEMA, config=FAST)
    EpisodeWriter.open(store, SCHEMA, config=FAST).close()  # released on close


def test_a_different_schema_is_refused(tmp_path):
    store = tmp_path / "schema.zarr"
    EpisodeWriter.open(store, SCHEMA, config=FAST).close()
    other = StoreSchema({"front": CameraSpec(48, 64)}, ("x",), ("dx",), 10.0)
    with pytest.raises(StoreError, match="different schema"):
        EpisodeWriter.open(store, other, config=FAST)


def test_bad_steps_name_the_problem_and_keep_the_episode(tmp_path):
    store = tmp_path / "bad.zarr"
    with EpisodeWriter.open(store, SCHEMA, config=FAST) as writer:
        writer.begin_episode(EpisodeInfo())
        good = make_step(0, 0)
        for bad, match in [({**good, "state": np.zeros(3)}, r"state has shape \(3,\)"),
                           ({**good, "action": [0, np.nan, 0, 0]}, "action is not finite"),
                           ({**good, "front_rgb": good["front_rgb"].astype(np.float32)}, "front_rgb has dtype"),
                           ({k: v for k, v in good.items() if k != "wrist_rgb"}, "'wrist_rgb' missing"),
                           ({**good, "velocity": 1.0}, r"unknown key\(s\) \['velocity'\]"),
                           ({**good, "dropped": 1}, r"unknown key\(s\) \['dropped'\]")]:
            with pytest.raises(StoreError, match=match):
                writer.add_step(bad)
        writer.add_step(good)
        assert writer.end_episode("success").result(10) == 0
    assert EpisodeReader(store).info(0).length == 1


def test_an_episode_aborted_before_its_first_step_is_not_committed_and_hides_nothing(tmp_path):
    """A zero-step commit would repeat the previous end in episode_ends; readers trust only its strictly
    increasing prefix, so every later episode would vanish from view."""
    store = tmp_path / "empty.zarr"
    with EpisodeWriter.open(store, SCHEMA, config=FAST) as writer:
        for steps, outcome in ((3, "success"), (0, "aborted"), (2, "failure")):
            writer.begin_episode(EpisodeInfo())
            for t in range(steps):
                writer.add_step(make_step(0, t))
            index = writer.end_episode(outcome, note="no observation yet").result(10)
            assert index == (None if steps == 0 else (0 if outcome == "success" else 1))
    reader = EpisodeReader(store)
    assert reader.num_episodes == 2 and [reader.info(i).length for i in range(2)] == [3, 2]
    assert validate(store, deep=True) == []


def test_a_caller_reusing_its_buffers_does_not_change_what_is_recorded(tmp_path):
    store = tmp_path / "reuse.zarr"
    step = make_step(0, 0)
    with EpisodeWriter.open(store, SCHEMA, config=FAST) as writer:
        writer.begin_episode(EpisodeInfo())
        frame, state = step["front_rgb"].copy(), step["state"].copy()
        writer.add_step({**step, "front_rgb": frame, "state": state})
        frame[:] = 0  # a camera driver filling the same buffer with its next frame
        state[:] = 0
        writer.end_episode("success").result(10)
    got = EpisodeReader(store).step(0, 0, ["front_rgb", "state"])
    np.testing.assert_array_equal(got["front_rgb"], step["front_rgb"])
    np.testing.assert_array_equal(got["state"], step["state"])


def test_when_the_disk_falls_behind_frames_are_dropped_counted_and_marked(tmp_path):
    store = tmp_path / "slow.zarr"
    big = StoreSchema({"front": CameraSpec(480, 640), "wrist": CameraSpec(480, 640)}, ("x",), ("dx",), 30.0)
    frames = [np.random.default_rng(i).integers(0, 256, (480, 640, 3), dtype=np.uint8) for i in range(4)]
    config = WriterConfig(max_queued_mb=4.0, sync_on_commit=False)
    n = 60
    with EpisodeWriter.open(store, big, config=config) as writer:
        writer.begin_episode(EpisodeInfo())
        for t in range(n):  # far faster than incompressible 640x480 frames can be written
            writer.add_step({"front_rgb": frames[t % 4], "wrist_rgb": frames[(t + 1) % 4], "state": [t],
                             "action": [t]})
        writer.end_episode("success").result(60)
        dropped_total = writer.stats.dropped_frames
    reader = EpisodeReader(store)
    ep = reader.episode(0, ["front_rgb", "state", "dropped"])
    assert dropped_total > 0
    assert reader.info(0).dropped_frames == dropped_total == sum(bin(b).count("1") for b in ep["dropped"])
    np.testing.assert_array_equal(ep["state"][:, 0], np.arange(n))  # every step is kept
    for t in np.flatnonzero(ep["dropped"] & 1):  # a dropped frame is the previous one, marked
        expected = ep["front_rgb"][t - 1] if t else np.zeros_like(frames[0])
        np.testing.assert_array_equal(ep["front_rgb"][t], expected)
    for t in np.flatnonzero((ep["dropped"] & 1) == 0):
        np.testing.assert_array_equal(ep["front_rgb"][t], frames[t % 4])


def test_a_failing_disk_stops_the_writer_loudly(tmp_path):
    store = tmp_path / "failing.zarr"
    with EpisodeWriter.open(store, SCHEMA, config=FAST) as writer:
        record(writer, 0)
        shutil.rmtree(store / "data" / "front_rgb" / "c")
        (store / "data" / "front_rgb" / "c").write_text("not a directory")  # every chunk write now fails
        writer.begin_episode(EpisodeInfo())
        for t in range(8):
            writer.add_step(make_step(1, t))
        future = writer.end_episode("success")
        with pytest.raises(Exception):
            future.result(10)
        with pytest.raises(RecorderError, match="failed"):
            writer.add_step(make_step(1, 9))
    # the committed episode is still there, exactly
    got = EpisodeReader(store).episode(0, ["action", "state"])
    np.testing.assert_array_equal(got["action"], expected_episode(0)["action"])


def test_committing_an_uncommitted_episode_after_a_torn_commit_restores_it(tmp_path):
    """A crash between the episode's metadata and its commit record loses nothing with --keep-tail."""
    store = tmp_path / "torn.zarr"
    with EpisodeWriter.open(store, SCHEMA, config=FAST) as writer:
        for episode in range(2):
            record(writer, episode)
    import zarr
    ends = zarr.open_array(store / "meta" / "episode_ends", mode="r+")
    ends.resize((1,))  # the second commit record never landed, the rest of that episode did
    zarr.open_group(store / "meta", mode="r+").attrs["pending"] = {"start": int(ends[0]), "flushed": 3,
                                                                   "info": EpisodeInfo().to_json()}
    assert EpisodeReader(store).num_episodes == 1
    assert [p.kind for p in validate(store)] == ["uncommitted_tail"]
    assert repair(store, keep_tail=True).kept_episode == 1
    assert validate(store) == []
    assert_episodes_intact(store, 2)


def test_lowdim_defaults_and_metadata(tmp_path):
    store = tmp_path / "defaults.zarr"
    with EpisodeWriter.open(store, SCHEMA, task="pick", config=FAST) as writer:
        writer.begin_episode(EpisodeInfo(prompt="pick up the cube", mode="hybrid", policy_version="pi0@3"))
        step = {k: v for k, v in make_step(0, 0).items() if k in ("front_rgb", "wrist_rgb", "wrist_depth")}
        writer.add_step(step)
        writer.end_episode("timeout", note="cube fell off the table", stage=2).result(10)
    reader = EpisodeReader(store)
    info = reader.info(0)
    assert (info.outcome, info.prompt, info.mode, info.policy_version, info.operator_note, info.extra) == \
        ("timeout", "pick up the cube", "hybrid", "pi0@3", "cube fell off the table", {"stage": 2})
    step = reader.step(0, 0)
    assert step["actor_version"] == -1 and step["source"] == 0 and not step["action"].any()
    assert reader.task == "pick"
    with pytest.raises(IndexError, match="has 1 committed episode"):
        reader.episode(5)
    with pytest.raises(ValueError, match="unknown outcome"):
        reader.select(outcome="won")


def test_validate_is_clean_on_a_fresh_store(tmp_path):
    store = tmp_path / "fresh.zarr"
    EpisodeWriter.open(store, SCHEMA, config=FAST).close()
    assert validate(store) == []
    assert EpisodeReader(store).num_episodes == 0


def test_sync_on_commit_fsyncs_every_file_the_episode_wrote(tmp_path, monkeypatch):
    """Durability without a system-wide sync: each chunk file and its directory is fsynced before the
    commit record is written, and so is the commit record itself."""
    import pld_robot.data.durability as durability

    synced: list[Path] = []
    real = durability._fsync
    monkeypatch.setattr(durability, "_fsync", lambda path: (synced.append(Path(path)), real(path)))
    store = tmp_path / "durable.zarr"
    with EpisodeWriter.open(store, SCHEMA, config=WriterConfig(sync_on_commit=True)) as writer:
        record(writer, 0)
    on_disk = {p for p in store.rglob("*") if p.is_file() and "/c/" in str(p)}
    assert on_disk and on_disk <= set(synced), sorted(on_disk - set(synced))[:5]
    assert {p.parent for p in on_disk} <= set(synced), "directories of renamed chunks are fsynced too"
    ends_chunk = store / "meta" / "episode_ends" / "c" / "0"
    assert ends_chunk in synced
