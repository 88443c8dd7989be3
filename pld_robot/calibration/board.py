"""The ChArUco board: its definition (a YAML in calibration/boards/), the OpenCV board, rendering
for printing, and corner detection."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pld_robot.config import from_dict, load_yaml


@dataclass(frozen=True)
class BoardSpec:
    squares_x: int = 5
    squares_y: int = 7
    square_length_m: float = 0.04
    marker_length_m: float = 0.03
    dictionary: str = "DICT_5X5_100"

    def __post_init__(self):
        if self.squares_x < 3 or self.squares_y < 3:
            raise ValueError(f"a ChArUco board needs at least 3x3 squares, got {self.squares_x}x{self.squares_y}")
        if not 0 < self.marker_length_m < self.square_length_m:
            raise ValueError(f"marker_length_m ({self.marker_length_m}) must be positive and smaller than "
                             f"square_length_m ({self.square_length_m})")
        if not self.dictionary.startswith("DICT_") or not hasattr(cv2.aruco, self.dictionary):
            raise ValueError(f"unknown ArUco dictionary {self.dictionary!r} (e.g. DICT_5X5_100, DICT_4X4_50)")
        markers = self.squares_x * self.squares_y // 2
        if markers > cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary)).bytesList.shape[0]:
            raise ValueError(f"{self.dictionary} has fewer than the {markers} markers a "
                             f"{self.squares_x}x{self.squares_y} board needs")

    @property
    def size_m(self) -> tuple[float, float]:
        return self.squares_x * self.square_length_m, self.squares_y * self.square_length_m

    def charuco(self) -> cv2.aruco.CharucoBoard:
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_length_m,
                                      self.marker_length_m, dictionary)

    def render(self, px_per_square: int = 100) -> np.ndarray:
        """The board as a grayscale image without margin: pixel (u, v) is at board point
        ((u + 0.5), (v + 0.5)) * square_length_m / px_per_square, the board frame's x right, y down."""
        size = (self.squares_x * px_per_square, self.squares_y * px_per_square)
        return self.charuco().generateImage(size, marginSize=0, borderBits=1)


def load_board(path: str | Path) -> BoardSpec:
    return from_dict(BoardSpec, load_yaml(path), where=str(path))


@dataclass(frozen=True)
class Detection:
    """The ChArUco corners found in one image: pixel positions and their board-frame positions (m)."""

    ids: np.ndarray  # (N,) int
    image_points: np.ndarray  # (N, 2) float32, pixels
    object_points: np.ndarray  # (N, 3) float32, metres, board frame (z = 0)


class BoardDetector:
    def __init__(self, board: BoardSpec):
        self.board = board
        self._charuco = board.charuco()
        self._detector = cv2.aruco.CharucoDetector(self._charuco)
        self._corners = np.asarray(self._charuco.getChessboardCorners(), np.float32)

    @property
    def corner_count(self) -> int:
        return len(self._corners)

    def detect(self, image: np.ndarray) -> Detection | None:
        """The corners in an RGB or grayscale image, or None when fewer than 4 are found."""
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        corners, ids, _, _ = self._detector.detectBoard(gray)
        if ids is None or len(ids) < 4:
            return None
        ids = ids.reshape(-1)
        return Detection(ids, corners.reshape(-1, 2).astype(np.float32), self._corners[ids])


