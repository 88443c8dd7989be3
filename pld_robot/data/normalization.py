"""Normalization statistics of the low-dimensional inputs and outputs (state, action).

    stats = compute_stats(reader, reader.select(outcome="success"))
    save_stats(stats, default_stats_path(reader.path))       # pick_cube.zarr.norm_stats.json
    x = stats.normalize("state", state)                       # training and the policy server alike
    action = stats.unnormalize("action", model_output)

Computed once from the episodes a policy is trained on and saved as JSON beside the store, so the
policy server applies exactly the preprocessing the model was trained with, and a person can read what
it was. The server imports this module too: it stays free of torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

import numpy as np

if TYPE_CHECKING:  # the policy server loads statistics without the store's reading stack
    from pld_robot.data.reader import EpisodeReader

FORMAT = "pld_robot.norm_stats"
FORMAT_VERSION = 1
# Added to the scale so that a constant dimension (a gripper never used, std 0, q99 == q01) maps to
# a finite value instead of dividing by zero; the same guard as openpi's.
EPS = 1e-6
Mode = Literal["mean_std", "quantile"]
MODES = ("mean_std", "quantile")
_FIELDS = ("mean", "std", "q01", "q99")


@dataclass(frozen=True)
class StdFloor:
    """The smallest std a dimension gets, in the store's units (m, rad, quaternion components, the
    gripper's 0..1). A dimension the training episodes barely move (a hand that never rolled) would
    otherwise turn the small change a policy later meets there (a residual's 0.01 rad roll) into a
    normalised value of hundreds: an input the network answers arbitrarily, or a target that makes
    the loss explode. The quantile mode's q01..q99 span gets the same floor, twice over (it is
    about four std wide)."""

    state: float = 0.01
    action: float = 0.002

    def __post_init__(self):
        if not (self.state >= 0 and self.action >= 0):
            raise ValueError(f"std_floor must be >= 0, got state {self.state}, action {self.action}")

    def of(self, key: str) -> float:
        """Every *action key (base_action, residual_action, ...) shares the action layout and floor."""
        return self.state if key == "state" else self.action if key.endswith("action") else 0.0


@dataclass(frozen=True)
class KeyStats:
    """Per-dimension statistics of one key, float32, each of shape (D,)."""

    mean: np.ndarray
    std: np.ndarray
    q01: np.ndarray
    q99: np.ndarray
    names: tuple[str, ...] = ()  # what each dimension is, from the store's schema

    @property
    def dim(self) -> int:
        return len(self.mean)


@dataclass(frozen=True)
class NormStats:
    keys: dict[str, KeyStats]
    count: int  # steps the statistics were computed from
    episodes: int
    store: str = ""

    def __getitem__(self, key: str) -> KeyStats:
        if key not in self.keys:
            raise ValueError(f"no normalization statistics for {key!r}; they cover {sorted(self.keys)}")
        return self.keys[key]

    def normalize(self, key: str, x: np.ndarray, mode: Mode = "mean_std") -> np.ndarray:
        """mean_std: zero mean, unit variance. quantile: q01..q99 onto -1..1 (outliers land beyond)."""
        x, s = self._checked(key, x, mode)
        if mode == "mean_std":
            return (x - s.mean) / (s.std + EPS)
        return (x - s.q01) / (s.q99 - s.q01 + EPS) * 2 - 1

    def unnormalize(self, key: str, x: np.ndarray, mode: Mode = "mean_std") -> np.ndarray:
        x, s = self._checked(key, x, mode)
        if mode == "mean_std":
            return x * (s.std + EPS) + s.mean
        return (x + 1) / 2 * (s.q99 - s.q01 + EPS) + s.q01

    def _checked(self, key: str, x: np.ndarray, mode: str) -> tuple[np.ndarray, KeyStats]:
        if mode not in MODES:
            raise ValueError(f"unknown normalization mode {mode!r}; valid: {list(MODES)}")
        s = self[key]
        x = np.asarray(x)
        # float64 stays float64 (a caller's choice); everything else computes in float32
        x = x.astype(np.result_type(x.dtype, np.float32), copy=False)
        if x.ndim == 0 or x.shape[-1] != s.dim:
            raise ValueError(f"{key}: expected a last dimension of {s.dim} ({', '.join(s.names)}), "
                             f"got shape {x.shape}")
        return x, s


def compute_stats(reader: EpisodeReader, episodes: Sequence[int], keys: Iterable[str] = ("state", "action"),
                  std_floor: StdFloor = StdFloor()) -> NormStats:
    """Exact statistics over every committed step of `episodes` (each std at least `std_floor`)."""
    episodes = list(episodes)
    if not episodes:
        raise ValueError(f"{reader.path}: no episodes to compute normalization statistics from")
    ranges = [reader.episode_range(e) for e in episodes]
    # one read of the span the episodes cover, then the episodes' rows: the low-dimensional data is
    # small, and this decodes each chunk once instead of once per episode
    lo, hi = min(a for a, _ in ranges), max(b for _, b in ranges)
    rows = np.concatenate([np.arange(a, b) for a, b in ranges]) - lo
    out = {}
    for key in keys:
        data = np.asarray(reader.array(key)[lo:hi])
        if data.ndim != 2:
            raise ValueError(f"{key}: normalization needs one vector a step, {reader.path} has {data.shape[1:]}")
        out[key] = key_stats(data[rows], _names(reader, key), std_floor.of(key))
    return NormStats(keys=out, count=len(rows), episodes=len(episodes), store=str(reader.path))


def key_stats(data: np.ndarray, names: tuple[str, ...], std_floor: float) -> KeyStats:
    """Statistics of (steps, D) `data`: std at least `std_floor`, q01..q99 at least 2 x that apart."""
    # float64 accumulation: float32 sums over a million steps lose digits the stats should keep
    data = data.astype(np.float64)
    mean = data.mean(axis=0)
    q01, q99 = np.quantile(data, [0.01, 0.99], axis=0)
    middle, half_span = (q01 + q99) / 2, np.maximum((q99 - q01) / 2, 2 * std_floor)
    return KeyStats(mean=mean.astype(np.float32), std=np.maximum(data.std(axis=0), std_floor).astype(np.float32),
                    q01=(middle - half_span).astype(np.float32), q99=(middle + half_span).astype(np.float32),
                    names=names)


def _names(reader: EpisodeReader, key: str) -> tuple[str, ...]:
    if key == "state":
        return reader.schema.state_names
    # action, base_action, residual_action and teleop_action all share the action layout
    return reader.schema.action_names if key.endswith("action") else ()


def default_stats_path(store_path: str | Path) -> Path:
    """Beside the store, not inside it: the store belongs to its writer, and one store may be trained
    on with different selections."""
    store = Path(store_path)
    return store.parent / f"{store.name}.norm_stats.json"


def save_stats(stats: NormStats, path: str | Path) -> Path:
    path = Path(path)
    doc = {"format": FORMAT, "version": FORMAT_VERSION, "store": stats.store, "episodes": stats.episodes,
           "count": stats.count,
           "keys": {key: {"names": list(s.names), **{f: getattr(s, f).tolist() for f in _FIELDS}}
                    for key, s in stats.keys.items()}}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def load_stats(path: str | Path) -> NormStats:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read normalization statistics: {exc}") from exc
    if doc.get("format") != FORMAT or doc.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not normalization statistics version {FORMAT_VERSION} "
                         f"(format={doc.get('format')!r}, version={doc.get('version')!r})")
    keys = {}
    for key, entry in doc["keys"].items():
        fields = {f: np.asarray(entry[f], dtype=np.float32) for f in _FIELDS}
        if len({a.shape for a in fields.values()}) != 1 or fields["mean"].ndim != 1:
            raise ValueError(f"{path}: {key}: mean, std, q01 and q99 must be vectors of one length")
        keys[key] = KeyStats(**fields, names=tuple(entry.get("names", ())))
    return NormStats(keys=keys, count=int(doc["count"]), episodes=int(doc["episodes"]), store=doc["store"])
