"""The distillation run: SFT of a PI0 checkpoint on selected episodes, written as a checkpoint the policy
server loads as is.

    run = Distiller(["pick.zarr"], base="ckpt/pi0_base", out="ckpt/pi0_pick", config=DistillConfig())
    summary = run.run(stop_event)            # until config.steps, or until stop_event is set

The run folder (default: OUT.run beside OUT) holds what training needs and what a person reads:

    train_state.pt    the trainable parameters (LoRA and the fully trained modules, or all of them),
                      optimizer, scheduler and step; every config.save_every steps and on a stop;
                      `--resume` continues from it with exactly the batches an uninterrupted run sees
    metrics.csv       step, epoch, loss, lr, grad_norm, samples_per_s, elapsed_s
    loss.png          the loss and learning-rate curves
    distill.json      base, stores, selected episodes, which normalisation statistics and why, config

OUT is written once, when the last step is done: LoRA merged into the weights (peft's
merge_and_unload), the base's tokenizer, the statistics and pld_policy.json (cameras, names and rate of
the stores), through save_checkpoint (atomic: a server never loads a half-written folder).

Several processes: `torchrun --nproc_per_node=N -m pld_robot.cli distill ...` sets WORLD_SIZE, RANK and
LOCAL_RANK; each process then trains on its slice of every global batch under DistributedDataParallel
(nccl on CUDA, gloo on the CPU), and only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

from pld_robot.config import ConfigError
from pld_robot.data.reader import EpisodeReader
from pld_robot.data.sft_dataset import SFTDataset
from pld_robot.distill.config import DistillConfig
from pld_robot.distill.data import Pi0Collate, StepBatchSampler, make_loader
from pld_robot.distill.lora import merged_model, prepare_model, trainable_parameters
from pld_robot.distill.loss import flow_matching_loss
from pld_robot.distill.metrics import MetricsLog, Progress
from pld_robot.distill.select import select_episodes
from pld_robot.distill.stats import choose_stats
from pld_robot.policy.pi0.checkpoint import PolicyInfo, load_checkpoint, save_checkpoint
from pld_robot.policy.pi0.preprocess import Pi0Layout

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
INFO_FILE = "distill.json"


@dataclasses.dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environ(cls) -> DistEnv:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(rank=int(os.environ.get("RANK", "0")), world=world,
                   local_rank=int(os.environ.get("LOCAL_RANK", "0"))) if world > 1 else cls()


def default_run_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.parent / f"{out.name}.run"


def lr_factor(step: int, config: DistillConfig) -> float:
    """Linear warmup to lr over warmup_steps, then cosine decay to min_lr at `steps` (openpi's schedule)."""
    if step < config.warmup_steps:
        return (step + 1) / (config.warmup_steps + 1)
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.min_lr / config.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class Distiller:
    def __init__(self, stores: Sequence[str | Path], base: str | Path, out: str | Path,
                 config: DistillConfig | None = None, *, run_dir: str | Path | None = None,
                 resume: bool = False, progress: bool = False, env: DistEnv | None = None):
        if not stores:
            raise ValueError("distill needs at least one episode store")
        config = config or DistillConfig()
        self.config, self.env = config, env or DistEnv.from_environ()
        self.stores = [Path(s) for s in stores]
        self.out = Path(out)
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(self.out)
        self.progress_enabled = progress and self.env.main
        self._check_folders(resume)
        self.device = self._device()
        if self.env.world > 1 and not dist.is_initialized():  # torchrun's env:// rendezvous
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
        self.base = load_checkpoint(base)

        # data: selection, statistics, the dataset
        readers = [EpisodeReader(p) for p in self.stores]
        schema = readers[0].schema
        rates = {r.schema.control_hz for r in readers}
        if len(rates) > 1:
            raise ValueError(f"the stores were recorded at different control rates {sorted(rates)} Hz")
        self.selection = select_episodes(readers, config.selection)
        self.stats, self.stats_note = choose_stats(config.stats, self.base, readers, self.selection.episodes,
                                                   config.std_floor)
        self.norm_mode = config.norm_mode or self.base.info.norm_mode
        cameras = self._cameras(schema)
        model_config = self.base.config
        for what, n, limit in (("state", len(schema.state_names), model_config.max_state_dim),
                               ("action", len(schema.action_names), model_config.max_action_dim)):
            if n > limit:
                raise ValueError(f"the stores' {n} {what} dimensions are more than the model's max_{what}_dim {limit}")
        self.action_dim = len(schema.action_names)
        self.dataset = SFTDataset(self.stores, horizon=model_config.chunk_size, outcomes=None, sources=None,
                                  cameras=cameras, stats=self.stats, norm_mode=self.norm_mode)
        self.indices = self.selection.sample_indices(self.dataset)
        prompts = Counter(readers[s].info(e).prompt for s, e in self.selection.episodes)
        prompt = self.base.info.prompt or next((p for p, _ in prompts.most_common() if p), "")
        self.info = PolicyInfo(cameras={c: (schema.cameras[c].height, schema.cameras[c].width) for c in cameras},
                               state_names=schema.state_names, action_names=schema.action_names,
                               control_hz=schema.control_hz, prompt=prompt, chunk_length=self.base.info.chunk_length,
                               norm_mode=self.norm_mode)

        # model
        torch.manual_seed(config.seed)
        self.tokenizer = self.base.load_tokenizer()
        base_model = self.base.load_model(self.device, torch.float32)
        self.layout = Pi0Layout.from_config(base_model.config)
        self.model_config = base_model.config
        self.model = prepare_model(base_model, config)
        self.model.train()
        self.trainable = trainable_parameters(self.model)
        self.ddp = None
        if self.env.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = torch.optim.AdamW(self.trainable.values(), lr=config.lr, betas=tuple(config.betas),
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, config))
        self.step = 0
        if resume:
            self._load_state()
        self.metrics = MetricsLog(self.run_dir) if self.env.main else None
        if self.metrics is not None:
            self.metrics.truncate(self.step)
        self.collate = Pi0Collate(cameras, self.tokenizer, self.layout, prompt)
        self.sampler = StepBatchSampler(len(self.indices), config.batch_size, rank=self.env.rank, world=self.env.world,
                                        seed=config.seed, start_step=self.step, steps=config.steps)
        self._barrier()  # every rank has checked the folders before rank 0 writes into them
        if self.env.main:
            self._write_info()

    # ------------------------------------------------------------------------------------- setup

    def _check_folders(self, resume: bool) -> None:
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise ConfigError(f"--out {self.out}: exists and is not empty; the distilled checkpoint is written to "
                              "a new folder")
        has_state = (self.run_dir / STATE_FILE).is_file()
        if resume and not has_state:
            raise ConfigError(f"--resume: no {self.run_dir / STATE_FILE} to resume from")
        if not resume and self.run_dir.exists() and any(self.run_dir.iterdir()):
            what = f"holds a distill run ({STATE_FILE}); pass --resume to continue it" if has_state else \
                "exists and is not empty"
            raise ConfigError(f"run folder {self.run_dir}: {what}, or choose another --out / --run-dir")

    def _device(self) -> torch.device:
        wanted = self.config.device
        if wanted == "auto":
            wanted = "cuda" if torch.cuda.is_available() else "cpu"
        if wanted.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ConfigError(f"device {wanted}: this machine has no CUDA device (torch {torch.__version__})")
            if self.env.world > 1:
                wanted = f"cuda:{self.env.local_rank}"
        device = torch.device(wanted)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return device

    def _cameras(self, schema) -> list[str]:
        if self.config.cameras is not None:
            cameras = list(self.config.cameras)
        else:
            base = list(self.base.info.cameras)
            cameras = base if all(c in schema.cameras for c in base) else list(schema.cameras)
        missing = [c for c in cameras if c not in schema.cameras]
        if missing:
            raise ValueError(f"camera(s) {missing} are not in the stores, which have {sorted(schema.cameras)}")
        return cameras

    # ---------------------------------------------------------------------------------- training

    def run(self, stop: threading.Event | None = None) -> dict:
        stop = stop or threading.Event()
        config = self.config
        loader = make_loader(self.dataset, self.indices, self.collate, self.sampler, config.num_workers,
                             pin_memory=self.device.type == "cuda")
        progress = Progress(self.progress_enabled, config.steps, self.step)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" and config.bf16 \
            else nullcontext()
        generator = torch.Generator()
        forward = self.ddp if self.ddp is not None else self.model
        losses, norms = [], []
        started, window_start, window_step = time.monotonic(), time.monotonic(), self.step
        stopped = False
        try:
            for batch in loader:
                if self._should_stop(stop):
                    stopped = True
                    break
                # noise and flow time from (seed, step, rank): a resumed run draws what an unbroken one would
                generator.manual_seed(config.seed * 1_000_003 + self.step * 1_009 + self.env.rank)
                inputs = {k: v.to(self.device, non_blocking=True) for k, v in batch["inputs"].items()}
                with autocast:
                    loss = flow_matching_loss(forward, inputs, batch["action_is_pad"], self.action_dim,
                                              self.model_config, generator)
                if not torch.isfinite(loss):
                    raise RuntimeError(f"step {self.step}: the loss is {loss.item()}; lower lr "
                                       f"({config.lr}) or check the data")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(self.trainable.values(), config.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                losses.append(loss.detach())
                norms.append(norm.detach())
                if self.step % config.log_every == 0 or self.step == config.steps:
                    row = self._row(losses, norms, window_start, window_step, started)
                    losses, norms = [], []
                    window_start, window_step = time.monotonic(), self.step
                    progress.show(self.step, row["loss"], row["lr"])
                else:
                    progress.show(self.step, math.nan, 0.0)
                if self.step % config.save_every == 0 and self.step < config.steps:
                    self._save_state()
        finally:
            progress.close()
        if losses:
            self._row(losses, norms, window_start, window_step, started)
        self._save_state()  # and the plot
        done = self.step >= config.steps and not stopped
        if done and self.env.main:
            self._export()
        self._barrier()
        return self.summary(done)

    def _should_stop(self, stop: threading.Event) -> bool:
        flag = torch.tensor([1.0 if stop.is_set() else 0.0], device=self._comm_device())
        if self.env.world > 1:  # every rank must leave at the same step, or the next collective hangs
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def _row(self, losses, norms, window_start, window_step, started) -> dict:
        loss = torch.stack(losses).float().mean().to(self._comm_device())
        if self.env.world > 1:
            dist.all_reduce(loss)
            loss /= self.env.world
        elapsed = time.monotonic() - window_start
        row = {"step": self.step, "epoch": self.sampler.epoch(self.step), "loss": loss.item(),
               "lr": self.scheduler.get_last_lr()[0], "grad_norm": torch.stack(norms).float().mean().item(),
               "samples_per_s": (self.step - window_step) * self.config.batch_size * self.env.world / max(elapsed, 1e-9),
               "elapsed_s": time.monotonic() - started}
        if self.metrics is not None:
            self.metrics.append(row)
        return row

    # ------------------------------------------------------------------------------ saving, resume

    def _state_dict(self) -> dict:
        return {"step": self.step, "trainable": {k: v.detach().cpu() for k, v in self.trainable.items()},
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "base": str(self.base.path), "base_version": self.base.version,
                "stores": [str(s) for s in self.stores], "finetune": self.config.finetune,
                "config": dataclasses.asdict(self.config), "world": self.env.world}

    def _save_state(self) -> None:
        if self.env.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.run_dir / f".{STATE_FILE}.tmp"
            torch.save(self._state_dict(), tmp)
            os.replace(tmp, self.run_dir / STATE_FILE)
            if self.metrics is not None:
                self.metrics.plot()
        self._barrier()

    def _load_state(self) -> None:
        path = self.run_dir / STATE_FILE
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["base_version"] != self.base.version:
            raise ConfigError(f"{path}: saved from base {state['base']} (version {state['base_version']}), "
                              f"not {self.base.path} (version {self.base.version})")
        if state["finetune"] != self.config.finetune or sorted(state["trainable"]) != sorted(self.trainable):
            raise ConfigError(f"{path}: its trainable parameters ({state['finetune']}) are not this config's "
                              f"({self.config.finetune}); resume with the config the run started with")
        with torch.no_grad():
            for name, value in state["trainable"].items():
                self.trainable[name].copy_(value.to(self.trainable[name].device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        if self.env.main:
            log.info("resumed %s at step %d", path, self.step)

    def _export(self) -> None:
        plain = merged_model(self.model).eval()
        save_checkpoint(plain, self.tokenizer, self.stats, self.info, self.out)

    def _write_info(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        doc = {"base": str(self.base.path), "base_version": self.base.version, "out": str(self.out),
               "stores": [str(s) for s in self.stores],
               "episodes": {str(s): self.selection.per_store(i) for i, s in enumerate(self.stores)},
               "selection": self.selection.describe(), "samples": len(self.indices),
               "stats": self.stats_note, "norm_mode": self.norm_mode, "cameras": list(self.info.cameras),
               "trainable_parameters": sum(p.numel() for p in self.trainable.values()),
               "world_size": self.env.world, "config": dataclasses.asdict(self.config)}
        (self.run_dir / INFO_FILE).write_text(json.dumps(doc, indent=2) + "\n")

    def _barrier(self) -> None:
        if self.env.world > 1:
            dist.barrier()

    def summary(self, done: bool = False) -> dict:
        rows = self.metrics.rows if self.metrics is not None else []
        return {"step": self.step, "steps": self.config.steps, "done": done,
                "first_loss": rows[0]["loss"] if rows else math.nan, "last_loss": rows[-1]["loss"] if rows else math.nan,
                "out": str(self.out) if done else None, "run_dir": str(self.run_dir)}


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
