"""tshark decodes a captured real session (TLS on the wire, key log from Python) as SSTP/PPP.

The daemon and a dialer run in a namespace of their own; tshark captures on its loopback and
decrypts with the key log the dialer's ssl context wrote (tests/server/scenario_capture.py).
"""

from __future__ import annotations

from tests.support.peers import require_program
from tests.support.scenario import run_scenario


def test_tshark_decodes_a_captured_tls_session() -> None:
    require_program("tshark")
    result = run_scenario("tests.server.scenario_capture", timeout=90, what="network namespace, TUN, capture")
    seen = result["seen"]
    assert result["replies"] == 3
    assert "0x0303" in seen["tls.record.version"]  # it really was TLS on the wire
    # Connect Request, Connect Ack, Call Connected, Call Disconnect, Disconnect Ack
    assert [int(t, 16) for t in seen["sstp.messagetype"]] == [1, 2, 4, 6, 7]
    assert [int(h, 16) for h in seen["sstp.hash"]] == [0x03, 0x02]
    assert [int(c) for c in seen["chap.code"]] == [1, 2, 3]
    assert {0xC021, 0xC223, 0x8021, 0x0021} <= {int(p, 16) for p in seen["ppp.protocol"]}
    assert sorted(seen["icmp.type"]) == ["0", "0", "0", "8", "8", "8"]
