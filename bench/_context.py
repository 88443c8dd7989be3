"""What a benchmark was measured on: machine, versions, commit and whether the tree was modified."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine_context(distributions: tuple[str, ...]) -> dict:
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        **{name.replace("-", "_"): _version(name) for name in distributions},
        "git_commit": _git("rev-parse", "--short", "HEAD") or None,
        "git_modified": (_git("diff", "--name-only", "HEAD") or "").split(),  # a working tree is measured
    }


def emit(result: dict, started: float, out: Path | None) -> None:
    """Finish a run's JSON (load at the end, wall time), write it to `out` if given, print it as one line."""
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_s"] = round(time.perf_counter() - started, 1)
    if out:
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
