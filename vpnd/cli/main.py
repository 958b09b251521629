"""Entry point of the `vpnd` command; each verb lives in its own module and registers itself."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator

from vpnd.cli import configure, demo, opmode, profile, run
from vpnd.client import runner as client
from vpnd.paths import Paths

GLOBAL_OPTIONS = (
    ("--config-dir", "config directory (default /etc/vpnd or $VPND_CONFIG_DIR)"),
    ("--run-dir", "runtime directory for the control socket (default /run/vpnd)"),
)


def _add_global_options(parser: argparse.ArgumentParser, *, default: object) -> None:
    for flag, help_text in GLOBAL_OPTIONS:
        parser.add_argument(flag, default=default, help=help_text)


def _every_verb(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parsers of every verb and sub-verb (`show sessions`, `reset user` ...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share one parser
                yield sub
                yield from _every_verb(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpnd", description="SSTP VPN concentrator")
    _add_global_options(parser, default=None)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in (run, opmode, demo, client, configure, profile):
        module.register(verbs)
    # Global options are taken after the verb too (`vpnd configure --config-dir X`). SUPPRESS
    # keeps a verb's parser from overwriting a value given before the verb with its default.
    for sub in _every_verb(parser):
        _add_global_options(sub, default=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Library warnings (cryptography's deprecations and the like) are for developers: they would
    # reach operators on every command. vpnd's own warnings are messages, not `warnings`.
    warnings.simplefilter("ignore")
    args = build_parser().parse_args(argv)
    paths = Paths.from_env(args.config_dir, args.run_dir)
    result: int = args.handler(args, paths)
    return result


if __name__ == "__main__":
    sys.exit(main())
