"""Intel RealSense cameras through pyrealsense2, at the sensor level (as realsense-ros does).

The device is opened sensor by sensor into one `rs.syncer` rather than through `rs.pipeline`: the
pipeline only finds devices through an `rs.context`, and pyrealsense2 2.59 cannot add a software
device to a context (`software_device.add_to(ctx)` keeps only a weak reference that expires at once),
so a pipeline could never be tested without a camera. The sensor path is the same for a USB camera
and for `SoftwareRealSense`, which injects frames through the real SDK.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np
import pyrealsense2 as rs

from pld_robot.cameras.base import CameraConfig, CameraError, CameraIntrinsics, Frame

_BROWN_CONRADY = {
    rs.distortion.none,
    rs.distortion.brown_conrady,
    rs.distortion.modified_brown_conrady,
    rs.distortion.inverse_brown_conrady,
}
# Host wall-clock milliseconds; the raw hardware clock is not.
_WALL_CLOCK_DOMAINS = {rs.timestamp_domain.system_time, rs.timestamp_domain.global_time}


class RealSenseCamera:
    """Color (rgb8), optionally with depth aligned to color, from the device with serial `config.serial`.

    `devices` are the candidates to choose from; default: every RealSense connected at `start()`.
    """

    def __init__(self, config: CameraConfig, devices: Optional[Sequence[rs.device]] = None):
        self.name = config.name
        self._config = config
        self._devices = devices
        self._sensors: list[rs.sensor] = []
        self._syncer: Optional[rs.syncer] = None
        self._align = rs.align(rs.stream.color) if config.depth else None
        self._intrinsics: Optional[CameraIntrinsics] = None

    def start(self) -> None:
        if self._syncer is not None:
            return
        cfg = self._config
        devices = list(rs.context().query_devices()) if self._devices is None else list(self._devices)
        device = select_device(devices, cfg.serial, self.name)
        wanted = [_find_stream(device, rs.stream.color, rs.format.rgb8, cfg)]
        if cfg.depth:
            wanted.append(_find_stream(device, rs.stream.depth, rs.format.z16, cfg))
        # A syncer of depth 1 keeps only the newest frameset: a slow reader gets fresh frames, not a backlog.
        self._syncer = rs.syncer(1)
        # Depth and color may share a sensor (e.g. D405), which must then be opened once with both profiles.
        by_sensor: dict[int, tuple[rs.sensor, list[rs.stream_profile]]] = {}
        for sensor_index, sensor, profile in wanted:
            by_sensor.setdefault(sensor_index, (sensor, []))[1].append(profile)
        try:
            for sensor, profiles in by_sensor.values():
                sensor.open(profiles)
                try:
                    sensor.start(self._syncer)
                except RuntimeError:
                    sensor.close()
                    raise
                self._sensors.append(sensor)
        except RuntimeError as exc:
            self.stop()
            raise CameraError(f"camera '{self.name}': cannot start {_describe(device)}: {exc}") from exc
        self._intrinsics = _intrinsics(wanted[0][2].as_video_stream_profile(), self.name)

    def read(self, timeout: float = 1.0) -> Frame:
        if self._syncer is None:
            raise CameraError(f"camera '{self.name}': read() before start()")
        deadline = time.monotonic() + timeout
        while True:
            remaining_ms = max(0, round((deadline - time.monotonic()) * 1000))
            ok, frames = self._syncer.try_wait_for_frames(remaining_ms)
            if not ok:
                raise CameraError(f"camera '{self.name}': no new frame within {timeout:.3g} s")
            frame = self._to_frame(frames)
            if frame is not None:
                return frame

    @property
    def intrinsics(self) -> CameraIntrinsics:
        if self._intrinsics is None:
            raise CameraError(f"camera '{self.name}': intrinsics are known only after start()")
        return self._intrinsics

    def stop(self) -> None:
        for sensor in self._sensors:
            sensor.stop()
            sensor.close()
        self._sensors = []
        self._syncer = None

    def _to_frame(self, frames: rs.composite_frame) -> Optional[Frame]:
        # Right after start the syncer may hand out a color or depth frame alone; skip those sets.
        color = frames.first_or_default(rs.stream.color)
        if not color:
            return None
        depth = None
        if self._align is not None:
            if not frames.first_or_default(rs.stream.depth):
                return None
            aligned = self._align.process(frames)
            depth = _depth_mm(aligned.get_depth_frame())
            color = aligned.get_color_frame()
        return Frame(
            color=np.array(color.get_data(), copy=True),  # the SDK recycles its buffer once released
            stamp=_wall_clock(color),
            seq=color.get_frame_number(),
            depth=depth,
        )


def select_device(devices: Sequence[rs.device], serial: str, camera: str) -> rs.device:
    """The device with `serial`, or the only device when `serial` is empty."""
    serials = [d.get_info(rs.camera_info.serial_number) for d in devices]
    if not devices:
        wanted = f"serial '{serial}'" if serial else "any serial"
        raise CameraError(f"camera '{camera}': no RealSense device connected (wanted {wanted})")
    if serial:
        if serial not in serials:
            raise CameraError(
                f"camera '{camera}': no RealSense with serial '{serial}'; connected: {', '.join(serials)}"
            )
        return devices[serials.index(serial)]
    if len(devices) > 1:
        raise CameraError(
            f"camera '{camera}': {len(devices)} RealSense devices connected ({', '.join(serials)}); "
            "set `serial` to choose one"
        )
    return devices[0]


class SoftwareRealSense:
    """A RealSense made of `rs.software_device`: frames pushed with `push()` go through the real SDK
    (syncer, align, frame pool) to a `RealSenseCamera`, so tests and benchmarks need no camera.
    Color and depth share the given intrinsics and an identity extrinsic, so aligned depth is the
    depth as pushed, except for the few percent of pixels that the SDK's align leaves as holes (0).
    With depth, push at about the stream's rate, as a camera does: the SDK pairs color with depth by
    the expected frame period, and pairs pushed back to back, or more than ~8 periods apart, come out
    split (and the camera skips them).
    """

    def __init__(
        self,
        serial: str = "000000000001",
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        depth: bool = False,
        intrinsics: Optional[CameraIntrinsics] = None,
        depth_units: float = 0.001,
    ):
        self.width, self.height = width, height
        self._depth_units = depth_units
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.name, "Software RealSense")
        self.device.register_info(rs.camera_info.serial_number, serial)
        intr = intrinsics or CameraIntrinsics(width, height, width, width, width / 2, height / 2)
        self._color_sensor = self.device.add_sensor("RGB Camera")
        self._color = self._add_stream(self._color_sensor, rs.stream.color, rs.format.rgb8, 3, fps, intr, 1)
        self._depth_sensor = self._depth = None
        if depth:
            self._depth_sensor = self.device.add_sensor("Stereo Module")
            self._depth_sensor.add_read_only_option(rs.option.depth_units, depth_units)
            self._depth = self._add_stream(self._depth_sensor, rs.stream.depth, rs.format.z16, 2, fps, intr, 2)
            identity = rs.extrinsics()
            identity.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
            identity.translation = [0.0, 0.0, 0.0]
            self._depth.register_extrinsics_to(self._color, identity)

    def push(self, color: np.ndarray, stamp: float, seq: int, depth: Optional[np.ndarray] = None) -> None:
        """Deliver one capture as the camera would; `stamp` is wall-clock seconds (system-time domain)."""
        if (depth is None) != (self._depth is None):
            raise ValueError("push depth exactly when the device was made with depth=True")
        self._color_sensor.on_video_frame(self._frame(color, 3, self._color, stamp, seq))
        if depth is not None:
            self._depth_sensor.on_video_frame(self._frame(depth, 2, self._depth, stamp, seq))

    def _add_stream(self, sensor, kind, fmt, bpp, fps, intr: CameraIntrinsics, uid: int):
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = kind, 0, uid
        stream.width, stream.height, stream.fps = self.width, self.height, fps
        stream.bpp, stream.fmt = bpp, fmt
        stream.intrinsics = _rs_intrinsics(intr)
        return sensor.add_video_stream(stream).as_video_stream_profile()

    def _frame(self, pixels: np.ndarray, bpp: int, profile, stamp: float, seq: int):
        # A fresh software_video_frame each time: the SDK copies `pixels`, and reusing the object is
        # reported to corrupt the heap.
        frame = rs.software_video_frame()
        frame.pixels = np.ascontiguousarray(pixels)
        frame.bpp, frame.stride = bpp, self.width * bpp
        frame.timestamp = stamp * 1000.0
        frame.domain = rs.timestamp_domain.system_time
        frame.frame_number = seq
        frame.profile = profile
        if bpp == 2:
            frame.depth_units = self._depth_units
        return frame


def _find_stream(device: rs.device, kind: rs.stream, fmt: rs.format, cfg: CameraConfig):
    """(sensor index, sensor, profile) of the stream `kind` in `fmt` at the configured size and rate."""
    available = []
    for index, sensor in enumerate(device.query_sensors()):
        for profile in sensor.get_stream_profiles():
            if profile.stream_type() != kind or not profile.is_video_stream_profile():
                continue
            video = profile.as_video_stream_profile()
            size = (video.width(), video.height(), profile.fps())
            if profile.format() == fmt and size == (cfg.width, cfg.height, cfg.fps):
                return index, sensor, profile
            available.append(f"{size[0]}x{size[1]}@{size[2]} {profile.format().name}")
    offered = ", ".join(sorted(set(available))) or "none"
    raise CameraError(
        f"camera '{cfg.name}': {_describe(device)} has no {kind.name} stream "
        f"{cfg.width}x{cfg.height}@{cfg.fps} {fmt.name}; available: {offered}"
    )


def _intrinsics(profile: rs.video_stream_profile, camera: str) -> CameraIntrinsics:
    intr = profile.get_intrinsics()
    if intr.model in _BROWN_CONRADY:
        # realsense-ros also publishes every Brown-Conrady variant as plumb_bob: same k1 k2 p1 p2 k3 order.
        model, coeffs = "plumb_bob", tuple(intr.coeffs[:5])
    elif intr.model == rs.distortion.kannala_brandt4:
        model, coeffs = "equidistant", tuple(intr.coeffs[:4])
    else:
        raise CameraError(f"camera '{camera}': distortion model {intr.model.name} has no ROS equivalent")
    return CameraIntrinsics(
        width=intr.width, height=intr.height, fx=intr.fx, fy=intr.fy, cx=intr.ppx, cy=intr.ppy,
        distortion=tuple(float(c) for c in coeffs), distortion_model=model,
    )


def _rs_intrinsics(intr: CameraIntrinsics) -> rs.intrinsics:
    out = rs.intrinsics()
    out.width, out.height = intr.width, intr.height
    out.fx, out.fy, out.ppx, out.ppy = intr.fx, intr.fy, intr.cx, intr.cy
    out.model = rs.distortion.brown_conrady
    out.coeffs = list(intr.distortion[:5]) + [0.0] * (5 - len(intr.distortion[:5]))
    return out


def _wall_clock(frame: rs.frame) -> float:
    if frame.get_frame_timestamp_domain() in _WALL_CLOCK_DOMAINS:
        return frame.get_timestamp() / 1000.0
    if frame.supports_frame_metadata(rs.frame_metadata_value.time_of_arrival):
        return frame.get_frame_metadata(rs.frame_metadata_value.time_of_arrival) / 1000.0
    return time.time()


def _depth_mm(depth: rs.depth_frame) -> np.ndarray:
    raw = np.asanyarray(depth.get_data())
    scale = depth.get_units() * 1000.0
    if abs(scale - 1.0) < 1e-9:
        return raw.copy()
    # e.g. the D405 counts in 0.1 mm; Frame.depth is in millimetres
    return np.clip(np.rint(raw * scale), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _describe(device: rs.device) -> str:
    return f"{device.get_info(rs.camera_info.name)} (serial {device.get_info(rs.camera_info.serial_number)})"
