"""`vpnd run`: the daemon."""

from __future__ import annotations

import argparse

from vpnd.paths import Paths


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = verbs.add_parser("run", help="run the concentrator (first start writes the embedded default)")
    parser.add_argument("--listen", default="::", help="address to listen on (default: all, IPv4 and IPv6)")
    parser.add_argument("--port", type=int, help="override vpn sstp port")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, paths: Paths) -> int:
    from vpnd.server.main import run  # noqa: PLC0415 (the daemon's imports are not needed by other verbs)

    return run(paths, listen_host=args.listen, port=args.port, log_level=args.log_level)
