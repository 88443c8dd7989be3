"""`pld-robot distill`: episode selection, the masked flow-matching loss, and a tiny PI0 trained with LoRA
on a store this test writes, then served by the real policy server.

The store's task is learnable from the inputs: action = (y, -x) of the state (x, y, z), the image
brightness follows the step. The tiny base checkpoint is random, so its loss on that data is high and
training visibly lowers it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pld_robot.config import ConfigError
from pld_robot.data import CameraSpec, EpisodeInfo, EpisodeReader, EpisodeWriter, Source, StoreSchema, WriterConfig
from pld_robot.data.sft_dataset import SFTDataset
from pld_robot.distill.config import DistillConfig, SelectionConfig, load_distill_config
from pld_robot.distill.data import Pi0Collate, StepBatchSampler
from pld_robot.distill.lora import merged_model, prepare_model
from pld_robot.distill.loss import flow_matching_loss, loss_mask, masked_flow_loss, sample_time
from pld_robot.distill.select import select_episodes
from pld_robot.distill.trainer import STATE_FILE, Distiller, lr_factor
from pld_robot.policy.pi0.checkpoint import load_checkpoint
from pld_robot.policy.pi0.preprocess import Pi0Layout
from pld_robot.policy.pi0.tiny import build_tiny_pi0

ROOT = Path(__file__).resolve().parents[1]
H, W = 24, 32  # recorded; the tiny vision tower sees 32 x 32 (resized and padded)
STATE_NAMES, ACTION_NAMES = ("x", "y", "z"), ("dx", "dy")
SCHEMA = StoreSchema(cameras={"front": CameraSpec(H, W)}, state_names=STATE_NAMES, action_names=ACTION_NAMES,
                     control_hz=10.0)
CHUNK, MAX_DIM = 4, 8
P, R, HU = Source.PROBE, Source.RESIDUAL, Source.HUMAN
# (length, outcome, mode, sources) of the selection store's episodes
EPISODES = [
    (6, "success", "hybrid", [P, P, R, R, R, R]),          # 0
    (5, "failure", "hybrid", [P] * 5),                      # 1
    (6, "success", "hybrid", [P, P, HU, HU, R, R]),        # 2: a takeover in the middle
    (4, "success", "base", [P] * 4),                        # 3
    (3, "success", "teleop", [HU] * 3),                     # 4: only human steps
    (5, "timeout", "residual", [R] * 5),                    # 5
]


def state(e, t):
    return np.array([math.sin(t / 3 + e), math.cos(t / 3 + e), 0.1 * e], np.float32)


def write_store(path, episodes, schema=SCHEMA):
    with EpisodeWriter.open(path, schema, task="pick", config=WriterConfig(sync_on_commit=False)) as writer:
        for e, (length, outcome, mode, sources) in enumerate(episodes):
            writer.begin_episode(EpisodeInfo(prompt="pick up the cube", mode=mode))
            for t in range(length):
                x = state(e, t)
                writer.add_step({"front_rgb": np.full((H, W, 3), (20 * t) % 256, np.uint8), "state": x,
                                 "action": np.array([x[1], -x[0]], np.float32)[:len(schema.action_names)],
                                 "source": np.uint8(sources[t])})
            writer.end_episode(outcome).result(timeout=30)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("stores") / "select.zarr", EPISODES)


@pytest.fixture(scope="module")
def train_store(tmp_path_factory):
    """Seven successes of 12 steps (84 samples) and a failure that must not be trained on."""
    episodes = [(12, "failure" if e == 1 else "success", "hybrid", [P] * 6 + [R] * 6) for e in range(8)]
    return write_store(tmp_path_factory.mktemp("stores") / "train.zarr", episodes)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_pi0(tmp_path_factory.mktemp("base") / "pi0", {"front": (H, W)}, STATE_NAMES, ACTION_NAMES,
                          chunk_size=CHUNK, max_state_dim=MAX_DIM, max_action_dim=MAX_DIM)


def fast(**changes) -> DistillConfig:
    """A CPU run of a few seconds; the learning rate suits the tiny random model, not a real PI0."""
    return dataclasses.replace(DistillConfig(steps=40, batch_size=8, lr=3e-3, min_lr=3e-4, warmup_steps=5,
                                             num_workers=0, log_every=5, save_every=20, device="cpu"), **changes)


# -- config --------------------------------------------------------------------------------------

def test_shipped_config_equals_the_defaults():
    assert load_distill_config(ROOT / "config" / "distill" / "pi0.yaml") == DistillConfig()
    assert DistillConfig().lora.rank == 32 and DistillConfig().selection.outcomes == ["success"]


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "distill.yaml"
    bad.write_text("distill:\n  selection:\n    interventions: ignore\n")
    with pytest.raises(ConfigError, match="selection.interventions"):
        load_distill_config(bad)
    bad.write_text("distill:\n  lora:\n    rnak: 8\n")
    with pytest.raises(ConfigError, match="rnak"):
        load_distill_config(bad)


# -- selection -----------------------------------------------------------------------------------

def selected(store, **config):
    return select_episodes([EpisodeReader(store)], SelectionConfig(**config))


def test_successful_episodes_by_default(store):
    selection = selected(store)
    assert selection.per_store(0) == [0, 2, 3, 4]
    assert selection.dropped == {"outcome failure": 1, "outcome timeout": 1}
    assert selection.num_samples == 6 + 6 + 4 + 3
    assert "4 of 6 episode(s) selected, 19 samples" in selection.describe()


def test_modes_sources_and_outcomes(store):
    assert selected(store, modes=["hybrid"]).per_store(0) == [0, 2]
    assert selected(store, outcomes=None, modes=["residual", "base"]).per_store(0) == [3, 5]
    assert selected(store, sources=["residual"]).per_store(0) == [0, 2]
    assert selected(store, outcomes=["failure", "timeout"]).per_store(0) == [1, 5]
    assert selected(store, max_episodes=2).per_store(0) == [3, 4]  # the most recent


def test_interventions(store):
    keep = selected(store)
    assert keep.steps[(0, 2)].all()
    drop_steps = selected(store, interventions="drop_steps")
    np.testing.assert_array_equal(drop_steps.steps[(0, 2)], [True, True, False, False, True, True])
    assert drop_steps.per_store(0) == [0, 2, 3] and drop_steps.dropped["only human steps"] == 1
    drop_episodes = selected(store, interventions="drop_episodes")
    assert drop_episodes.per_store(0) == [0, 3] and drop_episodes.dropped["human takeover"] == 2


def test_nothing_selected_says_why(store):
    with pytest.raises(ValueError) as err:
        selected(store, outcomes=["aborted"])
    assert "no episode selected" in str(err.value) and "4 success" in str(err.value)
    with pytest.raises(ValueError, match="unknown mode"):
        selected(store, modes=["probe"])


def test_sample_indices_are_exactly_the_selected_steps(store):
    dataset = SFTDataset(store, horizon=CHUNK, outcomes=None)
    selection = selected(store, interventions="drop_steps")
    got = [dataset.locate(int(i))[1:] for i in selection.sample_indices(dataset)]
    assert got == [(0, t) for t in range(6)] + [(2, 0), (2, 1), (2, 4), (2, 5)] + [(3, t) for t in range(4)]
    for i in selection.sample_indices(dataset):  # and the items are those steps' recorded data
        item = dataset[int(i)]
        np.testing.assert_allclose(item["state"].numpy(), state(item["episode"], item["step"]), rtol=1e-6)


# -- the loss ------------------------------------------------------------------------------------

def test_mask_leaves_out_padded_dims_and_steps():
    pad = torch.tensor([[False, False, True, True], [False, False, False, False]])
    mask = loss_mask(pad, 2, MAX_DIM)
    assert mask.shape == (2, CHUNK, MAX_DIM) and mask.sum() == (2 + 4) * 2
    assert not mask[:, :, 2:].any() and not mask[0, 2:].any() and mask[1, :, :2].all()
    g = torch.Generator().manual_seed(0)
    predicted, target = torch.randn(2, CHUNK, MAX_DIM, generator=g), torch.randn(2, CHUNK, MAX_DIM, generator=g)
    loss = masked_flow_loss(predicted, target, mask)
    expected = torch.cat([((predicted - target)[0, :2, :2] ** 2).flatten(), ((predicted - target)[1, :, :2] ** 2).flatten()])
    torch.testing.assert_close(loss, expected.mean())
    changed = predicted.clone()
    changed[:, :, 2:] += 100.0  # padded dimensions
    changed[0, 2:] += 100.0  # padded steps
    torch.testing.assert_close(masked_flow_loss(changed, target, mask), loss)
    changed[1, 0, 1] += 1.0  # a real element
    assert masked_flow_loss(changed, target, mask) > loss
    # without the mask the padded elements would count (the unmasked mean is not the masked one)
    assert not torch.isclose(((predicted - target) ** 2).mean(), loss)


def model_batch(base, batch=4, seed=0):
    checkpoint = load_checkpoint(base)
    tokenizer = checkpoint.load_tokenizer()
    model = checkpoint.load_model()
    rng = np.random.default_rng(seed)
    items = [{"front_rgb": torch.from_numpy(rng.integers(0, 256, (3, H, W), dtype=np.uint8)),
              "state": torch.randn(3), "action": torch.randn(CHUNK, 2),
              "action_is_pad": torch.tensor([False, False, i % 2 == 1, i % 2 == 1]), "prompt": "pick up the cube"}
             for i in range(batch)]
    collated = Pi0Collate(["front"], tokenizer, Pi0Layout.from_config(model.config), "")(items)
    return model, collated


def test_loss_equals_transformers_flow_matching_loss_when_nothing_is_padded(base):
    """Our loss builds the noisy actions itself: with the same noise and time it is transformers' loss."""
    model, batch = model_batch(base)
    inputs = batch["inputs"]
    generator = torch.Generator().manual_seed(3)
    ours = flow_matching_loss(model, inputs, torch.zeros(4, CHUNK, dtype=torch.bool), MAX_DIM, model.config,
                              generator)
    generator.manual_seed(3)
    noise = torch.randn(inputs["actions"].shape, generator=generator)
    time = sample_time(4, model.config, generator)
    theirs = model(noise=noise, timestep=time, **inputs).loss
    torch.testing.assert_close(ours, theirs)


