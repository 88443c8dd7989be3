"""Packaging: the repository root is both an ament_python ROS 2 package and a pip package.

The fast tests read package.xml, setup.py (with `ast`, never executing it), setup.cfg and the lock
files. The slow test builds ros2_ws with colcon into a temporary folder and starts a node from the
install tree, the way `ros2 run` would.
"""

from __future__ import annotations

import ast
import configparser
import fnmatch
import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pld_robot"


# --- reading setup.py without running it ----------------------------------------------------------


class _Glob(str):
    """A glob pattern found in setup.py's data_files (evaluated later against the tree)."""


def _evaluate(node: ast.AST, names: dict):
    """Evaluate the small subset of Python that setup.py uses for its arguments."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise ValueError(f"setup.py: unknown name {node.id!r} at line {node.lineno}")
        return names[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_evaluate(e, names) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_evaluate(k, names): _evaluate(v, names) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _evaluate(node.left, names) + _evaluate(node.right, names)
    if isinstance(node, ast.Call):
        func = ast.unparse(node.func)
        args = [_evaluate(a, names) for a in node.args]
        if func == "os.path.join":
            return os.path.join(*args)
        if func == "glob":
            return [_Glob(args[0])]
        if func == "sorted":
            return sorted(args[0])
        if func == "find_packages":
            return "<find_packages>"
    raise ValueError(f"setup.py: cannot evaluate {ast.unparse(node)!r} (line {node.lineno})")


def _setup_kwargs() -> dict:
    tree = ast.parse((ROOT / "setup.py").read_text(), filename="setup.py")
    names: dict = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            try:
                names[stmt.targets[0].id] = _evaluate(stmt.value, names)
            except ValueError:
                pass
    calls = [
        n for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "setup"
    ]
    assert len(calls) == 1, "setup.py must call setup() exactly once"
    return {kw.arg: _evaluate(kw.value, names) for kw in calls[0].keywords}


def _console_scripts(kwargs: dict) -> dict[str, str]:
    scripts = {}
    for spec in kwargs["entry_points"]["console_scripts"]:
        name, _, target = (s.strip() for s in spec.partition("="))
        scripts[name] = target
    return scripts


def _manifest() -> ET.Element:
    return ET.parse(ROOT / "package.xml").getroot()


def _base_name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\[=<>~! ;]", requirement.strip(), maxsplit=1)[0]).lower()


# --- fast checks ----------------------------------------------------------------------------------


def test_manifest_and_setup_py_agree():
    root = _manifest()
    kwargs = _setup_kwargs()
    assert root.get("format") == "3"
    assert root.findtext("name") == kwargs["name"] == PACKAGE
    assert root.findtext("version") == kwargs["version"]
    assert root.findtext("export/build_type") == "ament_python"
    init = ast.parse((ROOT / PACKAGE / "__init__.py").read_text())
    versions = [
        n.value.value for n in init.body
        if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in n.targets)
    ]
    assert versions in ([], [kwargs["version"]]), "pld_robot.__version__ differs from setup.py's version"


def test_manifest_declares_runtime_dependencies():
    root = _manifest()
    exec_depends = {e.text for e in root.findall("exec_depend")}
    assert {
        "rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "std_srvs", "trajectory_msgs",
        "diagnostic_msgs", "python3-numpy", "python3-yaml",
    } <= exec_depends
    assert "python3-pytest" in {e.text for e in root.findall("test_depend")}


def test_catkin_pkg_accepts_the_manifest():
    """If catkin_pkg rejects package.xml (e.g. its maintainer e-mail), colcon silently builds the
    package as plain `python`, without the AMENT_PREFIX_PATH hook."""
    try:
        from catkin_pkg import package
    except ImportError:
        pytest.fail("catkin_pkg is not installed in this environment: run scripts/bootstrap.sh (make test)")
    pkg = package.parse_package(str(ROOT / "package.xml"))  # validates; raises InvalidPackage
    pkg.validate()
    assert pkg.name == PACKAGE
    assert pkg.get_build_type() == "ament_python"


def test_console_scripts_target_existing_modules():
    scripts = _console_scripts(_setup_kwargs())
    assert {"pld-robot", "arm_node", "camera_node", "teleop_node", "sim_node"} <= set(scripts)
    for name, target in scripts.items():
        module, _, func = target.partition(":")
        assert module.split(".")[0] == PACKAGE, f"{name}: {target} is outside {PACKAGE}"
        path = ROOT.joinpath(*module.split("."))
        source = path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
        assert source.is_file(), f"console script {name!r}: module {module} has no file {path}.py"
        tree = ast.parse(source.read_text(), filename=str(source))
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        defined |= {
            t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
        }
        defined |= {
            (a.asname or a.name) for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names
        }
        assert func in defined, f"console script {name!r}: {module} defines no {func}()"


def test_data_files_install_marker_manifest_launch_and_config():
    data_files = {dest: files for dest, files in _setup_kwargs()["data_files"]}

    def installed_to(dest: str) -> list[str]:
        return [str(f) for f in data_files.get(dest, [])]

    assert installed_to("share/ament_index/resource_index/packages") == [f"resource/{PACKAGE}"]
    assert (ROOT / "resource" / PACKAGE).is_file()
    assert installed_to(f"share/{PACKAGE}") == ["package.xml"]
    for folder, pattern in (("launch", "*.launch.py"), ("config", "*.yaml")):
        patterns = installed_to(f"share/{PACKAGE}/{folder}")
        for path in sorted((ROOT / folder).glob(pattern)):
            rel = path.relative_to(ROOT).as_posix()
            assert any(fnmatch.fnmatch(rel, p) for p in patterns), (
                f"{rel} is not installed to share/{PACKAGE}/{folder} by setup.py's data_files")


def test_every_shipped_data_file_is_installed():
    """Configs in subfolders (policies/, rl/, ...) and the calibration boards are read from the share
    folder by an installed package: each must match a data_files pattern of its own folder."""
    data_files = {dest: [str(f) for f in files] for dest, files in _setup_kwargs()["data_files"]}
    shipped = [p for p in (ROOT / "config").rglob("*") if p.suffix in (".yaml", ".xml")]
    shipped += sorted((ROOT / "calibration" / "boards").glob("*.yaml"))
    assert shipped
    for path in shipped:
        rel = path.relative_to(ROOT).as_posix()
        dest = f"share/{PACKAGE}/{path.parent.relative_to(ROOT).as_posix()}"
        assert any(fnmatch.fnmatch(rel, p) for p in data_files.get(dest, [])), (
            f"{rel} is not installed to {dest} by setup.py's data_files")


def test_launch_files_start_shipped_configs_with_installed_executables():
    """Each launch file is `launch_description(<config>, exclude=...)` over a shipped config; whatever
    it excludes must be a node of that config, and any literal Node(executable=...) a console script."""
    from pld_robot.config import load_yaml

    scripts = _console_scripts(_setup_kwargs())
    for path in [*sorted((ROOT / "launch").glob("*.launch.py")), ROOT / PACKAGE / "nodes" / "launch_graph.py"]:
        tree = ast.parse(path.read_text(), filename=str(path))
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            name = ast.unparse(call.func)
            keywords = {k.arg: k.value for k in call.keywords}
            if name == "Node" and isinstance(keywords.get("executable"), ast.Constant):
                assert keywords["executable"].value in scripts, f"{path.name}: {keywords['executable'].value}"
            if name == "launch_description":
                config = ROOT / "config" / ast.literal_eval(call.args[0])
                assert config.is_file(), f"{path.name}: no {config}"
                exclude = ast.literal_eval(keywords["exclude"]) if "exclude" in keywords else ""
                sections = set(load_yaml(config))
                for node in filter(None, (n.strip() for n in exclude.split(","))):
                    assert node in sections, f"{path.name} excludes {node!r}, not a node of {config.name}"


def _third_party_imports() -> dict[str, str]:
    """top-level module -> the first file importing it, over the package's sources"""
    found: dict[str, str] = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in (PACKAGE, "__future__"):
                    found.setdefault(top, path.relative_to(ROOT).as_posix())
    return found


