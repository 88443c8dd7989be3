"""Draws docs/gamepad.svg, the gamepad mapping of config/teleop.yaml, for the operator's guide.

    .venv/bin/python scripts/gamepad_figure.py [config/teleop.yaml] [docs/gamepad.svg]

The labels come from the YAML's mapping, so the picture follows a remapped file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: small, searchable, diffable
import matplotlib.pyplot as plt
import yaml
from matplotlib import patches

ROOT = Path(__file__).resolve().parent.parent
# where each SDL GameController input sits on an Xbox-style pad (x, y in the figure's units)
BUTTONS = {0: (7.6, 2.3, "A"), 1: (8.4, 3.1, "B"), 2: (6.8, 3.1, "X"), 3: (7.6, 3.9, "Y"), 4: (4.4, 3.4, "BACK"),
           6: (5.6, 3.4, "START"), 9: (2.4, 5.3, "LB"), 10: (7.6, 5.3, "RB"), 11: (3.4, 2.5, "^"),
           12: (3.4, 1.5, "v"), 13: (2.9, 2.0, "<"), 14: (3.9, 2.0, ">")}
STICKS = {"left": (2.4, 3.3), "right": (6.2, 1.9)}
TRIGGERS = {4: (2.4, 6.2, "LT"), 5: (7.6, 6.2, "RT")}
# where each control's label goes
LABEL_AT = {"LT": (0.4, 6.6), "LB": (0.4, 5.6), "RT": (9.6, 6.6), "RB": (9.6, 5.6), "Y": (9.6, 4.4),
            "B": (9.6, 3.4), "X": (9.6, 2.7), "A": (9.6, 1.9), "START": (5.0, 4.5), "BACK": (5.0, 4.5),
            "^": (3.4, -0.1), "v": (3.4, -0.1), "<": (2.2, -0.1), ">": (4.6, -0.1)}
EVENTS = {"deadman_button": "DEAD-MAN (hold): you drive", "gripper_button": "gripper open/close",
          "success_button": "episode: SUCCESS", "failure_button": "episode: FAILURE",
          "start_button": "scene reset: START next", "estop_button": "E-STOP (latched)",
          "success_label_button": "success label (hold)"}


def labels(mapping: dict) -> tuple[dict[int, str], dict[int, str], dict[str, list[str]]]:
    """(button index -> label, trigger axis -> label, stick -> labels) from the teleop mapping."""
    buttons = {mapping[key]: text for key, text in EVENTS.items() if key in mapping}
    triggers: dict[int, str] = {}
    sticks: dict[str, list[str]] = {"left": [], "right": []}
    stick_of = {0: ("left", "left/right"), 1: ("left", "up/down"), 2: ("right", "left/right"), 3: ("right", "up/down")}
    for dim in ("x", "y", "z", "roll", "pitch", "yaw"):
        term = mapping.get(dim, {})
        for axis, sign in zip(term.get("axes", []), term.get("axis_signs", [])):
            if sign == 0:
                continue
            if axis in stick_of:
                stick, direction = stick_of[axis]
                first = direction.split("/")[0 if sign > 0 else 1]
                sticks[stick].append(f"{first} = +{dim}")
            elif axis in TRIGGERS:  # a trigger reads 0 released .. -1 pulled: sign -1 means pull = +
                triggers[axis] = f"{dim} {'+' if sign < 0 else '-'}"
        for button, sign in zip(term.get("buttons", []), term.get("button_signs", [])):
            if sign != 0:
                buttons[button] = f"{dim} {'+' if sign > 0 else '-'}"
    return buttons, triggers, sticks


def draw(config: Path, out: Path) -> None:
    mapping = yaml.safe_load(config.read_text())["teleop_node"]["ros__parameters"]["mapping"]
    buttons, triggers, sticks = labels(mapping)
    fig, ax = plt.subplots(figsize=(11, 7.2))
    ax.set_xlim(-2.2, 12.2)
    ax.set_ylim(-1.2, 7.2)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.add_patch(patches.FancyBboxPatch((1.0, 0.6), 8.0, 4.4, boxstyle="round,pad=0.3,rounding_size=1.4",
                                        fc="#eeeeee", ec="#555555", lw=2))
    for stick, (x, y) in STICKS.items():
        ax.add_patch(patches.Circle((x, y), 0.55, fc="#bbbbbb", ec="#333333"))
        ax.text(x, y, "LS" if stick == "left" else "RS", ha="center", va="center", fontsize=10, weight="bold")
        side = -1 if stick == "left" else 1
        tx = -2.0 if stick == "left" else 9.6
        ty = y + (0.2 if stick == "left" else -1.4)
        ax.annotate(f"{'left' if side < 0 else 'right'} stick\n" + "\n".join(sticks[stick]), (x, y),
                    xytext=(tx, ty), fontsize=9, arrowprops={"arrowstyle": "-", "color": "#777777"})
    controls = [(buttons.get(i), x, y, name) for i, (x, y, name) in BUTTONS.items()]
    controls += [(triggers.get(i), x, y, name) for i, (x, y, name) in TRIGGERS.items()]
    for label, x, y, name in controls:
        colour = "#d62728" if label and "E-STOP" in label else "#1f77b4" if label and "DEAD-MAN" in label else "#ffffff"
        shape = patches.FancyBboxPatch((x - 0.45, y - 0.22), 0.9, 0.44, boxstyle="round,pad=0.05") \
            if len(name) > 1 else patches.Circle((x, y), 0.28)
        shape.set(fc=colour, ec="#333333")
        ax.add_patch(shape)
        ax.text(x, y, name, ha="center", va="center", fontsize=8, weight="bold",
                color="white" if colour != "#ffffff" else "black")
        if label is not None:
            ax.annotate(label, (x, y), xytext=LABEL_AT[name], fontsize=9, ha="left" if LABEL_AT[name][0] > x else
                        "right" if LABEL_AT[name][0] < x - 1 else "center",
                        color="#d62728" if "E-STOP" in label else "black",
                        weight="bold" if colour != "#ffffff" else "normal",
                        arrowprops={"arrowstyle": "-", "color": "#999999"})
    ax.text(5.0, -0.9, f"{config.relative_to(ROOT) if config.is_relative_to(ROOT) else config}: nothing moves "
            "unless the dead-man is held; full deflection = "
            f"{mapping['max_translation_m'] * 100:g} cm / {mapping['max_rotation_rad']:g} rad per step",
            ha="center", fontsize=9, style="italic")
    fig.savefig(out, format=out.suffix.lstrip("."), bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)


if __name__ == "__main__":
    config = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "config" / "teleop.yaml"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs" / "gamepad.svg"
    draw(config, out)
    print(out)
