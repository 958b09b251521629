"""A checked TCP transfer between two network namespaces, over IPv4 or IPv6.

`transfer` streams MiB of seeded pseudo-random bytes from a sender in one namespace to a receiver
listening in another (or the same), optionally from a chosen source address, and checks that
the byte count and SHA-256 on both ends agree.
"""

from __future__ import annotations

import json
import subprocess
import time
from ipaddress import IPv4Address, IPv6Address

from tests.support.netns import PYTHON, Namespace

# Receiver: listens, says "ready", takes one connection to EOF, prints its byte count and SHA-256.
RECEIVE = r"""
import hashlib, json, socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
server = socket.create_server((sys.argv[1], int(sys.argv[2])), family=family, reuse_port=False)
server.settimeout(60)
print("ready", flush=True)
conn, _ = server.accept(); conn.settimeout(60)
digest, total, buffer = hashlib.sha256(), 0, bytearray(1 << 20)
while count := conn.recv_into(buffer):
    digest.update(memoryview(buffer)[:count]); total += count
print(json.dumps({"bytes": total, "sha256": digest.hexdigest()}), flush=True)
"""

# Sender: MiB of seeded pseudo-random bytes, then a clean shutdown; prints what it sent.
SEND = r"""
import hashlib, json, random, socket, sys
host, port, mib, seed, source = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
sock = socket.create_connection((host, port), timeout=60, source_address=(source, 0) if source else None)
digest, random_bytes = hashlib.sha256(), random.Random(seed)
for _ in range(mib):
    chunk = random_bytes.randbytes(1 << 20)
    sock.sendall(chunk); digest.update(chunk)
sock.shutdown(socket.SHUT_WR); sock.recv(1); sock.close()
print(json.dumps({"bytes": mib << 20, "sha256": digest.hexdigest()}), flush=True)
"""


def transfer(sender: Namespace, receiver: Namespace, address: IPv4Address | IPv6Address, mib: int, seed: int,
             source: IPv4Address | IPv6Address | None = None, port: int = 5001) -> float:
    """Stream ``mib`` MiB from ``sender`` (from ``source`` if given) to ``address`` (in
    ``receiver``), compare the hashes; returns the seconds it took."""
    listener = subprocess.Popen(receiver.command(PYTHON, "-c", RECEIVE, str(address), str(port)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "ready", listener.stderr
        started = time.monotonic()
        sent = sender.run(PYTHON, "-c", SEND, str(address), str(port), str(mib), str(seed),
                          str(source) if source is not None else "", timeout=90)
        assert sent.returncode == 0, sent.stderr
        received_line, errors = listener.communicate(timeout=30)
        elapsed = time.monotonic() - started
        assert listener.returncode == 0, errors
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    sent_summary = json.loads(sent.stdout.strip().splitlines()[-1])
    received_summary = json.loads(received_line.strip().splitlines()[-1])
    assert received_summary == sent_summary
    assert received_summary["bytes"] == mib << 20
    print(f"{mib} MiB through the tunnel in {elapsed:.1f} s ({mib / elapsed:.0f} MiB/s)")
    return elapsed
