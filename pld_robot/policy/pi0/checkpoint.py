"""PI0 checkpoint folders: read either layout the policy server may be pointed at, and write one.

Hugging Face layout (what the distill stage writes by default):

    config.json         transformers PI0Config (model_type "pi0")
    model.safetensors   transformers parameter names
    tokenizer.json, tokenizer_config.json
    pld_policy.json     PolicyInfo: cameras in model order with their image sizes, state/action names,
                        control rate, default prompt, chunk length, normalisation mode
    norm_stats.json     NormStats (pld_robot.data.normalization) of "state" and "action"

LeRobot layout (what `lerobot` saves for its pi0 policy, e.g. checkpoints/<step>/pretrained_model):

    config.json         LeRobot PI0Config (type "pi0"): input/output features, chunk_size, n_action_steps,
                        max_state_dim, max_action_dim, paligemma_variant, action_expert_variant, ...
    model.safetensors   LeRobot parameter names (model.paligemma_with_expert...); transformers'
                        `from_pretrained` renames them (its "pi0" conversion mapping)
    policy_preprocessor_step_*_normalizer_processor.safetensors     observation.state.mean/std/q01/q99
    policy_postprocessor_step_*_unnormalizer_processor.safetensors  action.mean/std/q01/q99
    tokenizer.json ... in the folder or in tokenizer/ (LeRobot fetches PaliGemma's from the Hub at run
                        time; here nothing is downloaded, so it must be put there)
    pld_policy.json     what LeRobot does not record, at least control_hz; optionally state_names,
                        action_names, prompt. Whatever it repeats (cameras, chunk_length, norm_mode)
                        must agree with the LeRobot config, which is authoritative.
    pld_architecture.json  only for networks LeRobot cannot name (see below)

The LeRobot config names its network by two variants, gemma_2b and gemma_300m (LeRobot validates for
exactly these two and has no tiny variant), and hard-codes the rest: SigLIP so400m/14, PaliGemma's
257152-token vocabulary, image_resolution. Those map onto a transformers PI0Config below. A network of
any other shape (the tiny test models) cannot be described in LeRobot's terms, so such a checkpoint
carries its transformers PI0Config in pld_architecture.json and says "pld_custom" for both variants:
LeRobot itself refuses to load it, which is the truth.

Normalisation: LeRobot normalises with (x - mean) / (std + 1e-8) and unnormalises with x * std + mean;
NormStats uses 1e-6 both ways. The difference is std * 1e-6 in robot units, far below what matters.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, PI0Config, PI0ForConditionalGeneration

from pld_robot.data.normalization import MODES, KeyStats, Mode, NormStats, load_stats, save_stats

Layout = Literal["hf", "lerobot"]
LAYOUTS = ("hf", "lerobot")

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
POLICY_FILE = "pld_policy.json"
STATS_FILE = "norm_stats.json"
ARCHITECTURE_FILE = "pld_architecture.json"
TOKENIZER_SUBDIR = "tokenizer"
NORMALIZER_GLOB = "policy_preprocessor_step_*_normalizer_processor.safetensors"
UNNORMALIZER_GLOB = "policy_postprocessor_step_*_unnormalizer_processor.safetensors"
# the step numbers LeRobot's pi0 pipelines give them (rename, batch, newline, tokenizer, device, normalizer)
NORMALIZER_FILE = "policy_preprocessor_step_5_normalizer_processor.safetensors"
UNNORMALIZER_FILE = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
LEROBOT_IMAGES, LEROBOT_STATE, LEROBOT_ACTION = "observation.images.", "observation.state", "action"
LEROBOT_NORM_MODES: dict[str, Mode] = {"MEAN_STD": "mean_std", "QUANTILES": "quantile"}
CUSTOM_VARIANT = "pld_custom"
LEROBOT_POLICY_FIELDS = ("format", "format_version", "state_names", "action_names", "control_hz", "prompt")
POLICY_FORMAT, POLICY_FORMAT_VERSION = "pld_robot.pi0_policy", 1

# openpi's / LeRobot's get_gemma_config
GEMMA_VARIANTS: dict[str, dict[str, int]] = {
    "gemma_300m": dict(hidden_size=1024, num_hidden_layers=18, intermediate_size=4096, num_attention_heads=8,
                       num_key_value_heads=1, head_dim=256),
    "gemma_2b": dict(hidden_size=2048, num_hidden_layers=18, intermediate_size=16384, num_attention_heads=8,
                     num_key_value_heads=1, head_dim=256),
}
# PI0Config fields a LeRobot config sets under the same names
_LEROBOT_SHARED_FIELDS = ("chunk_size", "max_state_dim", "max_action_dim", "num_inference_steps",
                          "time_sampling_beta_alpha", "time_sampling_beta_beta", "time_sampling_scale",
                          "time_sampling_offset", "min_period", "max_period")
_STAT_FIELDS = ("mean", "std", "q01", "q99")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class PolicyInfo:
    """What the weights do not say: the robot inputs and outputs the model was trained with."""

    cameras: dict[str, tuple[int, int]]  # name -> (height, width) sent; dict order = the model's image order
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    control_hz: float
    prompt: str = ""  # used when a request brings none
    chunk_length: int | None = None  # actions returned per request; None: the model's whole chunk
    norm_mode: Mode = "mean_std"

    def to_json(self) -> dict:
        return {"format": POLICY_FORMAT, "format_version": POLICY_FORMAT_VERSION,
                "cameras": _cameras_to_json(self.cameras),
                "state_names": list(self.state_names), "action_names": list(self.action_names),
                "control_hz": self.control_hz, "prompt": self.prompt, "chunk_length": self.chunk_length,
                "norm_mode": self.norm_mode}

    @classmethod
    def from_json(cls, doc: dict, source: Path) -> "PolicyInfo":
        if doc.get("format", POLICY_FORMAT) != POLICY_FORMAT or \
                doc.get("format_version", POLICY_FORMAT_VERSION) != POLICY_FORMAT_VERSION:
            raise CheckpointError(f"{source}: not {POLICY_FORMAT} version {POLICY_FORMAT_VERSION} "
                                  f"(format={doc.get('format')!r}, format_version={doc.get('format_version')!r})")
        missing = [k for k in ("cameras", "state_names", "action_names", "control_hz") if k not in doc]
        if missing:
            raise CheckpointError(f"{source}: missing field(s) {missing}")
        try:
            info = cls(cameras=_cameras_from_json(doc["cameras"]), state_names=tuple(doc["state_names"]),
                       action_names=tuple(doc["action_names"]), control_hz=float(doc["control_hz"]),
                       prompt=str(doc.get("prompt", "")),
                       chunk_length=None if doc.get("chunk_length") is None else int(doc["chunk_length"]),
                       norm_mode=doc.get("norm_mode", "mean_std"))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: malformed field: {exc}") from exc
        if info.norm_mode not in MODES:
            raise CheckpointError(f"{source}: norm_mode {info.norm_mode!r} is not one of {list(MODES)}")
        if not info.cameras:
            raise CheckpointError(f"{source}: no cameras; PI0 needs at least one image")
        return info


def _cameras_to_json(cameras: dict[str, tuple[int, int]]) -> list[dict]:
    return [{"name": n, "height": h, "width": w} for n, (h, w) in cameras.items()]


def _cameras_from_json(entries: list) -> dict[str, tuple[int, int]]:
    return {str(c["name"]): (int(c["height"]), int(c["width"])) for c in entries}


@dataclass(frozen=True)
class Pi0Checkpoint:
    """A checkpoint folder read and checked; the weights are loaded only by `load_model`."""

    path: Path
    layout: Layout
    config: PI0Config
    info: PolicyInfo
    stats: NormStats
    tokenizer_dir: Path
    version: str  # hash of the weights and the statistics: recorded with every episode

    @property
    def chunk_length(self) -> int:
        return self.info.chunk_length or self.config.chunk_size

    def load_model(self, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> PI0ForConditionalGeneration:
        """The model in eval mode; an error if the weights do not fit the config exactly (a partly random
        model would run and act wrong without a word)."""
        # mismatched sizes are let through here only to be reported below, by name, with the rest
        model, loading = PI0ForConditionalGeneration.from_pretrained(
            self.path, config=self.config, dtype=dtype, local_files_only=True, output_loading_info=True,
            ignore_mismatched_sizes=True)
        problems = {k: sorted(map(str, loading.get(k) or ())) for k in
                    ("missing_keys", "unexpected_keys", "mismatched_keys")}
        problems = {k: v for k, v in problems.items() if v}
        if problems:
            detail = "; ".join(f"{k}: {v[:5]}{' ...' if len(v) > 5 else ''} ({len(v)})" for k, v in problems.items())
            raise CheckpointError(f"{self.path / WEIGHTS_FILE}: the weights do not fit the config: {detail}")
        return model.to(device).eval()

    def load_tokenizer(self) -> Any:
        tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir, local_files_only=True)
        if tokenizer.bos_token_id is None:
            raise CheckpointError(f"{self.tokenizer_dir}: the tokenizer has no bos token; PI0's prompt starts with one")
        return tokenizer


def load_checkpoint(path: str | Path) -> Pi0Checkpoint:
    """Read and check a checkpoint folder of either layout (told apart by config.json)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    doc = _read_json(path / CONFIG_FILE, "the model config")
    if doc.get("model_type") == "pi0":
        return _load_hf(path, doc)
    if doc.get("type") == "pi0":
        return _load_lerobot(path, doc)
    raise CheckpointError(f"{path / CONFIG_FILE}: not a PI0 config (model_type={doc.get('model_type')!r}, "
                          f"type={doc.get('type')!r}); expected transformers' model_type 'pi0' or LeRobot's type 'pi0'")


