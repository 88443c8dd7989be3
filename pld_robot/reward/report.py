"""What train-reward shows a person: the precision-recall curve with the chosen threshold, and a
contact sheet of the held-out frames the classifier gets wrong (look at them before trusting it)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pld_robot.reward.labels import LabelledFrames  # noqa: E402
from pld_robot.reward.metrics import precision_recall_curve, scores  # noqa: E402


def plot_pr_curve(labels: np.ndarray, probs: np.ndarray, threshold: float, target_precision: float,
                  path: Path) -> None:
    _, precision, recall = precision_recall_curve(labels, probs)
    chosen = scores(labels, probs, threshold)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.step(np.r_[0.0, recall], np.r_[1.0, precision], where="post", label="held-out frames")
    ax.axhline(target_precision, color="grey", linestyle="--", linewidth=1, label=f"target precision {target_precision:g}")
    ax.plot([chosen.recall], [chosen.precision], "o", color="C3",
            label=f"threshold {threshold:.3f}: P {chosen.precision:.3f}, R {chosen.recall:.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title="success classifier")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def contact_sheet(frames: LabelledFrames, probs: np.ndarray, threshold: float, stores: Sequence[str],
                  path: Path, limit: int = 48) -> int:
    """Write the misclassified frames (all cameras side by side) with their label and probability;
    returns how many were misclassified in all."""
    wrong = np.flatnonzero((probs >= threshold) != frames.labels.astype(bool))
    shown = wrong[np.argsort(-np.abs(probs[wrong] - threshold))][:limit]  # the most confident mistakes first
    cols = 6
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.0 * rows + 0.4), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, shown):
        ax.imshow(np.concatenate([frames.frames[c][i] for c in frames.frames], axis=1))
        kind = "missed success" if frames.labels[i] else "false success"
        store = f"{Path(stores[frames.store[i]]).name}:" if len(stores) > 1 else ""
        ax.set_title(f"{kind} p={probs[i]:.2f}\n{store}ep {frames.episode[i]} step {frames.step[i]}", fontsize=7)
    title = f"{len(wrong)} of {len(probs)} held-out frames misclassified at threshold {threshold:.3f}"
    fig.suptitle(title + (f" (the {len(shown)} most confident shown)" if len(wrong) > len(shown) else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return len(wrong)
