"""`pld-robot distill STORE... --base CKPT --out CKPT`: SFT of a PI0 checkpoint on curated episodes.

One process on one CPU or GPU, or several under torchrun (DDP) with the same arguments:

    pld-robot distill pick.zarr --base ckpt/pi0_base --out ckpt/pi0_pick
    torchrun --nproc_per_node=4 -m pld_robot.cli distill pick.zarr --base ckpt/pi0_base --out ckpt/pi0_pick
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from pld_robot.config import ConfigError
from pld_robot.stop_signals import stop_requested


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="fine-tune (SFT) a PI0 checkpoint on the successful episodes of stores")
    p.add_argument("stores", nargs="+", metavar="STORE", help="episode store(s) to train on")
    p.add_argument("--base", required=True, help="PI0 checkpoint folder to start from (Hugging Face or LeRobot layout)")
    p.add_argument("--out", required=True,
                   help="new checkpoint folder, written when training ends; `pld-robot serve-policy --backend pi0 "
                        "--checkpoint OUT` serves it")
    p.add_argument("--run-dir", help="training state, metrics.csv, loss.png, distill.json (default: OUT.run)")
    p.add_argument("--config", help="distill YAML (default: the shipped config/distill/pi0.yaml)")
    p.add_argument("--steps", type=int, help="optimizer steps in all (a resumed run counts on)")
    p.add_argument("--batch-size", type=int, help="samples per process and step")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--warmup-steps", type=int, help="steps of linear warmup before the cosine decay")
    p.add_argument("--finetune", choices=["lora", "full"], help="LoRA (default) or full fine-tuning")
    p.add_argument("--lora-rank", type=int, help="LoRA rank (default 32)")
    p.add_argument("--stats", choices=["auto", "base", "recompute"],
                   help="normalisation statistics: the base's, recomputed, or auto (the base's when its state/action "
                        "names are the stores')")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (under torchrun: each rank's cuda:LOCAL_RANK)")
    p.add_argument("--num-workers", type=int, help="DataLoader worker processes per training process")
    p.add_argument("--resume", action="store_true", help="continue the run saved in the run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_distill)


def _config(args: argparse.Namespace):
    from pld_robot.distill.config import load_distill_config
    from pld_robot.paths import shipped_config

    config = load_distill_config(args.config or shipped_config("distill/pi0.yaml"))
    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr),
                                   ("warmup_steps", args.warmup_steps),
                                   ("finetune", args.finetune), ("stats", args.stats), ("device", args.device),
                                   ("num_workers", args.num_workers)) if v is not None}
    if args.lr is not None and config.min_lr > args.lr:
        overrides["min_lr"] = args.lr * config.min_lr / config.lr
    try:
        if args.lora_rank is not None:
            overrides["lora"] = dataclasses.replace(config.lora, rank=args.lora_rank)
        return dataclasses.replace(config, **overrides)
    except ValueError as exc:
        raise ConfigError(f"command line: {exc}") from exc


def _distill(args: argparse.Namespace) -> int:
    from pld_robot.distill.trainer import DistEnv, Distiller, shutdown_distributed
    from pld_robot.policy.pi0.checkpoint import CheckpointError

    config = _config(args)
    env = DistEnv.from_environ()
    say = print if env.main else (lambda *a, **k: None)
    try:
        with stop_requested() as stop:
            distiller = Distiller(args.stores, args.base, args.out, config, run_dir=args.run_dir,
                                  resume=args.resume, progress=not args.quiet, env=env)
            say(f"pld-robot distill: {distiller.selection.describe()}", flush=True)
            say(f"  {distiller.stats_note}", flush=True)
            n = sum(p.numel() for p in distiller.trainable.values())
            say(f"  {config.finetune} fine-tuning of {args.base}: {n:,} trainable parameters; "
                f"{config.steps} steps of {config.batch_size} x {env.world} process(es) on {distiller.device}, "
                f"from step {distiller.step}; run folder {distiller.run_dir}; Ctrl-C saves and stops", flush=True)
            summary = distiller.run(stop)
    except (CheckpointError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        print(f"pld-robot distill: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    if summary["done"]:
        say(f"step {summary['step']}: loss {summary['first_loss']:.4g} (first row) -> {summary['last_loss']:.4g} "
            f"(last); checkpoint {summary['out']} (LoRA merged; serve it with `pld-robot serve-policy --backend pi0 "
            f"--checkpoint {summary['out']}`); curves in {summary['run_dir']}/loss.png")
        return 0
    say(f"stopped at step {summary['step']} of {summary['steps']}; training state saved in {summary['run_dir']}: "
        f"continue with --resume (the checkpoint is written when the last step is done)")
    return 130