def _load_hf(path: Path, doc: dict) -> Pi0Checkpoint:
    _require(path / WEIGHTS_FILE, "the weights")
    try:
        config = PI0Config.from_dict(doc)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path / CONFIG_FILE}: not a valid PI0Config: {exc}") from exc
    info = PolicyInfo.from_json(_read_json(path / POLICY_FILE, "cameras, names and control rate"), path / POLICY_FILE)
    stats_path = _require(path / STATS_FILE, "the normalisation statistics")
    try:
        stats = load_stats(stats_path)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    tokenizer_dir = _tokenizer_dir(path)
    _check(path, config, info, stats)
    return Pi0Checkpoint(path=path, layout="hf", config=config, info=info, stats=stats, tokenizer_dir=tokenizer_dir,
                         version=_version([path / WEIGHTS_FILE, stats_path]))


def _load_lerobot(path: Path, doc: dict) -> Pi0Checkpoint:
    source = path / CONFIG_FILE
    _require(path / WEIGHTS_FILE, "the weights")
    if doc.get("empty_cameras", 0):
        raise CheckpointError(f"{source}: empty_cameras={doc['empty_cameras']} is not supported: every camera "
                              "the model sees must be one the robot sends")
    cameras, state_dim, action_dim = _lerobot_features(doc, source)
    norm_mode = _lerobot_norm_mode(doc, source)
    architecture = path / ARCHITECTURE_FILE
    config = pi0_config_from_lerobot(
        doc, _read_json(architecture, "the network's shape") if architecture.is_file() else None, source)
    normalizer = _one(path, NORMALIZER_GLOB, "the state normaliser")
    unnormalizer = _one(path, UNNORMALIZER_GLOB, "the action unnormaliser")
    stats = NormStats(keys={"state": _lerobot_key_stats(normalizer, LEROBOT_STATE, state_dim),
                            "action": _lerobot_key_stats(unnormalizer, LEROBOT_ACTION, action_dim)},
                      count=0, episodes=0, store=f"LeRobot checkpoint {path}")
    # the LeRobot config is authoritative for what it records; pld_policy.json adds what it does not
    derived = {"cameras": _cameras_to_json(cameras), "state_names": [f"state_{i}" for i in range(state_dim)],
               "action_names": [f"action_{i}" for i in range(action_dim)],
               "chunk_length": doc.get("n_action_steps", config.chunk_size), "norm_mode": norm_mode}
    extra_path = path / POLICY_FILE
    extra = _read_json(extra_path, "the control rate, which a LeRobot config does not record")
    if "chunk_length" in extra and extra["chunk_length"] is None:  # None: the whole chunk
        extra["chunk_length"] = config.chunk_size
    for key in ("cameras", "chunk_length", "norm_mode"):
        if key in extra and extra[key] != derived[key]:
            raise CheckpointError(f"{extra_path}: {key} {extra[key]!r} disagrees with {source} ({derived[key]!r})")
    if "control_hz" not in extra:
        raise CheckpointError(f"{extra_path}: missing field 'control_hz' (a LeRobot config does not record it)")
    info = PolicyInfo.from_json({**derived, **extra}, extra_path)
    _check(path, config, info, stats)
    return Pi0Checkpoint(path=path, layout="lerobot", config=config, info=info, stats=stats,
                         tokenizer_dir=_tokenizer_dir(path),
                         version=_version([path / WEIGHTS_FILE, normalizer, unnormalizer]))