def test_every_import_is_a_declared_dependency():
    """A ROS import (from a ROS wheel here, or not installable here at all, like launch_ros) must be an
    exec_depend of package.xml, so rosdep installs it on the robot; anything else must be a pip
    requirement of setup.py (pinned in requirements/*.txt), so the bootstrap installs it."""
    exec_depends = {e.text for e in _manifest().findall("exec_depend")}
    kwargs = _setup_kwargs()
    pip = {_base_name(r) for r in kwargs["install_requires"]}
    pip |= {_base_name(r) for extra in kwargs["extras_require"].values() for r in extra}
    distributions = importlib.metadata.packages_distributions()
    for module, where in _third_party_imports().items():
        dists = distributions.get(module, [])
        if not dists or any(d.startswith("ros-") for d in dists):
            assert module in exec_depends, f"{where} imports ROS package {module!r}: add <exec_depend>{module}</exec_depend>"
        else:
            assert pip & {_base_name(d) for d in dists}, (
                f"{where} imports {module!r} (from {dists}), which is no direct requirement in setup.py")


def test_every_python_folder_is_a_regular_package():
    """find_packages() skips folders without __init__.py: they would work from the checkout (the
    editable install) but be missing from a colcon or wheel install."""
    for folder in sorted({p.parent for p in (ROOT / PACKAGE).rglob("*.py")}):
        assert (folder / "__init__.py").is_file(), f"{folder.relative_to(ROOT)} has no __init__.py"


