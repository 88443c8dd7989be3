"""Renders a ChArUco board as a pinhole camera with plumb_bob distortion sees it, for calibration
tests whose truth (intrinsics, poses) is known exactly. Pure OpenCV: every output pixel is traced
back through the distortion to its ray and onto the board plane, at 2x2 supersampling."""

from __future__ import annotations

import cv2
import numpy as np

from pld_robot.calibration.board import BoardSpec
from pld_robot.cameras.base import CameraIntrinsics

SUPERSAMPLE = 2
PX_PER_SQUARE = 120


class BoardRenderer:
    def __init__(self, board: BoardSpec, intrinsics: CameraIntrinsics):
        self.board, self.intrinsics = board, intrinsics
        self._texture = board.render(PX_PER_SQUARE).astype(np.float32)
        i, s = intrinsics, SUPERSAMPLE
        # pixel centres of the supersampled grid, in the output image's pixel coordinates
        u = (np.arange(i.width * s) + 0.5) / s - 0.5
        v = (np.arange(i.height * s) + 0.5) / s - 0.5
        grid = np.stack(np.meshgrid(u, v), axis=-1).reshape(-1, 1, 2)
        k = np.array([[i.fx, 0, i.cx], [0, i.fy, i.cy], [0, 0, 1]])
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)
        normalized = cv2.undistortPoints(grid, k, np.asarray(i.distortion, float), criteria=criteria)
        xy = normalized.reshape(-1, 2)
        self._rays = np.column_stack([xy, np.ones(len(xy))]).astype(np.float32)  # directions, optical frame

    def render(self, camera_from_board: np.ndarray, background: int = 110) -> np.ndarray:
        """Grayscale uint8 image of the board at pose camera <- board."""
        r, t = camera_from_board[:3, :3], camera_from_board[:3, 3]
        d = self._rays @ r.astype(np.float32)  # rows: R^T ray
        origin = -r.T @ t  # the camera centre in the board frame
        scale = np.float32(-origin[2]) / d[:, 2]
        per_m = PX_PER_SQUARE / self.board.square_length_m
        map_x = ((origin[0] + scale * d[:, 0]) * per_m - 0.5).astype(np.float32)
        map_y = ((origin[1] + scale * d[:, 1]) * per_m - 0.5).astype(np.float32)
        behind = scale <= 0
        map_x[behind] = -1e6
        i, s = self.intrinsics, SUPERSAMPLE
        shape = (i.height * s, i.width * s)
        big = cv2.remap(self._texture, map_x.reshape(shape), map_y.reshape(shape), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=float(background))
        return np.clip(cv2.resize(big, (i.width, i.height), interpolation=cv2.INTER_AREA) + 0.5, 0, 255).astype(np.uint8)


def look_at_board(board: BoardSpec, distance: float, tilt_rvec, offset_m=(0.0, 0.0)) -> np.ndarray:
    """camera <- board: the board's centre `offset_m` off the optical axis at `distance`, turned by
    `tilt_rvec` (board frame) away from facing the camera."""
    w, h = board.size_m
    centre = np.array([w / 2, h / 2, 0.0])
    rotation = cv2.Rodrigues(np.asarray(tilt_rvec, float))[0]
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = np.array([offset_m[0], offset_m[1], distance]) - rotation @ centre
    return pose
