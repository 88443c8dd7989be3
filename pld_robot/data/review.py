"""Episode review: one recorded episode as files a person can look at (`pld-robot episodes view`) or
load without Zarr (`pld-robot episodes export`).

A frozen camera, an action that jumps or a success classifier that never fires is quicker to see than
to find in arrays, so `view_episode` writes

    episode_<NNNN>.mp4   every camera side by side at the control rate, over a strip plotting the
                         executed actions and success_prob with a cursor at the current step
    episode_<NNNN>.png   a contact sheet: evenly spaced frames over one plot per action dimension,
                         success_prob / success_label and the source of each step as a coloured band

and `export_episode` writes every `data/` array of the episode to a compressed .npz, with its
EpisodeInfo and the store schema in a .json beside it.

The video reads images a block at a time, so a long episode is never in memory all at once. Plots are
drawn with matplotlib's Agg canvas directly (no pyplot: no display, no global figure state); the
video's plot strip is drawn once and only its cursor is drawn per frame, with OpenCV.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from tqdm import tqdm

from pld_robot.data.layout import Source, StoreError, StoreSchema, rgb_key
from pld_robot.data.reader import EpisodeReader

SOURCE_NAMES = {s.value: s.name.lower() for s in Source}
SOURCE_COLORS = {Source.PROBE.value: "#9e9e9e", Source.RESIDUAL.value: "#1f77b4", Source.HUMAN.value: "#ff7f0e"}
UNKNOWN_SOURCE_COLOR = "#000000"  # a code this version does not know: a damaged or newer store

MIN_PANEL_HEIGHT = 240  # px; small cameras are scaled up so that the overlay text stays legible
STRIP_HEIGHT = 180  # px, the plot strip under the video's images
READ_BLOCK = 64  # steps of images read at a time while rendering the video
PROGRESS_MIN_STEPS = 300  # below this (10 s at 30 Hz) rendering is quick and a bar is noise
SHEET_FRAMES = 10
SHEET_WIDTH_IN = 14.0
THUMB_HEIGHT_IN = 1.3
DPI = 100
LOWDIM_KEYS = ("action", "source", "success_prob", "success_label")


def view_episode(store: EpisodeReader | str | Path, episode: int, out_dir: str | Path, *,
                 every: int | None = None) -> tuple[Path, Path]:
    """Write `<out_dir>/episode_<NNNN>.mp4` and `.png` for `episode` (negative: from the end).

    `every`: a contact-sheet frame every this many steps; by default about SHEET_FRAMES evenly spaced.
    Raises IndexError for an episode the store does not have, StoreError for a path that is not a store.
    """
    if every is not None and every < 1:
        raise ValueError(f"every must be at least 1 step, got {every}")
    reader = _open(store)
    index = _resolve(reader, episode)
    if not reader.schema.cameras:
        raise StoreError(f"{reader.path} has no cameras: nothing to view; export the episode instead")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lowdim = reader.episode(index, keys=LOWDIM_KEYS)
    length = len(lowdim["action"])
    shown = range(0, length, every) if every else np.unique(np.linspace(0, length - 1, SHEET_FRAMES).round())
    name = f"episode_{index:04d}"
    video = _write_video(reader, index, lowdim, out_dir / f"{name}.mp4")
    sheet = _write_sheet(reader, index, lowdim, [int(t) for t in shown], out_dir / f"{name}.png")
    return video, sheet


def export_episode(store: EpisodeReader | str | Path, episode: int, out_dir: str | Path) -> Path:
    """Write every `data/` array of `episode` to `<out_dir>/episode_<NNNN>.npz` (compressed; keys are
    the array names) and its EpisodeInfo and the store schema to `episode_<NNNN>.json`.
    Returns the .npz path. Raises like `view_episode`. The episode is read whole into memory: .npz
    writes whole arrays."""
    reader = _open(store)
    index = _resolve(reader, episode)
    arrays = reader.episode(index)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"episode_{index:04d}"
    npz = out_dir / f"{name}.npz"
    np.savez_compressed(npz, **arrays)
    meta = {"store": str(reader.path), "task": reader.task, "episode": index,
            "info": dataclasses.asdict(reader.info(index)), "schema": reader.schema.to_json(),
            # so that the uint8 `source` column can be read without pld_robot
            "source_names": {str(code): source for code, source in SOURCE_NAMES.items()}}
    (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return npz


def _open(store: EpisodeReader | str | Path) -> EpisodeReader:
    return store if isinstance(store, EpisodeReader) else EpisodeReader(store)


def _resolve(reader: EpisodeReader, episode: int) -> int:
    reader.info(episode)  # the reader's IndexError names the episode and how many there are
    return episode % reader.num_episodes


# --- the video ---

@dataclass(frozen=True)
class _Panels:
    """Every camera of a store side by side, each scaled to one height."""

    keys: tuple[str, ...]
    sizes: tuple[tuple[int, int], ...]  # (width, height) each camera is scaled to

    @classmethod
    def of(cls, schema: StoreSchema, min_height: int) -> "_Panels":
        height = max(min_height, *(c.height for c in schema.cameras.values()))
        height += height % 2  # the MPEG-4 encoder needs even dimensions
        return cls(tuple(rgb_key(n) for n in schema.cameras),
                   tuple((max(1, round(c.width * height / c.height)), height) for c in schema.cameras.values()))

    @property
    def height(self) -> int:
        return self.sizes[0][1]

    @property
    def width(self) -> int:
        return sum(w for w, _ in self.sizes)

    def compose(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        return np.hstack([_resize(f, size) for f, size in zip(frames, self.sizes)])


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if frame.shape[1::-1] == size:
        return frame
    shrinking = size[0] < frame.shape[1]
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _write_video(reader: EpisodeReader, index: int, lowdim: dict[str, np.ndarray], path: Path) -> Path:
    panels = _Panels.of(reader.schema, MIN_PANEL_HEIGHT)
    width = panels.width + panels.width % 2
    strip, cursor_x, (cursor_top, cursor_bottom) = _render_strip(lowdim, width, STRIP_HEIGHT)
    base = np.zeros((panels.height + STRIP_HEIGHT, width, 3), np.uint8)
    base[panels.height:] = strip
    hz = reader.schema.control_hz
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), hz, (width, base.shape[0]))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write an MP4 video (fourcc mp4v, {width}x{base.shape[0]}, "
                           f"{hz:g} fps); check that the directory is writable and that this OpenCV build "
                           "has FFmpeg (cv2.getBuildInformation())")
    start, end = reader.episode_range(index)
    length = end - start
    try:
        with tqdm(total=length, desc=path.name, unit="frame", disable=length < PROGRESS_MIN_STEPS) as bar:
            for a in range(0, length, READ_BLOCK):
                b = min(a + READ_BLOCK, length)
                blocks = [reader.array(key)[start + a:start + b] for key in panels.keys]
                for t in range(a, b):
                    frame = base.copy()
                    frame[:panels.height, :panels.width] = panels.compose([block[t - a] for block in blocks])
                    x = round(cursor_x[t])
                    cv2.line(frame, (x, panels.height + cursor_top), (x, panels.height + cursor_bottom),
                             (220, 0, 0), 2)
                    _draw_overlay(frame, t, length, hz, int(lowdim["source"][t]), float(lowdim["success_prob"][t]))
                    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                bar.update(b - a)
    finally:
        writer.release()
    return path


def _render_strip(lowdim: dict[str, np.ndarray], width: int, height: int
                  ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The video's plot strip as an RGB image, the x pixel of each step, and the rows the cursor spans."""
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    # margins in pixels, whatever the strip's size
    fig.subplots_adjust(left=44 / width, right=1 - 8 / width, top=1 - 6 / height, bottom=20 / height, hspace=0.08)
    ax_action, ax_success = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    steps = np.arange(len(lowdim["action"]))
    for i, column in enumerate(lowdim["action"].T):
        ax_action.plot(steps, column, color=_action_color(i), lw=1)
    ax_action.set_ylabel("action", fontsize=7)
    _plot_success(ax_success, lowdim)
    ax_success.set_ylabel("success", fontsize=7)
    _shade_sources(ax_success, lowdim["source"], alpha=0.25)
    ax_success.set_xlim(0, max(len(steps) - 1, 1))
    for ax in (ax_action, ax_success):
        ax.tick_params(labelsize=6, pad=1)
    canvas.draw()
    drawn = np.asarray(canvas.buffer_rgba())[..., :3]
    # Agg may round the figure's size by a pixel; the strip must fill its rows exactly
    strip = np.full((height, width, 3), 255, np.uint8)
    h, w = min(height, drawn.shape[0]), min(width, drawn.shape[1])
    strip[:h, :w] = drawn[:h, :w]
    # display coordinates: pixels from the bottom left
    xs = ax_success.transData.transform(np.column_stack([steps, np.zeros(len(steps))]))[:, 0]
    rows = (drawn.shape[0] - round(ax_action.bbox.y1), drawn.shape[0] - round(ax_success.bbox.y0))
    return strip, np.clip(xs, 0, width - 1), rows


