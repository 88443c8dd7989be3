"""The success classifier: labels from the store, training to a target precision, checkpoints that
reload while in use, and the k-ticks rule that declares success."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pld_robot.cli import main as cli
from pld_robot.data import EpisodeReader
from pld_robot.reward.augment import AugmentConfig, augment
from pld_robot.reward.checkpoint import (RewardCheckpointError, load_reward_checkpoint, read_version,
                                         save_reward_checkpoint)
from pld_robot.reward.cli import load_training_config
from pld_robot.reward.detector import SuccessDetector
from pld_robot.reward.evaluate import episode_endings, summarize
from pld_robot.reward.labels import LabelConfig, episode_labels, split_episodes
from pld_robot.reward.metrics import choose_threshold, precision_recall_curve, scores
from pld_robot.reward.model import RewardClassifier, RewardModelConfig, frames_to_input
from pld_robot.reward.serving import StagedClassifier
from pld_robot.reward.train import OptimConfig, RewardTrainingConfig, train_reward
from reward_data import SIZE, frame, write_endings, write_store

SMALL = RewardModelConfig(cameras=("front",), image_size=32, channels=(8, 16, 16), hidden=32)


def small_training(steps: int = 200, **model) -> RewardTrainingConfig:
    return RewardTrainingConfig(model=RewardModelConfig(**{**SMALL.__dict__, **model}),
                                labels=LabelConfig(val_fraction=0.3),
                                optim=OptimConfig(steps=steps, batch_size=32, target_precision=0.95))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return write_store(tmp_path_factory.mktemp("reward") / "lift.zarr", episodes=12)


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ckpt") / "reward"
    return out, train_reward([store], out, small_training(), progress=False)


def test_success_is_declared_once_after_k_ticks_in_a_row():
    d = SuccessDetector(0.8, 3)
    assert [d.update(p) for p in (0.9, 0.9, 0.1, 0.9, 0.85, 0.8, 0.95, 0.99)] == \
        [False, False, False, False, False, True, False, False], "k in a row, then only the rising edge"
    d.reset()
    assert [d.update(0.9) for _ in range(3)] == [False, False, True]
    with pytest.raises(ValueError, match="threshold"):
        SuccessDetector(0.0, 3)


def test_the_threshold_is_the_lowest_that_reaches_the_target_precision():
    labels = np.array([1, 1, 0, 1, 0, 0, 1, 0], dtype=np.uint8)
    probs = np.array([0.95, 0.9, 0.85, 0.8, 0.6, 0.55, 0.5, 0.1])
    thresholds, precision, recall = precision_recall_curve(labels, probs)
    for t, p, r in zip(thresholds, precision, recall):  # against the definition
        predicted = probs >= t
        assert p == pytest.approx((predicted & (labels == 1)).sum() / predicted.sum())
        assert r == pytest.approx((predicted & (labels == 1)).sum() / labels.sum())
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    halfway = lambda a, b: 1 / (1 + np.exp(-(logit(a) + logit(b)) / 2))  # noqa: E731
    for target, qualifying, below in ((1.0, 0.9, 0.85), (0.75, 0.8, 0.6)):
        threshold, reached = choose_threshold(labels, probs, target, 0.5)
        assert reached and threshold == pytest.approx(halfway(qualifying, below)) and below < threshold < qualifying
        same = [(x.true_positives, x.false_positives) for x in (scores(labels, probs, t) for t in (threshold, qualifying))]
        assert same[0] == same[1], "the same held-out scores as the qualifying score"
    assert choose_threshold(labels, probs, 0.75, 0.85) == (0.85, True), "never below the floor"
    saturated = np.array([0.99995, 0.9999, 0.9991, 0.02, 0.01])
    threshold, _ = choose_threshold(np.array([1, 1, 1, 0, 0]), saturated, 0.99, 0.5)
    assert 0.5 < threshold < 0.9, "a margin below the saturated scores, not the lowest of them"
    with pytest.raises(ValueError, match="no positive frames in the held-out episodes"):
        choose_threshold(np.zeros(3, np.uint8), probs[:3], 0.9, 0.5)


def test_frames_are_resized_and_scaled_the_same_way_for_training_and_serving():
    rng = np.random.default_rng(0)
    one = frame(rng, 3, 3)
    x = frames_to_input({"front": one, "wrist": one}, ("front", "wrist"), 64)
    assert x.shape == (1, 2, 3, 64, 64) and x.min() >= -1 and x.max() <= 1
    batch = frames_to_input({"front": np.stack([one, one])}, ("front",), SIZE)
    assert torch.equal(batch[0, 0], batch[1, 0]) and batch[0, 0, 0, 5, 5] == pytest.approx(200 / 127.5 - 1)
    with pytest.raises(KeyError, match="no frame from camera 'wrist'"):
        frames_to_input({"front": one}, ("front", "wrist"), 32)
    with pytest.raises(ValueError, match="must be uint8"):
        frames_to_input({"front": one.astype(np.float32)}, ("front",), 32)


def test_augmentation_shifts_by_a_few_pixels_and_keeps_the_range():
    x = -torch.ones(64, 1, 3, 16, 16)
    x[:, :, :, 8, 8] = 1.0  # one bright pixel
    out = augment(x, AugmentConfig(shift_px=2, brightness=0, contrast=0, saturation=0), torch.Generator().manual_seed(0))
    rows, cols = np.nonzero(out[:, 0, 0].numpy() > 0)[1:]
    assert np.all(np.abs(rows - 8) <= 2) and np.all(np.abs(cols - 8) <= 2) and len(set(zip(rows, cols))) > 5
    jittered = augment(torch.rand(8, 2, 3, 16, 16) * 2 - 1, AugmentConfig(), torch.Generator().manual_seed(1))
    assert jittered.shape == (8, 2, 3, 16, 16) and jittered.min() >= -1 and jittered.max() <= 1


def test_labels_come_from_the_held_button_or_the_last_frames_of_a_success(tmp_path, store):
    reader = EpisodeReader(store)
    labelled = episode_labels(reader, 0, LabelConfig())
    assert [int(e.labels.sum()) > 0 for e in labelled] == [i % 2 == 0 for i in range(12)]
    unlabelled = write_store(tmp_path / "buttons.zarr", episodes=4, label=False)
    tails = episode_labels(EpisodeReader(unlabelled), 0, LabelConfig(outcome_tail=2))
    assert [list(np.flatnonzero(e.labels)) for e in tails] == [[22, 23], [], [22, 23], []]
    assert not any(e.ambiguous.any() for e in tails), "the tail rule's positives are not ambiguous"
    first = labelled[0]
    change = int(np.argmax(first.labels))
    assert list(np.flatnonzero(first.ambiguous)) == [change - 1, change], "one frame each side of the change"
    assert not labelled[1].ambiguous.any(), "an episode without a change has no ambiguous frame"
    train, val = split_episodes(labelled, LabelConfig(val_fraction=0.3))
    assert not {e.episode for e in train} & {e.episode for e in val}, "held out by episode"
    assert any(e.has_positive for e in val) and any(not e.has_positive for e in val)


def test_a_stage_learns_from_the_frames_recorded_while_it_ran(tmp_path):
    staged = write_store(tmp_path / "stages.zarr", episodes=2, stage_split=10)
    reader = EpisodeReader(staged)
    first = episode_labels(reader, 0, LabelConfig(stage_index=0))
    second = episode_labels(reader, 0, LabelConfig(stage_index=1))
    assert [(e.start, len(e.labels)) for e in first] == [(0, 10), (0, 10)]
    assert [(e.start, len(e.labels)) for e in second] == [(10, 14), (10, 14)]
    assert not episode_labels(reader, 0, LabelConfig(stage_index=2)), "no episode reached a third stage"


def test_training_reaches_the_target_precision_and_writes_its_report(trained):
    out, metrics = trained
    held = metrics["held_out"]
    assert metrics["target_precision_reached"] and metrics["held_out_unambiguous"]["precision"] >= 0.95
    assert held["accuracy"] >= 0.85 and metrics["average_precision"] >= 0.9, metrics
    assert metrics["episodes"] == {"train": 8, "held_out": 4}
    for name in ("pr_curve.png", "misclassified.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "metrics.json").read_text())["held_out"] == held
    checkpoint = load_reward_checkpoint(out)
    assert checkpoint.version == metrics["version"] == read_version(out)
    assert checkpoint.threshold == pytest.approx(metrics["threshold"], abs=1e-4)
    rng = np.random.default_rng(5)
    up, down = frame(rng, 2, 10), frame(rng, SIZE - 7, 10)
    probs = checkpoint.model.predict({"front": np.stack([up, down])})
    assert probs[0] > checkpoint.threshold > probs[1], probs


def test_a_checkpoint_round_trips_and_refuses_what_does_not_match(tmp_path):
    model = RewardClassifier(SMALL).eval()
    version = save_reward_checkpoint(model, 0.7, tmp_path / "ck")
    loaded = load_reward_checkpoint(tmp_path / "ck")
    x = {"front": np.random.default_rng(0).integers(0, 255, (3, SIZE, SIZE, 3), dtype=np.uint8)}
    assert loaded.version == version and np.allclose(loaded.model.predict(x), model.predict(x))
    doc = json.loads((tmp_path / "ck" / "reward.json").read_text())
    doc["model"]["channels"] = [8, 16]
    (tmp_path / "ck" / "reward.json").write_text(json.dumps(doc))
    with pytest.raises(RewardCheckpointError, match="does not match its config"):
        load_reward_checkpoint(tmp_path / "ck")
    with pytest.raises(RewardCheckpointError, match="no such reward checkpoint folder"):
        load_reward_checkpoint(tmp_path / "missing")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a reward checkpoint"):
        save_reward_checkpoint(model, 0.7, tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


def test_the_classifier_in_use_is_reloaded_when_its_folder_changes(tmp_path, trained):
    folder = tmp_path / "live"
    judge = StagedClassifier([folder], success_ticks=2)
    assert judge.current is None and judge.reload_changed() == [], "no checkpoint yet: nothing to judge"
    shutil.copytree(trained[0], folder)
    [(loaded, message)] = judge.reload_changed()
    assert loaded and trained[1]["version"] in message and judge.cameras == ("front",)
    rng = np.random.default_rng(1)
    up = {"front": frame(rng, 2, 12)}
    assert [judge.judge(up)[1] for _ in range(3)] == [False, True, False]
    always = RewardClassifier(SMALL)
    torch.nn.init.zeros_(always.head[-1].weight)
    torch.nn.init.constant_(always.head[-1].bias, -10.0)  # never success
    new_version = save_reward_checkpoint(always, 0.5, folder)
    [(loaded, _)] = judge.reload_changed()
    assert loaded and judge.versions == [new_version] and judge.judge(up)[0] < 0.01
    (folder / "model.safetensors").write_bytes(b"torn")
    (folder / "reward.json").write_text((folder / "reward.json").read_text().replace(new_version, "v3"))
    [(loaded, message)] = judge.reload_changed()
    assert not loaded and f"kept version {new_version}" in message and judge.versions == [new_version]


def test_stages_switch_classifiers(tmp_path, trained):
    never = RewardClassifier(SMALL)
    torch.nn.init.zeros_(never.head[-1].weight)
    torch.nn.init.constant_(never.head[-1].bias, -10.0)
    save_reward_checkpoint(never, 0.5, tmp_path / "grasp")
    judge = StagedClassifier([tmp_path / "grasp", trained[0]], success_ticks=1)
    judge.reload_changed()
    up = {"front": frame(np.random.default_rng(2), 2, 12)}
    assert judge.judge(up)[1] is False
    judge.set_stage(1)
    assert judge.judge(up)[1] is True
    with pytest.raises(ValueError, match="stage 2 has no classifier"):
        judge.set_stage(2)


def test_two_cameras_and_a_frozen_pretrained_tower(tmp_path, store):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    tower = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                 num_attention_heads=2, image_size=32, patch_size=8))
    tower.save_pretrained(tmp_path / "siglip")
    config = small_training(steps=30, cameras=("front", "wrist"), encoder="pretrained",
                            pretrained_path=str(tmp_path / "siglip"))
    model = RewardClassifier(config.model).train()
    assert not any(p.requires_grad for p in model.encoder.tower.parameters()) and not model.encoder.tower.training
    metrics = train_reward([store], tmp_path / "ck", config, progress=False)
    assert metrics["frames"]["held_out"] > 0
    checkpoint = load_reward_checkpoint(tmp_path / "ck")
    assert checkpoint.config.cameras == ("front", "wrist")
    x = {c: np.random.default_rng(3).integers(0, 255, (2, SIZE, SIZE, 3), dtype=np.uint8) for c in ("front", "wrist")}
    assert checkpoint.model.predict(x).shape == (2,)
    from safetensors.torch import load_file
    assert not any(k.startswith("encoder.tower.") for k in load_file(tmp_path / "ck" / "model.safetensors")), \
        "the tower is loaded from its own folder, not copied"
    with pytest.raises(ValueError, match="cannot load a Hugging Face model"):
        RewardClassifier(RewardModelConfig(encoder="pretrained", pretrained_path=str(tmp_path / "nowhere")))


def test_train_reward_command(tmp_path, store, capsys):
    (tmp_path / "train.yaml").write_text(
        "model: {image_size: 32, channels: [8, 16, 16], hidden: 32}\n"
        "labels: {val_fraction: 0.3}\noptim: {batch_size: 32}\n")
    code = cli(["train-reward", str(store), "--out", str(tmp_path / "ck"), "--config", str(tmp_path / "train.yaml"),
                "--steps", "20", "--target-precision", "0.9", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "held-out: 4 episodes" in out and "pr_curve.png" in out
    assert load_reward_checkpoint(tmp_path / "ck").config.image_size == 32
    assert cli(["train-reward", str(store), "--out", str(tmp_path / "ck2"), "--cameras", "top", "--quiet"]) == 2
    assert "no camera ['top'] in this store" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("x")
    assert cli(["train-reward", str(store), "--out", str(tmp_path / "mine")]) == 2
    assert "not a reward checkpoint folder" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("optim: {stepz: 3}\n")
    assert cli(["train-reward", str(store), "--out", str(tmp_path / "ck3"), "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "stepz" in capsys.readouterr().err


def test_the_shipped_training_config_is_the_documented_default():
    assert load_training_config(None) == RewardTrainingConfig()


def test_endings_are_judged_against_the_labels(tmp_path):
    off, on = [0] * 20, [1] * 5
    store = write_endings(tmp_path / "endings.zarr", [
        (off + [1] * 4, "success"),          # declared 0.3 s after the true success
        (off + [1] * 15, "success"),         # 1.4 s: late
        (off, "success"),                    # never true: a false success
        (off + [1] * 12, "timeout"),         # ran 1.1 s past the true success: missed
        (off + on, "timeout"),               # the step limit came 0.4 s after it: cut off, not missed
        (off, "timeout"),                    # a failure, rightly not a success
        (off + [1, 0] + off + [1] * 3, "success"),  # up for one frame, slipped: the later lift counts
    ])
    endings = episode_endings(EpisodeReader(store), min_run=3)
    assert [e.true_success_step for e in endings] == [20, 20, None, 20, 20, None, 42]
    assert endings[0].delay_s == pytest.approx(0.3) and endings[1].delay_s == pytest.approx(1.4)
    summary = summarize(endings, max_delay_s=1.0)
    assert (summary["correct_successes"], summary["late_successes"], summary["false_successes"],
            summary["missed_successes"], summary["cut_off_successes"]) == (3, 1, 1, 1, 1)
    assert not summary["all_ended_in_time"]
    assert summarize(endings[:1] + endings[4:], 1.0)["all_ended_in_time"]
    assert endings[6].delay_s == pytest.approx(0.2)
