"""Write our bytes as classic pcap files for an independent dissector (tshark).

`write_tcp_conversation`: a byte conversation as one TCP connection over IPv4 loopback; sequence
and acknowledgement numbers are tracked so the stream reassembles; checksums are left zero
(tshark does not verify them by default). `write_ip_packets`: whole IP packets as they are, with
the raw-IP link type (no link-layer header), e.g. the IPv6 packets of a PPP link.
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.support.peers import require_program

_LINKTYPE_RAW_IPV4 = 228
LINKTYPE_RAW = 101  # raw IPv4 or IPv6, told apart by the version nibble
_MSS = 1400


def _ip_tcp(src: tuple[str, int], dst: tuple[str, int], seq: int, ack: int, flags: int,
            payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", src[1], dst[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      5 << 4, flags, 65535, 0, 0) + payload
    total = 20 + len(tcp)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 6, 0,
                     bytes(map(int, src[0].split("."))), bytes(map(int, dst[0].split("."))))
    return ip + tcp


def write_tcp_conversation(path: Path, segments: Iterable[tuple[bool, bytes]],
                           client: tuple[str, int] = ("127.0.0.1", 40000),
                           server: tuple[str, int] = ("127.0.0.2", 443)) -> int:
    """Write ``(from_client, data)`` chunks as one TCP connection; returns the packet count."""
    syn, ack_flag, psh = 0x02, 0x10, 0x08
    packets: list[bytes] = []
    cseq, sseq = 1000, 5000
    packets.append(_ip_tcp(client, server, cseq, 0, syn, b""))
    packets.append(_ip_tcp(server, client, sseq, cseq + 1, syn | ack_flag, b""))
    cseq += 1
    sseq += 1
    packets.append(_ip_tcp(client, server, cseq, sseq, ack_flag, b""))
    for from_client, data in segments:
        for off in range(0, len(data), _MSS):
            chunk = data[off:off + _MSS]
            if from_client:
                packets.append(_ip_tcp(client, server, cseq, sseq, ack_flag | psh, chunk))
                cseq += len(chunk)
            else:
                packets.append(_ip_tcp(server, client, sseq, cseq, ack_flag | psh, chunk))
                sseq += len(chunk)
    _write_pcap(path, packets, _LINKTYPE_RAW_IPV4)
    return len(packets)


def write_ip_packets(path: Path, packets: Iterable[bytes], linktype: int = LINKTYPE_RAW) -> int:
    """Write whole IP packets, one per record; returns the packet count."""
    listed = list(packets)
    _write_pcap(path, listed, linktype)
    return len(listed)


def _write_pcap(path: Path, packets: list[bytes], linktype: int) -> None:
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype))
        for index, packet in enumerate(packets):
            out.write(struct.pack("<IIII", 1_700_000_000 + index // 1000, (index % 1000) * 1000,
                                  len(packet), len(packet)))
            out.write(packet)


def tshark_fields(pcap: Path, fields: Sequence[str], *options: str) -> list[dict[str, list[str]]]:
    """What tshark (with ``options``, e.g. ``-o udp.check_checksum:TRUE``) reads in ``pcap``: one
    row per frame, every field with all its occurrences."""
    tshark = require_program("tshark")
    command = [tshark, "-r", str(pcap), *options, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
               "-E", "aggregator=|"]
    for name in fields:
        command += ["-e", name]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    rows = []
    for line in result.stdout.splitlines():
        pairs = zip(fields, line.split("\t"), strict=False)
        rows.append({name: [v for v in value.split("|") if v] for name, value in pairs})
    return rows
