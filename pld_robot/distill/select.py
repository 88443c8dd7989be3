"""Episode selection for distillation: which episodes of which stores, and which of their steps, are
SFT samples.

    selection = select_episodes(readers, config.selection)
    indices = selection.sample_indices(dataset)      # SFTDataset(stores, outcomes=None, sources=None)
    print(selection.describe())

Episodes are chosen by outcome (success by default), by the PLD stage they were recorded in
(EpisodeInfo.mode) and by the sources of their steps. Human takeovers (source human) are kept by
default: the store records the executed action, so a takeover's steps teach the recovery the person
made. `drop_steps` keeps such an episode but starts no sample on a human step (a sample that starts
before a takeover still has the human's actions later in its chunk: the chunk is what was executed);
`drop_episodes` leaves out every episode with a human step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pld_robot.data.layout import Source
from pld_robot.data.reader import EpisodeReader
from pld_robot.distill.config import SelectionConfig

MODES = ("base", "residual", "hybrid", "teleop")


@dataclass(frozen=True)
class Selection:
    # (store, episode) -> bool mask over the episode's steps: True where a sample may start
    steps: dict[tuple[int, int], np.ndarray]
    considered: int  # episodes in the stores
    dropped: Counter  # reason -> episodes left out

    @property
    def episodes(self) -> list[tuple[int, int]]:
        return sorted(self.steps)

    @property
    def num_samples(self) -> int:
        return int(sum(m.sum() for m in self.steps.values()))

    def per_store(self, store: int) -> list[int]:
        return [e for s, e in self.episodes if s == store]

    def sample_indices(self, dataset) -> np.ndarray:
        """Indices into an SFTDataset built over the same stores with no filters (outcomes=None,
        sources=None): the samples of the selected episodes and steps, in dataset order."""
        lengths = dataset.episodes[:, 3] - dataset.episodes[:, 2]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        out = []
        for row, (store, episode, _, _) in enumerate(dataset.episodes):
            mask = self.steps.get((int(store), int(episode)))
            if mask is not None:
                out.append(offsets[row] + np.flatnonzero(mask))
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def describe(self) -> str:
        dropped = ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items())) or "none"
        return (f"{len(self.steps)} of {self.considered} episode(s) selected, {self.num_samples} samples; "
                f"left out: {dropped}")


def select_episodes(readers: Sequence[EpisodeReader], config: SelectionConfig) -> Selection:
    """Apply `config` to every committed episode of `readers`. Raises ValueError naming the filters and
    what the stores hold when nothing is selected."""
    if config.modes is not None and set(config.modes) - set(MODES):
        raise ValueError(f"unknown mode(s) {sorted(set(config.modes) - set(MODES))}; valid: {list(MODES)}")
    human = Source.HUMAN.value
    steps: dict[tuple[int, int], np.ndarray] = {}
    dropped: Counter = Counter()
    considered = 0
    outcomes_seen: Counter = Counter()
    for s, reader in enumerate(readers):
        considered += reader.num_episodes
        outcomes_seen.update(reader.info(e).outcome for e in range(reader.num_episodes))
        # the filters EpisodeReader.select applies (outcome, source), each counted on its own
        by_outcome = set(reader.select(outcome=config.outcomes))
        by_source = set(reader.select(source=config.sources)) if config.sources is not None else None
        source = np.asarray(reader.array("source")[: reader.num_steps]) if reader.num_episodes else None
        chosen = []
        for e in range(reader.num_episodes):
            info = reader.info(e)
            if e not in by_outcome:
                dropped[f"outcome {info.outcome}"] += 1
            elif config.modes is not None and info.mode not in config.modes:
                dropped[f"mode {info.mode or '(none)'}"] += 1
            elif by_source is not None and e not in by_source:
                dropped["no step from " + "/".join(config.sources)] += 1
            else:
                start, end = reader.episode_range(e)
                is_human = source[start:end] == human
                if config.interventions == "drop_episodes" and is_human.any():
                    dropped["human takeover"] += 1
                elif config.interventions == "drop_steps" and is_human.all():
                    dropped["only human steps"] += 1
                else:
                    chosen.append((e, ~is_human if config.interventions == "drop_steps" else np.ones(end - start, bool)))
        if config.max_episodes is not None and len(chosen) > config.max_episodes:
            dropped["beyond max_episodes"] += len(chosen) - config.max_episodes
            chosen = chosen[-config.max_episodes:]
        for e, mask in chosen:
            steps[(s, e)] = mask
    if not steps:
        have = ", ".join(f"{n} {o}" for o, n in sorted(outcomes_seen.items())) or "no episodes"
        raise ValueError(f"no episode selected (outcomes={config.outcomes}, modes={config.modes}, "
                         f"sources={config.sources}, interventions={config.interventions}); the store(s) "
                         f"{', '.join(str(r.path) for r in readers)} hold {considered} episode(s): {have}; "
                         f"left out: {dict(dropped)}")
    return Selection(steps=steps, considered=considered, dropped=dropped)
