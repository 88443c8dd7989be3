"""`pld-robot pld-sim` end to end: the stages in order, each one's output on disk under OUT.

    OUT/demos.zarr                 successful scripted demonstrations
    OUT/generalist_init/           the freshly initialised PI0
    OUT/generalist/ (+ .run/)      SFT on the demonstrations: the generalist
    OUT/probe/                     the residual actor trained on the generalist (actor-N.safetensors)
    OUT/pld_episodes.zarr          N successful hybrid episodes
    OUT/base_episodes.zarr         N successful base-only episodes of the generalist
    OUT/student_pld/ (+ .run/)     the generalist distilled on pld_episodes.zarr
    OUT/student_base/ (+ .run/)    ... on base_episodes.zarr, with the same budget
    OUT/stages/<stage>.json        written when a stage is done: its summary and wall time
    OUT/result.json                the three success rates on the same held-out seeds

Run again with the same OUT and config, a stopped run continues: a stage with its record is skipped;
one without is redone from scratch (its partial output removed), except an SFT run, which resumes
from its last saved training state.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from pld_robot.config import ConfigError
from pld_robot.data.normalization import compute_stats
from pld_robot.data.reader import EpisodeReader
from pld_robot.pld_sim import stages
from pld_robot.pld_sim.config import PLDSimConfig
from pld_robot.pld_sim.episodes import store_schema
from pld_robot.pld_sim.sft import build_initial_pi0, run_sft
from pld_robot.sim.fast_env import FastEnvConfig, PickCubeEnv

CONFIG_FILE = "pld_sim.json"
RESULT_FILE = "result.json"
POLICIES = ("generalist", "student_pld", "student_base")


def run_pld_sim(out: Path, config: PLDSimConfig, say: Callable[[str], None] = print,
                status: Callable[[str], None] | None = None) -> dict:
    """Every stage not done yet, then the result (also written to OUT/result.json). `say` gets a
    line per finished stage, `status` the progress lines within one (default: none)."""
    status = status or (lambda line: None)
    stages.rl_config(config)  # a bad probe.rl_changes fails now, not after the first stages
    out.mkdir(parents=True, exist_ok=True)
    _check_same_config(out, config)
    env = PickCubeEnv(FastEnvConfig(max_steps=config.max_steps))
    try:
        run = _Stages(out, say)
        run.stage("demos", lambda: stages.record_demos(out / "demos.zarr", config, status),
                  partial=[out / "demos.zarr"])
        run.stage("generalist", lambda: _sft_from_scratch(out, config, env), partial=[out / "generalist_init"])
        generalist = stages.load_base(out / "generalist", config)
        run.stage("probe", lambda: stages.probe_residual(env, generalist, config, out / "probe", status),
                  partial=[out / "probe"])
        run.stage("pld_episodes", lambda: stages.collect(out / "pld_episodes.zarr", env, generalist,
                                                         stages.load_residual(out / "probe"), config, status),
                  partial=[out / "pld_episodes.zarr"])
        run.stage("base_episodes", lambda: stages.collect(out / "base_episodes.zarr", env, generalist, None,
                                                          config, status), partial=[out / "base_episodes.zarr"])
        n = _same_n(out)
        for student, store in (("student_pld", "pld_episodes.zarr"), ("student_base", "base_episodes.zarr")):
            # the generalist's statistics for both: the students differ only in their data
            run.stage(student, lambda student=student, store=store: run_sft(
                [out / store], out / "generalist", out / student, config.distill, stats="base", seed=config.seed,
                max_episodes=n))
        for name in POLICIES:
            run.stage(f"eval_{name}", lambda name=name: stages.evaluate(
                env, stages.load_base(out / name, config), config, status, name))
        groups = stages.eval_groups(env, config)
    finally:
        env.close()
    result = _result(out, config, groups)
    (out / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _same_n(out: Path) -> int:
    """N for both students: the smaller of the two stores' counts (they differ only when a collection
    ran out of attempts)."""
    counts = {name: json.loads((out / "stages" / f"{name}.json").read_text())["successes"]
              for name in ("pld_episodes", "base_episodes")}
    if not min(counts.values()):
        raise RuntimeError(f"no successful episode to distill on ({counts}); raise rollouts.max_attempts or "
                           "train the generalist longer")
    return min(counts.values())


def _sft_from_scratch(out: Path, config: PLDSimConfig, env: PickCubeEnv) -> dict:
    init = out / "generalist_init"
    if not init.is_dir():
        demos = EpisodeReader(out / "demos.zarr")
        stats = compute_stats(demos, demos.select(outcome="success"), std_floor=config.generalist.std_floor)
        build_initial_pi0(init, store_schema(env), config.generalist, stats, seed=config.seed)
    return run_sft([out / "demos.zarr"], init, out / "generalist", config.generalist.sft, stats="base",
                   seed=config.seed)


class _Stages:
    """Runs a stage unless its record says it is done; writes the record when it is."""

    def __init__(self, out: Path, say: Callable[[str], None]):
        self.records = out / "stages"
        self.records.mkdir(exist_ok=True)
        self.say = say

    def stage(self, name: str, work: Callable[[], dict], partial: list[Path] = ()) -> dict:
        record = self.records / f"{name}.json"
        if record.is_file():
            done = json.loads(record.read_text())
            self.say(f"[{name}] done before ({done['wall_s']:.0f} s); skipped")
            return done
        for path in partial:  # left by a run that stopped inside this stage
            shutil.rmtree(path, ignore_errors=True)
        self.say(f"[{name}] ...")
        started = time.monotonic()
        summary = {**work(), "wall_s": round(time.monotonic() - started, 1)}
        record.write_text(json.dumps(summary, indent=2) + "\n")
        shown = {k: v for k, v in summary.items() if k not in ("curve", "outcomes")}
        self.say(f"[{name}] done: {json.dumps(shown)}")
        return summary


def _check_same_config(out: Path, config: PLDSimConfig) -> None:
    """A continued run must be the same run: stages done under other sizes would be mixed in."""
    path = out / CONFIG_FILE
    wanted = json.loads(json.dumps(dataclasses.asdict(config)))
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != wanted:
            changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            raise ConfigError(f"{out} holds a pld-sim run with another config (differs in {changed}); "
                              "use a new --out")
    else:
        path.write_text(json.dumps(wanted, indent=2) + "\n")


def _result(out: Path, config: PLDSimConfig, groups: dict[str, list[bool]]) -> dict:
    records = {p.stem: json.loads(p.read_text()) for p in (out / "stages").glob("*.json")}
    return {
        "success_rate": {name: records[f"eval_{name}"]["success_rate"] for name in POLICIES},
        "success_rate_by_cube_pose": _by_group({name: records[f"eval_{name}"].get("outcomes") for name in POLICIES},
                                               groups),
        "eval_episodes": config.eval.episodes, "eval_seed": config.eval.seed,
        "n_episodes": {"pld": records["student_pld"]["episodes"], "base": records["student_base"]["episodes"]},
        "collection": {k: {f: records[k][f] for f in ("attempts", "successes", "success_rate")}
                       for k in ("demos", "pld_episodes", "base_episodes")},
        "distill_steps": config.distill.steps, "distill_batch_size": config.distill.batch_size,
        "probe_env_steps": config.probe.env_steps, "probe_final_success": records["probe"]["final_success"],
        "stage_wall_s": {name: records[name]["wall_s"] for name in records},
        "out": str(out),
    }


def _by_group(outcomes: dict[str, str | None], groups: dict[str, list[bool]]) -> dict | None:
    """Each policy's success rate on each group of held-out seeds (stages.eval_groups); None when the
    evaluation records predate per-seed outcomes."""
    if None in outcomes.values():
        return None
    result = {}
    for group, members in groups.items():
        picked = [i for i, member in enumerate(members) if member]
        result[group] = {"episodes": len(picked), **{
            name: round(sum(o[i] == "1" for i in picked) / len(picked), 4) if picked else None
            for name, o in outcomes.items()}}
    return result
