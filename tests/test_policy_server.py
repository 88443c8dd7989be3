"""The policy server and its clients, over real HTTP and websockets on loopback (uvicorn in a thread).

The test policy derives every action from the mean of each image and the state, so an answer equal to
calling the policy directly shows the server passed the observation through exactly; it also records
whether two inferences ever overlapped, and sleeps or fails on request (via `extra` and the prompt).
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from pld_robot.policy.client import (
    PolicyClient,
    PolicyServerError,
    PolicyUnavailable,
    WebSocketPolicyClient,
    websocket_url,
)
from pld_robot.policy.server import bound_port, make_server
from pld_robot.policy.spec import Observation, PolicySpec
from pld_robot.policy.wire import observation_to_message, packb, unpackb

SPEC = PolicySpec(cameras={"front": (24, 32), "wrist": (16, 16)}, state_names=("j0", "j1", "j2"),
                  action_names=("x", "y"), chunk_length=4, control_hz=10.0, backend="echo", version="test-1")
LIMIT_MB = 0.25  # so an oversize body is quick to send
TOKEN = "s3cret"


class EchoPolicy:
    spec = SPEC

    def __init__(self):
        self._lock = threading.Lock()
        self.active = self.max_active = 0

    def predict(self, obs: Observation) -> np.ndarray:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(obs.extra.get("delay_s", 0.0))
            if obs.prompt == "fail":
                raise RuntimeError("the model fell over")
            if obs.prompt == "diverge":
                return np.full((SPEC.chunk_length, 2), np.nan, np.float32)
            front, wrist = obs.images["front"].mean(), obs.images["wrist"].mean()
            base = np.array([front + obs.state.sum(), wrist - 2 * obs.state[0]])
            return (base + 0.5 * np.arange(SPEC.chunk_length)[:, None]).astype(np.float32)
        finally:
            with self._lock:
                self.active -= 1


def observation(seed: int, **extra) -> Observation:
    rng = np.random.default_rng(seed)
    images = {name: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for name, (h, w) in SPEC.cameras.items()}
    return Observation(images=images, state=rng.normal(size=3).astype(np.float32), prompt="pick", extra=extra)


@contextmanager
def running(policy, **kwargs):
    server = make_server(policy, port=0, log_level="warning", max_request_mb=LIMIT_MB, **kwargs)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{bound_port(server)}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def policy():
    return EchoPolicy()


@pytest.fixture(scope="module")
def url(policy):
    with running(policy) as url:
        yield url


@pytest.fixture(scope="module")
def token_url():
    with running(EchoPolicy(), token=TOKEN) as url:
        yield url


def test_spec_and_health(url):
    assert httpx.get(f"{url}/spec").json() == SPEC.to_json()
    with PolicyClient(url) as client:
        assert client.spec == SPEC
        health = client.health()
        assert health["ok"] and health["backend"] == "echo" and health["version"] == "test-1"
        assert health["uptime_s"] > 0
        client.act(observation(0))
        assert client.health()["requests"] == health["requests"] + 1


def test_http_round_trip_equals_the_policy(url):
    obs = observation(1)
    with PolicyClient(url) as client:
        result = client.act(obs)
    expected = EchoPolicy().predict(obs)
    assert result.actions.dtype == np.float32 and result.actions.shape == (4, 2)
    np.testing.assert_array_equal(result.actions, expected)
    assert set(result.timing) == {"server_ms", "infer_ms", "queue_ms"}
    assert result.version == "test-1" and result.rtt_ms >= result.timing["server_ms"] > 0


def test_websocket_sends_the_spec_first_then_the_same_replies(url):
    assert websocket_url(url) == url.replace("http://", "ws://") + "/ws"
    with connect(websocket_url(url)) as ws:
        assert unpackb(ws.recv(timeout=5)) == SPEC.to_json()
    with WebSocketPolicyClient(url) as ws_client, PolicyClient(url) as http_client:
        assert ws_client.spec == SPEC
        for seed in range(3):
            obs = observation(seed)
            by_ws, by_http = ws_client.act(obs), http_client.act(obs)
            np.testing.assert_array_equal(by_ws.actions, by_http.actions)
            np.testing.assert_array_equal(by_ws.actions, EchoPolicy().predict(obs))
            assert by_ws.version == "test-1" and set(by_ws.timing) == set(by_http.timing)


def _message(**changes) -> dict:
    message = observation_to_message(observation(7))
    for key, value in changes.items():
        if value is None:
            del message[key]
        else:
            message[key] = value
    return message


def _images(**changes) -> dict:
    images = dict(observation(7).images)
    images.update(changes)
    return {name: image for name, image in images.items() if image is not None}


def _corrupt_array() -> bytes:  # an array whose byte count does not match its shape
    return packb(_message()).replace(packb([24, 32, 3]), packb([24, 32, 4]), 1)


MALFORMED = {  # kind: (body, status, words the detail must contain)
    "garbage bytes": (b"\xc1\xc1 not msgpack", 400, "undecodable"),
    "truncated": (packb(_message())[:-10], 400, "undecodable"),
    "corrupt array": (_corrupt_array(), 400, "array of shape (24, 32, 4)"),
    "not a map": (packb([1, 2, 3]), 422, "must be a map, got list"),
    "missing field": (packb(_message(state=None)), 422, "missing field 'state'"),
    "unknown field": (packb(_message(velocity=[1.0])), 422, "unknown field(s) ['velocity']"),
    "wrong image size": (packb(_message(images=_images(front=np.zeros((32, 24, 3), np.uint8)))), 422,
                         "image 'front' has shape (32, 24, 3), expected (24, 32, 3)"),
    "wrong image dtype": (packb(_message(images=_images(front=np.zeros((24, 32, 3), np.float32)))), 422,
                          "image 'front' has dtype float32"),
    "image not an array": (packb(_message(images=_images(front=[1, 2, 3]))), 422, "'front' is a list"),
    "missing camera": (packb(_message(images=_images(wrist=None))), 422, "missing camera(s) ['wrist']"),
    "unknown camera": (packb(_message(images=_images(side=np.zeros((16, 16, 3), np.uint8)))), 422,
                       "unknown camera(s) ['side']"),
    "wrong state length": (packb(_message(state=np.zeros(2, np.float32))), 422, "state has 2 values, expected 3"),
    "non-finite state": (packb(_message(state=np.array([0.0, np.nan, 1.0], np.float32))), 422,
                         "state must be finite"),
    "non-finite noise": (packb(_message(noise=np.full((4, 2), np.inf, np.float32))), 422,
                         "noise must be a finite array"),
    "prompt not a string": (packb(_message(prompt=3)), 422, "prompt must be a string"),
}


@pytest.mark.parametrize("kind", MALFORMED)
def test_malformed_http_request_gets_a_4xx_naming_it_and_the_server_keeps_serving(url, kind):
    body, status, words = MALFORMED[kind]
    response = httpx.post(f"{url}/act", content=body)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    with PolicyClient(url) as client:
        np.testing.assert_array_equal(client.act(observation(2)).actions, EchoPolicy().predict(observation(2)))


def test_malformed_websocket_requests_get_error_replies_on_an_open_connection(url):
    with connect(websocket_url(url)) as ws:
        ws.recv(timeout=5)
        good = packb(observation_to_message(observation(3)))
        for kind, (body, status, words) in MALFORMED.items():
            ws.send(body)
            reply = unpackb(ws.recv(timeout=5))
            assert reply["status"] == status and words in reply["error"], kind
            ws.send(good)
            np.testing.assert_array_equal(unpackb(ws.recv(timeout=5))["actions"], EchoPolicy().predict(observation(3)))
        ws.send("a text frame")
        assert unpackb(ws.recv(timeout=5)) == {"error": "requests must be binary msgpack messages, not text",
                                               "status": 400}
        ws.send(b"\x00" * int(LIMIT_MB * 2**20 + 1))
        reply = unpackb(ws.recv(timeout=5))
        assert reply["status"] == 413 and "0.25 MB limit" in reply["error"]
        ws.send(good)
        assert "actions" in unpackb(ws.recv(timeout=5))


def test_the_client_raises_the_server_error(url):
    with PolicyClient(url) as client, WebSocketPolicyClient(url) as ws_client:
        for c in (client, ws_client):
            with pytest.raises(PolicyServerError, match="state has 2 values") as raised:
                c.act(Observation(images=observation(0).images, state=np.zeros(2, np.float32)))
            assert raised.value.status == 422
            assert c.act(observation(4)).actions.shape == (4, 2)


def test_oversize_body_gets_413_with_the_limit(url):
    body = b"\x00" * int(LIMIT_MB * 2**20 + 1)
    response = httpx.post(f"{url}/act", content=body)
    assert response.status_code == 413 and "0.25 MB limit" in response.json()["detail"]
    # without a Content-Length (chunked), the server counts what it reads
    response = httpx.post(f"{url}/act", content=iter([body[:100_000]] * 4))
    assert response.status_code == 413 and "0.25 MB limit" in response.json()["detail"]
    with PolicyClient(url) as client:
        assert client.act(observation(5)).actions.shape == (4, 2)


def test_token_guards_http_and_websocket(token_url):
    for headers, problem in (({}, "missing 'Authorization: Bearer <token>' header"),
                             ({"Authorization": "Bearer nope"}, "wrong bearer token"),
                             ({"Authorization": f"Basic {TOKEN}"}, "wrong bearer token")):
        for path in ("/spec", "/healthz"):
            response = httpx.get(f"{token_url}{path}", headers=headers)
            assert response.status_code == 401 and response.json()["detail"] == problem
        response = httpx.post(f"{token_url}/act", headers=headers, content=packb(_message()))
        assert response.status_code == 401 and response.json()["detail"] == problem
    for token in (None, "nope"):
        for make in (PolicyClient, WebSocketPolicyClient):
            with pytest.raises(PolicyServerError) as raised:
                make(token_url, token=token)
            assert raised.value.status == 401 and "token" in raised.value.message
    obs = observation(6)
    with PolicyClient(token_url, token=TOKEN) as client, WebSocketPolicyClient(token_url, token=TOKEN) as ws_client:
        assert client.health()["ok"]
        np.testing.assert_array_equal(client.act(obs).actions, ws_client.act(obs).actions)


def test_concurrent_clients_get_their_own_answers_one_inference_at_a_time(url, policy):
    def run(worker: int) -> list[bool]:
        make = PolicyClient if worker % 2 else WebSocketPolicyClient
        with make(url) as client:
            results = []
            for i in range(5):
                obs = observation(100 * worker + i, delay_s=0.01)
                results.append(np.array_equal(client.act(obs).actions, EchoPolicy().predict(observation(100 * worker + i))))
            return results

    policy.max_active = 0
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(4)))
    assert all(all(r) for r in results), results
    assert policy.max_active == 1


def test_one_shared_client_from_several_threads(url):
    with PolicyClient(url) as client, WebSocketPolicyClient(url) as ws_client, ThreadPoolExecutor(4) as pool:
        for c in (client, ws_client):
            seeds = range(200, 212)
            answers = list(pool.map(lambda s, c=c: c.act(observation(s)).actions, seeds))
            for seed, actions in zip(seeds, answers):
                np.testing.assert_array_equal(actions, EchoPolicy().predict(observation(seed)))


def test_policy_failure_gives_500_and_the_server_keeps_serving(url):
    failing = observation(8)
    failing.prompt = "fail"
    diverging = observation(8)
    diverging.prompt = "diverge"
    with PolicyClient(url) as client, WebSocketPolicyClient(url) as ws_client:
        for c in (client, ws_client):
            with pytest.raises(PolicyServerError) as raised:
                c.act(failing)
            assert raised.value.status == 500
            assert raised.value.message == "policy failed: RuntimeError: the model fell over"
            assert c.act(observation(9)).actions.shape == (4, 2)
            with pytest.raises(PolicyServerError, match="policy returned non-finite actions") as raised:
                c.act(diverging)
            assert raised.value.status == 500
            assert c.act(observation(9)).actions.shape == (4, 2)


def test_healthz_answers_during_a_slow_inference(url, policy):
    with PolicyClient(url) as client, ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.act, observation(10, delay_s=0.3))
        deadline = time.monotonic() + 5
        while policy.active == 0:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        start = time.perf_counter()
        assert client.health()["ok"]
        assert time.perf_counter() - start < 0.15
        assert policy.active == 1  # still inferring
        result = slow.result(timeout=5)
    assert result.timing["infer_ms"] >= 300 and result.rtt_ms >= 300


def test_timeouts_and_unreachable_servers_raise_policy_unavailable(url):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    for make in (PolicyClient, WebSocketPolicyClient):
        with pytest.raises(PolicyUnavailable, match=f"policy server at (http|ws)://{address}(/ws)? is unreachable"):
            make(f"http://{address}")
    with PolicyClient(url, timeout_s=0.1) as client, WebSocketPolicyClient(url, timeout_s=0.1) as ws_client:
        for c in (client, ws_client):
            with pytest.raises(PolicyUnavailable, match="did not answer.* within 0.1 s"):
                c.act(observation(11, delay_s=0.3))
        with PolicyClient(url) as patient:  # the abandoned inferences still run: wait behind them
            patient.act(observation(12))
        assert client.act(observation(12)).actions.shape == (4, 2)  # HTTP: the next request is fine
        with pytest.raises(PolicyUnavailable, match="closed"):  # websocket: closed, make a new client
            ws_client.act(observation(12))
