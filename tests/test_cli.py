"""`pld-robot` refuses bad input up front, with a message that names the problem."""

import subprocess
import sys
import time

from pld_robot.paths import shipped_config


def run_cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pld_robot.cli", *args], capture_output=True,
                          text=True, timeout=60)
    return done, time.monotonic() - start


def test_missing_config_file_is_named(tmp_path):
    done, _ = run_cli("sim", "--config", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2
    assert "config file not found" in done.stderr and "nope.yaml" in done.stderr


def edited_sim_config(tmp_path, old: str, new: str) -> str:
    text = shipped_config("sim.yaml").read_text()
    assert old in text
    config = tmp_path / "sim.yaml"
    config.write_text(text.replace(old, new))
    return str(config)


def test_a_typo_in_any_node_section_stops_before_anything_starts(tmp_path):
    config = edited_sim_config(tmp_path, "    state_hz: 100.0", "    state_hz: 100.0\n    stat_hz: 50.0")
    done, seconds = run_cli("sim", "--config", config, "--episodes", "1")
    assert done.returncode == 2
    assert "arm_node" in done.stderr and "stat_hz" in done.stderr
    assert "sim lab up" not in done.stderr + done.stdout, "the graph started despite the bad config"
    assert seconds < 30


def test_an_invalid_value_is_named_with_its_path(tmp_path):
    config = edited_sim_config(tmp_path, "max_translation_per_step: 0.02", "max_translation_per_step: .nan")
    done, _ = run_cli("sim", "--config", config, "--episodes", "1")
    assert done.returncode == 2
    assert "arm_node.arm.safety.max_translation_per_step" in done.stderr
