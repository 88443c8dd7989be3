"""UVC webcams (and video files) through cv2.VideoCapture.

A grab thread keeps only the newest frame, so a slow reader never works through a stale backlog.
A video file plays at `config.fps` as a camera would, and ends the stream at its last frame.

The intrinsics are NOMINAL, not calibrated: a pinhole with fx = fy = width (about 53 degrees of
horizontal field of view), the principal point at the image centre, no distortion.
"""

from __future__ import annotations

import threading
import time
from typing import Optional, Union

import cv2

from pld_robot.cameras.base import CameraConfig, CameraError, CameraIntrinsics, Frame


class OpenCVCamera:
    def __init__(self, config: CameraConfig):
        self.name = config.name
        self._config = config
        self._source = _source(config.device)
        self._is_file = isinstance(self._source, str) and not self._source.startswith("/dev/")
        self._capture: Optional[cv2.VideoCapture] = None
        self._thread: Optional[threading.Thread] = None
        self._running = False
        self._cond = threading.Condition()
        self._latest: Optional[Frame] = None
        self._last_read_seq = -1
        self._ended: Optional[str] = None  # why the grab thread stopped, once it has

    def start(self) -> None:
        if self._thread is not None:
            return
        cfg = self._config
        capture = cv2.VideoCapture(self._source)
        if not capture.isOpened():
            raise CameraError(f"camera '{self.name}': cannot open video source {cfg.device!r}")
        if not self._is_file:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            capture.set(cv2.CAP_PROP_FPS, cfg.fps)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver's queue only adds latency
        size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if size != (cfg.width, cfg.height):
            capture.release()
            raise CameraError(
                f"camera '{self.name}': asked {cfg.device!r} for {cfg.width}x{cfg.height}, "
                f"it delivers {size[0]}x{size[1]}"
            )
        self._capture = capture
        self._latest, self._last_read_seq, self._ended = None, -1, None
        self._running = True
        self._thread = threading.Thread(target=self._grab_loop, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def read(self, timeout: float = 1.0) -> Frame:
        if self._thread is None:
            raise CameraError(f"camera '{self.name}': read() before start()")
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_new_frame() or self._ended, timeout):
                raise CameraError(f"camera '{self.name}': no new frame within {timeout:.3g} s")
            if not self._has_new_frame():
                raise CameraError(f"camera '{self.name}': {self._ended}")
            self._last_read_seq = self._latest.seq
            return self._latest

    @property
    def intrinsics(self) -> CameraIntrinsics:
        w, h = self._config.width, self._config.height
        return CameraIntrinsics(width=w, height=h, fx=float(w), fy=float(w), cx=w / 2, cy=h / 2)

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _has_new_frame(self) -> bool:
        return self._latest is not None and self._latest.seq > self._last_read_seq

    def _grab_loop(self) -> None:
        period = 1.0 / self._config.fps
        next_due = time.monotonic()
        seq = 0
        while self._running:
            if self._is_file:
                next_due += period
                time.sleep(max(0.0, next_due - time.monotonic()))
            # grab() returns when the frame is captured; decoding in retrieve() must not delay the stamp
            grabbed = self._capture.grab()
            stamp = time.time()
            ok, bgr = self._capture.retrieve() if grabbed else (False, None)
            if not ok:
                with self._cond:
                    self._ended = (
                        "video file ended" if self._is_file
                        else f"device {self._config.device!r} stopped delivering"
                    )
                    self._cond.notify_all()
                return
            frame = Frame(color=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), stamp=stamp, seq=seq)
            seq += 1
            with self._cond:
                self._latest = frame
                self._cond.notify_all()


def _source(device: str) -> Union[int, str]:
    """'0' -> device index 0; anything else is a path (/dev/videoN or a video file)."""
    return int(device) if device.isdigit() else device
