"""SFTDataset and normalization statistics on real episode stores written by EpisodeWriter.

Every recorded value is a formula of (episode, step), so each sample can be checked exactly against
what the formula says the store holds: action[t] = [100 e + t, -(100 e + t), 0.5, e].
"""

import json
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pld_robot.data import (CameraSpec, EpisodeInfo, EpisodeReader, EpisodeWriter, Source, StoreSchema,
                            WriterConfig)
from pld_robot.data.normalization import StdFloor, compute_stats, default_stats_path, load_stats, save_stats
from pld_robot.data.sft_dataset import SFTDataset

H, W = 24, 32
SCHEMA = StoreSchema(cameras={"front": CameraSpec(H, W), "wrist": CameraSpec(H, W, depth=True)},
                     state_names=("x", "y", "z"), action_names=("dx", "dy", "gripper", "tag"), control_hz=10.0)
# (length, outcome, source of each step) per episode of the main store
EPISODES = [
    (7, "success", [Source.PROBE] * 7),
    (3, "failure", [Source.PROBE] * 3),
    (5, "success", [Source.PROBE, Source.HUMAN, Source.HUMAN, Source.RESIDUAL, Source.RESIDUAL]),
    (2, "success", [Source.RESIDUAL] * 2),
    (6, "aborted", [Source.HUMAN] * 6),
]
SUCCESSES = [0, 2, 3]
SECOND_STORE_TAG = 50  # the second store's episodes are numbered from here in the formulas


def action(e, t):
    return np.array([100 * e + t, -(100 * e + t), 0.5, e], dtype=np.float32)


def state(e, t):
    return np.array([1000 * e + t, 0.25 * t, -e], dtype=np.float32)


def pixel(e, t):
    return (10 * e + t) % 256


def write_store(path, episodes, tag=0):
    with EpisodeWriter.open(path, SCHEMA, task="stack", config=WriterConfig(sync_on_commit=False)) as writer:
        for i, (length, outcome, sources) in enumerate(episodes):
            e = tag + i
            writer.begin_episode(EpisodeInfo(prompt=f"stack block {e}"))
            for t in range(length):
                writer.add_step({"front_rgb": np.full((H, W, 3), pixel(e, t), np.uint8),
                                 "wrist_rgb": np.full((H, W, 3), 255 - pixel(e, t), np.uint8),
                                 "wrist_depth": np.zeros((H, W), np.uint16),
                                 "state": state(e, t), "action": action(e, t), "source": np.uint8(sources[t])})
            writer.end_episode(outcome).result(timeout=30)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("stores") / "main.zarr", EPISODES)


@pytest.fixture(scope="module")
def second_store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("stores") / "second.zarr",
                       [(4, "success", [Source.PROBE] * 4), (1, "success", [Source.PROBE])], tag=SECOND_STORE_TAG)


def expected_window(e, t, length, horizon):
    steps = [min(t + k, length - 1) for k in range(horizon)]
    return np.stack([action(e, s) for s in steps]), np.array([t + k >= length for k in range(horizon)])


def selected_steps(episodes):
    return [(e, t) for e in episodes for t in range(EPISODES[e][0])]


# -- windows ------------------------------------------------------------------------------------

def test_every_sample_is_the_recorded_observation_and_action_window(store):
    horizon = 4
    dataset = SFTDataset(store, horizon=horizon, outcomes=None)
    assert len(dataset) == sum(length for length, _, _ in EPISODES)
    seen = []
    for i in range(len(dataset)):
        item = dataset[i]
        e, t = item["episode"], item["step"]
        seen.append((e, t))
        length = EPISODES[e][0]
        actions, pad = expected_window(e, t, length, horizon)
        assert item["action"].dtype == torch.float32 and item["action"].shape == (horizon, 4)
        np.testing.assert_array_equal(item["action"].numpy(), actions)
        np.testing.assert_array_equal(item["action_is_pad"].numpy(), pad)
        np.testing.assert_array_equal(item["state"].numpy(), state(e, t))
        assert item["front_rgb"].dtype == torch.uint8 and item["front_rgb"].shape == (3, H, W)
        assert torch.all(item["front_rgb"] == pixel(e, t)) and torch.all(item["wrist_rgb"] == 255 - pixel(e, t))
        assert item["prompt"] == f"stack block {e}" and item["store"] == 0
        assert dataset.locate(i) == (0, e, t)
    assert seen == selected_steps(range(len(EPISODES)))


