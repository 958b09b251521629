"""THE 3-MINUTE SOAK (about 3 min, the longest test of the suite): bench/soak.py, scaled down.

60 sessions churn for 150 s against two real daemons and a real FreeRADIUS, ending by every path
(client hang-up, TCP reset, dead peer, Session-Timeout, DAE Disconnect, admin reset, a commit that
deletes the user), sampled every 20 s. The same end checks as the 1-hour run: every resource back
to its baseline, RSS not growing, exactly one Start and one Stop per session in the detail file.
The soak builds its own namespace and removes it; this test checks that too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.netns import REPO, namespaces, require_root_netns
from tests.support.peers import require_program

pytestmark = [pytest.mark.root, pytest.mark.soak]

SOAK = ["--sessions", "60", "--duration", "150", "--sample-every", "20", "--echo-interval", "5",
        "--commit-every", "10"]
PATHS = {"HANG_UP", "TCP_RESET", "DEAD_PEER", "SESSION_TIMEOUT", "DAE_DISCONNECT", "ADMIN_RESET",
         "COMMIT_DELETE"}
MUST_RETURN = ("fds radius", "fds local", "TUNs", "IFBs", "routes", "tc qdiscs", "tc classes", "pool leases",
               "spool records", "spool files")


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    require_root_netns()
    for program in ("freeradius", "radclient", "tc"):
        require_program(program)
    report_path = tmp_path_factory.mktemp("soak") / "soak.json"
    command = [sys.executable, str(REPO / "bench" / "soak.py"), *SOAK, "--json", str(report_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO, check=False)
    print(done.stdout)  # the table, for whoever runs with -s
    assert report_path.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report: dict[str, Any] = json.loads(report_path.read_text())
    report["returncode"] = done.returncode
    report["output"] = done.stdout
    report["namespace_left"] = report["namespace"] in namespaces()
    return report


def test_every_resource_is_back_to_its_baseline(soak: dict[str, Any]) -> None:
    assert soak["leaks"] == [], soak["output"]
    baseline, end, peak = soak["baseline"], soak["end"], soak["peak"]
    for name in MUST_RETURN:
        assert end[name] == baseline[name], (name, soak["output"])
    # The churn really built what is checked: sessions, interfaces, shaping, leases, daemon fds.
    for name in ("sessions", "TUNs", "IFBs", "tc classes", "pool leases", "fds radius", "fds local"):
        assert peak[name] > baseline[name], (name, soak["output"])


def test_every_way_of_ending_was_taken_and_worked(soak: dict[str, Any]) -> None:
    ended = soak["ended"]
    assert set(ended) == PATHS, ended
    assert all(count >= 2 for count in ended.values()), ended
    assert soak["end_failures"] == []
    assert soak["failed_commits"] == []
    up = sum(soak["sessions_up"].values())
    assert up >= 2 * 60, soak["sessions_up"]  # every slot churned more than once
    assert len(soak["connect_failures"]) <= max(2, up // 100), soak["connect_failures"]


def test_sessions_passed_traffic(soak: dict[str, Any]) -> None:
    sent, answered = sum(soak["pings_sent"].values()), sum(soak["pings_answered"].values())
    assert sent > 0 and answered >= 0.9 * sent, (soak["pings_answered"], soak["pings_sent"])


def test_one_start_and_one_stop_per_session(soak: dict[str, Any]) -> None:
    assert soak["accounting_problems"] == []


def test_the_soak_says_so_and_cleans_up(soak: dict[str, Any]) -> None:
    assert soak["returncode"] == 0, soak["output"]
    assert not soak["namespace_left"]  # its own, by name: other tests' namespaces come and go
    assert not Path(soak["work_dir"]).exists()  # logs are kept only when something failed
