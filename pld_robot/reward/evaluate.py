"""How well the success signal ended episodes, judged against per-frame labels (a person holding the
button, or the sim lab's ground truth) recorded beside it.

For each episode: the true success is the first frame of the first run of `min_run` labelled frames
in a row (or of a run the episode's end cut short): a cube that is up for one frame and then slips
was never a success. An episode that ended as `success` is a correct ending if its last frame is
labelled (the task was done when it stopped), and its delay is the time from the true success to the
last frame. An episode labelled at some point that did not
end as a success is a missed success, unless it stopped (step limit, fault) less than `max_delay_s`
after its true success: then the signal had no fair chance, and it is counted as cut off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from pld_robot.data import EpisodeReader
from pld_robot.data.layout import Outcome


@dataclass(frozen=True)
class Ending:
    episode: int
    outcome: str
    length: int
    true_success_step: int | None  # first labelled frame, None if never
    delay_s: float | None  # true success -> last frame, for episodes that ended as a success
    after_true_success_s: float | None  # true success -> last frame, whatever the outcome

    @property
    def false_success(self) -> bool:
        return self.outcome == Outcome.SUCCESS.value and self.delay_s is None

    def missed(self, max_delay_s: float) -> bool:
        return self.true_success_step is not None and self.outcome != Outcome.SUCCESS.value \
            and self.after_true_success_s >= max_delay_s

    def cut_off(self, max_delay_s: float) -> bool:
        return self.true_success_step is not None and self.outcome != Outcome.SUCCESS.value \
            and self.after_true_success_s < max_delay_s


def episode_endings(reader: EpisodeReader, episodes: list[int] | None = None, min_run: int = 3) -> list[Ending]:
    endings = []
    for episode in range(reader.num_episodes) if episodes is None else episodes:
        data = reader.episode(episode, ("success_label", "timestamp"))
        labels, stamps = data["success_label"].astype(bool), data["timestamp"]
        first = _first_lasting_run(labels, min_run)
        outcome = reader.info(episode).outcome
        after = float(stamps[-1] - stamps[first]) if first is not None else None
        delay = after if outcome == Outcome.SUCCESS.value and first is not None and labels[-1] else None
        endings.append(Ending(episode, outcome, len(labels), first, delay, after))
    return endings


def _first_lasting_run(labels: np.ndarray, min_run: int) -> int | None:
    edges = np.diff(np.r_[0, labels.astype(np.int8), 0])
    for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        if end - start >= min_run or end == len(labels):
            return int(start)
    return None


def summarize(endings: list[Ending], max_delay_s: float) -> dict:
    delays = [e.delay_s for e in endings if e.delay_s is not None]
    true = [e for e in endings if e.true_success_step is not None]
    return {
        "episodes": len(endings),
        "true_successes": len(true),
        "ended_as_success": sum(e.outcome == Outcome.SUCCESS.value for e in endings),
        "correct_successes": len(delays),
        "false_successes": sum(e.false_success for e in endings),
        "missed_successes": sum(e.missed(max_delay_s) for e in endings),
        "cut_off_successes": sum(e.cut_off(max_delay_s) for e in endings),
        "late_successes": sum(d > max_delay_s for d in delays),
        "delay_s": {"p50": round(float(np.median(delays)), 3), "max": round(max(delays), 3)} if delays else None,
        "max_delay_s": max_delay_s,
        "all_ended_in_time": not any(e.false_success or e.missed(max_delay_s) for e in endings)
        and all(d <= max_delay_s for d in delays),
        "per_episode": [asdict(e) for e in endings],
    }