def test_the_action_heads_padding_rows_learn_nothing(base):
    """The rows of the action head that produce the padding dimensions get no gradient."""
    model, batch = model_batch(base)
    model.train()
    inputs, pad = batch["inputs"], batch["action_is_pad"]
    loss = flow_matching_loss(model, inputs, pad, 2, model.config, torch.Generator().manual_seed(0))
    loss.backward()
    grad = model.action_out_proj.weight.grad
    assert grad[:2].abs().sum() > 0 and torch.all(grad[2:] == 0)


def test_padded_steps_and_dims_send_no_gradient_to_the_prediction(base):
    model, batch = model_batch(base)
    inputs, pad = batch["inputs"], batch["action_is_pad"]
    assert pad[1, 2:].all() and not pad[0].any()
    captured = []

    def keep(module, args, output):
        output.retain_grad()
        captured.append(output)

    handle = model.action_out_proj.register_forward_hook(keep)
    try:
        flow_matching_loss(model, inputs, pad, 2, model.config, torch.Generator().manual_seed(0)).backward()
    finally:
        handle.remove()
    grad = captured[0].grad  # d loss / d predicted velocity, (B, chunk, max_action_dim)
    assert torch.all(grad[:, :, 2:] == 0), "padded action dimensions reach the loss"
    assert torch.all(grad[pad] == 0), "padded steps reach the loss"
    assert torch.all(grad[~pad][:, :2] != 0)


