"""Op-mode verbs through the control socket: `show sessions|session|statistics`, `reset`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from vpnd.control import ControlError, request
from vpnd.paths import Paths

SESSION_COLUMNS = ["ifname", "username", "ip", "ip6", "ip6-dp", "calling-sid", "rate-limit", "state",
                   "uptime", "rx-bytes", "tx-bytes", "rx-pkts", "tx-pkts"]
IPV6_COLUMNS = {"ip6", "ip6-dp"}  # shown when some session has IPv6


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    show = verbs.add_parser("show", help="show sessions, one session, or statistics")
    what = show.add_subparsers(dest="what", required=True, metavar="WHAT")
    sessions = what.add_parser("sessions", help="one line per session")
    sessions.add_argument("--json", action="store_true")
    sessions.set_defaults(handler=show_sessions)
    one = what.add_parser("session", help="one session in detail")
    one.add_argument("ifname")
    one.add_argument("--json", action="store_true")
    one.set_defaults(handler=show_session)
    stats = what.add_parser("statistics", help="counters and pool usage")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(handler=show_statistics)

    reset = verbs.add_parser("reset", help="end sessions (Admin-Reset)")
    target = reset.add_subparsers(dest="target", required=True, metavar="TARGET")
    user = target.add_parser("user", help="every session of a user")
    user.add_argument("name")
    interface = target.add_parser("interface", help="the session on an interface")
    interface.add_argument("name")
    target.add_parser("all", help="every session")
    reset.set_defaults(handler=do_reset)


def _call(paths: Paths, command: str, **arguments: Any) -> Any:
    try:
        return request(paths.control_socket, command, **arguments)
    except ControlError as error:
        print(f"vpnd: {error}", file=sys.stderr)
        raise SystemExit(1) from error


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(count)


def human_duration(seconds: int) -> str:
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}d {text}" if days else text


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column in ("rx-bytes", "tx-bytes"):
        return human_bytes(int(value))
    if column == "uptime":
        return human_duration(int(value))
    return str(value)


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_cell(c, row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def show_sessions(args: argparse.Namespace, paths: Paths) -> int:
    rows = _call(paths, "show-sessions")
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        columns = [c for c in SESSION_COLUMNS if c not in IPV6_COLUMNS or any(row.get(c) for row in rows)]
        print(format_table(rows, columns))
    return 0


def show_session(args: argparse.Namespace, paths: Paths) -> int:
    row = _call(paths, "show-session", ifname=args.ifname)
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        for key, value in row.items():
            print(f"{key:>12}: {_cell(key, value)}")
    return 0


def show_statistics(args: argparse.Namespace, paths: Paths) -> int:
    stats = _call(paths, "show-statistics")
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print("\n".join(statistics_lines(stats)))
    return 0


def statistics_lines(stats: dict[str, Any]) -> list[str]:
    """`show statistics` as text: counters, the refusals by cause, the attempts the login throttle
    held by reason, the set-up failures by cause, then the pools."""
    lines = [f"uptime: {human_duration(stats['uptime'])}"]
    sessions = stats["sessions"]
    lines.append(f"sessions: starting {sessions['starting']}, active {sessions['active']}")
    refused = stats.get("refused", {})
    for name, value in sorted(stats["counters"].items()):
        if name not in refused:
            lines.append(f"  {name}: {human_bytes(value) if name.endswith('bytes') else value}")
    if refused:
        lines.append(f"refused: {sum(refused.values())}")
        lines.extend(f"  {cause}: {value}" for cause, value in refused.items())
    throttle = stats.get("auth_throttle") or {}
    held, tables = throttle.get("held", {}), throttle.get("tables")
    if tables is not None:
        lines.append(f"authentication held: {sum(held.values())}")
        lines.extend(f"  {reason}: {value}" for reason, value in held.items())
        lines.append(f"  remembered: failing pairs {tables['failing_pairs']}, spraying addresses "
                     f"{tables['spraying_addresses']}, trusted pairs {tables['trusted_pairs']}")
    failures = stats.get("setup-failures", {})
    if failures:
        lines.append(f"set-up failures: {sum(failures.values())}")
        lines.extend(f"  {cause}: {value}" for cause, value in sorted(failures.items()))
    for name, pool in stats["pools"].items():
        lines.append(f"pool {name}: {pool['used']} used of {pool['total']} ({pool['free']} free)")
    for name, kinds in stats.get("ipv6-pools", {}).items():
        for kind, pool in kinds.items():
            if pool["total"]:
                lines.append(f"ipv6 pool {name} {kind}: {pool['used']} used of {pool['total']} "
                             f"({pool['free']} free)")
    return lines


def do_reset(args: argparse.Namespace, paths: Paths) -> int:
    if args.target == "user":
        result = _call(paths, "reset", user=args.name)
    elif args.target == "interface":
        result = _call(paths, "reset", interface=args.name)
    else:
        result = _call(paths, "reset", all=True)
    print(f"ended {result['ended']} session(s)")
    return 0
