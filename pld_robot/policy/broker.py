"""The chunk broker: feeds the control loop one action per tick from action chunks that arrive late.

openpi's client-side ActionChunkBroker asks the policy for a chunk and hands its actions out one per
step, blocking on the next request when the chunk runs out. A real arm cannot stop for a 100-300 ms
inference, so this broker asks ahead instead: a background thread requests the next chunk (with the
newest observation) while the current one still has `refill_below` actions left, and `action(now)`
only ever reads what has already arrived.

Every chunk is anchored at the capture time of the observation it answers: its action i belongs to
the tick at stamp + i / control_hz. A chunk that arrives 300 ms after its observation therefore
starts 3 actions in (at 10 Hz), since those ticks are gone; executing its action 0 instead would
replay where the arm was told to be 300 ms ago. With `ensemble`, every chunk still covering `now`
contributes, averaged with ACT's temporal-ensembling weights (Zhao et al. 2023): the oldest
prediction gets weight 1 and each newer one exp(-decay) times the previous, which smooths the
seams between chunks.

Choosing refill_below (L = worst round trip in s, hz = control rate): the request goes out once the
newest chunk has refill_below - 1 actions left, up to about a tick later (the next observation, the
worker's half-tick poll), and must land before those run out: refill_below >= ceil(L * hz) + 2, so 5
at 10 Hz and 300 ms; twice the latency in ticks plus that (8-10) leaves slack for a loaded machine.
Keep it well under chunk_length - L * hz, or each chunk arrives already due and requests run back to
back (with `ensemble`, more overlap means more chunks averaged, at that cost). max_chunk_age_s must let
the old chunk serve until the new one lands: at least (chunk_length - refill_below + 1) / hz + L.

The chunk arithmetic is in module functions (action_index, select_action, refill_due_at) so it can be
tested without threads or a clock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from pld_robot.policy.spec import Observation, Policy, PolicySpec

log = logging.getLogger(__name__)


class ChunkSource(Protocol):
    def act(self, obs: Observation) -> np.ndarray:
        """The chunk answering `obs`, (n, action dim); may take long and may raise."""


class LocalSource:
    """An in-process Policy as a ChunkSource, so the broker runs the same with or without a server."""

    def __init__(self, policy: Policy):
        self.policy = policy

    def act(self, obs: Observation) -> np.ndarray:
        return self.policy.predict(obs)


@dataclass(frozen=True)
class Chunk:
    actions: np.ndarray  # (n, action dim) float32
    stamp: float  # capture time of the observation it answers; action i belongs to stamp + i / hz


def action_index(chunk: Chunk, now: float, control_hz: float) -> int:
    """Index of the action whose tick time is nearest `now`; nearest, not floor, so a loop that ticks a
    hair early (jitter, float error in stamp + i / hz) still gets action i rather than i - 1."""
    return math.floor((now - chunk.stamp) * control_hz + 0.5)


def is_spent(chunk: Chunk, now: float, control_hz: float, max_age_s: float) -> bool:
    """Whether the chunk can never serve again: its observation is too old, or its actions ran out."""
    return now - chunk.stamp > max_age_s or action_index(chunk, now, control_hz) >= len(chunk.actions)


def select_action(chunks: Sequence[Chunk], now: float, control_hz: float, max_age_s: float,
                  ensemble_decay: float | None) -> np.ndarray | None:
    """The action for `now` from `chunks` (oldest first), or None if no live chunk covers `now`.

    ensemble_decay None: the newest covering chunk wins. A number k: ACT's temporal ensemble over the
    covering chunks, the i-th oldest weighted exp(-k * i), normalised.
    """
    rows = []
    for chunk in chunks:
        i = action_index(chunk, now, control_hz)
        if i >= 0 and not is_spent(chunk, now, control_hz, max_age_s):
            rows.append(chunk.actions[i])
    if not rows:
        return None
    if ensemble_decay is None:
        return rows[-1].copy()
    weights = np.exp(-ensemble_decay * np.arange(len(rows)))
    return (weights @ np.stack(rows).astype(np.float64) / weights.sum()).astype(np.float32)


def refill_due_at(chunk: Chunk, control_hz: float, refill_below: int, max_age_s: float) -> float:
    """When the next chunk becomes due after `chunk`: fewer than `refill_below` of its actions are left
    from then on (index >= n - refill_below + 1, i.e. half a tick before that action's time, see
    action_index), or it goes stale, whichever is first."""
    runs_low = chunk.stamp + (len(chunk.actions) - refill_below + 0.5) / control_hz
    return min(runs_low, chunk.stamp + max_age_s)


@dataclass(frozen=True)
class BrokerStatus:
    chunks_received: int
    starved_ticks: int  # action() calls that found no chunk covering their time
    errors: int  # failed requests (the source raised or returned a malformed chunk)
    last_error: str  # "" until the first error
    last_rtt_ms: float | None  # of the last successful request
    healthy: bool


class ChunkBroker:
    """Keeps chunks coming from `source` in the background; `observe` and `action` never block.

    Times (`stamp`, `now`) are on `clock`, the same clock the control loop uses for its ticks.
    """

    def __init__(self, source: ChunkSource, spec: PolicySpec, *, refill_below: int, ensemble: bool = False,
                 ensemble_decay: float = 0.01, max_chunk_age_s: float, unhealthy_after_s: float,
                 retry_backoff_s: float = 0.1, clock: Callable[[], float] = time.monotonic):
        if not 1 <= refill_below <= spec.chunk_length:
            raise ValueError(f"refill_below must be in 1..chunk_length ({spec.chunk_length}), got {refill_below}")
        for name, value in (("max_chunk_age_s", max_chunk_age_s), ("unhealthy_after_s", unhealthy_after_s),
                            ("retry_backoff_s", retry_backoff_s)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive, got {value}")
        if not (math.isfinite(ensemble_decay) and ensemble_decay >= 0):
            raise ValueError(f"ensemble_decay must be non-negative, got {ensemble_decay}")
        self._source = source
        self._spec = spec
        self._refill_below = refill_below
        self._decay = ensemble_decay if ensemble else None
        self._max_age_s = max_chunk_age_s
        self._unhealthy_after_s = unhealthy_after_s
        self._retry_backoff_s = retry_backoff_s
        self._clock = clock
        self._wake = threading.Condition(threading.Lock())  # guards everything below
        self._latest: tuple[Observation, float] | None = None
        self._chunks: list[Chunk] = []  # live ones, oldest first
        self._newest: Chunk | None = None  # kept after it is spent: it says when the next one was due
        self._started_at = clock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._chunks_received = self._starved_ticks = self._errors = 0
        self._last_error = ""
        self._last_rtt_ms: float | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the broker is already started")
        with self._wake:
            self._started_at = self._clock()  # a chunk is due from now: health counts from here
        self._thread = threading.Thread(target=self._run, name="chunk-broker", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop requesting. A request in flight is abandoned after `timeout_s` (the thread is a daemon)
        rather than holding up shutdown behind a hung server."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def __enter__(self) -> "ChunkBroker":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def observe(self, obs: Observation, stamp: float) -> None:
        """Make `obs`, captured at `stamp`, the observation the next request sends."""
        with self._wake:
            self._latest = (obs, stamp)
            self._wake.notify_all()

    def action(self, now: float) -> np.ndarray | None:
        """The action for the tick at `now`, or None (counted in starved_ticks) if no chunk covers it."""
        with self._wake:
            self._chunks = [c for c in self._chunks if not is_spent(c, now, self._spec.control_hz, self._max_age_s)]
            action = select_action(self._chunks, now, self._spec.control_hz, self._max_age_s, self._decay)
            if action is None:
                self._starved_ticks += 1
            return action

    @property
    def healthy(self) -> bool:
        """False once a chunk has been due for `unhealthy_after_s` without arriving. Measured from when it
        fell due, not from the last arrival: a long chunk legitimately means seconds without a request."""
        with self._wake:
            return self._healthy(self._clock())

    def status(self) -> BrokerStatus:
        with self._wake:
            return BrokerStatus(chunks_received=self._chunks_received, starved_ticks=self._starved_ticks,
                                errors=self._errors, last_error=self._last_error, last_rtt_ms=self._last_rtt_ms,
                                healthy=self._healthy(self._clock()))

    def _due_at(self) -> float:
        if self._newest is None:
            return self._started_at
        return refill_due_at(self._newest, self._spec.control_hz, self._refill_below, self._max_age_s)

    def _healthy(self, now: float) -> bool:
        return now - self._due_at() <= self._unhealthy_after_s

    def _request_due(self, now: float) -> bool:
        """A chunk is due and there is an observation it has not answered yet: asking again with the
        observation of the newest chunk would only return the same ticks."""
        return (self._latest is not None and now >= self._due_at()
                and (self._newest is None or self._latest[1] > self._newest.stamp))

    def _run(self) -> None:
        poll_s = 0.5 / self._spec.control_hz  # time alone makes a chunk due; observe() wakes us early
        failing = False
        while True:
            with self._wake:
                while not self._closed and not self._request_due(self._clock()):
                    self._wake.wait(poll_s)
                if self._closed:
                    return
                obs, stamp = self._latest
            sent = time.perf_counter()
            try:
                actions = self._checked(self._source.act(obs))
            except Exception as exc:  # the source's failure modes are its own; all mean "no chunk"
                message = f"{type(exc).__name__}: {exc}"
                with self._wake:
                    self._errors += 1
                    self._last_error = message
                if not failing:
                    log.warning("policy source failed (%s); retrying every %.2g s", message, self._retry_backoff_s)
                    failing = True
                with self._wake:
                    self._wake.wait_for(lambda: self._closed, self._retry_backoff_s)
                continue
            rtt_ms = (time.perf_counter() - sent) * 1000
            with self._wake:
                self._newest = Chunk(actions, stamp)
                self._chunks.append(self._newest)
                self._chunks_received += 1
                self._last_rtt_ms = rtt_ms
                errors = self._errors
            if failing:
                log.info("policy source answers again (%d errors so far)", errors)
                failing = False

    def _checked(self, actions: np.ndarray) -> np.ndarray:
        """A private float32 copy of a well-formed chunk; a malformed one raises, counted as an error."""
        actions = np.array(actions, dtype=np.float32)
        width = len(self._spec.action_names)
        if actions.ndim != 2 or len(actions) < 1 or actions.shape[1] != width:
            raise ValueError(f"chunk of shape {actions.shape}, expected (n >= 1, {width})")
        if not np.all(np.isfinite(actions)):
            raise ValueError("chunk has non-finite actions")
        return actions