def pi0_config_from_lerobot(doc: dict, architecture: dict | None, source: Path) -> PI0Config:
    """transformers PI0Config of a LeRobot pi0 config: the network from the two Gemma variants (or from
    `architecture`, a PI0Config dict, for networks LeRobot cannot name), the chunk, padding and
    flow-matching settings from the LeRobot fields of the same names."""
    resolution = doc.get("image_resolution")
    if resolution is not None and (len(resolution) != 2 or resolution[0] != resolution[1]):
        raise CheckpointError(f"{source}: image_resolution {resolution} is not square, as PaliGemma needs")
    if architecture is None:
        variants = (doc.get("paligemma_variant"), doc.get("action_expert_variant"))
        if variants[0] is None:
            raise CheckpointError(f"{source}: no paligemma_variant; LeRobot pi0 configs from before its openpi port "
                                  "(LeRobot < 0.4, other parameter names) are not supported")
        unknown = [v for v in variants if v not in GEMMA_VARIANTS]
        if unknown:
            raise CheckpointError(f"{source}: unknown variant(s) {unknown}; LeRobot defines {list(GEMMA_VARIANTS)}. "
                                  f"A network of another shape needs its transformers PI0Config in {ARCHITECTURE_FILE}")
        # transformers' defaults are pi0_base's network: SigLIP so400m/14, PaliGemma's vocabulary
        d = PI0Config().to_dict()
        d["vlm_config"]["text_config"].update(GEMMA_VARIANTS[variants[0]])
        d["dit_config"].update(GEMMA_VARIANTS[variants[1]])
        d["vlm_config"]["projection_dim"] = GEMMA_VARIANTS[variants[0]]["hidden_size"]
        if resolution is not None:
            d["vlm_config"]["vision_config"]["image_size"] = resolution[0]
    else:
        d = dict(architecture)
    d.update({k: doc[k] for k in _LEROBOT_SHARED_FIELDS if k in doc})
    try:
        config = PI0Config.from_dict(d)
    except (TypeError, ValueError, KeyError) as exc:
        where = source.parent / ARCHITECTURE_FILE if architecture is not None else source
        raise CheckpointError(f"{where}: does not make a valid PI0Config: {exc}") from exc
    if resolution is not None and resolution[0] != config.vlm_config.vision_config.image_size:
        raise CheckpointError(f"{source}: image_resolution {resolution} disagrees with the vision tower's "
                              f"{config.vlm_config.vision_config.image_size} in {ARCHITECTURE_FILE}")
    return config


