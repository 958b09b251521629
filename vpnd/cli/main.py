"""Entry point of the `vpnd` command; each verb lives in its own module and registers itself."""

from __future__ import annotations

import argparse
import sys

from vpnd.cli import configure, demo, opmode, profile, run
from vpnd.client import runner as client
from vpnd.paths import Paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpnd", description="SSTP VPN concentrator")
    parser.add_argument("--config-dir", help="config directory (default /etc/vpnd or $VPND_CONFIG_DIR)")
    parser.add_argument("--run-dir", help="runtime directory for the control socket (default /run/vpnd)")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in (run, opmode, demo, client, configure, profile):
        module.register(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    paths = Paths.from_env(args.config_dir, args.run_dir)
    result: int = args.handler(args, paths)
    return result


if __name__ == "__main__":
    sys.exit(main())
