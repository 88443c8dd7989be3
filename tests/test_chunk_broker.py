"""The chunk broker: the anchoring and ensembling arithmetic on its own, then the broker with fake
sources: late chunks, stale chunks, a slow policy in a simulated 10 Hz loop, a failing source, and
action() while a request is in flight.

Timing-dependent tests assert behaviour with wide margins (a loaded 2-core machine), never durations
close to the nominal ones.
"""

import logging
import math
import threading
import time

import numpy as np
import pytest

from pld_robot.policy.broker import (
    Chunk,
    ChunkBroker,
    LocalSource,
    action_index,
    refill_due_at,
    select_action,
)
from pld_robot.policy.spec import Observation, PolicySpec

HZ = 10.0
N = 50
SPEC = PolicySpec(cameras={}, state_names=("t",), action_names=("a", "b"), chunk_length=N, control_hz=HZ)


def indexed_chunk(stamp: float, n: int = N, offset: float = 0.0) -> Chunk:
    """A chunk whose action i is (offset + i, offset + i), so the value says which action was picked."""
    values = offset + np.arange(n, dtype=np.float32)
    return Chunk(np.stack([values, values], axis=1), stamp)


def obs_at(t: float) -> Observation:
    return Observation(images={}, state=np.array([t], dtype=np.float32))