def test_padding_at_the_episode_end_repeats_the_last_action(store):
    dataset = SFTDataset(store, horizon=5)  # successes: episode 0 (length 7) comes first
    item = dataset[5]  # episode 0, step 5: steps 5 and 6 are real, then three copies of step 6
    assert (item["episode"], item["step"]) == (0, 5)
    np.testing.assert_array_equal(item["action"][:, 0].numpy(), [5, 6, 6, 6, 6])
    np.testing.assert_array_equal(item["action_is_pad"].numpy(), [False, False, True, True, True])
    # the next sample is the next episode's first step: its window is that episode's own
    nxt = dataset[7]
    assert (nxt["episode"], nxt["step"]) == (2, 0)
    np.testing.assert_array_equal(nxt["action"][:, 0].numpy(), [200, 201, 202, 203, 204])
    assert not nxt["action_is_pad"].any()


def test_default_horizon_is_pi0s_and_an_episode_shorter_than_it_is_mostly_padding(store):
    dataset = SFTDataset(store)
    item = dataset[0]
    assert item["action"].shape == (50, 4)
    assert item["action_is_pad"].sum() == 50 - 7
    np.testing.assert_array_equal(item["action"][7:].numpy(), np.repeat(action(0, 6)[None], 43, axis=0))


def test_windows_never_reach_into_the_next_episode(store):
    dataset = SFTDataset(store, horizon=8, outcomes=None)
    for i in range(len(dataset)):
        item = dataset[i]
        # the tag column is the episode number: a single foreign row would show
        assert torch.all(item["action"][:, 3] == item["episode"])


# -- selection -----------------------------------------------------------------------------------

def episodes_of(dataset):
    return sorted({int(e) for e in dataset.episodes[:, 1]})


def test_outcome_filter_defaults_to_successes(store):
    assert episodes_of(SFTDataset(store, horizon=2)) == SUCCESSES
    assert len(SFTDataset(store, horizon=2)) == 7 + 5 + 2
    assert episodes_of(SFTDataset(store, horizon=2, outcomes=["failure", "aborted"])) == [1, 4]


def test_source_filter_keeps_episodes_with_a_step_from_those_sources(store):
    assert episodes_of(SFTDataset(store, horizon=2, sources=["human"])) == [2]
    assert episodes_of(SFTDataset(store, horizon=2, sources=["human"], outcomes=None)) == [2, 4]
    assert episodes_of(SFTDataset(store, horizon=2, sources=["residual"])) == [2, 3]


def test_no_matching_episode_says_which_filters_and_what_the_stores_have(store):
    with pytest.raises(ValueError) as err:
        SFTDataset(store, outcomes=["timeout"], sources=["human"])
    message = str(err.value)
    assert "outcomes=['timeout']" in message and "sources=['human']" in message
    assert "5 episode(s)" in message and "1 failure" in message and "3 success" in message
    assert str(store) in message


def test_camera_subset_and_bad_camera(store):
    item = SFTDataset(store, horizon=2, cameras=["wrist"])[0]
    assert "wrist_rgb" in item and "front_rgb" not in item
    with pytest.raises(ValueError, match="no camera 'side'"):
        SFTDataset(store, cameras=["side"])