def test_setup_cfg_puts_executables_where_ros2_run_looks():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg.get("develop", "script_dir") == f"$base/lib/{PACKAGE}"
    assert cfg.get("install", "install_scripts") == f"$base/lib/{PACKAGE}"


def test_packages_exclude_tests_and_bench():
    tree = ast.parse((ROOT / "setup.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "find_packages"]
    assert len(calls) == 1
    excluded = ast.literal_eval(calls[0].keywords[0].value)
    assert "tests*" in excluded and "bench*" in excluded


def test_setup_py_dependencies_are_pinned_in_the_lock_files():
    """setup.py names the direct dependencies; requirements/*.txt pins them (one place for versions)."""
    kwargs = _setup_kwargs()
    extras = kwargs["extras_require"]

    def direct_pins(lock: str) -> set[str]:
        text = (ROOT / "requirements" / lock).read_text()
        section = text.split("# direct", 1)[1].split("# transitive", 1)[0]
        return {_base_name(line) for line in section.splitlines() if line.strip() and not line.startswith("#")}

    groups = {
        "base.txt": kwargs["install_requires"],
        "sim.txt": extras["sim"],
        "ros.txt": extras["ros"],
        "dev.txt": extras["test"],
        "colcon.txt": [r for r in extras["dev"] if r not in extras["test"]],
    }
    for lock, requirements in groups.items():
        assert {_base_name(r) for r in requirements} == direct_pins(lock), f"setup.py and requirements/{lock} differ"
    for lock in groups:
        for line in (ROOT / "requirements" / lock).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                assert re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[a-z,]+\])?==[^\s=]+", line), f"{lock}: not an exact pin: {line}"
                if _base_name(line) == "torch":  # a moving torch breaks the model code; see requirements/README.md
                    assert (lock, line) == ("base.txt", "torch==2.13.0"), f"{lock}: torch must be exactly 2.13.0, in base.txt"


def test_ros2_ws_links_back_to_the_repository():
    link = ROOT / "ros2_ws" / "src" / PACKAGE
    assert link.is_symlink()
    assert os.readlink(link) == "../..", "keep the symlink relative so clones work anywhere"
    assert link.resolve() == ROOT