# -- schedule and batches ------------------------------------------------------------------------

def test_warmup_then_cosine():
    config = DistillConfig(steps=100, warmup_steps=10, lr=1.0, min_lr=0.1)
    factors = [lr_factor(s, config) for s in range(101)]
    assert factors[0] < 0.2 and factors[9] < 1 and factors[10] == pytest.approx(1.0)
    assert factors[55] == pytest.approx(0.55) and factors[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))


def test_batches_split_between_ranks_and_restart_where_they_left():
    ranks = [StepBatchSampler(10, 3, rank=r, world=2, seed=1, steps=4) for r in range(2)]
    batches = [list(s) for s in ranks]
    # positions 0-2 rank 0, 3-5 rank 1 (step 0), 6-8 rank 0, 9-11 rank 1 (step 1): one shuffle per 10
    first_epoch = batches[0][0] + batches[1][0] + batches[0][1] + batches[1][1][:1]
    assert sorted(first_epoch) == list(range(10))
    resumed = StepBatchSampler(10, 3, rank=1, world=2, seed=1, start_step=2, steps=4)
    assert list(resumed) == batches[1][2:]


# -- training end to end -------------------------------------------------------------------------

def eval_loss(model, dataset, tokenizer) -> float:
    """The masked loss on fixed samples with fixed noise and time: comparable before and after."""
    collate = Pi0Collate(["front"], tokenizer, Pi0Layout.from_config(model.config), "")
    losses = []
    with torch.no_grad():
        for start in range(0, len(dataset), 16):
            batch = collate([dataset[i] for i in range(start, min(start + 16, len(dataset)))])
            losses.append(float(flow_matching_loss(model, batch["inputs"], batch["action_is_pad"], 2, model.config,
                                                   torch.Generator().manual_seed(start))))
    return float(np.mean(losses))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_store, base):
    out = tmp_path_factory.mktemp("distill") / "pi0_pick"
    start = time.monotonic()
    distiller = Distiller([train_store], base, out, fast(stats="recompute"))
    summary = distiller.run()
    return out, distiller, summary, time.monotonic() - start