def test_several_stores_are_one_index(store, second_store):
    dataset = SFTDataset([store, second_store], horizon=3)
    assert len(dataset) == 14 + 5
    item = dataset[14]
    assert (item["store"], item["episode"], item["step"]) == (1, 0, 0)
    np.testing.assert_array_equal(item["action"].numpy(), expected_window(SECOND_STORE_TAG, 0, 4, 3)[0])
    assert item["prompt"] == f"stack block {SECOND_STORE_TAG}"


# -- normalization -------------------------------------------------------------------------------

def recorded(fn, episodes):
    return np.stack([fn(e, t) for e, t in selected_steps(episodes)]).astype(np.float64)


def test_stats_are_numpys_on_the_selected_steps(store):
    reader = EpisodeReader(store)
    stats = compute_stats(reader, reader.select(outcome="success"), std_floor=StdFloor(state=0, action=0))
    assert stats.count == 14 and stats.episodes == 3
    for key, fn in (("state", state), ("action", action)):
        data = recorded(fn, SUCCESSES)
        s = stats[key]
        assert s.mean.dtype == np.float32
        np.testing.assert_allclose(s.mean, data.mean(0), rtol=1e-6)
        np.testing.assert_allclose(s.std, data.std(0), rtol=1e-6)
        np.testing.assert_allclose(s.q01, np.quantile(data, 0.01, axis=0), rtol=1e-6)
        np.testing.assert_allclose(s.q99, np.quantile(data, 0.99, axis=0), rtol=1e-6)
    assert stats["action"].names == SCHEMA.action_names
    # the failure's steps change the statistics: the selection is really applied
    everything = compute_stats(reader, range(reader.num_episodes))
    assert everything.count == 23 and everything["action"].mean[0] != stats["action"].mean[0]


def test_a_dimension_the_episodes_never_moved_gets_the_floor_not_a_zero_std(store):
    reader = EpisodeReader(store)
    floor = StdFloor(state=0.05, action=0.005)
    stats = compute_stats(reader, SUCCESSES, std_floor=floor)
    data = recorded(action, SUCCESSES)
    gripper = SCHEMA.action_names.index("gripper")
    assert data[:, gripper].std() == 0  # the fixture's gripper never moves
    a = stats["action"]
    assert a.std[gripper] == pytest.approx(floor.action)
    assert a.q99[gripper] - a.q01[gripper] == pytest.approx(4 * floor.action)
    # a new small motion there is a few units after normalising, not 10^4 (EPS alone)
    moved = np.zeros(len(SCHEMA.action_names), np.float32)
    moved[gripper] = data[0, gripper] + 0.01
    assert abs(stats.normalize("action", moved)[gripper]) == pytest.approx(2, rel=1e-3)
    spread = data.std(0) > floor.action  # what did move keeps its real spread and quantiles
    np.testing.assert_allclose(a.std[spread], data.std(0)[spread], rtol=1e-6)
    np.testing.assert_allclose(a.q01[spread], np.quantile(data, 0.01, axis=0)[spread], rtol=1e-6)
    np.testing.assert_allclose(stats["state"].std, np.maximum(recorded(state, SUCCESSES).std(0), 0.05), rtol=1e-6)
    with pytest.raises(ValueError, match="std_floor must be >= 0"):
        StdFloor(state=-1.0)


def test_stats_save_beside_the_store_and_load_back(store):
    reader = EpisodeReader(store)
    stats = compute_stats(reader, reader.select(outcome="success"))
    path = default_stats_path(store)
    assert path == store.parent / "main.zarr.norm_stats.json"
    save_stats(stats, path)
    doc = json.loads(path.read_text())
    assert doc["store"] == str(store) and doc["episodes"] == 3 and doc["count"] == 14
    assert doc["keys"]["state"]["names"] == ["x", "y", "z"]
    loaded = load_stats(path)
    assert (loaded.count, loaded.episodes, loaded.store) == (14, 3, str(store))
    for key in ("state", "action"):
        for field in ("mean", "std", "q01", "q99"):
            np.testing.assert_array_equal(getattr(loaded[key], field), getattr(stats[key], field))
        assert loaded[key].names == stats[key].names


