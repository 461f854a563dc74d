"""`vaekit serve`: the latent-space explorer and a JSON API for one run (the serve extra)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from vaekit.cli.args import add_device_argument, add_run_argument, at_most
from vaekit.core.errors import ConfigError

EXTRA_MISSING = 'vaekit serve needs the serve extra: pip install "vaekit[serve]"'
TOKEN_VARIABLE = "VAEKIT_SERVE_TOKEN"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")  # Host headers of a loopback server
port_number = at_most(65535, "port", low=0)


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a live latent-space explorer page and a JSON API for a run (localhost)",
        description="Serve the run at http://HOST:PORT/: the explorer page (latent map of "
        "the test set, live decoding, sliders per latent dimension, interpolation, your own "
        "examples with reconstruction, anomaly score and nearest neighbours) and the JSON "
        "API under /v1 (encode, decode, sample, reconstruct, score, neighbors, info; the "
        "OpenAPI schema at /docs). Needs the serve extra: pip install 'vaekit[serve]'. "
        "Binds to 127.0.0.1; another --host serves everyone who can reach it, with no "
        "authentication unless --token is given. Ctrl-C stops it. See docs/serve.md.",
    )
    add_run_argument(p)
    p.add_argument("--port", type=port_number, default=8000, help="TCP port (default 8000)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine)"
    )
    p.add_argument(
        "--token",
        help="require 'Authorization: Bearer TOKEN' on /v1 (default: the "
        f"{TOKEN_VARIABLE} environment variable; none if unset)",
    )
    add_device_argument(p)
    p.set_defaults(run_command=cmd_serve, sequence_runs=False)  # images and tables only


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only (127.0.0.0/8, ::1 or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    from vaekit.config.runs import RunFolder

    RunFolder(args.run).require()  # the run's problems first: they name what to fix
    try:
        import uvicorn

        from vaekit.apps.server import make_app
    except ImportError:
        raise ConfigError(EXTRA_MISSING) from None

    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    loopback = is_loopback(args.host)
    if not loopback:
        if token is None:
            print(
                f"warning: serving on {args.host} with no authentication: anyone who can "
                "reach this port can use the model (add --token)",
                file=sys.stderr,
            )
        else:
            print(
                f"warning: serving on {args.host} over plain HTTP: the bearer token "
                "travels unencrypted",
                file=sys.stderr,
            )
    print(f"vaekit serve: opening {args.run} ...", file=sys.stderr, flush=True)
    hosts = [args.host, *LOOPBACK_NAMES] if loopback else None  # Host headers accepted
    app = make_app(args.run, token, device=args.device, hosts=hosts)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    fragment = "#token=<TOKEN>" if token else ""
    print(
        f"explorer: http://{shown}:{args.port}/{fragment}  API: /v1/...  schema: /docs",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