def test_pip_install_put_the_console_scripts_into_the_environment():
    """`pip install -e .` must write the executables to the venv's bin/, despite setup.cfg's
    ROS-style script dirs (those only apply to colcon's setup.py install/develop)."""
    # look in site-packages only: the checkout's pld_robot.egg-info (a by-product of the editable
    # build) or a sourced colcon install may come first on sys.path
    site = [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    dists = list(importlib.metadata.distributions(name=PACKAGE, path=site))
    if not dists:
        pytest.fail("pld_robot is not pip-installed in this environment: run scripts/bootstrap.sh (make test)")
    dist = dists[0]
    scripts = _console_scripts(_setup_kwargs())
    installed = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert installed == scripts, "the installed entry points are stale: re-run scripts/bootstrap.sh"
    bin_dir = Path(sysconfig.get_path("scripts"))
    for name in scripts:
        assert (bin_dir / name).is_file(), f"{bin_dir / name} missing"


# --- slow: a real colcon build and a node started from the install tree ----------------------------


def _colcon() -> list[str]:
    try:
        import colcon_core  # noqa: F401
        import colcon_ros  # noqa: F401
    except ImportError:
        pytest.fail("colcon (colcon-core, colcon-ros) is not installed in this environment: "
                    "run scripts/bootstrap.sh (make test)")
    return [sys.executable, "-m", "colcon"]


def _node_env(domain_id: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # discovery traffic stays on loopback
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _sourced(install: Path, *command: str) -> list[str]:
    """Run `command` after `source <install>/setup.bash`, as a ROS user's shell would."""
    return ["bash", "-c", 'source "$0/setup.bash" && exec "$@"', str(install), *command]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_colcon_build_and_run_teleop_node(tmp_path, monkeypatch):
    colcon = _colcon()
    build, install, log = tmp_path / "build", tmp_path / "install", tmp_path / "log"
    workspace_products = {p: (ROOT / "ros2_ws" / p).exists() for p in ("build", "install", "log")}
    result = subprocess.run(
        [*colcon, "--log-base", str(log), "build", "--base-paths", str(ROOT / "ros2_ws"),
         "--build-base", str(build), "--install-base", str(install)],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, f"colcon build failed:\n{result.stdout}\n{result.stderr}"
    # everything went to tmp_path: the workspace in the checkout is untouched
    assert {p: (ROOT / "ros2_ws" / p).exists() for p in workspace_products} == workspace_products
    colcon_log = (log / "latest_build" / "logger_all.log").read_text()
    identified = re.findall(r"Package '([^']+)' with type '([^']+)' and name '([^']+)'", colcon_log)
    assert [(t, n) for _, t, n in identified] == [("ros.ament_python", PACKAGE)], (
        f"colcon identified {identified}; a plain 'python' type means catkin_pkg rejected package.xml")

    prefix = install / PACKAGE
    teleop = prefix / "lib" / PACKAGE / "teleop_node"
    assert teleop.is_file() and os.access(teleop, os.X_OK)
    for name in _console_scripts(_setup_kwargs()):
        assert (prefix / "lib" / PACKAGE / name).is_file(), f"ros2 run pld_robot {name} would not find it"
    share = prefix / "share" / PACKAGE
    assert (share / "package.xml").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    assert (share / "hook" / "ament_prefix_path.dsv").is_file()
    for folder, pattern in (("launch", "*.launch.py"), ("config", "*.yaml")):
        for path in (ROOT / folder).glob(pattern):
            assert (share / folder / path.name).is_file(), f"{folder}/{path.name} not installed"

    site_packages = prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    source_modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / PACKAGE).rglob("*.py")}
    installed_modules = {p.relative_to(site_packages).as_posix() for p in (site_packages / PACKAGE).rglob("*.py")}
    assert installed_modules == source_modules

    domain_id = 10 + os.getpid() % 80  # other ROS tests use 90 and up
    env = _node_env(domain_id)

    # The sourced install tree, not the editable checkout, provides the package and its share folder.
    probe = subprocess.run(
        _sourced(install, sys.executable, "-c",
                 "import pld_robot, os; from ament_index_python.packages import get_package_share_directory as g;"
                 " print(pld_robot.__file__); print(g('pld_robot')); print(os.environ['AMENT_PREFIX_PATH'])"),
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    module_file, share_dir, ament_prefix_path = probe.stdout.strip().splitlines()[-3:]
    assert Path(module_file).is_relative_to(prefix), module_file
    assert Path(share_dir) == share
    assert str(prefix) in ament_prefix_path.split(os.pathsep)

    import rclpy
    from rclpy.context import Context

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    stdout, stderr = tmp_path / "node.out", tmp_path / "node.err"
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen(
            _sourced(install, str(teleop), "--ros-args", "-p", "source:=joy"),
            env=env, cwd=tmp_path, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
        )
    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = None
    try:
        node = rclpy.create_node("packaging_probe", context=context)
        deadline = time.monotonic() + 60
        names: list[str] = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, (
                f"teleop_node exited early ({proc.returncode}):\n{stderr.read_text()}")
            names = node.get_node_names()
            if "teleop_node" in names:
                break
            time.sleep(0.2)
        assert "teleop_node" in names, f"teleop_node never appeared in the ROS graph (saw {names})"

        proc.send_signal(signal.SIGINT)  # what Ctrl-C in `ros2 run` does
        returncode = proc.wait(timeout=30)
        # the node catches KeyboardInterrupt/ExternalShutdownException and exits normally
        assert returncode == 0, f"exit code {returncode}:\n{stderr.read_text()}"
        assert "Traceback" not in stderr.read_text(), stderr.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_every_node_of_every_shipped_graph_is_an_installed_executable():
    """The launch files start `graph_from_config(config)` nodes with `ros2 run`-style executables:
    each must be a console script (installed to lib/pld_robot), with the same module as the
    in-process runner instantiates."""
    from pld_robot.nodes.graph import EXECUTABLES, graph_from_config

    scripts = _console_scripts(_setup_kwargs())
    for executable, (module, _, _) in EXECUTABLES.items():
        assert scripts.get(executable, "").partition(":")[0] == module, executable
    for config in sorted((ROOT / "config").glob("*.yaml")):
        for spec in graph_from_config(config):
            assert spec.executable in scripts, f"{config.name}: node {spec.name} has no executable"
