"""The wire format of the policy server: msgpack with numpy arrays as a typed extension (as openpi
does), so images cross as raw bytes, not as lists of numbers."""

from __future__ import annotations

import msgpack
import numpy as np

from pld_robot.policy.spec import InvalidObservation, Observation

_ARRAY = b"__ndarray__"


def _encode(obj):
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise TypeError(f"cannot send arrays of dtype {obj.dtype}")
        return {_ARRAY: True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send {type(obj).__name__}")


def _decode(obj):
    if _ARRAY in obj:
        dtype = np.dtype(obj[b"dtype"])
        if dtype.kind not in "biuf":
            raise ValueError(f"arrays of dtype {dtype} are not accepted")
        shape = tuple(int(n) for n in obj[b"shape"])
        data = obj[b"data"]
        if len(data) != dtype.itemsize * int(np.prod(shape)):
            raise ValueError(f"array of shape {shape} and dtype {dtype} with {len(data)} bytes")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def packb(obj) -> bytes:
    return msgpack.packb(obj, default=_encode, use_bin_type=True)


def unpackb(data: bytes):
    """Decode a message; anything that is not one of ours raises ValueError with the reason."""
    try:
        return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=False)
    except ValueError:
        raise
    except Exception as exc:  # msgpack raises several types for garbage
        raise ValueError(f"not a msgpack message: {type(exc).__name__}: {exc}") from exc


def observation_to_message(obs: Observation) -> dict:
    message = {"images": obs.images, "state": obs.state, "prompt": obs.prompt}
    if obs.noise is not None:
        message["noise"] = obs.noise
    if obs.extra:
        message["extra"] = obs.extra
    return message


def message_to_observation(message) -> Observation:
    if not isinstance(message, dict):
        raise InvalidObservation(f"the request must be a map, got {type(message).__name__}")
    unknown = set(message) - {"images", "state", "prompt", "noise", "extra"}
    if unknown:
        raise InvalidObservation(f"unknown field(s) {sorted(unknown)}")
    for key in ("images", "state"):
        if key not in message:
            raise InvalidObservation(f"missing field {key!r}")
    extra = message.get("extra", {})
    if not isinstance(extra, dict):
        raise InvalidObservation("extra must be a map")
    return Observation(images=message["images"], state=message["state"], prompt=message.get("prompt", ""),
                       noise=message.get("noise"), extra=extra)
