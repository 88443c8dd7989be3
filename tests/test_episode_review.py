"""`view_episode` and `export_episode` show and export the episode that was recorded, step for step."""

import json

import cv2
import numpy as np
import pytest

from pld_robot.data import (CameraSpec, EpisodeInfo, EpisodeReader, EpisodeWriter, Outcome, Source, StoreError,
                            StoreSchema, WriterConfig)
from pld_robot.data.review import MIN_PANEL_HEIGHT, STRIP_HEIGHT, export_episode, view_episode

H, W = 48, 64
STEPS = 40
HZ = 10.0
SCHEMA = StoreSchema(cameras={"front": CameraSpec(H, W), "wrist": CameraSpec(H, W, depth=True)},
                     state_names=("q0", "q1"), action_names=("dx", "dy", "grip"), control_hz=HZ)
CAMERA_GREEN = {"front": 40, "wrist": 200}  # tells the cameras apart in the video


def colour(camera: str, t: int) -> tuple[int, int, int]:
    """Step t's colour: red counts up and blue counts down, so neighbouring steps differ along
    (+5, -5), across the codec's colour-conversion error, which moves both the same way. Clear of
    0 and 255, where the codec clips one channel and not the other."""
    return 20 + 5 * t, CAMERA_GREEN[camera], 220 - 5 * t


def frame(camera: str, t: int) -> np.ndarray:
    image = np.empty((H, W, 3), np.uint8)
    image[...] = colour(camera, t)
    return image


def source(t: int) -> Source:
    return Source.PROBE if t < 10 else Source.RESIDUAL if t < 30 else Source.HUMAN


