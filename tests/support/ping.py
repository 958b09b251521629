"""ICMP echo over a raw socket, for namespaces without a ping binary.

    python -m tests.support.ping TARGET COUNT [INTERFACE] [SOURCE]

sends COUNT Echo Requests (ICMP or ICMPv6 by the target's family; one at a time, 2 s each to
answer), optionally bound to INTERFACE and from SOURCE, and prints how many intact Echo Replies
came back.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time

from tests.support.packets import reference_checksum


def ping(target: str, count: int, interface: str | None = None, source: str | None = None) -> int:
    ipv6 = ":" in target
    if ipv6:  # the kernel fills in the ICMPv6 checksum and hands us replies without the IP header
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        request, reply = 128, 129
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        request, reply = 8, 0
    if interface:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    if source:
        sock.bind((source, 0))
    ident, answered = os.getpid() & 0xFFFF, 0
    for seq in range(count):
        payload = os.urandom(56)
        head = struct.pack("!BBHHH", request, 0, 0, ident, seq)
        sum_ = 0 if ipv6 else reference_checksum(head + payload)
        sock.sendto(struct.pack("!BBHHH", request, 0, sum_, ident, seq) + payload, (target, 0))
        deadline = time.monotonic() + 2
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, sender = sock.recvfrom(65535)
            except TimeoutError:
                break
            icmp = data if ipv6 else data[(data[0] & 15) * 4:]
            if sender[0] == target and icmp[0] == reply and icmp[4:8] == struct.pack("!HH", ident, seq) \
                    and icmp[8:] == payload:
                answered += 1
                break
    return answered


if __name__ == "__main__":
    arguments = [*sys.argv[3:5], "", ""]
    print(ping(sys.argv[1], int(sys.argv[2]), arguments[0] or None, arguments[1] or None))
