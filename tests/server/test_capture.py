"""tshark decodes a captured real session (TLS on the wire, key log from Python) as SSTP/PPP.

The daemon and a dialer run in a namespace of their own; tshark captures on its loopback and
decrypts with the key log the dialer's ssl context wrote (tests/server/scenario_capture.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.peers import require_program

REPO = Path(__file__).resolve().parents[2]


def test_tshark_decodes_a_captured_tls_session() -> None:
    require_program("tshark")
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("needs root (network namespace, TUN, capture)")
        pytest.skip("needs root (network namespace, TUN, capture)")
    namespace = f"vpndt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"], check=True)
        run = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "tests.server.scenario_capture"],
            cwd=REPO, capture_output=True, text=True, timeout=90, check=False,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    seen = result["seen"]
    assert result["replies"] == 3
    assert "0x0303" in seen["tls.record.version"]  # it really was TLS on the wire
    # Connect Request, Connect Ack, Call Connected, Call Disconnect, Disconnect Ack
    assert [int(t, 16) for t in seen["sstp.messagetype"]] == [1, 2, 4, 6, 7]
    assert [int(h, 16) for h in seen["sstp.hash"]] == [0x03, 0x02]
    assert [int(c) for c in seen["chap.code"]] == [1, 2, 3]
    assert {0xC021, 0xC223, 0x8021, 0x0021} <= {int(p, 16) for p in seen["ppp.protocol"]}
    assert sorted(seen["icmp.type"]) == ["0", "0", "0", "8", "8", "8"]
