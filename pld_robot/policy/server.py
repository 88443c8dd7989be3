"""The policy server: one model behind HTTP and a websocket, on the GPU box.

The protocol is openpi's, kept tiny: a client gets the PolicySpec first (`GET /spec`, or the first
websocket message), then sends msgpack observations (pld_robot.policy.wire) and gets back a chunk of
actions with the server's timing and the weights' version, so the robot can tell network time from
model time and record which weights acted.

    POST /act    body: msgpack observation -> msgpack {"actions": (chunk, A) float32, "timing", "version"}
    GET  /ws     websocket: spec first, then one reply per binary request (errors as {"error", "status"})
    GET  /spec   PolicySpec.to_json()
    GET  /healthz  ok, backend, version, requests served, uptime

One model serves every client: inferences run one at a time on a single worker thread, never on the
event loop, so /healthz and the decoding of the next request stay responsive during a long inference,
and a client that disconnects mid-inference cannot make two inferences overlap. A bad request gets a
4xx naming the problem (400 undecodable, 413 too large, 422 not a valid observation), a policy that
raises or returns unusable actions gets a 500 with the reason; neither stops the server.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
import uvicorn
from fastapi import (
    Depends,
    FastAPI,
    HTTPException,
    Request,
    Response,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.responses import JSONResponse

from pld_robot.policy.spec import InvalidObservation, Policy, check_observation
from pld_robot.policy.wire import message_to_observation, packb, unpackb

log = logging.getLogger(__name__)

MSGPACK = "application/msgpack"


class _Refused(Exception):
    """A request answered with an error status; `message` tells the client what to fix."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class _Model:
    """The policy, its single inference thread and its counters: the part /act and /ws share."""

    def __init__(self, policy: Policy):
        self.policy, self.spec = policy, policy.spec
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy")
        self.requests = 0
        self.started = time.monotonic()

    async def act(self, body: bytes) -> bytes:
        """The msgpack reply to one msgpack request, or _Refused."""
        start = time.perf_counter()
        try:
            message = unpackb(body)
        except ValueError as exc:
            raise _Refused(400, f"undecodable request: {exc}") from None
        try:
            obs = message_to_observation(message)
            check_observation(self.spec, obs)
        except InvalidObservation as exc:
            raise _Refused(422, f"invalid observation: {exc}") from None

        def infer():  # on the worker thread, which times its own wait for the model
            began = time.perf_counter()
            actions = np.asarray(self.policy.predict(obs), dtype=np.float32)
            return actions, began, time.perf_counter()

        submitted = time.perf_counter()
        try:
            actions, began, ended = await asyncio.get_running_loop().run_in_executor(self.worker, infer)
        except InvalidObservation as exc:  # a backend's own check, e.g. of `extra`
            raise _Refused(422, f"invalid observation: {exc}") from None
        except Exception as exc:
            log.exception("policy %s failed", self.spec.backend)
            raise _Refused(500, f"policy failed: {type(exc).__name__}: {exc}") from None
        expected = (self.spec.chunk_length, len(self.spec.action_names))
        if actions.shape != expected:
            raise _Refused(500, f"policy returned actions of shape {actions.shape}, expected {expected}")
        if not np.all(np.isfinite(actions)):  # never hand a robot NaN or inf to track
            raise _Refused(500, "policy returned non-finite actions")
        self.requests += 1
        timing = {"server_ms": (time.perf_counter() - start) * 1e3,  # all but packing this small reply
                  "infer_ms": (ended - began) * 1e3, "queue_ms": (began - submitted) * 1e3}
        return packb({"actions": actions, "timing": timing, "version": self.spec.version})


def _token_problem(authorization: str | None, token: str | None) -> str | None:
    """Why a request may not use the server, or None if it may (always, when no token is set)."""
    if token is None:
        return None
    if not authorization:
        return "missing 'Authorization: Bearer <token>' header"
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return "wrong bearer token"
    return None


def create_app(policy: Policy, *, token: str | None = None, max_request_mb: float = 32) -> FastAPI:
    """The server for `policy`; with `token`, every endpoint needs `Authorization: Bearer <token>`."""
    model = _Model(policy)
    limit = int(max_request_mb * 2**20)
    too_large = f"request larger than the server's {max_request_mb:g} MB limit"

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        model.worker.shutdown(wait=False, cancel_futures=True)

    async def authorize(request: Request) -> None:  # async: a sync dependency would cost a thread hop
        problem = _token_problem(request.headers.get("authorization"), token)
        if problem:
            raise HTTPException(401, problem, headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="pld_robot policy server", lifespan=lifespan)
    guarded = [Depends(authorize)]  # the websocket checks the token itself, to refuse its handshake

    @app.get("/healthz", dependencies=guarded)
    async def healthz() -> dict:
        return {"ok": True, "backend": model.spec.backend, "version": model.spec.version,
                "requests": model.requests, "uptime_s": round(time.monotonic() - model.started, 3)}

    @app.get("/spec", dependencies=guarded)
    async def spec() -> dict:
        return model.spec.to_json()

    @app.post("/act", dependencies=guarded)
    async def act(request: Request) -> Response:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:  # refuse before reading it
            raise HTTPException(413, too_large)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HTTPException(413, too_large)
        try:
            return Response(await model.act(bytes(body)), media_type=MSGPACK)
        except _Refused as exc:
            raise HTTPException(exc.status, exc.message) from None

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        problem = _token_problem(websocket.headers.get("authorization"), token)
        if problem:  # refuse the handshake with the same 401 an HTTP request gets
            await websocket.send_denial_response(
                JSONResponse({"detail": problem}, 401, headers={"WWW-Authenticate": "Bearer"}))
            return
        await websocket.accept()
        try:
            await websocket.send_bytes(packb(model.spec.to_json()))
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                body = message.get("bytes")
                try:
                    if body is None:
                        raise _Refused(400, "requests must be binary msgpack messages, not text")
                    if len(body) > limit:
                        raise _Refused(413, too_large)
                    reply = await model.act(body)
                except _Refused as exc:
                    reply = packb({"error": exc.message, "status": exc.status})
                await websocket.send_bytes(reply)
        except (WebSocketDisconnect, OSError):  # the client went away, possibly mid-inference
            return

    return app


def make_server(policy: Policy, host: str = "127.0.0.1", port: int = 8000, *, token: str | None = None,
                max_request_mb: float = 32, log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for `policy`, not yet running (port 0: any free port, see `bound_port`).

    Websocket messages up to twice the request limit reach the app and get a 413 reply; beyond that the
    transport closes the connection (1009) rather than buffer it. Per-message compression is off: it
    would spend milliseconds per request squeezing incompressible camera images."""
    app = create_app(policy, token=token, max_request_mb=max_request_mb)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            ws_max_size=2 * int(max_request_mb * 2**20), ws_per_message_deflate=False)
    return uvicorn.Server(config)


def bound_port(server: uvicorn.Server) -> int:
    """The port a started server listens on (the one the OS chose, for port 0)."""
    return server.servers[0].sockets[0].getsockname()[1]


def serve(policy: Policy, host: str = "127.0.0.1", port: int = 8000, *, token: str | None = None,
          max_request_mb: float = 32, log_level: str = "info") -> None:
    """Serve `policy` until interrupted; on 127.0.0.1 unless told otherwise (use a token off localhost)."""
    make_server(policy, host, port, token=token, max_request_mb=max_request_mb, log_level=log_level).run()