def action(t: int) -> np.ndarray:
    return np.array([np.sin(t / 5), np.cos(t / 5), t / STEPS], np.float32)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Episode 0: 5 steps of a colour no step of episode 1 has; episode 1, the one under review:
    STEPS steps whose colour counts the step, so reading the wrong slice or the wrong step shows."""
    path = tmp_path_factory.mktemp("review") / "task.zarr"
    with EpisodeWriter.open(path, SCHEMA, task="stack", config=WriterConfig(sync_on_commit=False)) as writer:
        writer.begin_episode(EpisodeInfo(prompt="warm up"))
        for _ in range(5):
            writer.add_step({"front_rgb": frame("front", STEPS), "wrist_rgb": frame("wrist", STEPS),
                             "wrist_depth": np.zeros((H, W), np.uint16)})
        writer.end_episode(Outcome.ABORTED).result(timeout=30)
        writer.begin_episode(EpisodeInfo(prompt="stack the red block", mode="hybrid"))
        for t in range(STEPS):
            writer.add_step({"front_rgb": frame("front", t), "wrist_rgb": frame("wrist", t),
                             "wrist_depth": np.full((H, W), 100 * t, np.uint16),
                             "state": np.array([t, -t], np.float32), "action": action(t),
                             "source": np.uint8(source(t)), "success_prob": np.float32(t / (STEPS - 1)),
                             "success_label": np.uint8(t >= 35), "reward": np.float32(t == STEPS - 1)})
        assert writer.end_episode(Outcome.SUCCESS, note="slipped once").result(timeout=30) == 1
    return path


@pytest.fixture(scope="module")
def viewed(store, tmp_path_factory):
    return view_episode(store, 1, tmp_path_factory.mktemp("view"))


def decoded_frames(path) -> tuple[list[np.ndarray], float, int]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"OpenCV cannot open {path}"
    fps, count = capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    return frames, fps, count


def test_the_video_has_one_frame_per_step_at_the_control_rate(viewed):
    video, _ = viewed
    assert video.name == "episode_0001.mp4"
    frames, fps, count = decoded_frames(video)
    assert len(frames) == STEPS and count == STEPS
    assert fps == pytest.approx(HZ, abs=0.01)
    # two 4:3 cameras scaled up to the minimum panel height, side by side, over the plot strip
    assert frames[0].shape == (MIN_PANEL_HEIGHT + STRIP_HEIGHT, 2 * MIN_PANEL_HEIGHT * W // H, 3)


def test_each_video_frame_shows_its_own_step_from_each_camera(viewed):
    frames, _, _ = decoded_frames(viewed[0])
    panel = MIN_PANEL_HEIGHT * W // H
    rows = slice(MIN_PANEL_HEIGHT * 6 // 10, MIN_PANEL_HEIGHT * 9 // 10)  # below the text overlay
    for i, camera in enumerate(("front", "wrist")):
        recorded = np.array([colour(camera, s) for s in range(STEPS + 1)])  # STEPS: episode 0's colour
        for t, image in enumerate(frames):
            region = image[rows, i * panel + panel // 4: i * panel + 3 * panel // 4].reshape(-1, 3)
            shown = region.mean(axis=0)[::-1]  # BGR -> RGB
            nearest = int(np.argmin(np.linalg.norm(recorded - shown, axis=1)))
            assert nearest == t, f"frame {t}, {camera}: shows {shown.round(1)}, the colour of step {nearest}"
            assert np.abs(shown - recorded[t]).max() < 8, f"frame {t}, {camera}: {shown.round(1)}"


def test_the_plot_strip_is_drawn_and_its_cursor_moves(viewed):
    frames, _, _ = decoded_frames(viewed[0])
    first, last = (f[MIN_PANEL_HEIGHT:].astype(int) for f in (frames[0], frames[-1]))
    assert first.std() > 20, "the plot strip is blank"
    moved = np.abs(first - last).max(axis=(0, 2)) > 100
    columns = np.flatnonzero(moved)
    assert len(columns) and columns.min() < first.shape[1] * 0.2 and columns.max() > first.shape[1] * 0.8, \
        "the cursor should be near the left edge at step 0 and near the right edge at the last step"


def test_the_contact_sheet_is_a_picture(viewed):
    _, sheet = viewed
    assert sheet.name == "episode_0001.png"
    image = cv2.imread(str(sheet))
    assert image is not None
    height, width, _ = image.shape
    assert width >= 1000 and height >= 800
    assert image.std() > 20, "the contact sheet is blank"


def test_export_round_trips_the_episode_exactly(store, tmp_path):
    reader = EpisodeReader(store)
    npz = export_episode(reader, -1, tmp_path)  # from the end: the last episode, 1
    assert npz == tmp_path / "episode_0001.npz"
    expected = reader.episode(1)
    with np.load(npz) as exported:
        assert sorted(exported.files) == sorted(expected)
        for key, array in expected.items():
            assert exported[key].dtype == array.dtype, key
            np.testing.assert_array_equal(exported[key], array, err_msg=key)
        # and what was exported is what was recorded
        assert exported["front_rgb"][7, 0, 0].tolist() == list(colour("front", 7))
        np.testing.assert_array_equal(exported["action"][12], action(12))
        assert exported["source"].tolist() == [source(t) for t in range(STEPS)]
    meta = json.loads((tmp_path / "episode_0001.json").read_text())
    assert meta["episode"] == 1 and meta["task"] == "stack"
    assert meta["info"]["outcome"] == "success" and meta["info"]["prompt"] == "stack the red block"
    assert meta["info"]["length"] == STEPS and meta["info"]["operator_note"] == "slipped once"
    assert StoreSchema.from_json(meta["schema"]) == SCHEMA
    assert meta["source_names"]["2"] == "human"


@pytest.mark.parametrize("review", [view_episode, export_episode])
def test_a_missing_episode_is_refused_before_anything_is_written(store, tmp_path, review):
    out = tmp_path / "out"
    with pytest.raises(IndexError, match=r"episode 2 does not exist.*has 2 committed episode"):
        review(store, 2, out)
    assert not out.exists()


@pytest.mark.parametrize("review", [view_episode, export_episode])
def test_a_path_that_is_not_a_store_is_refused(tmp_path, review):
    with pytest.raises(StoreError, match="not an episode store"):
        review(tmp_path, 0, tmp_path / "out")


def test_a_contact_sheet_spacing_below_one_step_is_refused(store, tmp_path):
    with pytest.raises(ValueError, match="every"):
        view_episode(store, 1, tmp_path, every=0)


def test_a_video_writer_that_does_not_open_is_an_error_not_an_empty_file(store, tmp_path, monkeypatch):
    class Unopened:
        def __init__(self, *args):
            pass

        def isOpened(self) -> bool:
            return False

    monkeypatch.setattr(cv2, "VideoWriter", Unopened)
    with pytest.raises(RuntimeError, match=r"episode_0001\.mp4: OpenCV cannot write an MP4 video"):
        view_episode(store, 1, tmp_path)