def wait_until(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


class FakeClock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


# --- the arithmetic -------------------------------------------------------------------------------

def test_a_late_chunk_starts_at_the_action_for_now():
    chunk = indexed_chunk(stamp=100.0)
    # It answers an observation from t=100 but is first used 320 ms later: actions 0-2 belong to
    # ticks that are gone, action 3 (t=100.3) is the one for now.
    assert action_index(chunk, 100.32, HZ) == 3
    np.testing.assert_array_equal(select_action([chunk], 100.32, HZ, 5.0, None), [3, 3])
    # Nearest tick, not floor: a tick a hair early for t=100.4 still gets action 4.
    np.testing.assert_array_equal(select_action([chunk], 100.4 - 1e-9, HZ, 5.0, None), [4, 4])
    np.testing.assert_array_equal(select_action([chunk], 100.0, HZ, 5.0, None), [0, 0])


def test_without_ensemble_the_newest_covering_chunk_wins():
    old, new = indexed_chunk(100.0), indexed_chunk(100.2, offset=1000.0)
    np.testing.assert_array_equal(select_action([old, new], 100.5, HZ, 5.0, None), [1003, 1003])
    # A chunk whose first action lies ahead of now (its stamp is later) does not cover now.
    np.testing.assert_array_equal(select_action([old, new], 100.05 - 1e-6, HZ, 5.0, None), [0, 0])


def test_ensemble_uses_acts_exponential_weights_oldest_first():
    rng = np.random.default_rng(0)
    chunks = [Chunk(rng.normal(size=(N, 2)).astype(np.float32), stamp) for stamp in (100.0, 100.1, 100.2)]
    exhausted = Chunk(rng.normal(size=(5, 2)).astype(np.float32), 99.0)  # ran out at 99.5: not averaged
    now, k = 100.21, 0.5  # indices 2, 1, 0 in the three live chunks
    got = select_action([exhausted] + chunks, now, HZ, 5.0, k)

    rows = np.stack([chunks[0].actions[2], chunks[1].actions[1], chunks[2].actions[0]]).astype(np.float64)
    w = np.array([1.0, math.exp(-k), math.exp(-2 * k)])
    np.testing.assert_allclose(got, (w @ rows) / w.sum(), rtol=1e-6)
    # The weights matter: neither the plain mean nor the reversed order gives the same action.
    assert not np.allclose(got, rows.mean(axis=0), rtol=1e-3)
    assert not np.allclose(got, (w[::-1] @ rows) / w.sum(), rtol=1e-3)
    # A single covering chunk is passed through unchanged.
    np.testing.assert_allclose(select_action(chunks[:1], now, HZ, 5.0, k), chunks[0].actions[2], rtol=1e-6)


def test_stale_and_exhausted_chunks_cover_nothing():
    chunk = indexed_chunk(100.0)
    assert select_action([chunk], 101.0, HZ, 1.0, None) is not None  # exactly max age: still live
    assert select_action([chunk], 101.05, HZ, 1.0, None) is None  # 10 actions in, but too old
    assert select_action([chunk], 104.9, HZ, 10.0, None) is not None  # action 49, the last
    assert select_action([chunk], 104.96, HZ, 10.0, None) is None  # exhausted
    assert select_action([], 100.0, HZ, 1.0, 0.01) is None


def test_refill_falls_due_when_fewer_than_refill_below_actions_are_left():
    chunk = indexed_chunk(100.0)  # 50 actions
    due = refill_due_at(chunk, HZ, refill_below=20, max_age_s=10.0)
    assert N - action_index(chunk, due - 1e-6, HZ) == 20  # just before: 20 left
    assert N - action_index(chunk, due + 1e-6, HZ) == 19  # from then on: fewer than 20
    # A chunk that goes stale before it runs low is due when it goes stale.
    assert refill_due_at(chunk, HZ, refill_below=20, max_age_s=1.0) == 101.0


def test_constructor_rejects_a_refill_threshold_the_chunk_cannot_meet():
    source = LocalSource(SlowPolicy())
    with pytest.raises(ValueError, match="refill_below"):
        ChunkBroker(source, SPEC, refill_below=N + 1, max_chunk_age_s=5.0, unhealthy_after_s=1.0)
    with pytest.raises(ValueError, match="max_chunk_age_s"):
        ChunkBroker(source, SPEC, refill_below=10, max_chunk_age_s=0.0, unhealthy_after_s=1.0)


# --- the broker on a fake clock -------------------------------------------------------------------

class InstantSource:
    """Answers at once with indexed actions; `latency_s` is added to the fake clock, as if inference
    took that long."""

    def __init__(self, clock: FakeClock, latency_s: float = 0.0):
        self.clock, self.latency_s, self.calls = clock, latency_s, 0

    def act(self, obs: Observation) -> np.ndarray:
        self.calls += 1
        self.clock.t += self.latency_s
        return indexed_chunk(0.0).actions


def test_broker_skips_the_actions_a_late_chunk_missed():
    clock = FakeClock()
    source = InstantSource(clock, latency_s=0.3)
    with ChunkBroker(source, SPEC, refill_below=10, max_chunk_age_s=5.0, unhealthy_after_s=1.0,
                     clock=clock) as broker:
        broker.observe(obs_at(0), stamp=clock.t)
        assert wait_until(lambda: broker.status().chunks_received == 1)
        np.testing.assert_array_equal(broker.action(clock.t), [3, 3])
        np.testing.assert_array_equal(broker.action(clock.t + 0.1), [4, 4])
        assert broker.status().starved_ticks == 0


def test_broker_drops_stale_chunks_and_counts_starved_ticks():
    clock = FakeClock()
    source = InstantSource(clock)
    with ChunkBroker(source, SPEC, refill_below=10, max_chunk_age_s=1.0, unhealthy_after_s=10.0,
                     clock=clock) as broker:
        assert broker.action(clock.t) is None  # nothing yet
        broker.observe(obs_at(0), stamp=clock.t)
        assert wait_until(lambda: broker.status().chunks_received == 1)
        stamp = clock.t
        assert broker.action(stamp + 0.5) is not None
        # No new observation, so no new chunk: past the age limit the old one is dropped, not replayed.
        clock.t = stamp + 1.2
        assert broker.action(clock.t) is None
        assert broker.action(clock.t + 0.1) is None
        assert broker.action(stamp + 0.5) is None  # dropped for good, even for an earlier time
        status = broker.status()
        assert status.starved_ticks == 4
        assert status.chunks_received == 1 and source.calls == 1


def test_health_counts_from_when_a_chunk_fell_due_not_from_the_last_arrival():
    clock = FakeClock()
    source = InstantSource(clock)
    with ChunkBroker(source, SPEC, refill_below=10, max_chunk_age_s=10.0, unhealthy_after_s=1.0,
                     clock=clock) as broker:
        broker.observe(obs_at(0), stamp=clock.t)
        assert wait_until(lambda: broker.status().chunks_received == 1)
        stamp = clock.t
        due = stamp + (N - 10 + 0.5) / HZ
        clock.t = stamp + 3.0  # 3 s without a chunk, but none was due yet: 40 actions are left
        assert broker.healthy
        clock.t = due + 0.9  # due, not answered (no new observation), within the allowance
        assert broker.healthy
        clock.t = due + 1.1
        assert not broker.healthy and not broker.status().healthy
        assert source.calls == 1


# --- the broker against real time -----------------------------------------------------------------

class SlowPolicy:
    """A Policy that takes 300 ms and answers with the time its actions belong to: action i of the
    chunk for an observation stamped t is t + i / hz (in both dimensions)."""

    spec = SPEC

    def predict(self, obs: Observation) -> np.ndarray:
        time.sleep(0.3)
        t = float(obs.state[0]) + np.arange(N) / HZ
        return np.stack([t, t], axis=1).astype(np.float32)


@pytest.mark.parametrize("ensemble", [False, True])
def test_a_slow_policy_keeps_a_10hz_loop_fed(ensemble):
    # 300 ms is 3 ticks; asking with 25 actions (2.5 s) left leaves ample room for a loaded machine.
    broker = ChunkBroker(LocalSource(SlowPolicy()), SPEC, refill_below=25, ensemble=ensemble,
                         max_chunk_age_s=5.0, unhealthy_after_s=2.0)
    t0 = time.monotonic()
    first_action_at = None
    starved_after_warmup = ticks_after_warmup = 0
    worst_error = 0.0
    with broker:
        # 6 s outlasts the first chunk (5 s of actions): without refills the last second would starve.
        next_tick = t0
        while time.monotonic() - t0 < 6.0:
            now = time.monotonic()
            broker.observe(obs_at(now - t0), stamp=now)
            action = broker.action(now)
            if first_action_at is None and action is not None:
                first_action_at = now - t0
            if first_action_at is not None:
                ticks_after_warmup += 1
                if action is None:
                    starved_after_warmup += 1
                else:
                    worst_error = max(worst_error, float(np.max(np.abs(action - (now - t0)))))
            next_tick += 1 / HZ
            time.sleep(max(0.0, next_tick - time.monotonic()))
        status = broker.status()
    assert first_action_at is not None and first_action_at < 3.0, first_action_at
    assert starved_after_warmup == 0, f"{starved_after_warmup} of {ticks_after_warmup} ticks starved"
    assert ticks_after_warmup >= 20
    assert status.chunks_received >= 2 and status.errors == 0 and status.healthy
    assert status.last_rtt_ms is not None and status.last_rtt_ms >= 300
    # Anchoring: every executed action is the one meant for its tick (nearest tick: within half a
    # tick of now), however late its chunk arrived.
    assert worst_error <= 0.5 / HZ + 1e-3, worst_error


class FlakySource:
    def __init__(self):
        self.failing = threading.Event()

    def act(self, obs: Observation) -> np.ndarray:
        if self.failing.is_set():
            raise ConnectionError("policy server down")
        return indexed_chunk(0.0).actions


def test_a_failing_source_makes_the_broker_unhealthy_until_it_recovers(caplog):
    caplog.set_level(logging.INFO, logger="pld_robot.policy.broker")
    source = FlakySource()
    source.failing.set()
    unhealthy_after_s = 1.0
    broker = ChunkBroker(source, SPEC, refill_below=10, max_chunk_age_s=10.0,
                         unhealthy_after_s=unhealthy_after_s, retry_backoff_s=0.05)
    started = time.monotonic()
    with broker:
        broker.observe(obs_at(0), stamp=time.monotonic())
        assert wait_until(lambda: not broker.healthy, timeout_s=unhealthy_after_s + 5.0)
        assert time.monotonic() - started >= unhealthy_after_s  # not before the allowance ran out
        assert wait_until(lambda: broker.status().errors >= 3)  # it keeps retrying
        status = broker.status()
        assert not status.healthy and status.chunks_received == 0
        assert status.last_error == "ConnectionError: policy server down"
        assert broker.action(time.monotonic()) is None

        source.failing.clear()
        assert wait_until(lambda: broker.healthy, timeout_s=5.0)
        status = broker.status()
        assert status.healthy and status.chunks_received == 1
        assert broker.action(time.monotonic()) is not None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "policy server down" in warnings[0].getMessage()  # once per outage
    assert any("answers again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


class GatedSource:
    """Answers the first request at once; every later one stays in flight until `release` is set."""

    def __init__(self):
        self.in_flight, self.release, self.calls = threading.Event(), threading.Event(), 0

    def act(self, obs: Observation) -> np.ndarray:
        self.calls += 1
        if self.calls > 1:
            self.in_flight.set()
            self.release.wait(10.0)
        return indexed_chunk(0.0).actions


def test_action_never_waits_for_a_request_in_flight():
    source = GatedSource()
    # refill_below = chunk length: every new observation after the first chunk triggers a request.
    broker = ChunkBroker(source, SPEC, refill_below=N, max_chunk_age_s=10.0, unhealthy_after_s=5.0)
    with broker:
        broker.observe(obs_at(0), stamp=time.monotonic())
        assert wait_until(lambda: broker.status().chunks_received == 1)
        time.sleep(0.1)  # past the first action's tick, so the next chunk is due
        broker.observe(obs_at(0), stamp=time.monotonic())
        assert source.in_flight.wait(5.0)

        slowest = 0.0
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            began = time.perf_counter()
            action = broker.action(time.monotonic())
            broker.observe(obs_at(0), stamp=time.monotonic())
            status = broker.status()
            slowest = max(slowest, time.perf_counter() - began)
            assert action is not None  # served from the chunk already here
            time.sleep(0.01)
        assert not source.release.is_set() and status.chunks_received == 1  # it was in flight throughout
        # Blocking would mean waiting for the gated request (10 s); 0.15 s is half an inference.
        assert slowest < 0.15, slowest

        source.release.set()
        assert wait_until(lambda: broker.status().chunks_received >= 2)
