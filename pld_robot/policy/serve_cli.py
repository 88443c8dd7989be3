"""`pld-robot serve-policy`: one policy behind the FastAPI server."""

from __future__ import annotations

import argparse
import os

from pld_robot.policy.backends import BACKENDS, load_policy

TOKEN_ENV = "PLD_POLICY_TOKEN"


def add_parser(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve-policy", help="serve a base policy over HTTP and websocket")
    serve.add_argument("--backend", choices=BACKENDS, required=True)
    serve.add_argument("--checkpoint", help="pi0: checkpoint folder; replay: episode store")
    serve.add_argument("--episode", type=int, default=0, help="replay: the episode to replay (default 0)")
    serve.add_argument("--config", help="scripted: YAML of ScriptedPolicyConfig fields (e.g. config/policies/scripted.yaml)")
    serve.add_argument("--device", help="pi0: torch device (default: cuda if available, else cpu)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it to the network: set a token)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-request-mb", type=float, default=32.0)
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from pld_robot.policy.server import serve

    policy = load_policy(args.backend, checkpoint=args.checkpoint, episode=args.episode, config=args.config,
                         device=args.device)
    token = os.environ.get(TOKEN_ENV) or None
    spec = policy.spec
    print(f"serving {spec.backend} {spec.version!r}: cameras {spec.cameras}, {len(spec.state_names)}-D state, "
          f"{len(spec.action_names)}-D actions, chunks of {spec.chunk_length} at {spec.control_hz:g} Hz, "
          f"on http://{args.host}:{args.port} ({'bearer token from $' + TOKEN_ENV if token else 'no token'})",
          flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        print(f"warning: {args.host} is reachable from the network and no ${TOKEN_ENV} is set", flush=True)
    serve(policy, host=args.host, port=args.port, token=token, max_request_mb=args.max_request_mb)
    return 0
