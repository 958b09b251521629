"""Run a scenario module inside a network namespace of its own and read the JSON it prints.

Scenario modules (tests/server/scenario_*.py) run the real daemon with real TLS and TUN devices;
the namespace keeps their interfaces, routes and ports away from the machine and from each
other, and is deleted afterwards whatever happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from tests.support.peers import require_root

REPO = Path(__file__).resolve().parents[2]


def run_scenario(module: str, *args: str, timeout: float = 120,
                 what: str = "network namespace, TUN") -> dict[str, Any]:
    """`python -m MODULE ARGS...` in a fresh namespace; returns its last stdout line as JSON, plus the
    namespace's links after the run under ``links_after`` (unless the scenario reported them)."""
    require_root(what)
    namespace = f"vpndt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"], check=True)
        done = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", module, *args],
            cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        links = subprocess.run(["ip", "netns", "exec", namespace, "ip", "-j", "link"],
                               capture_output=True, text=True, check=True)
        result.setdefault("links_after", [link["ifname"] for link in json.loads(links.stdout)])
        return result
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
