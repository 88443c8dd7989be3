"""Camera intrinsics from images of a ChArUco board (OpenCV's calibrateCamera on the ChArUco corners),
and the board's pose in one image once the intrinsics are known."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from pld_robot.calibration import CalibrationError
from pld_robot.calibration.board import BoardDetector, Detection
from pld_robot.cameras.base import CameraIntrinsics

MIN_VIEWS = 6
# A view with few corners constrains little and, near the image border, often mislocates them.
MIN_CORNERS = 8


@dataclass(frozen=True)
class IntrinsicsResult:
    intrinsics: CameraIntrinsics
    rms_px: float  # reprojection error over all corners of all views used
    view_errors_px: dict[str, float]  # per view used: its RMS reprojection error
    skipped: dict[str, str]  # per image not used: why


def calibrate_intrinsics(images: Mapping[str, np.ndarray], detector: BoardDetector, *,
                         min_views: int = MIN_VIEWS, fit_k3: bool = False) -> IntrinsicsResult:
    """`images`: name -> RGB or grayscale image, all the same size. Distortion is plumb_bob; k3 stays
    0 unless `fit_k3` (with the dozen or so views of a lab calibration it mostly fits noise)."""
    if not images:
        raise CalibrationError("no images to calibrate from")
    sizes = {name: image.shape[:2] for name, image in images.items()}
    height, width = next(iter(sizes.values()))
    odd = [n for n, s in sizes.items() if s != (height, width)]
    if odd:
        raise CalibrationError(f"images differ in size: {odd[:5]} are not {width}x{height} like the first")
    detections, skipped = {}, {}
    for name, image in images.items():
        found = detector.detect(image)
        if found is None:
            skipped[name] = "board not detected"
        elif len(found.ids) < MIN_CORNERS:
            skipped[name] = f"only {len(found.ids)} corners (need {MIN_CORNERS})"
        else:
            detections[name] = found
    if len(detections) < min_views:
        raise CalibrationError(
            f"too few usable views: {len(detections)} of {len(images)} images show the board "
            f"(need {min_views}); not used: {_describe(skipped)}")
    flags = 0 if fit_k3 else cv2.CALIB_FIX_K3
    names = list(detections)
    rms, camera_matrix, dist, rvecs, tvecs = cv2.calibrateCamera(
        [detections[n].object_points for n in names], [detections[n].image_points for n in names],
        (width, height), None, None, flags=flags)
    dist = tuple(float(c) for c in dist.reshape(-1)[:5])
    intrinsics = CameraIntrinsics(width, height, float(camera_matrix[0, 0]), float(camera_matrix[1, 1]),
                                  float(camera_matrix[0, 2]), float(camera_matrix[1, 2]), dist)
    errors = {}
    for name, rvec, tvec in zip(names, rvecs, tvecs):
        d = detections[name]
        projected, _ = cv2.projectPoints(d.object_points, rvec, tvec, camera_matrix, np.asarray(dist))
        errors[name] = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - d.image_points) ** 2, axis=1))))
    return IntrinsicsResult(intrinsics, float(rms), errors, skipped)


def camera_matrix(intrinsics: CameraIntrinsics) -> np.ndarray:
    i = intrinsics
    return np.array([[i.fx, 0.0, i.cx], [0.0, i.fy, i.cy], [0.0, 0.0, 1.0]])


def board_pose(detection: Detection, intrinsics: CameraIntrinsics) -> tuple[np.ndarray, float]:
    """The board's pose in the camera's optical frame (4x4, camera <- board) and the RMS reprojection
    error in pixels."""
    k, dist = camera_matrix(intrinsics), np.asarray(intrinsics.distortion, float)
    # IPPE is OpenCV's closed-form solver for planar targets: it needs no initial guess
    ok, rvec, tvec = cv2.solvePnP(detection.object_points, detection.image_points, k, dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise CalibrationError("solvePnP found no board pose")
    rvec, tvec = cv2.solvePnPRefineLM(detection.object_points, detection.image_points, k, dist, rvec, tvec)
    projected, _ = cv2.projectPoints(detection.object_points, rvec, tvec, k, dist)
    error = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - detection.image_points) ** 2, axis=1))))
    pose = np.eye(4)
    pose[:3, :3] = cv2.Rodrigues(rvec)[0]
    pose[:3, 3] = tvec.reshape(3)
    return pose, error


def _describe(reasons: Mapping[str, str], limit: int = 8) -> str:
    if not reasons:
        return "none"
    shown = [f"{name} ({why})" for name, why in list(reasons.items())[:limit]]
    more = f" and {len(reasons) - limit} more" if len(reasons) > limit else ""
    return ", ".join(shown) + more
