"""Which PI0 parameters train: LoRA through peft, or everything; and the merge before saving.

    model = prepare_model(model, config)          # a peft model (lora) or the model itself (full)
    plain = merged_model(model)                   # PI0ForConditionalGeneration with LoRA folded in

LoRA goes on the attention and MLP projections of the VLM's Gemma and of the action expert (and of the
SigLIP tower with lora.vision: lora); the state, action and time projections around the expert and
the action head train in full (peft's modules_to_save), as in openpi's pi0 LoRA recipe. merge_and_unload
gives back a PI0ForConditionalGeneration with the original parameter names, which save_checkpoint
writes and the policy server loads like any other.
"""

from __future__ import annotations

import logging
import re
import warnings

import torch
from transformers import PI0ForConditionalGeneration

from pld_robot.distill.config import DistillConfig

log = logging.getLogger(__name__)

GEMMA_TARGETS = r"model\.(vlm\.language_model|dit)\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"
VISION_TARGETS = r"model\.vlm\.vision_tower\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])"
# trained in full in LoRA mode: small, and specific to the robot's state and action layout
FULL_MODULES = ["action_in_proj", "state_proj", "action_time_mlp_in", "action_time_mlp_out", "action_out_proj"]


def unused_modules(model: PI0ForConditionalGeneration) -> tuple[str, ...]:
    """Module names whose parameters never reach PI0's loss, so they get no gradient (and DDP, which
    expects a gradient for every trainable parameter, would stop): the action expert's token embedding
    (it is fed embeddings) and, since the expert reads only the keys and values of each VLM layer, the
    query, output projection and MLP of the VLM's last layer and the norms after them."""
    last = f"model.vlm.language_model.layers.{model.config.vlm_config.text_config.num_hidden_layers - 1}"
    return ("model.dit.embed_tokens", f"{last}.self_attn.q_proj", f"{last}.self_attn.o_proj", f"{last}.mlp",
            f"{last}.post_attention_layernorm", "model.vlm.language_model.norm")


def _is_in(name: str, modules: tuple[str, ...]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def prepare_model(model: PI0ForConditionalGeneration, config: DistillConfig) -> torch.nn.Module:
    """The model with exactly the parameters that should train set to requires_grad."""
    vision = model.model.vlm.vision_tower
    unused = unused_modules(model)
    if config.finetune == "full":
        for name, param in model.named_parameters():
            param.requires_grad_(not _is_in(name, unused))
        trains_vision = True
        wrapped: torch.nn.Module = model
    else:
        from peft import LoraConfig, get_peft_model

        pattern = re.compile(GEMMA_TARGETS if config.lora.vision != "lora" else f"({GEMMA_TARGETS})|({VISION_TARGETS})")
        targets = [name for name, _ in model.named_modules() if pattern.fullmatch(name) and not _is_in(name, unused)]
        peft_config = LoraConfig(r=config.lora.rank, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                                 target_modules=targets, modules_to_save=list(FULL_MODULES), bias="none")
        with warnings.catch_warnings():  # peft asks the deprecated is_gradient_checkpointing of transformers 5
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            wrapped = get_peft_model(model, peft_config)
        if config.lora.vision == "full":
            for param in vision.parameters():
                param.requires_grad_(True)
        trains_vision = config.lora.vision != "frozen"
    if trains_vision and config.gradient_checkpointing:
        # only the tower: PI0's VLM runs with use_cache=True (the expert reads its key/value cache), which
        # transformers' gradient checkpointing of a decoder turns off; non-reentrant, so that frozen
        # inputs (pixel values) still give gradients to the LoRA weights inside
        vision.activation_checkpointing_enable({"use_reentrant": False})
    return wrapped


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def merged_model(model: torch.nn.Module) -> PI0ForConditionalGeneration:
    """The plain PI0 of a prepared model: LoRA merged into the weights (peft's merge_and_unload,
    which changes `model` in place: call it once training is over)."""
    if isinstance(model, PI0ForConditionalGeneration):
        plain = model
    else:
        plain = model.merge_and_unload(progressbar=False, safe_merge=True)
    vision = plain.model.vlm.vision_tower
    if vision.is_activation_checkpointing:
        vision.activation_checkpointing_disable()
    return plain
