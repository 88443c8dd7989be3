"""PI0 backend: tiny random checkpoints in both layouts, served by Pi0Policy, checked against
transformers' PI0ForConditionalGeneration fed by inputs assembled here by hand (processing_pi0.py's
prompt layout and scaling, openpi's resize-with-pad), plus the preprocessing pieces and the errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoTokenizer, PI0Config, PI0ForConditionalGeneration

from pld_robot.data.normalization import EPS, load_stats
from pld_robot.policy.pi0.backend import Pi0Policy
from pld_robot.policy.pi0.checkpoint import (CheckpointError, PolicyInfo, load_checkpoint, pi0_config_from_lerobot,
                                             save_checkpoint)
from pld_robot.policy.pi0.preprocess import (Pi0Layout, assemble_inputs, normalize_state, resize_with_pad, tokenize,
                                             unnormalize_actions)
from pld_robot.policy.pi0.tiny import build_tiny_pi0, build_tiny_tokenizer, tiny_stats
from pld_robot.policy.spec import InvalidObservation, Observation

CAMERAS = {"front": (32, 32), "wrist": (24, 40)}  # the vision tower sees 32 x 32: wrist is resized and padded
STATE_NAMES = ("x", "y", "z")
ACTION_NAMES = ("dx", "dy")
CHUNK, MAX_DIM = 4, 8
TOKENS_PER_IMAGE = (32 // 16) ** 2
LAYOUTS = ("hf", "lerobot")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("pi0")
    return {layout: build_tiny_pi0(root / layout, CAMERAS, STATE_NAMES, ACTION_NAMES, chunk_size=CHUNK,
                                   max_state_dim=MAX_DIM, max_action_dim=MAX_DIM, layout=layout)
            for layout in LAYOUTS}


@pytest.fixture(scope="module")
def policies(checkpoints):
    return {layout: Pi0Policy(path, device="cpu") for layout, path in checkpoints.items()}


def _obs(seed: int = 0, prompt: str = "pick up the red cube", noise: bool = True) -> Observation:
    rng = np.random.default_rng(seed)
    return Observation(images={n: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for n, (h, w) in CAMERAS.items()},
                       state=rng.normal(size=len(STATE_NAMES)).astype(np.float32), prompt=prompt,
                       noise=rng.normal(size=(CHUNK, MAX_DIM)).astype(np.float32) if noise else None)


def _reference_actions(path, layout: str, obs: Observation) -> np.ndarray:
    """The same chunk straight from transformers, every input built here by hand."""
    if layout == "hf":
        model = PI0ForConditionalGeneration.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        stats = load_stats(path / "norm_stats.json")
        s_mean, s_std = stats["state"].mean, stats["state"].std
        a_mean, a_std = stats["action"].mean, stats["action"].std
    else:
        config = PI0Config.from_dict(json.loads((path / "pld_architecture.json").read_text()))
        model = PI0ForConditionalGeneration.from_pretrained(path, config=config)
        tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
        pre = load_file(path / "policy_preprocessor_step_5_normalizer_processor.safetensors")
        post = load_file(path / "policy_postprocessor_step_0_unnormalizer_processor.safetensors")
        s_mean, s_std = pre["observation.state.mean"].numpy(), pre["observation.state.std"].numpy()
        a_mean, a_std = post["action.mean"].numpy(), post["action.std"].numpy()
    model.eval()
    # processing_pi0.py: <image> x tokens_per_image x cameras, then bos + prompt + "\n", no added specials
    text = "<image>" * (TOKENS_PER_IMAGE * len(CAMERAS)) + tokenizer.bos_token + obs.prompt + "\n"
    input_ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    # rescale to [-1, 1] (mean = std = 0.5); the 24 x 40 wrist image: 19 x 32, 6 rows of black above, 7 below
    front = torch.from_numpy(obs.images["front"]).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    wrist = torch.from_numpy(obs.images["wrist"]).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    wrist = F.interpolate(wrist, size=(19, 32), mode="bilinear", align_corners=False).clamp(-1, 1)
    wrist = F.pad(wrist, (0, 0, 6, 7), value=-1.0)
    pixel_values = torch.stack([front, wrist], dim=1)
    state = np.zeros(MAX_DIM, np.float32)
    state[:len(STATE_NAMES)] = (obs.state - s_mean) / (s_std + EPS)
    chunk = model.sample_actions(state=torch.from_numpy(state)[None], input_ids=input_ids, pixel_values=pixel_values,
                                 noise=torch.from_numpy(obs.noise)[None], attention_mask=torch.ones_like(input_ids),
                                 pixel_attention_mask=torch.ones(1, 2, dtype=torch.bool))
    return chunk[0, :, :len(ACTION_NAMES)].numpy() * (a_std + EPS) + a_mean


@pytest.mark.parametrize("layout", LAYOUTS)
def test_predict_equals_transformers_on_hand_built_inputs(checkpoints, policies, layout):
    obs = _obs()
    actions = policies[layout].predict(obs)
    assert actions.shape == (CHUNK, len(ACTION_NAMES)) and actions.dtype == np.float32
    np.testing.assert_allclose(actions, _reference_actions(checkpoints[layout], layout, obs), rtol=1e-5, atol=1e-5)


def test_every_input_moves_the_actions(policies):
    """So that the comparison above would catch a preprocessing mistake."""
    policy = policies["hf"]
    base = _obs()
    actions = policy.predict(base)
    inverted = {name: {**base.images, name: 255 - base.images[name]} for name in CAMERAS}
    changed = {
        "front image": Observation(inverted["front"], base.state, base.prompt, base.noise),
        "wrist image": Observation(inverted["wrist"], base.state, base.prompt, base.noise),
        "state": Observation(base.images, base.state + 0.5, base.prompt, base.noise),
        "prompt": Observation(base.images, base.state, "open the drawer", base.noise),
        "noise": Observation(base.images, base.state, base.prompt, base.noise + 0.5),
    }
    for what, obs in changed.items():
        assert np.abs(policy.predict(obs) - actions).max() > 1e-2, what


def test_both_layouts_serve_the_same_model(policies):
    obs = _obs(seed=3)
    np.testing.assert_allclose(policies["hf"].predict(obs), policies["lerobot"].predict(obs), rtol=1e-5, atol=1e-5)
    assert policies["hf"].spec.to_json() | {"version": ""} == policies["lerobot"].spec.to_json() | {"version": ""}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_spec_and_fresh_noise(policies, layout):
    policy = policies[layout]
    spec = policy.spec
    assert (spec.backend, spec.chunk_length, spec.control_hz) == ("pi0", CHUNK, 10.0)
    assert list(spec.cameras.items()) == list(CAMERAS.items())
    assert (spec.state_names, spec.action_names) == (STATE_NAMES, ACTION_NAMES)
    assert len(spec.version) == 12 and int(spec.version, 16) >= 0
    first, second = policy.predict(_obs(noise=False)), policy.predict(_obs(noise=False))
    assert first.shape == (CHUNK, len(ACTION_NAMES)) and np.all(np.isfinite(first))
    assert not np.allclose(first, second)  # fresh noise each call


def test_empty_prompt_means_the_checkpoint_prompt(policies):
    policy = policies["hf"]
    assert policy.checkpoint.info.prompt == "pick up the cube"
    np.testing.assert_array_equal(policy.predict(_obs(prompt="")), policy.predict(_obs(prompt="pick up the cube")))


def test_chunk_length_shorter_than_the_model_chunk(tmp_path):
    path = build_tiny_pi0(tmp_path / "short", {"front": (32, 32)}, STATE_NAMES, ACTION_NAMES, chunk_size=CHUNK,
                          chunk_length=2, layout="lerobot")
    policy = Pi0Policy(path)
    assert policy.spec.chunk_length == 2
    obs = Observation({"front": np.zeros((32, 32, 3), np.uint8)}, np.zeros(3, np.float32),
                      noise=np.zeros((CHUNK, MAX_DIM), np.float32))
    assert policy.predict(obs).shape == (2, len(ACTION_NAMES))


def test_observation_errors_propagate(policies):
    policy = policies["hf"]
    good = _obs()
    bad = {
        "missing camera": Observation({"front": good.images["front"]}, good.state, good.prompt),
        "image shape": Observation({**good.images, "wrist": good.images["front"]}, good.state, good.prompt),
        "state length": Observation(good.images, good.state[:2], good.prompt),
        "nan state": Observation(good.images, np.full(3, np.nan, np.float32), good.prompt),
        "noise shape": Observation(good.images, good.state, good.prompt, np.zeros((CHUNK, 2), np.float32)),
    }
    for obs in bad.values():
        with pytest.raises(InvalidObservation):
            policy.predict(obs)
    with pytest.raises(InvalidObservation, match=r"noise has shape \(4, 2\), expected \(4, 8\)"):
        policy.predict(bad["noise shape"])


# ------------------------------------------------------------------------------------ preprocessing


def test_resize_with_pad_keeps_aspect_ratio_and_pads_black():
    wide = np.zeros((2, 24, 40, 3), np.uint8)
    wide[:, :, :20] = 255  # left half white, right half black
    out = resize_with_pad(wide, 32)
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.float32
    # 24 x 40 -> 19 x 32 (the width fits), centred: 6 padding rows above, 7 below, all -1
    assert torch.all(out[:, :, :6] == -1) and torch.all(out[:, :, 25:] == -1)
    content = out[:, :, 6:25]
    assert torch.all(content[..., :15] == 1) and torch.all(content[..., 17:] == -1)  # the halves, not stretched
    # channels-first in, the same out
    torch.testing.assert_close(resize_with_pad(torch.from_numpy(wide).permute(0, 3, 1, 2), 32), out)
    tall = np.full((1, 40, 24, 3), 255, np.uint8)
    out = resize_with_pad(tall, 32)  # -> 32 x 19: 6 padding columns left, 7 right
    assert torch.all(out[..., :6] == -1) and torch.all(out[..., 25:] == -1) and torch.all(out[..., 6:25] == 1)
    exact = np.arange(32 * 32 * 3, dtype=np.int64).reshape(1, 32, 32, 3) % 256
    torch.testing.assert_close(resize_with_pad(exact.astype(np.uint8), 32),
                               torch.from_numpy(exact).permute(0, 3, 1, 2).float() / 255 * 2 - 1)
    with pytest.raises(ValueError, match="uint8"):
        resize_with_pad(np.zeros((1, 8, 8, 3), np.float32), 32)


def test_tokenize_layout():
    tokenizer = build_tiny_tokenizer()
    vocab = tokenizer.get_vocab()
    image, bos, pad, newline = vocab["<image>"], vocab["<bos>"], vocab["<pad>"], vocab["\n"]
    ids, mask = tokenize(["pick up the cube", "lift it"], tokenizer, tokens_per_image=4, n_cameras=2,
                         image_token_id=image)
    words = [vocab[w] for w in ("pick", "up", "the", "cube")]
    assert ids.dtype == torch.long and ids.shape == (2, 8 + 6)
    assert ids[0].tolist() == [image] * 8 + [bos, *words, newline]
    assert ids[1].tolist() == [image] * 8 + [bos, vocab["lift"], vocab["it"], newline, pad, pad]
    assert mask.tolist() == [[1] * 14, [1] * 12 + [0, 0]]
    # the same ids as tokenising processing_pi0.py's prompt string
    text = "<image>" * 8 + "<bos>" + "pick up the cube" + "\n"
    assert ids[0].tolist() == tokenizer(text, add_special_tokens=False)["input_ids"]
    ids, mask = tokenize(["lift it"], tokenizer, 4, 1, image, max_length=10)
    assert ids.shape == (1, 14) and mask[0].tolist() == [1] * 8 + [0] * 6
    with pytest.raises(ValueError, match="max_length is 3"):
        tokenize(["pick up the cube"], tokenizer, 4, 1, image, max_length=3)


def test_right_padding_does_not_change_the_actions(policies):
    policy = policies["hf"]
    obs = _obs()
    images = [obs.images[n][None] for n in CAMERAS]

    def sample(max_length):
        inputs = assemble_inputs(images, [obs.prompt], obs.state[None], policy.layout, policy.tokenizer,
                                 policy.checkpoint.stats, max_length=max_length)
        return policy.model.sample_actions(**inputs.model_kwargs(), noise=torch.from_numpy(obs.noise)[None])

    short, padded = sample(None), sample(16)
    torch.testing.assert_close(short, padded, rtol=1e-5, atol=1e-5)


def test_state_and_action_normalisation():
    stats = tiny_stats(STATE_NAMES, ACTION_NAMES)
    state = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 0.5]], np.float32)
    out = normalize_state(state, stats, MAX_DIM)
    assert out.shape == (2, MAX_DIM) and torch.all(out[:, 3:] == 0)
    expected = (state - stats["state"].mean) / (stats["state"].std + EPS)
    np.testing.assert_allclose(out[:, :3].numpy(), expected, rtol=1e-6)
    model_out = np.random.default_rng(0).normal(size=(2, CHUNK, MAX_DIM)).astype(np.float32)
    actions = unnormalize_actions(torch.from_numpy(model_out), stats, len(ACTION_NAMES))
    assert actions.shape == (2, CHUNK, 2) and actions.dtype == np.float32
    np.testing.assert_allclose(actions, model_out[..., :2] * (stats["action"].std + EPS) + stats["action"].mean,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="more than the model's 2"):
        normalize_state(state, stats, 2)


def test_pi0_layout_from_config(policies):
    layout = Pi0Layout.from_config(policies["hf"].model.config)
    assert (layout.image_size, layout.tokens_per_image, layout.chunk_size, layout.max_action_dim) == (32, 4, 4, 8)
    assert layout.image_token_id == build_tiny_tokenizer().convert_tokens_to_ids("<image>")


# ------------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("layout, missing, named", [
    ("hf", "config.json", "config.json: missing"), ("hf", "model.safetensors", "model.safetensors: missing"),
    ("hf", "pld_policy.json", "pld_policy.json: missing"), ("hf", "norm_stats.json", "norm_stats.json: missing"),
    ("hf", "tokenizer.json", "missing tokenizer.json"),
    ("lerobot", "model.safetensors", "model.safetensors: missing"),
    ("lerobot", "pld_policy.json", "pld_policy.json: missing"),
    ("lerobot", "policy_preprocessor_step_5_normalizer_processor.safetensors",
     "one policy_preprocessor_step_*_normalizer_processor.safetensors"),
    ("lerobot", "policy_postprocessor_step_0_unnormalizer_processor.safetensors",
     "one policy_postprocessor_step_*_unnormalizer_processor.safetensors"),
    ("lerobot", "tokenizer/tokenizer.json", "missing tokenizer.json"),
])
def test_missing_file_is_named(checkpoints, tmp_path, layout, missing, named):
    folder = shutil.copytree(checkpoints[layout], tmp_path / "ckpt")
    (folder / missing).unlink()
    with pytest.raises(CheckpointError, match=re.escape(named)):
        load_checkpoint(folder)


def test_wrong_folders(checkpoints, tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        load_checkpoint(tmp_path / "nowhere")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="not a PI0 config.*'llama'"):
        load_checkpoint(other)
    folder = shutil.copytree(checkpoints["lerobot"], tmp_path / "lr")
    policy_file = folder / "pld_policy.json"
    doc = json.loads(policy_file.read_text())
    policy_file.write_text(json.dumps({k: v for k, v in doc.items() if k != "control_hz"}))
    with pytest.raises(CheckpointError, match="missing field 'control_hz'"):
        load_checkpoint(folder)
    policy_file.write_text(json.dumps({**doc, "cameras": [{"name": "front", "height": 32, "width": 32}]}))
    with pytest.raises(CheckpointError, match="cameras .* disagrees"):
        load_checkpoint(folder)
    policy_file.write_text(json.dumps(doc))
    (folder / "pld_architecture.json").unlink()
    with pytest.raises(CheckpointError, match="unknown variant.*pld_architecture.json"):
        load_checkpoint(folder)
    hf = shutil.copytree(checkpoints["hf"], tmp_path / "hf")
    stats = load_stats(hf / "norm_stats.json")
    with pytest.raises(CheckpointError, match="3 state names but state statistics of 2"):
        save_checkpoint(PI0ForConditionalGeneration.from_pretrained(hf), build_tiny_tokenizer(),
                        type(stats)(keys={"state": stats["action"], "action": stats["action"]}, count=0, episodes=0),
                        load_checkpoint(hf).info, tmp_path / "bad")


def test_weights_that_do_not_fit_the_config_are_refused(checkpoints, tmp_path):
    folder = shutil.copytree(checkpoints["hf"], tmp_path / "ckpt")
    doc = json.loads((folder / "config.json").read_text())
    doc["max_action_dim"] = 6
    (folder / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="do not fit the config"):
        load_checkpoint(folder).load_model()


def test_lerobot_checkpoint_reads_features_and_normaliser(checkpoints):
    checkpoint = load_checkpoint(checkpoints["lerobot"])
    assert checkpoint.layout == "lerobot" and list(checkpoint.info.cameras.items()) == list(CAMERAS.items())
    expected = tiny_stats(STATE_NAMES, ACTION_NAMES)
    for key in ("state", "action"):
        for field in ("mean", "std", "q01", "q99"):
            np.testing.assert_array_equal(getattr(checkpoint.stats[key], field), getattr(expected[key], field))
    assert checkpoint.config.chunk_size == CHUNK and checkpoint.chunk_length == CHUNK


def test_lerobot_variants_are_pi0_base():
    source = Path("config.json")
    config = pi0_config_from_lerobot({"type": "pi0", "paligemma_variant": "gemma_2b",
                                      "action_expert_variant": "gemma_300m", "image_resolution": [224, 224],
                                      "chunk_size": 50, "max_state_dim": 32, "max_action_dim": 32}, None, source)
    base = PI0Config()  # transformers documents its defaults as lerobot/pi0_base
    assert config.to_dict() == base.to_dict()
    assert (config.vlm_config.text_config.hidden_size, config.dit_config.hidden_size) == (2048, 1024)
    small = pi0_config_from_lerobot({"paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_2b",
                                     "chunk_size": 10, "image_resolution": [448, 448]}, None, source)
    assert (small.dit_config.hidden_size, small.dit_config.intermediate_size, small.chunk_size) == (2048, 16384, 10)
    assert Pi0Layout.from_config(small).tokens_per_image == (448 // 14) ** 2
    with pytest.raises(CheckpointError, match="before its openpi port"):
        pi0_config_from_lerobot({"type": "pi0", "proj_width": 1024}, None, source)


def test_save_checkpoint_writes_only_new_folders(checkpoints, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    checkpoint = load_checkpoint(checkpoints["hf"])
    with pytest.raises(FileExistsError):
        save_checkpoint(checkpoint.load_model(), checkpoint.load_tokenizer(), checkpoint.stats, checkpoint.info,
                        occupied)
    with pytest.raises(ValueError, match="unknown layout"):
        save_checkpoint(checkpoint.load_model(), checkpoint.load_tokenizer(), checkpoint.stats, checkpoint.info,
                        tmp_path / "new", layout="onnx")
    with pytest.raises(AttributeError):  # fails half-way: nothing is left behind
        save_checkpoint(checkpoint.load_model(), None, checkpoint.stats, checkpoint.info, tmp_path / "new")
    assert (occupied / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occupied"]
    info = PolicyInfo.from_json(checkpoint.info.to_json(), tmp_path)
    assert info == checkpoint.info


@pytest.mark.slow
def test_served_lerobot_checkpoint_equals_transformers(checkpoints):
    """`pld-robot serve-policy --backend pi0` in its own process, asked over HTTP and the websocket."""
    import socket
    import subprocess
    import sys
    import time

    from pld_robot.policy.client import PolicyClient, PolicyUnavailable, WebSocketPolicyClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "pld_robot.cli", "serve-policy", "--backend", "pi0",
                               "--checkpoint", str(checkpoints["lerobot"]), "--device", "cpu", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client = PolicyClient(url)
                break
            except PolicyUnavailable:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()[-2000:]
                time.sleep(0.2)
        obs = _obs(seed=4)
        expected = _reference_actions(checkpoints["lerobot"], "lerobot", obs)
        with client, WebSocketPolicyClient(url) as ws:
            assert client.spec.backend == "pi0" and client.spec.cameras == CAMERAS
            for result in (client.act(obs), ws.act(obs)):
                np.testing.assert_allclose(result.actions, expected, rtol=1e-5, atol=1e-5)
                assert result.timing["infer_ms"] > 0
    finally:
        server.kill()
        server.wait(10)