def _lerobot_features(doc: dict, source: Path) -> tuple[dict[str, tuple[int, int]], int, int]:
    inputs, outputs = doc.get("input_features"), doc.get("output_features")
    if not isinstance(inputs, dict) or not isinstance(outputs, dict):
        raise CheckpointError(f"{source}: missing input_features or output_features")
    cameras = {}
    for key, feature in inputs.items():
        if feature.get("type") != "VISUAL":
            continue
        shape = feature.get("shape") or []
        if not key.startswith(LEROBOT_IMAGES) or len(shape) != 3 or shape[0] != 3:
            raise CheckpointError(f"{source}: image feature {key!r} with shape {shape}: expected "
                                  f"{LEROBOT_IMAGES}<camera> with shape [3, height, width]")
        cameras[key[len(LEROBOT_IMAGES):]] = (int(shape[1]), int(shape[2]))
    if not cameras:
        raise CheckpointError(f"{source}: no {LEROBOT_IMAGES}<camera> input feature; PI0 needs at least one image")
    dims = []
    for features, key, kind in ((inputs, LEROBOT_STATE, "input_features"),
                                (outputs, LEROBOT_ACTION, "output_features")):
        shape = (features.get(key) or {}).get("shape")
        if not shape or len(shape) != 1:
            raise CheckpointError(f"{source}: {kind} has no {key!r} of shape [dim]")
        dims.append(int(shape[0]))
    return cameras, dims[0], dims[1]


