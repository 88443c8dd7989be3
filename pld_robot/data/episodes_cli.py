"""`pld-robot episodes info|validate|repair|export|view STORE`."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from pld_robot.data.layout import Source, open_root
from pld_robot.data.reader import EpisodeReader
from pld_robot.data.repair import repair, uncommitted_tail
from pld_robot.data.validate import validate


def add_parser(sub: argparse._SubParsersAction) -> None:
    episodes = sub.add_parser("episodes", help="inspect, check, repair and look at an episode store")
    actions = episodes.add_subparsers(dest="action", required=True)

    info = actions.add_parser("info", help="what the store holds")
    info.add_argument("store")
    info.add_argument("--list", action="store_true", help="one line per episode")
    info.set_defaults(func=_info)

    check = actions.add_parser("validate", help="name every problem; exit status 1 if there is one")
    check.add_argument("store")
    check.add_argument("--deep", action="store_true", help="also decode every committed chunk (reads it all)")
    check.set_defaults(func=_validate)

    fix = actions.add_parser("repair", help="remove an uncommitted tail and interrupted writes")
    fix.add_argument("store")
    fix.add_argument("--keep-tail", action="store_true",
                     help="keep what reached the disk of an interrupted episode, as an aborted episode")
    fix.set_defaults(func=_repair)

    export = actions.add_parser("export", help="episodes as .npz arrays + .json metadata")
    export.add_argument("store")
    export.add_argument("episodes", nargs="+", type=int, help="episode indices (-1: the last)")
    export.add_argument("--out", default="episodes_export", help="output directory (default ./episodes_export)")
    export.set_defaults(func=_export)

    view = actions.add_parser("view", help="an MP4 and a PNG contact sheet of episodes, actions plotted under")
    view.add_argument("store")
    view.add_argument("episodes", nargs="+", type=int, help="episode indices (-1: the last)")
    view.add_argument("--out", default="episodes_view", help="output directory (default ./episodes_view)")
    view.add_argument("--every", type=int, help="contact sheet: one frame every N steps (default: ~10 frames)")
    view.set_defaults(func=_view)

    stats = actions.add_parser("stats", help="normalization statistics of state and action, saved beside the store")
    stats.add_argument("store")
    stats.add_argument("--outcome", nargs="+", default=["success"],
                       help="episodes with these outcomes (default: success)")
    stats.add_argument("--out", help="output JSON (default: <store>.norm_stats.json beside the store)")
    stats.set_defaults(func=_stats)


def _info(args: argparse.Namespace) -> int:
    reader = EpisodeReader(args.store)
    schema = reader.schema
    cameras = ", ".join(f"{n} {c.width}x{c.height} rgb{'+depth' if c.depth else ''}"
                        for n, c in schema.cameras.items())
    steps = reader.num_steps
    print(f"store:    {reader.path}  (task {reader.task!r})")
    print(f"cameras:  {cameras or 'none'}")
    print(f"state:    {len(schema.state_names)} ({', '.join(schema.state_names)})")
    print(f"action:   {len(schema.action_names)} ({', '.join(schema.action_names)}) at {schema.control_hz:g} Hz")
    print(f"episodes: {reader.num_episodes} committed, {steps} steps "
          f"({steps / schema.control_hz / 60:.1f} min), {_disk_mb(reader.path):.1f} MB on disk")
    if reader.num_episodes:
        outcomes = Counter(reader.info(i).outcome for i in range(reader.num_episodes))
        print("outcomes: " + ", ".join(f"{o} {n}" for o, n in outcomes.most_common()))
        counts = np.bincount(reader.array("source")[:steps], minlength=len(Source))
        print("sources:  " + ", ".join(f"{s.name.lower()} {100 * counts[s] / steps:.0f}%" for s in Source)
              + " of steps")
    tail = uncommitted_tail(open_root(reader.path))
    print(f"tail:     {tail.describe() + ' (see `episodes repair`)' if tail else 'none'}")
    if args.list:
        print(f"\n{'#':>5} {'outcome':8} {'steps':>6} {'secs':>6} {'mode':8} {'dropped':>7}  prompt / note")
        for i in range(reader.num_episodes):
            info = reader.info(i)
            note = f"  -- {info.operator_note}" if info.operator_note else ""
            print(f"{i:5d} {info.outcome:8} {info.length:6d} {info.duration_s:6.1f} {info.mode:8} "
                  f"{info.dropped_frames:7d}  {info.prompt}{note}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    problems = validate(args.store, deep=args.deep)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in {args.store}")
        return 1
    reader = EpisodeReader(args.store)
    print(f"OK: {args.store}: {reader.num_episodes} episodes, {reader.num_steps} steps, no problems"
          f"{' (every chunk decoded)' if args.deep else ''}")
    return 0


def _repair(args: argparse.Namespace) -> int:
    report = repair(args.store, keep_tail=args.keep_tail)
    for action in report.actions:
        print(action)
    if not report.actions:
        print(f"{args.store}: nothing to repair")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pld_robot.data.review import export_episode

    for episode in args.episodes:
        print(export_episode(args.store, episode, Path(args.out)))
    return 0


def _view(args: argparse.Namespace) -> int:
    from pld_robot.data.review import view_episode

    for episode in args.episodes:
        for path in view_episode(args.store, episode, Path(args.out), every=args.every):
            print(path)
    return 0


def _stats(args: argparse.Namespace) -> int:
    from pld_robot.data.normalization import compute_stats, default_stats_path, save_stats

    reader = EpisodeReader(args.store)
    episodes = reader.select(outcome=args.outcome)
    if not episodes:
        print(f"pld-robot: no {'/'.join(args.outcome)} episodes in {args.store} to compute statistics from")
        return 1
    stats = compute_stats(reader, episodes)
    path = save_stats(stats, args.out or default_stats_path(args.store))
    for key, s in stats.keys.items():
        print(f"{key}: mean {np.array2string(s.mean, precision=3)}  std {np.array2string(s.std, precision=3)}")
    print(f"{path}: {len(episodes)} episode(s), {stats.count} steps")
    return 0


def _disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
