"""`pld-robot train-reward STORE... --out DIR`: train the success classifier and say how good it is."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pld_robot.config import ConfigError, from_dict, load_yaml


def add_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train-reward", help="train the success classifier from labelled episodes")
    train.add_argument("stores", nargs="+", metavar="STORE", help="episode store(s) with success labels")
    train.add_argument("--out", required=True, help="checkpoint folder (replaced if it holds one already)")
    train.add_argument("--config", help="training YAML (default: the shipped config/reward/train.yaml)")
    train.add_argument("--cameras", nargs="+", help="cameras to look at, in order (default: the config's)")
    train.add_argument("--steps", type=int, help="optimizer steps")
    train.add_argument("--stage", help="name of the stage this classifier judges")
    train.add_argument("--stage-index", type=int, help="which stage's frames to learn from (multi-stage tasks)")
    train.add_argument("--target-precision", type=float, help="held-out precision the threshold must reach")
    train.add_argument("--pretrained", metavar="HF_FOLDER",
                       help="use the frozen vision tower in this local Hugging Face folder instead of the CNN")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=_train)


def load_training_config(path: str | Path | None, args: argparse.Namespace | None = None):
    from pld_robot.paths import shipped_config
    from pld_robot.reward.train import RewardTrainingConfig

    source = Path(path) if path else shipped_config("reward/train.yaml")
    data = load_yaml(source)
    if args is not None:
        overrides = {("model", "cameras"): args.cameras, ("optim", "steps"): args.steps,
                     ("model", "stage"): args.stage, ("labels", "stage_index"): args.stage_index,
                     ("optim", "target_precision"): args.target_precision}
        if args.pretrained:
            overrides.update({("model", "encoder"): "pretrained", ("model", "pretrained_path"): args.pretrained})
        for (section, key), value in overrides.items():
            if value is not None:
                data.setdefault(section, {})[key] = value
    return from_dict(RewardTrainingConfig, data, where=str(source))


def _train(args: argparse.Namespace) -> int:
    from pld_robot.reward.checkpoint import CONFIG_FILE
    from pld_robot.reward.train import train_reward

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / CONFIG_FILE).is_file())):
        raise ConfigError(f"--out {out}: exists and is not a reward checkpoint folder; choose another")
    config = load_training_config(args.config, args)
    try:
        metrics = train_reward(args.stores, out, config, progress=not args.quiet)
    except (ValueError, KeyError) as exc:
        print(f"pld-robot train-reward: {exc}", file=sys.stderr)
        return 2
    held = metrics["held_out"]
    print(f"held-out: {metrics['episodes']['held_out']} episodes, {metrics['frames']['held_out']} frames "
          f"({metrics['frames']['held_out_positive']} success)")
    print(f"threshold {metrics['threshold']:.3f}: accuracy {held['accuracy']:.3f}, precision {held['precision']:.3f}, "
          f"recall {held['recall']:.3f} (target precision {metrics['target_precision']:g}"
          f"{'' if metrics['target_precision_reached'] else ', NOT reached'})")
    print(f"average precision {metrics['average_precision']:.3f}; checkpoint {out} (version {metrics['version']}): "
          f"metrics.json, pr_curve.png, misclassified.png")
    return 0