def _lerobot_norm_mode(doc: dict, source: Path) -> Mode:
    mapping = doc.get("normalization_mapping", {"STATE": "MEAN_STD", "ACTION": "MEAN_STD"})  # LeRobot's default
    state, action = mapping.get("STATE"), mapping.get("ACTION")
    if state != action or state not in LEROBOT_NORM_MODES:
        raise CheckpointError(f"{source}: normalization_mapping STATE={state!r}, ACTION={action!r}: supported are "
                              f"the same one of {list(LEROBOT_NORM_MODES)} for both")
    return LEROBOT_NORM_MODES[state]


def _lerobot_key_stats(path: Path, prefix: str, dim: int) -> KeyStats:
    """Statistics of one feature from a LeRobot (un)normaliser file; a statistic it lacks is NaN, and
    `_check` refuses NaN in those the normalisation mode uses."""
    tensors = load_file(path)
    values = {}
    for field in _STAT_FIELDS:
        t = tensors.get(f"{prefix}.{field}")
        values[field] = np.full(dim, np.nan, np.float32) if t is None else t.float().numpy().reshape(-1)
        if values[field].shape != (dim,):
            raise CheckpointError(f"{path}: {prefix}.{field} has {values[field].size} values, the config says {dim}")
    return KeyStats(**values)


def _check(path: Path, config: Any, info: PolicyInfo, stats: NormStats) -> None:
    """The ways a folder's parts can disagree, each named, before anything is loaded onto a device."""
    for key, names, max_dim, what in (("state", info.state_names, config.max_state_dim, "max_state_dim"),
                                      ("action", info.action_names, config.max_action_dim, "max_action_dim")):
        if key not in stats.keys:
            raise CheckpointError(f"{path}: the normalisation statistics have no {key!r}")
        if stats[key].dim != len(names):
            raise CheckpointError(f"{path}: {len(names)} {key} names but {key} statistics of "
                                  f"{stats[key].dim} dimensions")
        if len(names) > max_dim:
            raise CheckpointError(f"{path}: {len(names)} {key} dimensions, more than the model's {what}={max_dim}")
        used = ("mean", "std") if info.norm_mode == "mean_std" else ("q01", "q99")
        if not all(np.all(np.isfinite(getattr(stats[key], f))) for f in used):
            raise CheckpointError(f"{path}: {key} statistics {used} must be finite for norm_mode {info.norm_mode!r}")
    if info.chunk_length is not None and not 1 <= info.chunk_length <= config.chunk_size:
        raise CheckpointError(f"{path}: chunk_length {info.chunk_length} outside 1..{config.chunk_size} "
                              "(the model's chunk)")


