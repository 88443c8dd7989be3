"""The robot's side of the policy server (pld_robot.policy.server): ask for a chunk of actions.

Two transports, one result. PolicyClient speaks HTTP over a keep-alive connection (stateless, easy to
put behind a proxy); WebSocketPolicyClient keeps one websocket open (no per-request headers, the
lowest overhead). Both fetch the PolicySpec on connect, so the caller can refuse a policy that does
not fit its robot before the first action, and both raise the same two errors: PolicyServerError when
the server answered no (it names the problem), PolicyUnavailable when it did not answer at all. Either
client can be made on one thread and used from another, and by several threads at once (the server
serialises their inferences anyway).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Callable, Self
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from pld_robot.policy.spec import Observation, PolicySpec
from pld_robot.policy.wire import observation_to_message, packb, unpackb


class PolicyServerError(RuntimeError):
    """The server refused a request: 4xx for a bad one (the message says what to fix), 5xx if the
    policy failed."""

    def __init__(self, status: int, message: str):
        super().__init__(f"policy server replied {status}: {message}")
        self.status, self.message = status, message


class PolicyUnavailable(ConnectionError):
    """No answer: the server is unreachable, the connection dropped, or the reply did not come in time."""


@dataclass(frozen=True)
class ActResult:
    actions: np.ndarray  # (chunk_length, len(action_names)) float32
    timing: dict[str, float]  # the server's own: server_ms, infer_ms, queue_ms
    rtt_ms: float  # request sent to reply received, as seen here: timing plus the network
    version: str  # of the weights that produced `actions`


def _result(reply: dict, rtt_ms: float) -> ActResult:
    return ActResult(actions=np.array(reply["actions"]), timing=reply["timing"], rtt_ms=rtt_ms,
                     version=reply["version"])


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _detail(body: bytes) -> str:
    """The server's JSON `detail`, or the start of whatever else answered (a proxy's error page)."""
    try:
        return str(json.loads(body)["detail"])
    except (ValueError, KeyError, TypeError):
        return body[:300].decode(errors="replace")


class PolicyClient:
    """HTTP client of a policy server at `url` (e.g. "http://gpu-box:8000"); `spec` is fetched here."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 5.0):
        self.url, self.timeout_s = url.rstrip("/"), timeout_s
        self._http = httpx.Client(base_url=self.url, headers=_auth(token), timeout=timeout_s)
        try:
            self.spec = PolicySpec.from_json(self._request("GET", "/spec").json())
        except BaseException:
            self._http.close()
            raise

    def act(self, obs: Observation) -> ActResult:
        body = packb(observation_to_message(obs))
        start = time.perf_counter()
        response = self._request("POST", "/act", content=body, headers={"Content-Type": "application/msgpack"})
        rtt_ms = (time.perf_counter() - start) * 1e3
        return _result(unpackb(response.content), rtt_ms)

    def health(self) -> dict:
        """The server's /healthz: ok, backend, version, requests served, uptime_s."""
        return self._request("GET", "/healthz").json()

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise PolicyUnavailable(f"policy server at {self.url} did not answer {method} {path} "
                                    f"within {self.timeout_s:g} s") from exc
        except httpx.TransportError as exc:
            raise PolicyUnavailable(f"policy server at {self.url} is unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise PolicyServerError(response.status_code, _detail(response.content) or response.reason_phrase)
        return response

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def websocket_url(url: str) -> str:
    """The websocket of the server at `url`: an http(s) base URL becomes ws(s)://.../ws; a ws(s) URL is
    taken as it is, so both clients can be configured with the same server address."""
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss"):
        return url
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) or ws(s) URL: {url!r}")
    return urlunsplit((parts.scheme.replace("http", "ws"), parts.netloc, parts.path.rstrip("/") + "/ws", "", ""))


class WebSocketPolicyClient:
    """Websocket client of a policy server; the server sends `spec` as its first message.

    After a timeout or a dropped connection the client is closed (a late reply would otherwise be taken
    for the answer to the next request): every later `act` raises PolicyUnavailable; make a new client.
    """

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 5.0):
        self.url, self.timeout_s = websocket_url(url), timeout_s
        self._lock = threading.Lock()
        try:  # legacy=True: a connection this object holds and closes, not a `with` block
            self._ws = connect(self.url, additional_headers=_auth(token), open_timeout=timeout_s,
                               close_timeout=timeout_s, compression=None, legacy=True)
        except InvalidStatus as exc:  # the server refused the handshake, e.g. 401
            response = exc.response
            raise PolicyServerError(response.status_code, _detail(response.body or b"") or response.reason_phrase) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise PolicyUnavailable(f"policy server at {self.url} is unreachable: {exc}") from exc
        try:
            self.spec = PolicySpec.from_json(unpackb(self._recv()))
        except BaseException:
            self._ws.close()
            raise

    def act(self, obs: Observation) -> ActResult:
        message = packb(observation_to_message(obs))
        with self._lock:
            start = time.perf_counter()
            try:
                self._ws.send(message)
            except ConnectionClosed as exc:
                raise PolicyUnavailable(f"connection to the policy server at {self.url} is closed: {exc}") from exc
            reply = unpackb(self._recv())
            rtt_ms = (time.perf_counter() - start) * 1e3
        if "error" in reply:
            raise PolicyServerError(reply["status"], reply["error"])
        return _result(reply, rtt_ms)

    def _recv(self) -> bytes:
        try:
            return self._ws.recv(timeout=self.timeout_s)
        except TimeoutError as exc:
            self._ws.close()
            raise PolicyUnavailable(f"policy server at {self.url} did not answer within {self.timeout_s:g} s; "
                                    "connection closed") from exc
        except ConnectionClosed as exc:
            raise PolicyUnavailable(f"connection to the policy server at {self.url} closed: {exc}") from exc

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ClientSource:
    """A client as the chunk broker's source (`act(obs) -> chunk`); `on_chunk(obs, chunk)` sees each
    chunk as it arrives (policy_node publishes them)."""

    def __init__(self, client: PolicyClient | WebSocketPolicyClient,
                 on_chunk: Callable[[Observation, np.ndarray], None] | None = None):
        self._client = client
        self._on_chunk = on_chunk

    def act(self, obs: Observation) -> np.ndarray:
        actions = self._client.act(obs).actions
        if self._on_chunk is not None:
            self._on_chunk(obs, actions)
        return actions