def test_load_rejects_a_file_that_is_not_stats(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not normalization statistics"):
        load_stats(path)


@pytest.mark.parametrize("mode", ["mean_std", "quantile"])
def test_normalize_unnormalize_round_trip(store, mode):
    reader = EpisodeReader(store)
    stats = compute_stats(reader, SUCCESSES)
    x = recorded(action, SUCCESSES).astype(np.float32)
    y = stats.normalize("action", x, mode)
    assert np.all(np.isfinite(y))  # the gripper column is constant: the floor's std and span
    np.testing.assert_allclose(stats.unnormalize("action", y, mode), x, rtol=1e-5, atol=1e-4)


def test_normalized_values(store):
    reader = EpisodeReader(store)
    s = compute_stats(reader, SUCCESSES)
    a = s["action"]
    np.testing.assert_allclose(s.normalize("action", a.mean), 0, atol=1e-6)
    np.testing.assert_allclose(s.normalize("action", a.mean + a.std)[:2], 1, atol=1e-5)
    np.testing.assert_allclose(s.normalize("action", np.stack([a.q01, a.q99]), "quantile")[:, :2],
                               [[-1, -1], [1, 1]], atol=1e-5)
    assert s.normalize("action", a.mean).dtype == np.float32


def test_normalize_rejects_unknown_keys_dimensions_and_modes(store):
    reader = EpisodeReader(store)
    stats = compute_stats(reader, SUCCESSES)
    with pytest.raises(ValueError, match="'reward'"):
        stats.normalize("reward", np.zeros(1))
    with pytest.raises(ValueError, match="state: expected a last dimension of 3"):
        stats.normalize("state", np.zeros((2, 4)))
    with pytest.raises(ValueError, match="mode 'minmax'"):
        stats.unnormalize("state", np.zeros(3), "minmax")


def test_dataset_normalizes_with_given_stats(store):
    reader = EpisodeReader(store)
    stats = compute_stats(reader, SUCCESSES)
    dataset = SFTDataset(store, horizon=3, stats=stats, norm_mode="quantile")
    item = dataset[8]
    e, t = item["episode"], item["step"]
    np.testing.assert_allclose(item["state"].numpy(), stats.normalize("state", state(e, t), "quantile"), rtol=1e-6)
    np.testing.assert_allclose(item["action"].numpy(),
                               stats.normalize("action", expected_window(e, t, 5, 3)[0], "quantile"), rtol=1e-6)
    state_only = compute_stats(reader, SUCCESSES, keys=("state",))
    with pytest.raises(ValueError, match="'action'"):
        SFTDataset(store, stats=state_only)


# -- loading -------------------------------------------------------------------------------------

def test_dataloader_with_two_workers(store):
    horizon = 6
    dataset = SFTDataset(store, horizon=horizon)
    dataset[0]  # open the arrays in this process first: the workers must not depend on its handles
    copy = pickle.loads(pickle.dumps(dataset))
    np.testing.assert_array_equal(copy[3]["action"].numpy(), dataset[3]["action"].numpy())
    loader = DataLoader(dataset, batch_size=4, num_workers=2, shuffle=False)
    seen = []
    for batch in loader:
        n = len(batch["prompt"])
        assert batch["front_rgb"].shape == (n, 3, H, W) and batch["front_rgb"].dtype == torch.uint8
        assert batch["state"].shape == (n, 3) and batch["action"].shape == (n, horizon, 4)
        assert batch["action_is_pad"].shape == (n, horizon) and batch["action_is_pad"].dtype == torch.bool
        for j in range(n):
            e, t = int(batch["episode"][j]), int(batch["step"][j])
            np.testing.assert_array_equal(batch["action"][j].numpy(),
                                          expected_window(e, t, EPISODES[e][0], horizon)[0])
            seen.append((e, t))
    assert seen == selected_steps(SUCCESSES)
