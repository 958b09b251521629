"""TUN devices, p2p addressing and interface names.

Tests marked `root` run their scenario (a function below whose name starts with `scenario_`) in a
child process inside a network namespace made by the `netns` fixture; the child prints one JSON
line that the test checks. This file is that child's script too (see the bottom).

The other tests use the in-memory stand-ins (open_memory_tun, MemoryNet) and need no root.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from tests.support.packets import TCP_ACK, TCP_SYN, icmp_echo, reference_checksum, tcp_segment
from vpnd.net import (
    IfnameAllocator,
    KernelNet,
    LinkStats,
    MemoryNet,
    NetError,
    TunDevice,
    open_memory_tun,
    open_tun,
)
from vpnd.net import tun as tun_module
from vpnd.net.offload import VNET_GSO_TCPV4, VNET_HEADER

# RFC 2544 benchmarking addresses; they exist only inside the test's own namespace.
LOCAL = IPv4Address("198.18.0.1")
PEER = IPv4Address("198.18.0.2")
FRAMED = IPv4Network("198.19.5.0/24")


# -- packet helpers ------------------------------------------------------------------------------


def parse_icmp(packet: bytes) -> dict[str, Any]:
    header_length = (packet[0] & 0x0F) * 4
    icmp = packet[header_length:]
    kind, _code, _sum, ident, seq = struct.unpack("!BBHHH", icmp[:8])
    return {
        "src": str(IPv4Address(packet[12:16])),
        "dst": str(IPv4Address(packet[16:20])),
        "protocol": packet[9],
        "ip_checksum_ok": reference_checksum(packet[:header_length]) == 0,
        "icmp_checksum_ok": reference_checksum(icmp) == 0,
        "type": kind,
        "ident": ident,
        "seq": seq,
        "payload": icmp[8:].hex(),
    }


# -- scenarios: run as root inside the namespace -------------------------------------------------


def scenario_create_and_configure() -> dict[str, Any]:
    with KernelNet() as net, open_tun("sstp7", mtu=1400) as tun:
        # Down and unconfigured, nothing is queued: the read must return at once, empty.
        empty_read = len(tun.read_batch(8, bytearray(tun.max_read)))
        net.configure_p2p(tun.name, LOCAL, PEER, 1400)
        net.configure_p2p(tun.name, LOCAL, PEER, 1400)  # a second time must be harmless
        net.add_route(tun.name, FRAMED)
        seen: dict[str, Any] = {
            "name": tun.name,
            "exists_while_open": net.interface_exists(tun.name),
            "nonblocking_empty_read": empty_read,
        }
        with open_tun("vpndt%d", mtu=1280) as patterned:
            seen["patterned_name"] = patterned.name
            command = ["ip", "-j", "link", "show", "dev", patterned.name]
            shown = subprocess.run(command, capture_output=True, check=True, text=True)
            (link,) = json.loads(shown.stdout)
            seen["patterned_kernel_mtu"] = link["mtu"]
            seen["patterned_queue_length"] = link["txqlen"]
            seen["patterned_flags"] = sorted(set(link["flags"]) & {"POINTOPOINT", "NOARP", "UP"})
    seen["exists_after_close"] = KernelNet().interface_exists("sstp7")
    return seen


def scenario_hold_configured() -> dict[str, Any]:
    """Keep a configured TUN open while the test looks at it with `ip`; says when it is ready."""
    with KernelNet() as net, open_tun("sstp3", mtu=1400) as tun:
        net.configure_p2p(tun.name, LOCAL, PEER, 1400)
        net.add_route(tun.name, FRAMED)
        print(json.dumps({"ready": tun.name}), flush=True)
        sys.stdin.readline()  # the test closes stdin when it has looked
    return {"closed": True}


def scenario_echo(count_text: str) -> dict[str, Any]:
    count = int(count_text)
    with KernelNet() as net, open_tun("sstp0", mtu=1400) as tun:
        net.configure_p2p(tun.name, LOCAL, PEER, 1400)
        requests = [
            icmp_echo(PEER, LOCAL, 0x5353, seq, bytes([seq % 256]) * 56) for seq in range(count)
        ]
        written = tun.write_packets(requests)
        bad_written = tun.write_packets([b"\x00" * 40])  # not IPv4/IPv6: the kernel refuses it
        buffer = bytearray(1400 * count)
        replies: list[dict[str, Any]] = []
        batch_sizes: list[int] = []
        shares_buffer = True
        others = 0
        deadline = time.monotonic() + 10
        while len(replies) < count and time.monotonic() < deadline:
            select.select([tun], [], [], 0.5)
            batch = tun.read_batch(count, buffer)
            if batch:
                batch_sizes.append(len(batch))
            shares_buffer = shares_buffer and all(view.obj is buffer for view in batch)
            # The kernel also sends IPv6 router solicitations and MLD reports on link up.
            replies.extend(parse_icmp(bytes(view)) for view in batch if view[0] >> 4 == 4)
            others += sum(1 for view in batch if view[0] >> 4 != 4)
        # A small max_packets caps the batch even when more is waiting.
        tun.write_packets(requests[:5])
        time.sleep(0.2)
        capped = len(tun.read_batch(2, buffer))
        stats = net.link_stats(tun.name)
        return {
            "written": written,
            "bad_written": bad_written,
            "write_drops": tun.write_drops,
            "batch_sizes": batch_sizes,
            "shares_buffer": shares_buffer,
            "replies": replies,
            "others": others,
            "capped": capped,
            "stats": {"rx_packets": stats.rx_packets, "tx_packets": stats.tx_packets},
        }


def scenario_remove_interface() -> dict[str, Any]:
    with KernelNet() as net, open_tun("sstp5", mtu=1400) as tun:
        before = net.interface_exists(tun.name)
        net.remove_interface(tun.name)
        after = net.interface_exists(tun.name)
        net.remove_interface(tun.name)  # already gone: no error
        try:
            net.configure_p2p(tun.name, LOCAL, PEER, 1400)
            error = ""
        except NetError as caught:
            error = str(caught)
    return {"before": before, "after": after, "error": error}


def scenario_refused_request() -> dict[str, Any]:
    """A request the kernel refuses (an MTU below IPv4's minimum) is a NetError naming the step;
    the session link is left as it was."""
    with KernelNet() as net, open_tun("sstp6", mtu=1400) as tun:
        try:
            net.configure_p2p(tun.name, LOCAL, PEER, 10)
            error = ""
        except NetError as caught:
            error = str(caught)
        net.configure_p2p(tun.name, LOCAL, PEER, 1300)  # the same socket still serves requests
        device = Path("/sys/class/net") / tun.name
        mtu = int((device / "mtu").read_text())
        up = bool(int((device / "flags").read_text(), 16) & 0x1)  # IFF_UP
    return {"error": error, "mtu": mtu, "up": up}


def scenario_ifname_allocator() -> dict[str, Any]:
    with KernelNet() as net:
        stale = open_tun("sstp1", mtu=1400)  # left behind by someone else
        names = IfnameAllocator("sstp", exists=net.interface_exists)
        first, second = names.allocate(), names.allocate()
        names.release(first)
        again = names.allocate()
        stale.close()
        after_stale_gone = names.allocate()
        return {"first": first, "second": second, "again": again, "after_stale_gone": after_stale_gone}


class TcpPeer:
    """The far end of one TCP connection, played by hand through a TUN: PEER:40000 to LOCAL:5201."""

    def __init__(self, tun: TunDevice) -> None:
        self.tun = tun
        self.buffer = bytearray(tun.max_read * 16)
        self.seq = 1000
        self.ack = 0
        self.ident = 0  # IPv4 identification: +1 per packet, as a Linux sender's

    def segment(self, payload: bytes, flags: int = TCP_ACK, **fields: Any) -> bytes:
        self.ident += 1
        return tcp_segment(PEER, LOCAL, 40000, 5201, self.seq, payload, ack=self.ack, flags=flags,
                           window=65535, ident=self.ident, **fields)

    def receive(self, timeout: float = 5) -> list[bytes]:
        """Packets of our connection the kernel sent through the TUN."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            select.select([self.tun], [], [], 0.2)
            packets = [bytes(p) for p in self.tun.read_batch(64, self.buffer)]
            ports = struct.pack("!HH", 5201, 40000)
            ours = [p for p in packets if p[0] == 0x45 and p[9] == 6 and p[20:24] == ports]
            if ours:
                return ours
        return []

    def connect(self, listener: socket.socket) -> socket.socket:
        mss_1360 = bytes([2, 4]) + struct.pack("!H", 1360)
        self.tun.write_packets([self.segment(b"", TCP_SYN, options=mss_1360)])
        (syn_ack,) = [p for p in self.receive() if p[33] == TCP_SYN | TCP_ACK]
        self.seq += 1
        self.ack = struct.unpack_from("!I", syn_ack, 24)[0] + 1
        self.tun.write_packets([self.segment(b"")])
        connection, _ = listener.accept()
        connection.settimeout(5)
        return connection

    def data(self, chunks: list[bytes]) -> list[bytes]:
        segments = []
        for chunk in chunks:
            segments.append(self.segment(chunk))
            self.seq += len(chunk)
        return segments


def receive_exactly(connection: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def tcp_checksum_errors() -> int:
    snmp = Path("/proc/net/snmp").read_text().splitlines()
    lines = [line.split() for line in snmp if line.startswith("Tcp:")]
    return int(lines[1][lines[0].index("InCsumErrors")])


def scenario_tcp_offloads() -> dict[str, Any]:
    """Data both ways on one TCP connection through a TUN with a virtio-net header, checked byte
    for byte."""
    with KernelNet() as net, open_tun("sstp6", mtu=1400) as tun, socket.socket() as listener:
        net.configure_p2p(tun.name, LOCAL, PEER, 1400)
        listener.bind((str(LOCAL), 5201))
        listener.listen(1)
        listener.settimeout(5)
        peer = TcpPeer(tun)
        connection = peer.connect(listener)
        seen: dict[str, Any] = {"vnet_header": tun.vnet_header}
        # To the kernel: rounds of 8 segments (the receive window opens with 10), joined by the TUN.
        before = net.link_stats(tun.name).rx_packets
        sent = received = b""
        for round_number in range(4):
            chunks = [bytes([round_number * 8 + n]) * 1360 for n in range(8)]
            seen.setdefault("written", []).append(tun.write_packets(peer.data(chunks)))
            sent += b"".join(chunks)
            received += receive_exactly(connection, 8 * 1360)
        seen["delivered_intact"] = received == sent
        seen["kernel_packets_for_32_segments"] = net.link_stats(tun.name).rx_packets - before
        # One damaged payload byte: the joined packet fails the kernel's checksum, nothing arrives.
        errors = tcp_checksum_errors()
        start_seq = peer.seq
        chunks = [bytes([200 + n]) * 1360 for n in range(8)]
        damaged = peer.data(chunks)
        damaged[3] = damaged[3][:-1] + bytes([damaged[3][-1] ^ 1])
        tun.write_packets(damaged)
        connection.settimeout(0.5)
        try:
            seen["after_damage"] = len(connection.recv(65536))
        except TimeoutError:
            seen["after_damage"] = 0
        seen["checksum_errors"] = tcp_checksum_errors() - errors
        peer.seq = start_seq  # the retransmission gets through (a new train: new identifications)
        tun.write_packets(peer.data(chunks))
        connection.settimeout(5)
        seen["retransmitted_intact"] = receive_exactly(connection, 8 * 1360) == b"".join(chunks)
        # From the kernel: super-packets (TSO) cut here into segments of at most the MSS, each
        # with complete checksums.
        seen["segment_offload"] = tun.segment_offload
        kernel_sent_before = net.link_stats(tun.name).tx_packets
        payload = os.urandom(40000)
        connection.sendall(payload)
        got: dict[int, bytes] = {}
        first_seq = peer.ack
        checksums_ok = True
        sizes = set()
        while sum(map(len, got.values())) < len(payload):
            packets = peer.receive()
            if not packets:
                break
            for packet in packets:
                tcp_length = len(packet) - 20
                pseudo = packet[12:20] + struct.pack("!BBH", 0, 6, tcp_length)
                checksums_ok &= reference_checksum(pseudo + packet[20:]) == 0
                checksums_ok &= reference_checksum(packet[:20]) == 0
                data = packet[20 + (packet[32] >> 4) * 4 :]
                if data:
                    sizes.add(len(data))
                    got[struct.unpack_from("!I", packet, 24)[0]] = data
            peer.ack = max(seq + len(data) for seq, data in got.items())
            tun.write_packets([peer.segment(b"")])
        seen["read_intact"] = b"".join(got[seq] for seq in sorted(got)) == payload and min(got) == first_seq
        seen["checksums_ok"] = checksums_ok
        seen["largest_segment"] = max(sizes)
        seen["segments"] = len(got)
        seen["kernel_packets_for_the_segments"] = net.link_stats(tun.name).tx_packets - kernel_sent_before
        # A datagram from a local socket leaves its checksum to us (NEEDS_CSUM): completed.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((str(LOCAL), 5353))
            udp.sendto(os.urandom(1001), (str(PEER), 9))
        select.select([tun], [], [], 5)
        datagrams = [bytes(p) for p in tun.read_batch(8, peer.buffer) if p[0] == 0x45 and p[9] == 17]
        seen["udp_checksums_ok"] = [
            reference_checksum(d[12:20] + struct.pack("!BBH", 0, 17, len(d) - 20) + d[20:]) == 0
            for d in datagrams
        ]
        # A kernel that refuses super-packets: the segments go one by one, from then on.
        real_writev = os.writev

        def refuse_writev(fd: int, buffers: Any) -> int:
            raise OSError(errno.EINVAL, "no GSO here")

        os.writev = refuse_writev
        try:
            before = net.link_stats(tun.name).rx_packets
            chunks = [bytes([100 + n]) * 1360 for n in range(8)]
            seen["written_after_refusal"] = tun.write_packets(peer.data(chunks))
            seen["joining_after_refusal"] = tun.join_segments
            seen["refused_intact"] = receive_exactly(connection, 8 * 1360) == b"".join(chunks)
            seen["kernel_packets_after_refusal"] = net.link_stats(tun.name).rx_packets - before
        finally:
            os.writev = real_writev
        connection.close()
        return seen


def scenario_offload_refused() -> dict[str, Any]:
    """A kernel that refuses the virtio-net header: the plain TUN of old, and traffic flows."""
    real_ioctl = fcntl.ioctl

    def refuse_vnet_header(fd: int, request: int, argument: Any = 0, *rest: Any) -> Any:
        flags = struct.unpack_from("H", argument, 16)[0] if request == tun_module.TUNSETIFF else 0
        if flags & tun_module.IFF_VNET_HDR:
            raise OSError(errno.EINVAL, "unknown flag")
        return real_ioctl(fd, request, argument, *rest)

    fcntl.ioctl = refuse_vnet_header  # type: ignore[assignment]
    with KernelNet() as net, open_tun("sstp8", mtu=1400) as tun:
        net.configure_p2p(tun.name, LOCAL, PEER, 1400)
        tun.write_packets([icmp_echo(PEER, LOCAL, 7, 1, b"x" * 56)])
        select.select([tun], [], [], 5)
        packets = tun.read_batch(8, bytearray(tun.max_read * 8))
        replies = [parse_icmp(bytes(p)) for p in packets if p[0] >> 4 == 4]
        return {"vnet_header": tun.vnet_header, "joining": tun.join_segments, "name": tun.name,
                "replies": [(r["type"], r["seq"]) for r in replies]}


# -- tests that run the scenarios ----------------------------------------------------------------


@pytest.mark.root
def test_tun_is_created_named_and_gone_after_close(netns: Any) -> None:
    seen = netns.run("create_and_configure")
    assert seen == {
        "name": "sstp7",
        "exists_while_open": True,
        "nonblocking_empty_read": 0,
        "patterned_name": "vpndt0",
        "patterned_kernel_mtu": 1280,
        "patterned_queue_length": tun_module.TUN_QUEUE_LENGTH,  # not the kernel's 500
        "patterned_flags": ["NOARP", "POINTOPOINT"],  # a TUN, left down until configured
        "exists_after_close": False,
    }
    assert [link["ifname"] for link in netns.ip_json("link", "show")] == ["lo"]


@pytest.mark.root
def test_p2p_address_mtu_and_routes_are_visible_to_ip(netns: Any) -> None:
    child = netns.start("hold_configured")
    try:
        assert child.stdout is not None and child.stdin is not None
        assert json.loads(child.stdout.readline()) == {"ready": "sstp3"}
        (link,) = netns.ip_json("addr", "show", "dev", "sstp3")
        assert link["mtu"] == 1400
        assert "UP" in link["flags"] and "POINTOPOINT" in link["flags"] and "NOARP" in link["flags"]
        inet = [a for a in link["addr_info"] if a["family"] == "inet"]  # the kernel adds an IPv6 link-local
        assert [(a["local"], a["address"], a["prefixlen"]) for a in inet] == [
            ("198.18.0.1", "198.18.0.2", 32)
        ]
        routes = {(r["dst"], r.get("dev")) for r in netns.ip_json("route", "show")}
        assert ("198.18.0.2", "sstp3") in routes  # the host route that comes with the peer address
        assert ("198.19.5.0/24", "sstp3") in routes
        child.stdin.close()
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not [link for link in netns.ip_json("link", "show") if link["ifname"] == "sstp3"]


@pytest.mark.root
def test_kernel_answers_echo_written_into_the_tun_in_batches(netns: Any) -> None:
    count = 64
    seen = netns.run("echo", str(count))
    assert seen["written"] == count
    assert seen["bad_written"] == 0 and seen["write_drops"] == 1
    replies = sorted(seen["replies"], key=lambda reply: reply["seq"])
    assert [reply["seq"] for reply in replies] == list(range(count))
    for reply in replies:
        assert reply["src"] == "198.18.0.1" and reply["dst"] == "198.18.0.2"
        assert reply["protocol"] == 1 and reply["type"] == 0 and reply["ident"] == 0x5353
        assert reply["ip_checksum_ok"] and reply["icmp_checksum_ok"]
        assert reply["payload"] == bytes([reply["seq"]]).hex() * 56
    # The replies were queued while we wrote, so reads come back several packets at a time.
    assert max(seen["batch_sizes"]) > 1
    assert sum(seen["batch_sizes"]) == count + seen["others"]
    assert seen["shares_buffer"]
    assert seen["capped"] == 2
    assert seen["stats"]["rx_packets"] >= count + 5
    assert seen["stats"]["tx_packets"] >= count


@pytest.mark.root
def test_tcp_segments_are_joined_for_the_kernel(netns: Any) -> None:
    seen = netns.run("tcp_offloads")
    assert seen["vnet_header"]
    # Peer to kernel: 32 segments in 4 joined writes, all bytes delivered in order.
    assert seen["written"] == [8, 8, 8, 8]
    assert seen["delivered_intact"]
    assert seen["kernel_packets_for_32_segments"] == 4
    # A damaged segment spoils its joined packet: dropped and counted by the kernel, then resent.
    assert seen["after_damage"] == 0 and seen["checksum_errors"] == 1
    assert seen["retransmitted_intact"]
    # Kernel to peer: super-packets cut into segments no bigger than the MSS, checksums complete.
    assert seen["segment_offload"]
    assert seen["read_intact"] and seen["checksums_ok"]
    assert seen["largest_segment"] == 1360 and seen["segments"] >= 40000 // 1360
    assert seen["kernel_packets_for_the_segments"] < seen["segments"]
    assert seen["udp_checksums_ok"] == [True]
    # A kernel refusing super-packets gets the same segments one by one.
    assert seen["written_after_refusal"] == 8 and not seen["joining_after_refusal"]
    assert seen["refused_intact"] and seen["kernel_packets_after_refusal"] == 8


@pytest.mark.root
def test_a_kernel_without_the_virtio_net_header_gets_the_plain_tun(netns: Any) -> None:
    seen = netns.run("offload_refused")
    assert seen == {"vnet_header": False, "joining": False, "name": "sstp8", "replies": [[0, 1]]}


@pytest.mark.root
def test_remove_interface_and_errors_name_the_interface(netns: Any) -> None:
    seen = netns.run("remove_interface")
    assert seen == {"before": True, "after": False, "error": seen["error"]}
    assert seen["error"] == "interface sstp5 does not exist"


@pytest.mark.root
def test_a_refused_request_is_an_error_naming_the_step(netns: Any) -> None:
    seen = netns.run("refused_request")
    assert seen == {"error": "setting mtu and up on sstp6 failed: (22, 'Invalid argument')", "mtu": 1300,
                    "up": True}


@pytest.mark.root
def test_ifname_allocator_skips_stale_kernel_interfaces_and_reuses_numbers(netns: Any) -> None:
    seen = netns.run("ifname_allocator")
    assert seen == {"first": "sstp0", "second": "sstp2", "again": "sstp0", "after_stale_gone": "sstp1"}


# -- tests without root --------------------------------------------------------------------------


def test_memory_tun_reads_batches_into_one_buffer() -> None:
    tun, kernel = open_memory_tun("sstp0", mtu=100)
    with tun, kernel:
        for n in range(7):
            kernel.send(bytes([n]) * (10 + n))
        buffer = bytearray(1000)
        first = tun.read_batch(4, buffer)
        assert [bytes(view) for view in first] == [bytes([n]) * (10 + n) for n in range(4)]
        assert all(view.obj is buffer for view in first)
        # Packets sit one after another in the buffer.
        assert bytes(buffer[:21]) == b"\x00" * 10 + b"\x01" * 11
        rest = tun.read_batch(10, buffer)
        assert [len(view) for view in rest] == [14, 15, 16]
        assert tun.read_batch(10, buffer) == []


def test_memory_tun_stops_when_the_buffer_cannot_hold_another_mtu() -> None:
    tun, kernel = open_memory_tun("sstp0", mtu=100)
    with tun, kernel:
        for _ in range(5):
            kernel.send(b"x" * 100)
        assert len(tun.read_batch(10, bytearray(250))) == 2
        assert len(tun.read_batch(10, bytearray(250))) == 2
        with pytest.raises(ValueError, match="smaller than one packet"):
            tun.read_batch(10, bytearray(99))


def test_offloaded_reads_are_cut_completed_or_dropped_never_passed_on_unfinished() -> None:
    """What the kernel may hand over with offloads on, played through a socket pair (the ioctl
    that turns offloads off cannot work on it: the device keeps its big reads)."""
    device_end, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    device_end.setblocking(False)
    tun = TunDevice(device_end.detach(), "sstp0", 1400, vnet_header=True, segment_offload=True)
    with tun, kernel:
        payload = bytes(range(256)) * 20
        whole = tcp_segment(LOCAL, PEER, 5201, 40000, 1, payload, tcp_checksum=0)
        kernel.send(VNET_HEADER.pack(1, VNET_GSO_TCPV4, 52, 1360, 20, 16) + whole)
        udp = tcp_segment(LOCAL, PEER, 5201, 40000, 1, b"x")
        udp = udp[:9] + b"\x11" + udp[10:]  # "UDP" under a TCP GSO type: cannot be cut
        kernel.send(VNET_HEADER.pack(1, VNET_GSO_TCPV4, 40, 1360, 20, 16) + udp)
        ping = icmp_echo(LOCAL, PEER, 1, 1, b"ping")
        kernel.send(bytes(VNET_HEADER.size) + ping)
        packets = [bytes(p) for p in tun.read_batch(64, bytearray(tun.max_read * 2))]
        assert tun.max_read > 65535
        segments, rest = packets[:-1], packets[-1]
        assert [len(s) - 40 for s in segments] == [1360, 1360, 1360, 1040]
        assert all(reference_checksum(s[12:20] + struct.pack("!BBH", 0, 6, len(s) - 20) + s[20:]) == 0
                   for s in segments)
        assert b"".join(s[40:] for s in segments) == payload
        assert rest == ping
        assert tun.read_drops == 1 and tun.segment_offload


def test_memory_tun_write_counts_drops_when_full() -> None:
    tun, kernel = open_memory_tun("sstp0", mtu=1500)
    with tun, kernel:
        packet = b"p" * 1400
        written = tun.write_packets([packet] * 2000)
        assert 0 < written < 2000
        assert tun.write_drops == 2000 - written
        assert kernel.recv(2000) == packet
        assert tun.write_packets([memoryview(b"\x45abc")]) == 1


def test_closed_memory_tun_is_closed_once() -> None:
    tun, kernel = open_memory_tun("sstp0", mtu=1500)
    fd = tun.fileno()
    tun.close()
    tun.close()
    kernel.close()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_memory_net_records_calls_and_follows_kernel_rules() -> None:
    net = MemoryNet()
    with pytest.raises(NetError, match="sstp0 does not exist"):
        net.configure_p2p("sstp0", LOCAL, PEER, 1400)
    net.create_interface("sstp0")
    net.create_interface("sstp1")
    net.configure_p2p("sstp0", LOCAL, PEER, 1400)
    net.add_route("sstp0", FRAMED)
    net.add_route("sstp1", FRAMED)  # a route moves, like `ip route replace`
    interface = net.interfaces["sstp0"]
    assert interface.up and interface.mtu == 1400
    assert interface.addresses == {(LOCAL, PEER)}
    assert interface.routes == {IPv4Network("198.18.0.2/32")}
    assert net.interfaces["sstp1"].routes == {FRAMED}
    assert net.link_stats("sstp0") == LinkStats(0, 0, 0, 0, 0, 0, 0, 0)
    net.remove_interface("sstp0")
    net.remove_interface("sstp0")
    assert not net.interface_exists("sstp0")
    assert [name for name, _ in net.calls] == [
        "configure_p2p",
        "create_interface",
        "create_interface",
        "configure_p2p",
        "add_route",
        "add_route",
        "remove_interface",
        "remove_interface",
    ]


def test_ifname_allocator_lowest_free_and_reuse() -> None:
    names = IfnameAllocator()
    assert [names.allocate() for _ in range(4)] == ["sstp0", "sstp1", "sstp2", "sstp3"]
    names.release("sstp2")
    names.release("sstp0")
    names.release("sstp0")  # twice: harmless
    names.release("sstp02")  # not a name it hands out
    names.release("eth0")
    assert names.allocate() == "sstp0"
    assert names.allocate() == "sstp2"
    assert names.allocate() == "sstp4"
    assert names.held() == {"sstp0", "sstp1", "sstp2", "sstp3", "sstp4"}


def test_ifname_allocator_skips_names_that_exist_and_retries_them_later() -> None:
    present = {"ppp0", "ppp1", "ppp3"}
    names = IfnameAllocator("ppp", exists=present.__contains__)
    assert [names.allocate(), names.allocate()] == ["ppp2", "ppp4"]
    present.discard("ppp1")
    assert names.allocate() == "ppp1"


def test_ifname_allocator_runs_out_of_name_length() -> None:
    names = IfnameAllocator("abcdefghijklmn")  # 14 characters: room for one digit in 15
    assert [names.allocate() for _ in range(10)][-1] == "abcdefghijklmn9"
    with pytest.raises(NetError, match="no interface name left"):
        names.allocate()
    names.release("abcdefghijklmn4")
    assert names.allocate() == "abcdefghijklmn4"
    with pytest.raises(ValueError):
        IfnameAllocator("abcdefghijklmno")


if __name__ == "__main__":
    # Child-process entry: `python test_tun.py SCENARIO [ARGS...]`, inside the test's namespace.
    result = globals()[f"scenario_{sys.argv[1]}"](*sys.argv[2:])
    print(json.dumps(result), flush=True)
