"""Capture one real session (TLS on the wire) and decode it with tshark and the TLS key log.

Run inside a network namespace by test_capture.py; prints JSON with what tshark saw.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.dialer import Dialer
from vpnd.config.definitions import Config
from vpnd.server.daemon import Daemon
from vpnd.server.tls import make_self_signed

PORT = 4443
FIELDS = ["sstp.messagetype", "sstp.hash", "ppp.protocol", "chap.code", "icmp.type", "tls.record.version"]


async def session(work: Path, keylog: Path) -> dict[str, Any]:
    cert, key = make_self_signed(work, "vpn.test")
    config = Config.model_validate({"vpn": {"sstp": {
        "authentication": {"local-users": {"username": {"alice": {"password": "alice-pw"}}}},
        "client-ip-pool": {"P": {"range": ["10.78.0.0/24"]}}, "gateway-address": "10.78.255.1",
        "port": PORT, "ssl": {"cert-file": str(cert), "key-file": str(key)},
    }}})
    daemon = Daemon(config, listen_host="127.0.0.1")
    await daemon.start()
    dialer = Dialer("127.0.0.1", PORT, "alice", "alice-pw", keylog=str(keylog))
    await dialer.connect()
    await asyncio.wait_for(dialer.up.wait(), 10)
    replies = await dialer.ping(3)
    await dialer.hang_up()
    await asyncio.sleep(1.2)
    await daemon.stop()
    return {"replies": replies}


def main() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="vpnd-capture-"))
    pcap, keylog = work / "session.pcapng", work / "keys.txt"
    capture = subprocess.Popen(["tshark", "-q", "-i", "lo", "-f", f"tcp port {PORT}", "-w", str(pcap)],
                               stderr=subprocess.PIPE, text=True)
    try:
        assert capture.stderr is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # tshark says so once dumpcap listens
            if "Capturing on" in capture.stderr.readline():
                break
        result = asyncio.run(session(work, keylog))
        time.sleep(0.5)
    finally:
        capture.send_signal(signal.SIGINT)
        try:
            capture.wait(timeout=10)
        except subprocess.TimeoutExpired:
            capture.kill()
            capture.wait()
    command = ["tshark", "-r", str(pcap), "-o", f"tls.keylog_file:{keylog}", "-T", "fields",
               "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for name in FIELDS:
        command += ["-e", name]
    decoded = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    seen: dict[str, list[str]] = {name: [] for name in FIELDS}
    for line in decoded.stdout.splitlines():
        for name, value in zip(FIELDS, line.split("\t"), strict=False):
            seen[name] += [v for v in value.split(",") if v]
    result["seen"] = seen
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
