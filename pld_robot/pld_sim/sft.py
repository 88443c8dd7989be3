"""The generalist's network, and SFT runs through the distill trainer (the one `pld-robot distill` runs).

    reader = EpisodeReader(demos_store)
    stats = compute_stats(reader, reader.select(outcome="success"), std_floor=config.generalist.std_floor)
    init = build_initial_pi0(out / "init", schema, config.generalist, stats, seed=config.seed)
    summary = run_sft([demos_store], init, out / "generalist", config.generalist.sft, stats="base", seed=0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PI0Config, PI0ForConditionalGeneration

from pld_robot.data.layout import StoreSchema
from pld_robot.data.normalization import NormStats
from pld_robot.distill.config import load_distill_config
from pld_robot.distill.trainer import Distiller
from pld_robot.paths import shipped_config
from pld_robot.pld_sim.config import GeneralistConfig, SFTConfig
from pld_robot.pld_sim.episodes import BLANK_SIZE, PROMPT
from pld_robot.policy.pi0.checkpoint import PolicyInfo, save_checkpoint
from pld_robot.policy.pi0.tiny import build_tiny_tokenizer

HEAD_DIM = 16
PATCH = 16  # the blank image is 2 x 2 patches: 4 image tokens


def generalist_pi0_config(vocab_size: int, image_token_id: int, schema: StoreSchema,
                          config: GeneralistConfig) -> PI0Config:
    """PI0's architecture at `config.width`: the VLM's Gemma and the action expert the same width and
    depth (the expert reads the VLM's keys and values layer by layer), a minimal SigLIP for the blank
    image, state and action padded only to the next multiple of 8."""
    gemma = {"model_type": "gemma", "num_hidden_layers": config.layers,
             "num_attention_heads": config.width // HEAD_DIM, "num_key_value_heads": 1, "head_dim": HEAD_DIM,
             "hidden_size": config.width, "intermediate_size": 2 * config.width}
    return PI0Config(
        vlm_config={"text_config": {**gemma, "vocab_size": vocab_size},
                    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 16, "intermediate_size": 32,
                                      "patch_size": PATCH, "image_size": BLANK_SIZE, "num_hidden_layers": 1,
                                      "num_attention_heads": 2, "vocab_size": vocab_size, "vision_use_head": False},
                    "projection_dim": config.width, "image_token_id": image_token_id},
        dit_config=gemma, chunk_size=config.chunk_size,
        max_state_dim=-(-len(schema.state_names) // 8) * 8, max_action_dim=-(-len(schema.action_names) // 8) * 8,
        num_inference_steps=config.num_inference_steps)


def build_initial_pi0(out: Path, schema: StoreSchema, config: GeneralistConfig, stats: NormStats, *,
                      seed: int) -> Path:
    """A freshly initialised generalist network (transformers' init, from `seed`) with the statistics
    it will be trained with."""
    tokenizer = build_tiny_tokenizer()
    with torch.random.fork_rng():  # the init draws from torch's global generator; leave it as it was
        torch.manual_seed(seed)
        model = PI0ForConditionalGeneration(
            generalist_pi0_config(len(tokenizer), tokenizer.convert_tokens_to_ids("<image>"), schema, config)).eval()
    info = PolicyInfo(cameras={c: (s.height, s.width) for c, s in schema.cameras.items()},
                      state_names=schema.state_names, action_names=schema.action_names,
                      control_hz=schema.control_hz, prompt=PROMPT, chunk_length=config.chunk_size)
    return save_checkpoint(model, tokenizer, stats, info, out)


def run_sft(stores: Sequence[Path], base: Path, out: Path, sft: SFTConfig, *, stats: str, seed: int,
            max_episodes: int | None = None, progress: bool = True) -> dict:
    """SFT of `base` on the successful episodes of `stores` (the last `max_episodes` of each, None: all)
    into the checkpoint `out`, on the CPU. Continues a run stopped midway (its run folder OUT.run
    holds the training state)."""
    shipped = load_distill_config(shipped_config("distill/pi0.yaml"))
    config = dataclasses.replace(
        shipped, selection=dataclasses.replace(shipped.selection, outcomes=["success"], max_episodes=max_episodes),
        finetune=sft.finetune, steps=sft.steps,
        batch_size=sft.batch_size, lr=sft.lr, min_lr=sft.lr / 10, warmup_steps=sft.warmup_steps, stats=stats,
        device="cpu", num_workers=0, save_every=max(1, sft.steps // 4), log_every=max(1, sft.steps // 50), seed=seed)
    run_dir = out.parent / f"{out.name}.run"
    resume = (run_dir / "train_state.pt").is_file()
    distiller = Distiller([str(s) for s in stores], base, out, config, run_dir=run_dir, resume=resume,
                          progress=progress)
    summary = distiller.run()
    if not summary["done"]:
        raise RuntimeError(f"SFT into {out} stopped at step {summary['step']} of {sft.steps}")
    return {"steps": summary["step"], "first_loss": summary["first_loss"], "last_loss": summary["last_loss"],
            "episodes": len(distiller.selection.episodes), "samples": distiller.selection.num_samples}