def _version(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            while block := f.read(1 << 23):
                digest.update(block)
    return digest.hexdigest()[:12]


def _read_json(path: Path, what: str) -> dict:
    try:
        doc = json.loads(_require(path, what).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read {what}: {exc}") from exc
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path}: expected a JSON object ({what})")
    return doc


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing ({what})")
    return path


def _one(folder: Path, pattern: str, what: str) -> Path:
    matches = sorted(folder.glob(pattern))
    if len(matches) != 1:
        found = [m.name for m in matches] or "none"
        raise CheckpointError(f"{folder}: expected one {pattern} ({what}), found {found}")
    return matches[0]


def _tokenizer_dir(path: Path) -> Path:
    for folder in (path, path / TOKENIZER_SUBDIR):
        if (folder / "tokenizer.json").is_file():
            return folder
    raise CheckpointError(f"{path}: missing tokenizer.json (the tokenizer), looked in the folder and in "
                          f"{TOKENIZER_SUBDIR}/")


# ----------------------------------------------------------------------------------------- writing


def save_checkpoint(model: PI0ForConditionalGeneration, tokenizer: Any, stats: NormStats, spec_info: PolicyInfo,
                    out_dir: str | Path, layout: Layout = "hf") -> Path:
    """Write a checkpoint `load_checkpoint` reads back, in either layout. The folder appears complete or
    not at all (written beside it, then renamed), so a server never loads a half-written one; it must
    not exist yet, or be empty."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {list(LAYOUTS)}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not an empty folder; a checkpoint is written to a new one")
    _check(out, model.config, spec_info, stats)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        if layout == "hf":
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            save_stats(stats, tmp / STATS_FILE)
        else:
            _save_lerobot(model, tokenizer, stats, spec_info, tmp)
        policy_doc = spec_info.to_json()
        if layout == "lerobot":  # only what the LeRobot config does not hold, so the two cannot disagree
            policy_doc = {k: policy_doc[k] for k in LEROBOT_POLICY_FIELDS}
        (tmp / POLICY_FILE).write_text(json.dumps(policy_doc, indent=2) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def lerobot_key(name: str) -> str:
    """LeRobot's name of a transformers PI0ForConditionalGeneration parameter: the inverse of the "pi0"
    renames in transformers' conversion_mapping.py (the embedding tables are saved as the lm_heads,
    as LeRobot's hub checkpoints hold them)."""
    for ours, theirs in (("model.vlm.language_model.embed_tokens.", "model.paligemma_with_expert.paligemma.lm_head."),
                         ("model.dit.embed_tokens.", "model.paligemma_with_expert.gemma_expert.lm_head."),
                         ("model.vlm.", "model.paligemma_with_expert.paligemma.model."),
                         ("model.dit.", "model.paligemma_with_expert.gemma_expert.model."),
                         ("embed_action_time.", "model.")):
        if name.startswith(ours):
            return theirs + name[len(ours):]
    return "model." + name  # action_out_proj


def _save_lerobot(model: PI0ForConditionalGeneration, tokenizer: Any, stats: NormStats, info: PolicyInfo,
                  out: Path) -> None:
    config = model.config
    save_file({lerobot_key(k): v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              out / WEIGHTS_FILE, metadata={"format": "pt"})
    image_size = config.vlm_config.vision_config.image_size
    variants = _lerobot_variants(config, image_size, out / CONFIG_FILE)
    if variants == (CUSTOM_VARIANT, CUSTOM_VARIANT):
        (out / ARCHITECTURE_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    mode = {v: k for k, v in LEROBOT_NORM_MODES.items()}[info.norm_mode]
    doc = {"type": "pi0", "n_obs_steps": 1,
           "input_features": {**{f"{LEROBOT_IMAGES}{name}": {"type": "VISUAL", "shape": [3, h, w]}
                                 for name, (h, w) in info.cameras.items()},
                              LEROBOT_STATE: {"type": "STATE", "shape": [len(info.state_names)]}},
           "output_features": {LEROBOT_ACTION: {"type": "ACTION", "shape": [len(info.action_names)]}},
           "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": mode, "ACTION": mode},
           "paligemma_variant": variants[0], "action_expert_variant": variants[1],
           "dtype": "bfloat16" if model.dtype == torch.bfloat16 else "float32",
           "n_action_steps": info.chunk_length or config.chunk_size,
           **{k: getattr(config, k) for k in _LEROBOT_SHARED_FIELDS},
           "image_resolution": [image_size, image_size]}
    (out / CONFIG_FILE).write_text(json.dumps(doc, indent=2) + "\n")
    tokenizer.save_pretrained(out / TOKENIZER_SUBDIR)
    # LeRobot's (un)normaliser state holds every feature's statistics, in both files
    tensors = {f"{prefix}.{field}": torch.from_numpy(np.ascontiguousarray(getattr(stats[key], field)))
               for prefix, key in ((LEROBOT_STATE, "state"), (LEROBOT_ACTION, "action")) for field in _STAT_FIELDS}
    save_file(tensors, out / NORMALIZER_FILE)
    save_file(tensors, out / UNNORMALIZER_FILE)


def _lerobot_variants(config: PI0Config, image_size: int, source: Path) -> tuple[str, str]:
    """The LeRobot variant names that build exactly this network, or CUSTOM_VARIANT twice."""
    shape = _network_shape(config)
    for paligemma in GEMMA_VARIANTS:
        for expert in GEMMA_VARIANTS:
            doc = {"paligemma_variant": paligemma, "action_expert_variant": expert,
                   "image_resolution": [image_size, image_size]}
            if _network_shape(pi0_config_from_lerobot(doc, None, source)) == shape:
                return paligemma, expert
    return CUSTOM_VARIANT, CUSTOM_VARIANT


def _network_shape(config: PI0Config) -> dict:
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "vocab_size", "hidden_act", "image_size", "patch_size", "rms_norm_eps", "layer_norm_eps")
    parts = {"text": config.vlm_config.text_config, "vision": config.vlm_config.vision_config,
             "dit": config.dit_config}
    shape = {name: {k: getattr(c, k) for k in keys if hasattr(c, k)} for name, c in parts.items()}
    shape["vlm"] = {"projection_dim": config.vlm_config.projection_dim,
                    "image_token_id": config.vlm_config.image_token_id}
    return shape
