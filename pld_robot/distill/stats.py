"""Normalisation statistics for distillation: keep the base checkpoint's, or compute new ones.

A fine-tuned model continues to be fine-tuned with the statistics it was trained with: new statistics
would move every input and target under weights that learned the old ones. A new robot (other state
or action names than the base checkpoint's) needs its own. `auto` decides by the names; the choice
and its reason are printed and written to the run's distill.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from pld_robot.data.normalization import NormStats, StdFloor, key_stats
from pld_robot.data.reader import EpisodeReader
from pld_robot.policy.pi0.checkpoint import Pi0Checkpoint


def stats_from_stores(readers: Sequence[EpisodeReader], episodes: Sequence[tuple[int, int]],
                      std_floor: StdFloor) -> NormStats:
    """Exact statistics of state and action over every step of `episodes` ((store, episode) pairs), as
    pld_robot.data.normalization.compute_stats computes them for one store."""
    data: dict[str, list[np.ndarray]] = {"state": [], "action": []}
    for s, reader in enumerate(readers):
        mine = [e for t, e in episodes if t == s]
        if not mine:
            continue
        for key, parts in data.items():
            array = reader.array(key)
            parts.extend(np.asarray(array[slice(*reader.episode_range(e))]) for e in mine)
    schema = readers[0].schema
    names = {"state": schema.state_names, "action": schema.action_names}
    keys = {key: key_stats(np.concatenate(parts), tuple(names[key]), std_floor.of(key)) for key, parts in data.items()}
    count = sum(len(p) for p in data["state"])
    return NormStats(keys=keys, count=count, episodes=len(episodes),
                     store=", ".join(str(r.path) for r in readers))


def choose_stats(choice: str, base: Pi0Checkpoint, readers: Sequence[EpisodeReader],
                 episodes: Sequence[tuple[int, int]], std_floor: StdFloor) -> tuple[NormStats, str]:
    """(statistics, a sentence saying which and why)."""
    schema = readers[0].schema
    same = (tuple(base.info.state_names), tuple(base.info.action_names)) == (schema.state_names, schema.action_names)
    if choice == "base" or (choice == "auto" and same):
        # names may differ when told `base` (a LeRobot checkpoint calls them state_0, action_0, ...);
        # the sizes may not
        dims = (len(base.info.state_names), len(base.info.action_names))
        if dims != (len(schema.state_names), len(schema.action_names)):
            raise ValueError(f"stats: base, but the base checkpoint's statistics are for {dims[0]} state and {dims[1]} "
                             f"action dimensions, the stores have {len(schema.state_names)} and "
                             f"{len(schema.action_names)}")
        base_stats = base.stats
        if not same:  # relabel with the stores' names, which the new checkpoint records
            base_stats = NormStats(keys={**base.stats.keys,
                                         "state": replace(base.stats["state"], names=schema.state_names),
                                         "action": replace(base.stats["action"], names=schema.action_names)},
                                   count=base.stats.count, episodes=base.stats.episodes, store=base.stats.store)
        why = "same state/action names as the base: continuing its fine-tuning" if choice == "auto" else "stats: base"
        return base_stats, f"kept the base checkpoint's normalisation statistics ({why})"
    stats = stats_from_stores(readers, episodes, std_floor)
    why = ("the base checkpoint was trained on other state/action names "
           f"({', '.join(base.info.action_names)}): a new robot") if choice == "auto" else "stats: recompute"
    return stats, (f"recomputed normalisation statistics from {stats.episodes} selected episode(s), "
                   f"{stats.count} steps ({why})")
