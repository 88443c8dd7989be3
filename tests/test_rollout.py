"""The rollout state machine and who acts on a tick: pure logic, every transition."""

from __future__ import annotations

import numpy as np
import pytest

from pld_robot.data.layout import Outcome, Source
from pld_robot.episode.modes import Mode, compose, sample_probe_steps
from pld_robot.episode.rollout import Event, Rollout, RolloutConfig, State, TickInputs

HOLD = np.array([0, 0, 0, 0, 0, 0, 1.0], dtype=np.float32)
BASE = np.full(7, 0.01, dtype=np.float32)


def inputs(**kw) -> TickInputs:
    return TickInputs(**{"base": BASE, "residual": None, "teleop": None, "hold": HOLD, **kw})


def running(config: RolloutConfig) -> Rollout:
    r = Rollout(config)
    assert r.tick(inputs()).home and r.state is State.HOMING
    assert not r.tick(inputs(events=(Event.START,))).begin, "START before homing is done does nothing"
    r.homed()
    plan = r.tick(inputs(events=(Event.START,)))
    assert plan.begin and r.state is State.RUNNING
    return r


def test_probe_prefix_is_uniform_on_0_to_alpha_t():
    rng = np.random.default_rng(0)
    samples = np.array([sample_probe_steps(rng, 0.6, 100) for _ in range(12000)])
    assert samples.min() == 0 and samples.max() == 60
    counts = np.bincount(samples, minlength=61)
    assert np.all(np.abs(counts - 12000 / 61) < 6 * np.sqrt(12000 / 61)), "every length about equally likely"
    with pytest.raises(ValueError, match="alpha"):
        sample_probe_steps(rng, 1.5, 100)


def test_compose():
    teleop = np.full(7, -0.01, dtype=np.float32)
    residual = np.full(7, 0.002, dtype=np.float32)
    assert compose(Mode.BASE, 5, 0, BASE, residual, teleop, HOLD)[1] is Source.HUMAN
    action, source, starved = compose(Mode.HYBRID, 3, 4, BASE, residual, None, HOLD)
    assert source is Source.PROBE and np.array_equal(action, BASE) and not starved
    action, source, _ = compose(Mode.HYBRID, 4, 4, BASE, residual, None, HOLD)
    assert source is Source.RESIDUAL and np.allclose(action, BASE + residual)
    action, source, _ = compose(Mode.RESIDUAL, 0, 0, BASE, None, None, HOLD)
    assert source is Source.RESIDUAL and np.array_equal(action, BASE), "no residual yet: a zero one"
    action, source, starved = compose(Mode.BASE, 0, 0, None, None, None, HOLD)
    assert starved and np.array_equal(action, HOLD)
    action, source, starved = compose(Mode.TELEOP, 0, 0, BASE, None, None, HOLD)
    assert source is Source.HUMAN and np.array_equal(action, HOLD) and not starved


def test_hybrid_episode_probes_then_hands_over_and_times_out():
    r = running(RolloutConfig(mode=Mode.HYBRID, max_steps=30, alpha=0.6, seed=3))
    sources, plan = [], None
    for _ in range(30):
        plan = r.tick(inputs())
        sources.append(plan.source)
    assert sources == [Source.PROBE] * r.probe_steps + [Source.RESIDUAL] * (30 - r.probe_steps)
    assert 0 <= r.probe_steps <= 18
    assert plan.end is Outcome.TIMEOUT and r.state is State.COMMITTING
    r.committed()
    assert r.state is State.HOMING and r.tick(inputs()).home


def test_the_reward_declaring_success_ends_the_episode():
    r = running(RolloutConfig())
    assert [r.tick(inputs()).end for _ in range(5)] == [None] * 5
    plan = r.tick(inputs(events=(Event.REWARD_SUCCESS,)))
    assert plan.end is Outcome.SUCCESS and plan.message == "success"
    assert r.session.outcomes["success"] == 1 and r.session.success_rate == 1.0
    assert r.session.last == {"outcome": "success", "steps": 5, "probe_steps": 0}


def test_a_multi_stage_task_succeeds_after_its_last_stage():
    r = running(RolloutConfig(stages=3))
    assert r.stage == 0 and r.stage_starts == [0]
    for _ in range(4):
        r.tick(inputs())
    plan = r.tick(inputs(events=(Event.REWARD_SUCCESS,)))
    assert plan.end is None and plan.command is not None, "the episode goes on into the next stage"
    assert plan.stage == 1 and r.stage_starts == [0, 4] and "stage 1 of 3 done" in plan.message
    for _ in range(3):
        assert r.tick(inputs()).stage is None, "the stage is announced once, when it changes"
    assert r.tick(inputs(events=(Event.REWARD_SUCCESS,))).stage == 2
    assert r.stage_starts == [0, 4, 8]
    plan = r.tick(inputs(events=(Event.REWARD_SUCCESS,)))
    assert plan.end is Outcome.SUCCESS and "stage 3 of 3" in plan.message
    r.committed()
    r.homed()
    assert r.tick(inputs(events=(Event.START,))).stage == 0 and r.stage_starts == [0], "the next episode starts over"


@pytest.mark.parametrize("event, outcome", [(Event.SUCCESS, Outcome.SUCCESS), (Event.FAILURE, Outcome.FAILURE),
                                            (Event.ESTOP, Outcome.ABORTED)])
def test_buttons_and_estop_end_the_episode(event, outcome):
    r = running(RolloutConfig())
    r.tick(inputs())
    plan = r.tick(inputs(events=(event,)))
    assert plan.end is outcome and plan.command is None


def test_a_fault_aborts_then_waits_for_the_fix_and_start():
    r = running(RolloutConfig())
    r.tick(inputs())
    plan = r.tick(inputs(base=None, fault="policy: server gone"))
    assert plan.end is Outcome.ABORTED and plan.command is None and "server gone" in plan.message
    r.committed()
    assert r.state is State.FAULTED
    assert r.tick(inputs(fault="policy: server gone", events=(Event.START,))).home is False
    assert r.state is State.FAULTED, "START while the fault is still there does nothing"
    assert r.tick(inputs()).home is False and r.state is State.FAULTED, "cleared, but nobody said go"
    r.tick(inputs(events=(Event.START,)))
    assert r.state is State.HOMING and r.tick(inputs()).home
    r.homed()
    assert r.tick(inputs(events=(Event.START,))).begin


def test_a_fault_while_waiting_for_reset_blocks_the_start():
    r = Rollout(RolloutConfig())
    r.tick(inputs())
    r.homed()
    r.tick(inputs(fault="observation 2.0 s old"))
    assert r.state is State.FAULTED
    assert not r.tick(inputs(events=(Event.START,))).begin


def test_starved_ticks_hold_the_arm_and_are_counted():
    r = running(RolloutConfig())
    plan = r.tick(inputs(base=None))
    assert np.array_equal(plan.command, HOLD) and r.session.starved_ticks == 1
