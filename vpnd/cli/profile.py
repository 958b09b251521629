"""`vpnd show client-profile USER --format windows|routeros|linux`: what a client needs to dial in.

Registered under `show` next to the op-mode sub-verbs when `show` exists (main.py registers
this module after opmode), else as the top-level verb `client-profile`.
"""

from __future__ import annotations

import argparse
import sys

from vpnd.config.errors import ConfigError
from vpnd.config.generate import render_client_profile
from vpnd.config.model import model_from_tree
from vpnd.config.profiles import EAP_PROFILES, FORMATS, profile_facts
from vpnd.config.tree import ConfigTree
from vpnd.paths import Paths


def _show_subverbs(
    verbs: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    show = verbs.choices.get("show")
    if show is None:
        return None
    for action in show._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    target = _show_subverbs(verbs) or verbs
    parser = target.add_parser("client-profile",
                               help="a client profile for a user (windows, routeros, linux)")
    parser.add_argument("user")
    parser.add_argument("--format", choices=FORMATS, default="windows",
                        help="windows: PowerShell; routeros: terminal script; linux: vpnd client and "
                             "NetworkManager (default windows)")
    parser.add_argument("--server", help="host name or address clients dial "
                                         "(default: vpn sstp host-name, else the certificate's name)")
    parser.add_argument("--name", help="connection name (default 'vpnd SERVER')")
    parser.add_argument("--include-password", action="store_true",
                        help="put the local user's password in the profile (RouterOS, Linux)")
    parser.add_argument("--eap", choices=EAP_PROFILES,
                        help="Windows: the EAP method when eap is among the protocols "
                             "(default peap with RADIUS, mschap-v2 with local users)")
    parser.add_argument("--saved", action="store_true",
                        help="use the saved configuration instead of the running one")
    parser.set_defaults(handler=handle)


def load_config_text(paths: Paths, saved: bool = False) -> tuple[str, str]:
    """(config.boot text, where from): the running configuration, else the saved one."""
    candidates = [paths.saved_config] if saved else [paths.running_config, paths.saved_config]
    for path in candidates:
        try:
            return path.read_text(), str(path)
        except FileNotFoundError:
            continue
    raise ConfigError(f"no configuration in {' or '.join(str(p) for p in candidates)}")


def handle(args: argparse.Namespace, paths: Paths) -> int:
    try:
        text, source = load_config_text(paths, args.saved)
        try:
            config = model_from_tree(ConfigTree.from_boot_text(text))
        except ConfigError as error:
            raise ConfigError([f"{source}:", *error.messages]) from None
        facts = profile_facts(config, args.user, server=args.server, include_password=args.include_password,
                              connection_name=args.name, eap=args.eap)
        sys.stdout.write(render_client_profile(facts, args.format))
    except (ConfigError, OSError) as error:
        print(f"vpnd show client-profile: {error}", file=sys.stderr)
        return 1
    return 0
