"""Data-path throughput of the sans-I/O core: SSTP data packets <-> IP packets, one core.

Builds an established server/client session pair in memory, then pushes N IP packets of SIZE
bytes through each object in each direction and prints packets per second:

  decode  SSTP byte stream -> IP packets   (receive_data + take_ip_packets)
  encode  IP packets -> SSTP byte stream   (send_ip_packets + data_to_send)

The byte stream is fed in READ-byte chunks, as the runtime would after one TLS read, and IP
packets are handed over in batches of BATCH, as a TUN reader would. No TLS, no kernel: this is
the ceiling of the protocol layer alone.

usage: python bench/datapath.py [--packets N] [--size SIZE] [--read BYTES] [--batch N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.wire import make_wire
from vpnd.proto.session import ClientSession, ServerSession


def _chunk(sender: ServerSession | ClientSession, packet: bytes, read: int) -> tuple[bytes, int]:
    """One read-sized run of whole SSTP data packets, as one TLS read would deliver it."""
    per_read = max(1, read // (len(packet) + 8))
    sender.send_ip_packets([packet] * per_read)
    return sender.data_to_send(), per_read


def bench_decode(receiver: ServerSession | ClientSession, chunk: bytes, per_read: int,
                 count: int) -> tuple[float, int]:
    """Feed the same buffer again and again: the runtime reuses one read buffer too."""
    view = memoryview(chunk)
    received = 0
    start = time.perf_counter()
    for _ in range(count // per_read):
        receiver.receive_data(view, 1.0)
        received += len(receiver.take_ip_packets())
    return time.perf_counter() - start, received


def bench_encode(sender: ServerSession | ClientSession, packet: bytes, count: int, batch: int) -> float:
    batch_packets = [packet] * batch
    start = time.perf_counter()
    for _ in range(count // batch):
        sender.send_ip_packets(batch_packets)
        sender.data_to_send()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=1400)
    parser.add_argument("--read", type=int, default=256 * 1024, help="bytes per receive_data call")
    parser.add_argument("--batch", type=int, default=64, help="IP packets per send_ip_packets call")
    args = parser.parse_args()

    wire = make_wire()
    server, client = wire.server, wire.client
    packet = bytes([0x45]) + bytes(args.size - 1)
    count = args.packets - args.packets % args.batch

    print(f"packets={count} size={args.size} read={args.read} batch={args.batch} "
          f"python={sys.version.split()[0]}")
    results = {}
    for name, sender, receiver in (("client->server", client, server), ("server->client", server, client)):
        chunk, per_read = _chunk(sender, packet, args.read)
        rounds = count // per_read
        seconds, received = bench_decode(receiver, chunk, per_read, count)
        assert received == rounds * per_read, f"{name}: {received} of {rounds * per_read} packets came out"
        results[f"{type(receiver).__name__} decode ({name})"] = received / seconds
        seconds = bench_encode(sender, packet, count, args.batch)
        results[f"{type(sender).__name__} encode ({name})"] = count / seconds
    for label, rate in results.items():
        gbit = rate * args.size * 8 / 1e9
        print(f"{label:40s} {rate:12,.0f} packets/s  {gbit:6.2f} Gbit/s of IP")


if __name__ == "__main__":
    main()
