"""Entry point of the `vpnd` command."""

from __future__ import annotations

import argparse
import sys

from vpnd.cli.demo import run_demo
from vpnd.proto.ppp.auth.types import AuthMethod


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpnd", description="SSTP VPN concentrator")
    verbs = parser.add_subparsers(dest="verb", required=True)
    demo = verbs.add_parser("demo", help="run the whole SSTP/PPP conversation in memory and print it")
    demo.add_argument("--auth", choices=[m.value for m in AuthMethod], action="append",
                      help="authentication method(s) to show (default: all four)")
    demo.add_argument("--no-ipv6", action="store_true", help="leave IPV6CP out")
    args = parser.parse_args(argv)

    if args.verb == "demo":
        methods = [AuthMethod(m) for m in args.auth] if args.auth else list(AuthMethod)
        results = [run_demo(method, ipv6=not args.no_ipv6) for method in methods]
        return 0 if all(results) else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
