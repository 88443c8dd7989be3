"""Precision, recall and the decision threshold. A false success ends an episode early and hands the
residual learner a reward it did not earn, so the threshold is chosen for a target precision, and
recall is what is left."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scores:
    threshold: float
    accuracy: float
    precision: float
    recall: float
    true_positives: int
    false_positives: int
    false_negatives: int
    true_negatives: int

    def as_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def scores(labels: np.ndarray, probs: np.ndarray, threshold: float) -> Scores:
    labels, predicted = labels.astype(bool), probs >= threshold
    tp, fp = int((predicted & labels).sum()), int((predicted & ~labels).sum())
    fn, tn = int((~predicted & labels).sum()), int((~predicted & ~labels).sum())
    return Scores(float(threshold), (tp + tn) / max(len(labels), 1), tp / max(tp + fp, 1) if tp + fp else 1.0,
                  tp / max(tp + fn, 1), tp, fp, fn, tn)


def precision_recall_curve(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds descending, precision, recall) at every distinct score: predicting positive for
    scores >= threshold."""
    order = np.argsort(-probs, kind="stable")
    p, y = probs[order], labels[order].astype(bool)
    last_of_each = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]
    tp = np.cumsum(y)[last_of_each]
    predicted = last_of_each + 1
    return p[last_of_each], tp / predicted, tp / max(int(y.sum()), 1)


def average_precision(labels: np.ndarray, probs: np.ndarray) -> float:
    _, precision, recall = precision_recall_curve(labels, probs)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def choose_threshold(labels: np.ndarray, probs: np.ndarray, target_precision: float,
                     min_threshold: float) -> tuple[float, bool]:
    """The threshold with the most recall whose held-out precision reaches the target, never below
    `min_threshold`; (threshold, reached). If none reaches it, the most precise one, and False.

    Every threshold between the score that qualifies and the next score below it scores the same on
    the held-out frames; the midpoint in logit space keeps a margin on both sides. The score itself
    would not: a well-separated classifier's lowest kept score is often 0.999, and new episodes'
    success frames scoring 0.998 would then be missed."""
    if not labels.any():
        raise ValueError("no positive frames in the held-out episodes: cannot choose a threshold "
                         "(record more successes, or hold the success button longer)")
    thresholds, precision, _ = precision_recall_curve(labels, probs)
    ok = np.flatnonzero(precision >= target_precision)
    reached = len(ok) > 0
    i = int(ok[-1]) if reached else int(np.argmax(precision))
    below = float(thresholds[i + 1]) if i + 1 < len(thresholds) else 0.0
    return max(_between(below, float(thresholds[i])), min_threshold), reached


def _between(low: float, high: float) -> float:
    """The midpoint of (low, high] in logit space, just above low."""
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    low, high = np.clip([low, high], 1e-6, 1 - 1e-6)
    return float(min(1 / (1 + np.exp(-(logit(low) + logit(high)) / 2)), high))