def _draw_overlay(frame: np.ndarray, t: int, length: int, hz: float, source: int, success_prob: float) -> None:
    scale = max(0.4, frame.shape[0] / 900)
    thickness = 1 if scale < 0.7 else 2
    lines = [(f"step {t}/{length - 1}  {t / hz:.2f} s", (255, 255, 255)),
             (f"{_source_name(source)}  p(success) {success_prob:.2f}", _rgb255(_source_color(source)))]
    sizes = [cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0] for text, _ in lines]
    line_height = max(h for _, h in sizes) + round(8 * scale)
    box = frame[:line_height * len(lines) + 8, :max(w for w, _ in sizes) + 12]
    box //= 3  # darken what is behind the text rather than hide it
    for i, (text, color) in enumerate(lines):
        cv2.putText(frame, text, (6, (i + 1) * line_height), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness,
                    cv2.LINE_AA)


# --- the contact sheet ---

def _write_sheet(reader: EpisodeReader, index: int, lowdim: dict[str, np.ndarray], shown: list[int],
                 path: Path) -> Path:
    schema = reader.schema
    start, _ = reader.episode_range(index)
    panels = _Panels.of(schema, min_height=0)  # the cameras' own resolution; matplotlib scales it
    thumbs = [panels.compose([reader.array(key)[start + t] for key in panels.keys]) for t in shown]
    aspect = panels.width / panels.height
    # as many columns as fit at THUMB_HEIGHT_IN, then rows filled evenly
    rows = math.ceil(len(thumbs) / max(1, int(SHEET_WIDTH_IN // (THUMB_HEIGHT_IN * aspect))))
    cols = math.ceil(len(thumbs) / rows)
    thumb_height = min(SHEET_WIDTH_IN / cols / aspect, 2 * THUMB_HEIGHT_IN)
    names = schema.action_names
    heights = [thumb_height + 0.3] * rows + [0.9] * len(names) + [1.1, 0.35]
    fig = Figure(figsize=(SHEET_WIDTH_IN, sum(heights) + 0.9), dpi=DPI, layout="constrained")
    grid = fig.add_gridspec(len(heights), cols, height_ratios=heights)

    for k, (t, thumb) in enumerate(zip(shown, thumbs)):
        ax = fig.add_subplot(grid[k // cols, k % cols])
        ax.imshow(thumb)
        ax.set_axis_off()
        source = int(lowdim["source"][t])
        ax.set_title(f"step {t} · {_source_name(source)}", fontsize=9, color=_source_color(source))

    steps = np.arange(len(lowdim["action"]))
    first = fig.add_subplot(grid[rows, :])
    plots = [first] + [fig.add_subplot(grid[rows + i, :], sharex=first) for i in range(1, len(names) + 2)]
    for i, (ax, name) in enumerate(zip(plots, names)):
        ax.plot(steps, lowdim["action"][:, i], color=_action_color(i), lw=1.2)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    success, band = plots[-2], plots[-1]
    _plot_success(success, lowdim)
    success.set_ylabel("success", rotation=0, ha="right", va="center", fontsize=9)
    success.legend(loc="upper left", fontsize=8)
    _shade_sources(band, lowdim["source"], alpha=1.0)
    band.set_yticks([])
    band.set_ylabel("source", rotation=0, ha="right", va="center", fontsize=9)
    present = sorted(set(lowdim["source"].tolist()))
    fig.legend(handles=[Patch(color=_source_color(s), label=_source_name(s)) for s in present],
               loc="outside lower center", ncols=len(present), fontsize=9, frameon=False)
    band.set_xlabel(f"step ({schema.control_hz:g} Hz)")
    first.set_xlim(0, max(len(steps) - 1, 1))
    for ax in plots[:-1]:
        ax.tick_params(labelbottom=False)
        ax.grid(alpha=0.3)

    fig.suptitle(_title(reader, index, len(steps)), fontsize=11)
    fig.savefig(path)
    return path


def _title(reader: EpisodeReader, index: int, length: int) -> str:
    info = reader.info(index)
    lines = [f"{reader.task or reader.path.name}  ·  episode {index}  ·  \u201c{info.prompt}\u201d",
             f"outcome {info.outcome}  ·  {length} steps ({length / reader.schema.control_hz:.1f} s)  ·  "
             f"mode {info.mode or 'unknown'}"
             + (f"  ·  {info.dropped_frames} dropped frame(s)" if info.dropped_frames else "")]
    if info.operator_note:
        lines.append(f"operator note: {info.operator_note}")
    return "\n".join(lines)


# --- shared by both plots ---

def _plot_success(ax: Axes, lowdim: dict[str, np.ndarray]) -> None:
    steps = np.arange(len(lowdim["success_prob"]))
    ax.plot(steps, lowdim["success_prob"], color="black", lw=1.2, label="success_prob")
    if lowdim["success_label"].any():
        ax.step(steps, lowdim["success_label"], where="mid", color="#2ca02c", lw=1.2, label="success_label")
    ax.set_ylim(-0.05, 1.05)


def _shade_sources(ax: Axes, source: np.ndarray, alpha: float) -> None:
    change = np.flatnonzero(np.diff(source)) + 1
    for a, b in zip(np.r_[0, change], np.r_[change, len(source)]):
        ax.axvspan(a - 0.5, b - 0.5, color=_source_color(int(source[a])), alpha=alpha, lw=0)


def _source_name(code: int) -> str:
    return SOURCE_NAMES.get(code, f"source {code}")


def _source_color(code: int) -> str:
    return SOURCE_COLORS.get(code, UNKNOWN_SOURCE_COLOR)


def _action_color(dim: int) -> str:
    # the same colour per dimension in the video strip and the contact sheet, whose labelled
    # subplots are the strip's legend
    return f"C{dim % 10}"


def _rgb255(color: str) -> tuple[int, int, int]:
    r, g, b = to_rgb(color)
    return round(r * 255), round(g * 255), round(b * 255)