def test_training_lowers_the_loss_and_writes_a_merged_checkpoint(trained, train_store, base):
    out, distiller, summary, seconds = trained
    assert summary["done"] and summary["step"] == 40 and summary["out"] == str(out)
    assert seconds < 600  # about 10-40 s on 2 shared CPU cores
    # the selection: the failure is not trained on
    assert distiller.selection.per_store(0) == [0, 2, 3, 4, 5, 6, 7] and len(distiller.indices) == 7 * 12
    # the loss falls, on fixed samples with fixed noise and flow times (not just the noisy training curve)
    checkpoint = load_checkpoint(out)
    tokenizer = checkpoint.load_tokenizer()
    dataset = SFTDataset(train_store, horizon=CHUNK, stats=checkpoint.stats)
    before = eval_loss(load_checkpoint(base).load_model(), dataset, tokenizer)
    after = eval_loss(checkpoint.load_model(), dataset, tokenizer)
    assert after < 0.6 * before, (before, after)
    rows = distiller.metrics.rows
    assert len(rows) == 8 and rows[-1]["loss"] < rows[0]["loss"]
    # LoRA merged: plain PI0 parameter names only, the same set as the base's
    names = set(load_file(out / "model.safetensors"))
    assert not any("lora" in n or "modules_to_save" in n or "base_model" in n for n in names)
    assert names == set(load_file(Path(base) / "model.safetensors"))
    # statistics recomputed from the selected episodes and said so; policy info from the store
    run = json.loads((distiller.run_dir / "distill.json").read_text())
    assert run["stats"].startswith("recomputed") and run["episodes"] == {str(train_store): [0, 2, 3, 4, 5, 6, 7]}
    assert checkpoint.stats.episodes == 7 and checkpoint.stats.count == 84
    assert checkpoint.info.action_names == ACTION_NAMES and checkpoint.info.cameras == {"front": (H, W)}
    for f in ("loss.png", "metrics.csv", STATE_FILE):
        assert (distiller.run_dir / f).is_file()
    assert (distiller.run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_checkpoint_is_served_by_the_policy_server(trained):
    from pld_robot.policy.client import PolicyClient
    from pld_robot.policy.server_process import PolicyServerProcess
    from pld_robot.policy.spec import Observation

    out = trained[0]
    with PolicyServerProcess("pi0", checkpoint=out) as server, PolicyClient(server.url) as client:
        assert client.spec.backend == "pi0" and client.spec.action_names == ACTION_NAMES
        for seed in range(3):
            obs = Observation(images={"front": np.full((H, W, 3), 40 * seed, np.uint8)},
                              state=state(0, seed), prompt="pick up the cube")
            actions = client.act(obs).actions
            assert actions.shape == (CHUNK, 2) and actions.dtype == np.float32 and np.all(np.isfinite(actions))


class StopAfter(threading.Event):
    """A stop flag that is set once the trainer has asked `n` times (once per step)."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def is_set(self):
        self.n -= 1
        return self.n < 0


def test_stop_and_resume_equals_one_run(tmp_path, train_store, base):
    config = fast(steps=10, save_every=100, log_every=2)
    whole = Distiller([train_store], base, tmp_path / "whole", config)
    whole.run()
    parts = Distiller([train_store], base, tmp_path / "parts", config)
    summary = parts.run(StopAfter(4))
    assert summary == {**summary, "done": False, "step": 4, "out": None}
    assert not (tmp_path / "parts").exists() and (tmp_path / "parts.run" / STATE_FILE).is_file()
    with pytest.raises(ConfigError, match="--resume"):
        Distiller([train_store], base, tmp_path / "parts", config)
    resumed = Distiller([train_store], base, tmp_path / "parts", config, resume=True)
    assert resumed.step == 4
    assert resumed.run()["done"]
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "parts" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    assert [r["step"] for r in resumed.metrics.rows] == [2, 4, 6, 8, 10]


def test_resume_at_the_step_reached_exports_at_once(tmp_path, train_store, base):
    """How to serve a run stopped early: --resume --steps <the step it reached>."""
    config = fast(steps=50, log_every=1)
    assert not Distiller([train_store], base, tmp_path / "early", config).run(StopAfter(3))["done"]
    export = Distiller([train_store], base, tmp_path / "early", dataclasses.replace(config, steps=3), resume=True)
    summary = export.run()
    assert summary["done"] and summary["step"] == 3
    assert load_checkpoint(tmp_path / "early").info.action_names == ACTION_NAMES


def test_statistics_kept_for_the_same_robot_recomputed_for_a_new_one(tmp_path, train_store, base):
    same = Distiller([train_store], base, tmp_path / "same", fast(steps=1))
    assert same.stats is same.base.stats and "kept the base" in same.stats_note
    other = build_tiny_pi0(tmp_path / "other_robot", {"front": (H, W)}, STATE_NAMES, ("a", "b"), chunk_size=CHUNK,
                           max_state_dim=MAX_DIM, max_action_dim=MAX_DIM)
    new = Distiller([train_store], other, tmp_path / "new", fast(steps=1))
    assert "recomputed" in new.stats_note and "new robot" in new.stats_note
    assert new.info.action_names == ACTION_NAMES and new.stats["action"].names == ACTION_NAMES
    # told to keep them (a LeRobot base names its dimensions state_0, action_0, ...): relabelled, same numbers
    forced = Distiller([train_store], other, tmp_path / "forced", fast(steps=1, stats="base"))
    assert forced.stats["action"].names == ACTION_NAMES
    np.testing.assert_array_equal(forced.stats["action"].mean, forced.base.stats["action"].mean)
    wider = build_tiny_pi0(tmp_path / "wider_robot", {"front": (H, W)}, STATE_NAMES, ("a", "b", "c"),
                           chunk_size=CHUNK, max_state_dim=MAX_DIM, max_action_dim=MAX_DIM)
    with pytest.raises(ValueError, match="stats: base.*3 action"):
        Distiller([train_store], wider, tmp_path / "wider", fast(steps=1, stats="base"))


def test_full_finetuning_trains_everything_but_the_unused_embedding(base):
    model = load_checkpoint(base).load_model()
    prepare_model(model, DistillConfig(finetune="full"))
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["model.dit.embed_tokens.weight", "model.vlm.language_model.layers.1.self_attn.q_proj.weight",
                      "model.vlm.language_model.layers.1.self_attn.o_proj.weight",
                      "model.vlm.language_model.layers.1.mlp.gate_proj.weight",
                      "model.vlm.language_model.layers.1.mlp.up_proj.weight",
                      "model.vlm.language_model.layers.1.mlp.down_proj.weight",
                      "model.vlm.language_model.layers.1.post_attention_layernorm.weight",
                      "model.vlm.language_model.norm.weight"]
    assert merged_model(model) is model


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_every_trainable_parameter_gets_a_gradient(base, finetune):
    """What DDP requires (else it stops with "parameters that were not used in producing loss")."""
    model, batch = model_batch(base)
    wrapped = prepare_model(model, DistillConfig(finetune=finetune))
    wrapped.train()
    trainable = {n: p for n, p in wrapped.named_parameters() if p.requires_grad}
    assert len(trainable) > 10
    flow_matching_loss(wrapped, batch["inputs"], batch["action_is_pad"], 2, model.config,
                       torch.Generator().manual_seed(0)).backward()
    # the vision tower trains and is checkpointed (non-reentrant: else its LoRA weights would get no gradient)
    assert model.model.vlm.vision_tower.is_activation_checkpointing
    assert [n for n, p in trainable.items() if p.grad is None] == []
    if finetune == "lora":  # LoRA on the Gemma, expert and SigLIP projections, the action/state heads in full
        assert any("vision_tower" in n and "lora_A" in n for n in trainable)
        assert any("dit.layers.0.mlp.down_proj.lora_B" in n for n in trainable)
        assert any("action_out_proj.modules_to_save" in n for n in trainable)
        assert not any("lora" not in n and "modules_to_save" not in n for n in trainable)


def test_existing_out_folder_is_refused_before_training(tmp_path, train_store, base):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    with pytest.raises(ConfigError, match="not empty"):
        Distiller([train_store], base, tmp_path / "taken", fast())


def test_cli_distill(tmp_path, train_store, base):
    """The command as docs/distill.md shows it, in its own process."""
    out = tmp_path / "cli_out"
    config = tmp_path / "distill.yaml"
    config.write_text("distill:\n  lr: 3.0e-3\n  min_lr: 3.0e-4\n  warmup_steps: 2\n  log_every: 2\n")
    done = subprocess.run([sys.executable, "-m", "pld_robot.cli", "distill", str(train_store), "--base", str(base),
                           "--out", str(out), "--config", str(config), "--steps", "6", "--batch-size", "4",
                           "--lora-rank", "8", "--device", "cpu", "--num-workers", "1", "--quiet"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "7 of 8 episode(s) selected" in done.stdout and "kept the base checkpoint's" in done.stdout
    assert "step 6: loss" in done.stdout and str(out) in done.stdout
    assert load_checkpoint(out).info.state_names == STATE_NAMES
    again = subprocess.run([sys.executable, "-m", "pld_robot.cli", "distill", str(train_store), "--base", str(base),
                            "--out", str(out)], capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 2 and "exists and is not empty" in again.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_torchrun_two_processes_on_cpu(tmp_path, train_store, base):
    """DDP with gloo: the command under torchrun; both ranks train, rank 0 writes."""
    out = tmp_path / "ddp_out"
    config = tmp_path / "distill.yaml"
    config.write_text("distill:\n  lr: 3.0e-3\n  min_lr: 3.0e-4\n  warmup_steps: 2\n  log_every: 2\n")
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "pld_robot.cli", "distill",
                           str(train_store), "--base", str(base), "--out", str(out), "--config", str(config),
                           "--steps", "6", "--batch-size", "4", "--device", "cpu", "--num-workers", "0", "--quiet"],
                          capture_output=True, text=True, timeout=280, env=env, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "4 x 2 process(es)" in done.stdout and done.stdout.count("pld-robot distill:") == 1
    assert load_checkpoint(out).info.action_names == ACTION_NAMES
    run = json.loads((tmp_path / "ddp_out.run" / "distill.json").read_text())
    assert run["world_size"] == 2
