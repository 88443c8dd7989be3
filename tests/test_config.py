"""pld_robot.config: strict YAML -> dataclass loading, and the shipped robot configs.

Importing the node modules imports rclpy (no node is created here)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from pld_robot.config import (
    ConfigError,
    deep_merge,
    flatten,
    from_dict,
    load_node_params,
    load_yaml,
    node_params,
    unflatten,
)

ROOT = Path(__file__).resolve().parents[1]
SIM_YAML = ROOT / "config" / "sim.yaml"
FRANKA_YAML = ROOT / "config" / "franka.yaml"


# -- small dataclasses exercising every supported type ---------------------------------------

@dataclass(frozen=True)
class Inner:
    gain: float = 1.0
    axes: tuple[int, int, int] = (0, 1, 2)


@dataclass(frozen=True)
class Leaf:
    name: str  # required


@dataclass(frozen=True)
class Outer:
    leaf: Leaf
    rate_hz: float = 10.0
    count: int = 3
    enabled: bool = True
    mode: Literal["waypoint", "velocity"] = "waypoint"
    inner: Inner = field(default_factory=Inner)
    names: tuple[str, ...] = ("a", "b")
    scales: list[float] = field(default_factory=list)
    table: dict[str, Inner] = field(default_factory=dict)
    note: Optional[str] = None  # noqa: UP045 - typing.Optional (typing.Union) on purpose
    label: str | None = None  # and the PEP 604 spelling (types.UnionType)

    def __post_init__(self):
        if self.rate_hz <= 0:
            raise ValueError("rate_hz must be positive")


def build(**data):
    data.setdefault("leaf", {"name": "x"})
    return from_dict(Outer, data, where="node")


def test_a_full_mapping_builds_every_field_with_its_type():
    cfg = build(
        rate_hz=30,  # an int where a float is expected is fine (YAML writes 30 for 30.0)
        count=5,
        enabled=False,
        mode="velocity",
        inner={"gain": 0.5, "axes": [2, 1, 0]},
        names=["x", "y", "z"],
        scales=[1, 2.5],
        table={"front": {"gain": 2.0}},
        note="hello",
        label="x",
    )
    assert cfg.rate_hz == 30.0 and isinstance(cfg.rate_hz, float)
    assert cfg.count == 5 and cfg.enabled is False and cfg.mode == "velocity"
    assert cfg.inner == Inner(gain=0.5, axes=(2, 1, 0))
    assert cfg.names == ("x", "y", "z") and isinstance(cfg.names, tuple)
    assert cfg.scales == [1.0, 2.5] and all(isinstance(v, float) for v in cfg.scales)
    assert cfg.table == {"front": Inner(gain=2.0)}
    assert cfg.note == "hello" and cfg.label == "x"
    assert build(note=None).note is None and build(label=None).label is None


def test_defaults_fill_what_is_left_out():
    assert build() == Outer(leaf=Leaf("x"))


def test_unknown_key_is_named_with_its_path():
    with pytest.raises(ConfigError, match=r"node: unknown key\(s\) \['rate'\]"):
        build(rate=10.0)
    with pytest.raises(ConfigError, match=r"node\.inner: unknown key\(s\) \['gian'\]") as info:
        build(inner={"gian": 0.5})
    assert "gain" in str(info.value)  # the known keys are listed, so the typo is easy to spot
    with pytest.raises(ConfigError, match=r"node\.table\.front: unknown key\(s\) \['bogus'\]"):
        build(table={"front": {"bogus": 1}})


@pytest.mark.parametrize(
    "data, where, what",
    [
        ({"rate_hz": "fast"}, "node.rate_hz", "number"),
        ({"rate_hz": True}, "node.rate_hz", "number"),  # a bool is not a number
        ({"count": 2.5}, "node.count", "integer"),
        ({"count": False}, "node.count", "integer"),
        ({"enabled": "yes"}, "node.enabled", "true or false"),
        ({"enabled": 1}, "node.enabled", "true or false"),
        ({"names": "ab"}, "node.names", "list"),
        ({"names": ["a", 3]}, r"node.names\[1\]", "string"),
        ({"inner": {"gain": "high"}}, "node.inner.gain", "number"),
        ({"inner": [1, 2]}, "node.inner", "mapping"),
        ({"inner": {"axes": [0, 1, 2.5]}}, r"node.inner.axes\[2\]", "integer"),
        ({"scales": [1.0, None]}, r"node.scales\[1\]", "number"),
        ({"table": {"front": {"gain": "x"}}}, "node.table.front.gain", "number"),
        ({"table": ["front"]}, "node.table", "mapping"),
        ({"note": 5}, "node.note", "string"),
        ({"label": 5}, "node.label", "string"),
    ],
)
def test_wrong_type_is_named_with_its_path(data, where, what):
    with pytest.raises(ConfigError, match=where) as info:
        build(**data)
    assert what in str(info.value)


def test_fixed_length_tuple_checks_its_length():
    with pytest.raises(ConfigError, match=r"node\.inner\.axes: expected 3 values, got 2"):
        build(inner={"axes": [0, 1]})
    with pytest.raises(ConfigError, match=r"node\.inner\.axes: expected 3 values, got 4"):
        build(inner={"axes": [0, 1, 2, 3]})


def test_variable_length_tuple_takes_any_length():
    assert build(names=[]).names == ()
    assert build(names=["a"] * 9).names == ("a",) * 9


def test_literal_rejects_other_values_and_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"node\.mode: 'impedance' is not one of \['waypoint', 'velocity'\]"):
        build(mode="impedance")


def test_missing_required_field_is_named():
    with pytest.raises(ConfigError, match=r"node\.leaf: required but missing"):
        from_dict(Outer, {}, where="node")
    with pytest.raises(ConfigError, match=r"node\.leaf\.name: required but missing"):
        build(leaf={})


def test_validation_in_the_dataclass_becomes_a_config_error_naming_the_section():
    with pytest.raises(ConfigError, match=r"node: rate_hz must be positive"):
        build(rate_hz=0.0)


def test_a_section_that_is_not_a_mapping_is_refused():
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict(Outer, ["leaf"], where="node")


# -- ROS parameter layout ------------------------------------------------------------------

def test_node_params_merges_the_wildcard_section_under_the_node_section():
    data = {
        "/**": {"ros__parameters": {"rate": 10.0, "safety": {"a": 1, "b": 2}, "shared": "yes"}},
        "arm_node": {"ros__parameters": {"rate": 30.0, "safety": {"b": 3}}},
        "other": {"ros__parameters": {"rate": 99.0}},
    }
    assert node_params(data, "arm_node") == {"rate": 30.0, "safety": {"a": 1, "b": 3}, "shared": "yes"}
    assert node_params(data, "nobody") == {"rate": 10.0, "safety": {"a": 1, "b": 2}, "shared": "yes"}
    # The input is not modified by merging.
    assert data["/**"]["ros__parameters"]["safety"] == {"a": 1, "b": 2}


def test_node_params_accepts_a_leading_slash_node_name():
    data = {"/arm_node": {"ros__parameters": {"rate": 5.0}}}
    assert node_params(data, "arm_node") == {"rate": 5.0}


def test_node_params_without_ros_parameters_is_an_error_naming_the_section():
    with pytest.raises(ConfigError, match=r"my.yaml: section 'arm_node' must contain 'ros__parameters'"):
        node_params({"arm_node": {"rate": 5.0}}, "arm_node", source="my.yaml")


def test_node_params_of_an_empty_section_is_empty():
    assert node_params({"arm_node": {"ros__parameters": None}}, "arm_node") == {}


def test_deep_merge_overrides_leaves_and_keeps_siblings():
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"c": 3}, "e": 4}) == {
        "a": {"b": 1, "c": 3}, "d": 1, "e": 4,
    }
    assert deep_merge({"a": {"b": 1}}, {"a": 5}) == {"a": 5}  # a leaf replaces a whole section


def test_flatten_and_unflatten_are_inverse():
    nested = {
        "state_hz": 100.0,
        "arm": {"host": "h", "safety": {"workspace_low": [0.25, -0.35, 0.02], "watchdog_periods": 3.0},
                "action": {"names": ["dx"], "control_hz": 10.0}},
    }
    flat = flatten(nested)
    assert flat == {
        "state_hz": 100.0,
        "arm.host": "h",
        "arm.safety.workspace_low": [0.25, -0.35, 0.02],
        "arm.safety.watchdog_periods": 3.0,
        "arm.action.names": ["dx"],
        "arm.action.control_hz": 10.0,
    }
    assert unflatten(flat) == nested
    assert flatten(unflatten(flat)) == flat


@pytest.mark.parametrize("path", [SIM_YAML, FRANKA_YAML], ids=lambda p: p.name)
def test_shipped_files_round_trip_through_flatten(path):
    data = load_yaml(path)
    for section in data:
        params = node_params(data, section.lstrip("/"))
        assert unflatten(flatten(params)) == params


def test_load_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("arm_node: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_yaml(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: top level must be a mapping"):
        load_yaml(listy)


# -- the shipped configs -------------------------------------------------------------------

def arm_config(path, node="arm_node"):
    from pld_robot.nodes.arm_node import ArmNodeConfig

    return from_dict(ArmNodeConfig, load_node_params(path, node), where=node)


def sim_config(path, node="sim_node"):
    from pld_robot.nodes.sim_node import SimNodeConfig

    return from_dict(SimNodeConfig, load_node_params(path, node), where=node)


def test_shipped_sim_yaml_loads_into_the_node_configs():
    arm = arm_config(SIM_YAML)
    sim = sim_config(SIM_YAML)
    raw = load_node_params(SIM_YAML, "arm_node")["arm"]
    # Spot checks that the values reached the typed configs, not just that nothing raised.
    assert arm.arm.host == sim.lab.host  # the arm connects where the sim binds
    assert arm.arm.realtime is False
    assert arm.arm.streaming == raw["streaming"]
    assert arm.arm.action.names == ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
    assert arm.arm.action.control_hz == 10.0
    assert arm.arm.safety.workspace_low == (0.25, -0.35, 0.01)
    assert arm.arm.safety.watchdog_periods == 3.0
    assert arm.arm.safety.approach_gain == 0.5
    assert sim.lab.cube_x_range == (0.45, 0.6)
    assert set(sim.lab.cameras) == {"front", "wrist"}
    assert sim.lab.cameras["wrist"].mount == "wrist"
    assert sim.lab.cameras["front"].position == (1.25, 0.0, 0.55)


def test_shipped_franka_yaml_loads_into_the_arm_node_config():
    arm = arm_config(FRANKA_YAML)
    assert arm.arm.host == "172.16.0.2"
    assert arm.arm.realtime is True
    assert arm.arm.home_dynamics_factor == 0.1
    assert len(arm.arm.home_joints) == 7
    assert arm.arm.safety.workspace_low == (0.25, -0.35, 0.02)
    assert arm.arm.safety.approach_gain == 0.5


@pytest.mark.parametrize("path", [SIM_YAML, FRANKA_YAML], ids=lambda p: p.name)
def test_shipped_files_set_every_safety_limit_explicitly(path):
    """Each limit is a value in the robot YAML: none is left to a code default."""
    from pld_robot.robots.safety import SafetyLimits

    safety = load_node_params(path, "arm_node")["arm"]["safety"]
    assert set(safety) == {f.name for f in fields(SafetyLimits)}


def _sim_copy(tmp_path, edit):
    data = load_yaml(SIM_YAML)
    edit(data)
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "edit, load, names",
    [
        (lambda d: d["arm_node"]["ros__parameters"]["arm"]["safety"].update(max_linear_speed="fast"),
         arm_config, "arm_node.arm.safety.max_linear_speed"),
        (lambda d: d["arm_node"]["ros__parameters"]["arm"]["safety"].update(workspace_low=[0.25, -0.35]),
         arm_config, "arm_node.arm.safety.workspace_low"),
        (lambda d: d["arm_node"]["ros__parameters"]["arm"].update(streaming="torque"),
         arm_config, "arm_node.arm.streaming"),
        (lambda d: d["arm_node"]["ros__parameters"]["arm"]["action"].update(contrl_hz=10.0),
         arm_config, "contrl_hz"),
        (lambda d: d["sim_node"]["ros__parameters"]["lab"]["cameras"]["front"].update(fps="ten"),
         sim_config, "sim_node.lab.cameras.front.fps"),
        (lambda d: d["sim_node"]["ros__parameters"]["lab"].update(seed=0.5),
         sim_config, "sim_node.lab.seed"),
    ],
    ids=["wrong-type", "wrong-length", "bad-literal", "typo-key", "nested-dict-value", "float-for-int"],
)
def test_a_bad_value_in_a_copy_of_sim_yaml_names_the_key(tmp_path, edit, load, names):
    path = _sim_copy(tmp_path, edit)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert names in str(info.value)


@pytest.mark.parametrize(
    "name, value",
    [("max_rotation_per_step", -0.1), ("approach_gain", 0.0), ("approach_gain", 1.5)],
)
def test_a_safety_limit_that_fails_validation_names_the_section(tmp_path, name, value):
    path = _sim_copy(
        tmp_path,
        lambda d: d["arm_node"]["ros__parameters"]["arm"]["safety"].update({name: value}),
    )
    with pytest.raises(ConfigError, match=rf"arm_node\.arm\.safety: .*{name}"):
        arm_config(path)


def test_an_approach_gain_of_one_in_a_copy_of_sim_yaml_loads(tmp_path):
    path = _sim_copy(
        tmp_path, lambda d: d["arm_node"]["ros__parameters"]["arm"]["safety"].update(approach_gain=1),
    )
    assert arm_config(path).arm.safety.approach_gain == 1.0
