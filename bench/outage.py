"""Accounting through a long RADIUS accounting outage: how long the spool takes to drain, what it costs.

Runs tests/server/scenario_crash_recovery.py (its docstring tells the steps) in a network
namespace of its own: N sessions with Interim-Updates, then the accounting server is stopped for
the outage while sessions hang up and new ones start (``--rounds`` of them, spread over it),
optionally (``--kill``) with a SIGKILL and restart of the daemon halfway; then the server comes
back. Prints the records waiting when it returned, how long until the spool was empty, the first
delivery after the return (the back-off of the sender), the daemon's CPU time while draining,
records per second, and whether every record arrived once and in order per session (the
accounting server's detail file). Root; the namespace is deleted at the end.

usage: python bench/outage.py [--sessions 200] [--outage 600] [--rounds 40] [--interim 60]
                              [--mode both|plain|kill]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server.scenario_crash_recovery import check_accounting
from tests.support.scenario import run_scenario


def run(args: argparse.Namespace, kill: bool) -> dict[str, Any]:
    argv = ["--sessions", str(args.sessions), "--others", "0", "--rounds", str(args.rounds),
            "--outage", str(args.outage), "--interim", str(args.interim)] + (["--kill"] if kill else [])
    return run_scenario("tests.server.scenario_crash_recovery", *argv, timeout=args.outage + 3600)


def report(title: str, result: dict[str, Any]) -> None:
    drain = result["drain"]
    checked = check_accounting(result)
    seconds = drain["seconds"]
    rows = [
        ("outage (s)", result["outage_seconds"]),
        ("records waiting at the return", result["pending_at_return"]),
        ("spool empty after the return (s)", seconds),
        ("  first delivery after the return (s)", round(drain["first_after"], 2)),
        ("  records delivered", drain["records"]),
        ("  records per second of the drain", round(drain["records"] / seconds, 1) if seconds else None),
        ("  daemon CPU while draining (s)", drain["cpu_seconds"]),
        ("  CPU per record (ms)", round(1000 * drain["cpu_seconds"] / drain["records"], 3)
         if drain["records"] else None),
        ("accounting records (detail file)", checked["records"]),
        ("sessions", checked["sessions"]),
        ("sessions breaking a rule", {k: len(v) for k, v in checked["broken"].items()}),
        ("records resent after a late answer", checked["resent"]),
        ("NAS-Reboot Stops", checked["nas_reboot_stops"]),
    ]
    if "held_at_kill" in result:
        rows += [("sessions killed", result["held_at_kill"]),
                 ("restart until ready (s)", result["ready_after_restart"]),
                 ("left in the kernel after the restart", len(result["left_after_restart"]))]
    rows.append(("left in the kernel at the end", len(result["left_at_end"])))
    print(f"== {title}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--outage", type=float, default=600.0, help="seconds the accounting server is down")
    parser.add_argument("--rounds", type=int, default=40, help="sessions ended and started during the outage")
    parser.add_argument("--interim", type=int, default=60, help="Acct-Interim-Interval")
    parser.add_argument("--mode", choices=("both", "plain", "kill"), default="both")
    args = parser.parse_args()
    if args.mode in ("both", "plain"):
        report(f"outage, {args.sessions} sessions", run(args, kill=False))
    if args.mode in ("both", "kill"):
        report(f"outage with a SIGKILL and restart halfway, {args.sessions} sessions", run(args, kill=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
