"""docker/: the images cannot be built here (no Docker), so check what can go wrong on paper: the
Dockerfiles install from the lock files and pin their bases, and the compose file's commands are
real `pld-robot` commands with real options."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))


def test_there_is_a_robot_and_a_workstation_image():
    assert {p.name for p in DOCKERFILES} == {"robot.Dockerfile", "workstation.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_pins_its_base_and_installs_only_the_lock_files(dockerfile):
    text = dockerfile.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert bases and all(":" in b and not b.endswith(":latest") for b in bases), f"unpinned base image: {bases}"
    installs = re.findall(r"pip install ([^\\\n&]+)", text)
    assert installs
    for args in installs:
        for requirement in re.findall(r"-r (\S+)", args):
            assert (ROOT / requirement).is_file(), f"{dockerfile.name}: {requirement} does not exist"
        named = [a for a in args.split() if not a.startswith("-") and a not in (".",) and not a.startswith("requirements/")]
        assert not named, f"{dockerfile.name}: installs {named} outside the lock files (pin them in requirements/)"
    for copied in re.findall(r"^COPY\s+(\S+)\s", text, flags=re.MULTILINE):
        assert (ROOT / copied).exists(), f"{dockerfile.name}: COPY {copied}: no such path"


def test_dockerignore_keeps_the_venv_and_recordings_out_of_the_build_context():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv/", "pld_data/", "ros2_ws/build/", "ros2_ws/install/"} <= set(ignored)


def test_compose_runs_the_policy_server_and_the_learner_with_real_options(capsys):
    from pld_robot.cli import main

    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"policy-server", "learner"}
    for name, service in services.items():
        assert service["build"]["dockerfile"] == "docker/workstation.Dockerfile"
        assert (ROOT / "docker" / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        command = [re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(c)) for c in service["command"]]
        with pytest.raises(SystemExit) as exit_:
            main([command[0], "--help"])
        assert exit_.value.code == 0
        usage = capsys.readouterr().out
        for option in (c for c in command if c.startswith("--")):
            assert option in usage, f"{name}: pld-robot {command[0]} has no {option}"
    assert "--host" in services["policy-server"]["command"]
    assert "PLD_POLICY_TOKEN" in services["policy-server"]["environment"], "a server on the network needs a token"
