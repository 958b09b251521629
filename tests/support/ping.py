"""ICMP echo over a raw socket, for namespaces without a ping binary.

    python -m tests.support.ping TARGET COUNT [INTERFACE]

sends COUNT Echo Requests (one at a time, 2 s each to answer), optionally bound to INTERFACE,
and prints how many intact Echo Replies came back.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ping(target: str, count: int, interface: str | None = None) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    if interface is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    ident, answered = os.getpid() & 0xFFFF, 0
    for seq in range(count):
        payload = os.urandom(56)
        head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        sock.sendto(struct.pack("!BBHHH", 8, 0, checksum(head + payload), ident, seq) + payload, (target, 0))
        deadline = time.monotonic() + 2
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, (source, _) = sock.recvfrom(65535)
            except TimeoutError:
                break
            icmp = data[(data[0] & 15) * 4:]
            if source == target and icmp[0] == 0 and icmp[4:8] == struct.pack("!HH", ident, seq) \
                    and icmp[8:] == payload:
                answered += 1
                break
    return answered


if __name__ == "__main__":
    print(ping(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
