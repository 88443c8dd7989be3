"""What `pld-robot distill` tells a person: RUN/metrics.csv (a row every log_every steps, continued by a
resumed run), RUN/loss.png (training loss and learning rate against steps) and a tqdm bar with the loss."""

from __future__ import annotations

import math
from pathlib import Path

from tqdm import tqdm

from pld_robot.csv_rows import CsvRows

METRICS_FILE = "metrics.csv"
PLOT_FILE = "loss.png"
COLUMNS = ("step", "epoch", "loss", "lr", "grad_norm", "samples_per_s", "elapsed_s")


class MetricsLog:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._csv = CsvRows(self.folder / METRICS_FILE, COLUMNS, "distill", missing_as_nan=False)

    @property
    def rows(self) -> list[dict[str, float]]:
        return self._csv.rows

    def truncate(self, step: int) -> None:
        """Forget rows after `step` (a resumed run restarts from its last saved state, not its last row)."""
        self._csv.keep_until("step", step)

    def append(self, row: dict[str, float]) -> None:
        self._csv.append(row)

    def plot(self, title: str = "") -> Path | None:
        if not self.rows:
            return None
        path = self.folder / PLOT_FILE
        plot_loss(self.rows, path, title)
        return path


def plot_loss(rows: list[dict[str, float]], path: Path, title: str = "") -> None:
    import matplotlib  # here: a run that never plots never pays for the import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    losses = [r["loss"] for r in rows]
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), dpi=100, sharex=True,
                                         gridspec_kw={"height_ratios": [3, 1]})
    ax_loss.plot(steps, losses, ".", alpha=0.35, label="loss (mean since the previous row)")
    window = max(1, len(losses) // 20)
    if window > 1:
        smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
                  for i in range(len(losses))]
        ax_loss.plot(steps, smooth, "-", label=f"running mean of {window} rows")
    if min(losses) > 0 and max(losses) > 10 * min(losses):
        ax_loss.set_yscale("log")
    ax_loss.set(ylabel="flow-matching loss (real dims and steps)")
    ax_loss.legend(loc="best", fontsize=8)
    ax_loss.grid(alpha=0.3)
    ax_lr.plot(steps, [r["lr"] for r in rows], "-")
    ax_lr.set(xlabel="optimizer step", ylabel="learning rate")
    ax_lr.grid(alpha=0.3)
    last = rows[-1]
    fig.suptitle(title or f"distill: step {int(last['step'])}, loss {last['loss']:.4g}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class Progress:
    """tqdm over optimizer steps with the loss and learning rate (off when disabled or stderr is no terminal)."""

    def __init__(self, enabled: bool, total: int, initial: int):
        self._bar = tqdm(desc="distill", unit=" steps", total=total, initial=initial, dynamic_ncols=True,
                         disable=None if enabled else True)

    def show(self, step: int, loss: float, lr: float) -> None:
        if not math.isnan(loss):
            self._bar.set_postfix_str(f"loss={loss:.4f} lr={lr:.2e}", refresh=False)
        self._bar.update(step - self._bar.n)

    def close(self) -> None:
        self._bar.close()
