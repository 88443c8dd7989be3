"""What the learner tells a person: `DIR/metrics.csv` (a row per actor export), `DIR/learning.png`
(success rate and returns, Q values, temperature, residual magnitude) and a progress line on stderr.

    stats = EpisodeStats(); stats.add(success, ret, residual)      # per recorded episode
    means = Means(); means.add(agent.update(...))                  # per update call
    log = MetricsLog(folder); log.append({...}); log.plot()
"""

from __future__ import annotations

import math
import time
from collections import deque
from pathlib import Path

from tqdm import tqdm

from pld_robot.csv_rows import CsvRows

METRICS_FILE = "metrics.csv"
PLOT_FILE = "learning.png"
WINDOW = 20  # recorded episodes in the rolling success rate, return and residual magnitude
PLOT_EVERY_S = 30.0  # a plot costs ~0.3 s of CPU that the updates need; the last row is always plotted at exit

COLUMNS = (
    "time", "elapsed_s", "actor_version", "episodes", "recorded_steps", "env_steps", "critic_updates",
    "actor_updates", "success_rate", "mean_return", "residual_magnitude", "offline_transitions",
    "online_transitions", "intervention_transitions", "q", "td_target", "critic_loss", "actor_loss",
    "temperature", "entropy", "calql_regularizer", "calql_bound_rate",
)


class EpisodeStats:
    """Rolling statistics of the last WINDOW recorded episodes."""

    def __init__(self):
        self._success: deque[float] = deque(maxlen=WINDOW)
        self._returns: deque[float] = deque(maxlen=WINDOW)
        self._residual: deque[float] = deque(maxlen=WINDOW)

    def add(self, success: bool, discounted_return: float, residual_magnitude: float | None) -> None:
        """residual_magnitude: the episode's mean |residual| / half range over its residual steps; None
        when the residual never acted (a base episode, a human takeover)."""
        self._success.append(float(success))
        self._returns.append(discounted_return)
        if residual_magnitude is not None:
            self._residual.append(residual_magnitude)

    def as_row(self) -> dict[str, float]:
        return {"success_rate": _mean(self._success), "mean_return": _mean(self._returns),
                "residual_magnitude": _mean(self._residual)}


class Means:
    """Averages of update metrics (q, losses, temperature, ...) since they were last taken."""

    def __init__(self):
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def add(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
            self._counts[key] = self._counts.get(key, 0) + 1

    def take(self) -> dict[str, float]:
        means = {k: self._sums[k] / self._counts[k] for k in self._sums}
        self._sums.clear()
        self._counts.clear()
        return means


class MetricsLog:
    """Appends rows to metrics.csv (continuing one a resumed run left) and plots them."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._csv = CsvRows(self.folder / METRICS_FILE, COLUMNS, "this learner", missing_as_nan=True)
        self._last_plot = -math.inf

    @property
    def rows(self) -> list[dict[str, float]]:
        return self._csv.rows

    def append(self, row: dict[str, float]) -> None:
        self._csv.append(row)

    def plot(self, force: bool = False) -> Path | None:
        """Write learning.png, at most every PLOT_EVERY_S unless `force`; returns its path if written."""
        if not self.rows or (not force and time.monotonic() - self._last_plot < PLOT_EVERY_S):
            return None
        self._last_plot = time.monotonic()
        path = self.folder / PLOT_FILE
        plot_learning(self.rows, path)
        return path


def plot_learning(rows: list[dict[str, float]], path: Path) -> None:
    """Four panels: what the robot recorded (success rate and return, residual magnitude) against
    recorded env steps; what the learner did (Q and TD target, temperature) against critic updates,
    since the learner may lag behind the robot and catch up."""
    import matplotlib  # here, not at the top: a learner that never plots never pays for the import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    column = lambda name: [r[name] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=100)
    panels = [
        (axes[0, 0], "recorded_steps", [("success_rate", f"success rate (last {WINDOW})"),
                                        ("mean_return", "discounted return")], "recorded episodes"),
        (axes[0, 1], "critic_updates", [("q", "Q (batch mean)"), ("td_target", "TD target")], "critic"),
        (axes[1, 0], "critic_updates", [("temperature", "temperature")], "SAC temperature"),
        (axes[1, 1], "recorded_steps", [("residual_magnitude", "mean |residual| / half range")],
         "residual magnitude (recorded steps)"),
    ]
    for ax, x, curves, title in panels:
        for name, label in curves:
            ax.plot(column(x), column(name), marker=".", label=label)
        ax.set(title=title, xlabel=x.replace("_", " "))
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    temperatures = [t for t in column("temperature") if t > 0]
    if temperatures and max(temperatures) > 10 * min(temperatures):  # it often falls by decades
        axes[1, 0].set_yscale("log")
    last = rows[-1]
    fig.suptitle(f"residual learner: actor version {int(last['actor_version'])}, {int(last['episodes'])} episodes, "
                 f"{int(last['critic_updates'])} critic updates", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class Progress:
    """One updating line on stderr (tqdm; off when stderr is not a terminal, or when disabled)."""

    def __init__(self, enabled: bool, initial_updates: int = 0):
        self._bar = tqdm(desc="learner", unit=" updates", initial=initial_updates, dynamic_ncols=True,
                         disable=None if enabled else True)

    def show(self, phase: str, updates: int, **fields) -> None:
        self._bar.set_description_str(phase, refresh=False)
        self._bar.set_postfix_str(" ".join(f"{k}={v}" for k, v in fields.items()), refresh=False)
        self._bar.update(updates - self._bar.n)  # redraws at most every tqdm mininterval

    def close(self) -> None:
        self._bar.close()


def _mean(values) -> float:
    return sum(values) / len(values) if values else math.nan


