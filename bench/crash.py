"""Crash hygiene at scale: SIGKILL of a daemon with N shaped dual-stack sessions, then a restart.

Runs tests/server/scenario_crash_recovery.py (its docstring tells the steps) in a network
namespace of its own with the accounting server up throughout: N sessions to the daemon under
test and a few to a second daemon beside it, SIGKILL, restart on the same directories, and as
many new sessions as it had. Prints how long the restart took to be ready, what the dead process
had left in the kernel and how long its removal took, what is left after the restart, how long
until the accounting server had a Stop for every killed session, and whether the new sessions got
the freed names and addresses. Root; the namespace is deleted at the end.

usage: python bench/crash.py [--sessions 500] [--others 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server.scenario_crash_recovery import check_accounting
from tests.support.scenario import run_scenario


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--others", type=int, default=3, help="sessions of the daemon beside it")
    args = parser.parse_args()
    result = run_scenario("tests.server.scenario_crash_recovery", "--sessions", str(args.sessions),
                          "--others", str(args.others), "--rounds", "0", "--kill", "--no-outage",
                          timeout=3600)
    left = result["left_by_the_dead"]
    kinds: dict[str, int] = {}
    for device in left.values():
        kinds[device["kind"] or "?"] = kinds.get(device["kind"] or "?", 0) + 1
    checked = check_accounting(result)
    cleanup = result["cleanup"] or {}
    rows = [
        ("sessions up at the kill (shaped, dual stack)", result["held_at_kill"]),
        ("dialling them took (s)", result["dial_seconds"]),
        ("dials lost and tried again (loaded machine)", len(result["dial_failures"])),
        ("left by the dead process: devices", f"{len(left)} {kinds}"),
        ("  with qdiscs / classes / routes", "{} / {} / {}".format(
            *(sum(d[key] for d in left.values()) for key in ("qdiscs", "classes", "routes")))),
        ("restart until ready (s, Python start-up included)", result["ready_after_restart"]),
        ("  removing the leftovers (s)", cleanup.get("seconds")),
        ("  devices removed", cleanup.get("devices")),
        ("left after the restart", len(result["left_after_restart"])),
        ("the daemon beside it intact / pings",
         f"{result['b_devices_intact']} / {result['b_pings_after_restart']}"),
        ("NAS-Reboot Stops all delivered after ready (s)", result.get("stops_delivered_after_ready")),
        ("NAS-Reboot Stops received", checked["nas_reboot_stops"]),
        ("new sessions: same names / lowest addresses",
         f"{result['fresh']['same_ifnames']} / {result['fresh']['lowest_addresses']}"),
        ("new sessions on addresses / prefixes of the dead",
         f"{result['fresh']['addresses_of_the_dead']} / {result['fresh']['ipv6_prefixes_of_the_dead']}"),
        ("redialling them took (s)", result["redial_seconds"]),
        ("accounting records (detail file)", checked["records"]),
        ("sessions breaking a rule", {k: len(v) for k, v in checked["broken"].items()}),
        ("records resent after a late answer", checked["resent"]),
        ("left at the end", len(result["left_at_end"])),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
