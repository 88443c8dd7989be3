"""Declaring success: the probability at or over the threshold for k ticks in a row. One success per
run of such ticks: the declaration is the rising edge, so a scene that stays solved (an arm still
holding the cube while the next episode starts) does not end the next episode too."""

from __future__ import annotations


class SuccessDetector:
    def __init__(self, threshold: float, ticks: int):
        if not 0.0 < threshold <= 1.0 or ticks < 1:
            raise ValueError(f"success detector: threshold must be in (0, 1] and ticks >= 1, got {threshold}, {ticks}")
        self.threshold = threshold
        self.ticks = ticks
        self.run = 0  # consecutive ticks at or over the threshold

    def update(self, prob: float) -> bool:
        """Feed one tick's probability; True on the tick that completes k in a row."""
        self.run = self.run + 1 if prob >= self.threshold else 0
        return self.run == self.ticks

    def reset(self) -> None:
        self.run = 0
