"""Throughput through one tunnel and what it costs the daemon, every comparison measured in this run (root).

Three parts, each repeated for --rounds rounds (medians with [min-max]). For every run it prints
the host's CPU steal and how busy the machine's cores were: on a shared machine the rates move
with both (other processes in this guest take CPU without any steal), costs per GB much less.

1. Side by side with SoftEther (--side-by-side): the shared harness side-by-side.sh runs SoftEther
   and this checkout's vpnd with the same neutral client, the same iperf3 host and the same kind
   of links (no offloads on the LAN side, so the servers see ordinary 1,500-byte packets). It is
   not part of this repository: give its path with --harness or $VPND_SIDE_BY_SIDE. Without it
   (or when it fails) this part says why and the rest still runs.
2. Our own client (`vpnd client`) on the offload-friendly path: two namespaces joined by a veth
   pair, the daemon and an iperf3 server in one, the client and the iperf3 client in the other;
   TCP upload and download, and the bare veth for reference.
3. UDP on the same path: iperf3 unlimited (-b 0) with 200-byte and 1,360-byte datagrams each way
   -> datagrams per second delivered through the daemon, loss and where it happened (the sending
   side's TUN queue, the receiving socket), and datagrams per second per core of daemon CPU.

CPU is utime+stime from /proc of the daemon and the client process, per GB of iperf3 payload
delivered; steal and busy (not idle, not stolen) are from /proc/stat over the run.

usage: python bench/throughput.py [--side-by-side] [--harness PATH] [--rounds 3] [--seconds 10]
                                  [--pin split|none]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vpnd.server.tls import make_self_signed

PORT = 4443
GATEWAY = "10.81.255.1"
# This checkout's vpnd, not whichever one the virtualenv has installed.
PYTHON = str(REPO / ".venv/bin/python")
VPND = [PYTHON, "-m", "vpnd.cli.main"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
HARNESS_ENV = "VPND_SIDE_BY_SIDE"
UDP_SIZES = (200, 1360)  # 1,360 bytes of payload fill the tunnel's 1,400-byte MTU


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ticks() -> tuple[int, int, int]:
    """(all, stolen, idle) CPU ticks of the machine so far: steal and what else ran show how clean
    a run was."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[7], fields[3] + fields[4]


def spread(values: Sequence[float], digits: int = 0) -> str:
    """Median [min-max] of a run's rounds."""
    if not values:
        return "-"
    return (f"{statistics.median(values):.{digits}f} "
            f"[{min(values):.{digits}f}-{max(values):.{digits}f}]")


def load(stolen: Sequence[float], busy: Sequence[float]) -> str:
    """Each run's steal and busy share of all cores."""
    return (f"steal {', '.join(f'{v:.0f}%' for v in stolen)}; "
            f"busy {', '.join(f'{v:.0f}%' for v in busy)}")


# ---- part 1: side by side with SoftEther, through the shared harness -----------------------------


def find_harness(given: str | None) -> tuple[Path | None, str]:
    """The harness to run, or None and why not."""
    path = given or os.environ.get(HARNESS_ENV)
    if not path:
        return None, f"no harness given (--harness PATH or ${HARNESS_ENV}: the shared side-by-side.sh)"
    harness = Path(path)
    if not harness.is_file() or not os.access(harness, os.X_OK):
        return None, f"{harness} is not an executable file"
    return harness, ""


def side_by_side(harness: Path, work: Path, rounds: int, seconds: int, pin: str) -> None:
    # The harness starts `VPND --config-dir ... run` itself: a wrapper that execs this checkout's
    # vpnd, so the PID it measures is the daemon's.
    wrapper = work / "vpnd"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {PYTHON} -m vpnd.cli.main "$@"\n')
    wrapper.chmod(0o755)
    results = Path(os.environ.get("BENCH", "/tmp/bench"))
    before = set(results.glob("sbs-*"))
    # OUT would also reach the peer installer the harness runs (it names a build output there):
    # let the harness pick its own output folder and find it afterwards.
    env = {k: v for k, v in os.environ.items() if k != "OUT"} | {"PIN": pin}
    print(f"side by side with SoftEther: {harness} ({rounds} x {seconds} s each way, PIN={pin}) ...",
          flush=True)
    run = subprocess.run([str(harness), str(wrapper), str(rounds), str(seconds)], env=env,
                         capture_output=True, text=True, check=False)
    made = sorted(set(results.glob("sbs-*")) - before)
    if run.returncode != 0 or not made:
        print(f"  skipped: the harness failed (exit {run.returncode}); only vpnd's own figures follow")
        for line in (run.stdout + run.stderr).strip().splitlines()[-5:]:
            print(f"  | {line}")
        return
    out = made[-1]
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for file in out.glob("*-*-[0-9]*.json"):
        server, way, _ = file.stem.rsplit("-", 2)
        if server in ("softether", "vpnd"):
            runs.setdefault((server, way), []).append(json.loads(file.read_text()))
    print(f"  raw runs: {out}")
    print(f"  {'server':10s} {'way':5s} {'Mbit/s':>18s} {'server cpu-s/GB':>20s} {'client cpu-s/GB':>20s}"
          f" {'retransmits':>18s}")
    medians: dict[tuple[str, str], tuple[float, float]] = {}
    for (server, way), rows in sorted(runs.items(), key=lambda item: (item[0][0], item[0][1] != "up")):
        rate = [float(r["mbps_delivered"]) for r in rows]
        cost = [float(r["server_cpu_s_per_GB"]) for r in rows]
        client = [float(r["client_cpu_s_per_GB"]) for r in rows]
        retransmits = [float(r.get("retransmits") or 0) for r in rows]
        shares = [r["system_cpu_pct_of_2cores"] for r in rows]
        steal = [float(share["steal"]) for share in shares]
        busy = [100 - float(share["idle"]) - float(share["steal"]) for share in shares]
        medians[server, way] = statistics.median(rate), statistics.median(cost)
        print(f"  {server:10s} {way:5s} {spread(rate):>18s} {spread(cost, 2):>20s} {spread(client, 2):>20s}"
              f" {spread(retransmits):>18s}  {load(steal, busy)}")
    for way in ("up", "down"):
        if ("vpnd", way) in medians and ("softether", way) in medians:
            ours_rate, ours_cost = medians["vpnd", way]
            theirs_rate, theirs_cost = medians["softether", way]
            print(f"  vpnd / SoftEther {way:4s}: throughput {ours_rate / theirs_rate:.2f}x, "
                  f"server CPU per GB {ours_cost / theirs_cost:.2f}x (medians of this run)")


# ---- parts 2 and 3: our own client on the offload-friendly path ---------------------------------


@dataclass
class Tunnel:
    """The daemon and our client up in two namespaces of their own."""

    server_ns: str
    client_ns: str
    daemon_pid: int
    client_pid: int
    pin: str | None  # CPU for the client-side iperf3, None when not pinned
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)


@dataclass
class Measured:
    result: dict[str, Any]
    daemon_cpu: float
    client_cpu: float
    seconds: float
    steal: float
    busy: float


def iperf(tunnel: Tunnel, target: str, argv: Sequence[str]) -> dict[str, Any]:
    command = ["ip", "netns", "exec", tunnel.client_ns]
    if tunnel.pin is not None:
        command += ["taskset", "-c", tunnel.pin]
    answer = sh(*command, "iperf3", "-c", target, "-J", *argv, check=False)
    result: dict[str, Any] = json.loads(answer.stdout or "{}")
    if "end" not in result:
        raise RuntimeError(f"iperf3 {' '.join(argv)} failed: {result.get('error') or answer.stderr}")
    return result


def measured(tunnel: Tunnel, target: str, argv: Sequence[str]) -> Measured:
    daemon0, client0 = cpu_seconds(tunnel.daemon_pid), cpu_seconds(tunnel.client_pid)
    ticks0, stolen0, idle0 = cpu_ticks()
    start = time.monotonic()
    result = iperf(tunnel, target, argv)
    seconds = time.monotonic() - start
    ticks1, stolen1, idle1 = cpu_ticks()
    daemon, client = cpu_seconds(tunnel.daemon_pid) - daemon0, cpu_seconds(tunnel.client_pid) - client0
    ticks, stolen = max(ticks1 - ticks0, 1), stolen1 - stolen0
    busy = 100 * (ticks - stolen - (idle1 - idle0)) / ticks
    return Measured(result, daemon, client, seconds, 100 * stolen / ticks, busy)


def tcp_runs(tunnel: Tunnel, rounds: int, seconds: int) -> None:
    bare = iperf(tunnel, "10.250.250.1", ["-t", str(seconds), "-M", "1360"])
    bare_rate = bare["end"]["sum_received"]["bits_per_second"] / 1e6
    print(f"our client, offload-friendly path (bare veth: {bare_rate:.0f} Mbit/s)")
    print(f"  {'TCP, one stream':26s} {'Mbit/s':>18s} {'daemon cpu-s/GB':>20s} {'client cpu-s/GB':>20s}"
          f" {'retransmits':>14s}")
    for label, extra in (("upload (client->server)", []), ("download (server->client)", ["-R"])):
        rates, daemon_costs, client_costs, retransmits, stolen, busy = [], [], [], [], [], []
        for _ in range(rounds):
            run = measured(tunnel, GATEWAY, ["-t", str(seconds), "-M", "1360", *extra])
            end = run.result["end"]
            received = end["sum_received"]
            gigabytes = received["bytes"] / 1e9
            rates.append(received["bits_per_second"] / 1e6)
            daemon_costs.append(run.daemon_cpu / gigabytes)
            client_costs.append(run.client_cpu / gigabytes)
            retransmits.append(float(end["sum_sent"].get("retransmits", 0)))
            stolen.append(run.steal)
            busy.append(run.busy)
        print(f"  {label:26s} {spread(rates):>18s} {spread(daemon_costs, 2):>20s}"
              f" {spread(client_costs, 2):>20s} {spread(retransmits):>14s}  {load(stolen, busy)}")


def udp_drops(namespace: str) -> tuple[int, int]:
    """(packets the kernel dropped because a TUN reader fell behind, datagrams a full socket
    buffer refused) in a namespace so far: where a UDP run's loss happened."""
    links = json.loads(sh("ip", "-n", namespace, "-s", "-j", "link", "show", "type", "tun").stdout or "[]")
    tun_dropped = sum(link["stats64"]["tx"]["dropped"] for link in links)
    snmp = sh("ip", "netns", "exec", namespace, "cat", "/proc/net/snmp").stdout.splitlines()
    names, values = [line.split() for line in snmp if line.startswith("Udp:")][:2]
    return tun_dropped, int(values[names.index("RcvbufErrors")])


def udp_runs(tunnel: Tunnel, rounds: int, seconds: int) -> None:
    print("UDP through the daemon, iperf3 unlimited (-b 0), one stream. Lost where, % of datagrams sent:")
    print("the sending side's TUN queue (its reader fell behind; the daemon's going down) / receiving socket")
    print(f"  {'datagrams':16s} {'delivered/s':>20s} {'loss %':>16s} {'lost: TUN/socket %':>20s}"
          f" {'daemon % of a core':>19s} {'per daemon core/s':>20s}")
    for size in UDP_SIZES:
        for way, extra in (("up", []), ("down", ["-R"])):
            delivered, loss, daemon_busy, per_core, stolen, busy = [], [], [], [], [], []
            at_tun, at_socket = [], []
            sender, receiver = ((tunnel.client_ns, tunnel.server_ns) if way == "up"
                                else (tunnel.server_ns, tunnel.client_ns))
            for _ in range(rounds):
                argv = ["-u", "-b", "0", "-l", str(size), "-t", str(seconds), *extra]
                tun0, socket0 = udp_drops(sender)[0], udp_drops(receiver)[1]
                run = measured(tunnel, GATEWAY, argv)
                tun1, socket1 = udp_drops(sender)[0], udp_drops(receiver)[1]
                total = run.result["end"]["sum"]
                sent = max(total["packets"], 1)
                at_tun.append(100 * (tun1 - tun0) / sent)
                at_socket.append(100 * (socket1 - socket0) / sent)
                rate = (total["packets"] - total["lost_packets"]) / total["seconds"]
                share = run.daemon_cpu / run.seconds
                delivered.append(rate)
                loss.append(float(total["lost_percent"]))
                daemon_busy.append(100 * share)
                per_core.append(rate / share if share else 0.0)
                stolen.append(run.steal)
                busy.append(run.busy)
            where = "/".join(f"{statistics.median(v):.1f}" for v in (at_tun, at_socket))
            print(f"  {f'{size} bytes {way}':16s} {spread(delivered):>20s} {spread(loss, 1):>16s}"
                  f" {where:>20s} {spread(daemon_busy):>19s} {spread(per_core):>20s}  {load(stolen, busy)}")


def wait_listening(daemon: subprocess.Popen[bytes], namespace: str, port: int, log: Path) -> None:
    """The daemon is up once it listens (a busy host may take seconds to start Python)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and daemon.poll() is None:
        if f":{port} " in sh("ip", "netns", "exec", namespace, "ss", "-ltnH").stdout:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the daemon does not listen on :{port}: {log.read_text()[-500:]}")


@contextmanager
def own_tunnel(work: Path, pin: str) -> Iterator[Tunnel]:
    """Namespaces, veth, daemon, iperf3 server and our client; all removed on the way out."""
    tag = uuid.uuid4().hex[:6]
    server_ns, client_ns = f"vpndbs-{tag}", f"vpndbc-{tag}"
    cert, key = make_self_signed(work, "vpn.test")
    etc = work / "etc"
    etc.mkdir()
    (etc / "config.boot").write_text(
        "vpn {\n sstp {\n  authentication {\n   local-users {\n    username bench {\n     password benchpw\n"
        "    }\n   }\n  }\n  client-ip-pool P {\n   range 10.81.0.0/24\n  }\n  default-pool P\n"
        f"  gateway-address {GATEWAY}\n  mtu 1400\n  port {PORT}\n"
        f"  ssl {{\n   ca-cert-file {cert}\n   cert-file {cert}\n   key-file {key}\n  }}\n }}\n}}\n"
    )
    processes: list[subprocess.Popen[bytes]] = []
    daemon_pin = ["taskset", "-c", "0"] if pin == "split" else []
    other_pin = ["taskset", "-c", "1"] if pin == "split" else []
    try:
        sh("ip", "netns", "add", server_ns)
        sh("ip", "netns", "add", client_ns)
        sh("ip", "link", "add", f"vb{tag}s", "netns", server_ns, "type", "veth", "peer", f"vb{tag}c",
           "netns", client_ns)
        for ns, dev, addr in ((server_ns, f"vb{tag}s", "10.250.250.1/30"),
                              (client_ns, f"vb{tag}c", "10.250.250.2/30")):
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", addr, "dev", dev)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        with open(work / "daemon.log", "wb") as log:
            processes.append(subprocess.Popen(
                ["ip", "netns", "exec", server_ns, *daemon_pin, *VPND, "--config-dir", str(etc),
                 "--run-dir", str(work / "run"), "run", "--listen", "0.0.0.0", "--log-level", "warning"],
                stdout=subprocess.DEVNULL, stderr=log, env=ENV))
        processes.append(subprocess.Popen(["ip", "netns", "exec", server_ns, *other_pin, "iperf3", "-s"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_listening(processes[0], server_ns, PORT, work / "daemon.log")
        with open(work / "client.log", "wb") as log:
            processes.append(subprocess.Popen(
                ["ip", "netns", "exec", client_ns, *other_pin, *VPND, "client", "--server", "10.250.250.1",
                 "--port", str(PORT), "--user", "bench", "--password", "benchpw", "--no-verify",
                 "--no-default-route", "--once"],
                stdout=subprocess.DEVNULL, stderr=log, env=ENV))
        deadline = time.monotonic() + 20
        while "connected:" not in (work / "client.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        if "connected:" not in (work / "client.log").read_text():
            raise RuntimeError(f"our client did not connect: {(work / 'client.log').read_text()[-500:]}")
        # `ip netns exec` and taskset exec their command: the PIDs are the daemon's and the client's.
        client_cpu = "1" if pin == "split" else None
        yield Tunnel(server_ns, client_ns, processes[0].pid, processes[2].pid, client_cpu)
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        sh("ip", "netns", "del", client_ns, check=False)
        sh("ip", "netns", "del", server_ns, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="length of each iperf3 run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each test; medians need at least 3")
    parser.add_argument("--pin", choices=["split", "none"], default="split",
                        help="split: servers on CPU 0, clients and iperf3 on CPU 1")
    parser.add_argument("--side-by-side", action="store_true",
                        help="also run SoftEther and vpnd side by side")
    parser.add_argument("--harness", help=f"the shared side-by-side.sh (default: ${HARNESS_ENV})")
    parser.add_argument("--no-udp", action="store_true", help="leave out the UDP runs")
    args = parser.parse_args()
    if args.rounds < 3:
        print(f"note: {args.rounds} round(s); the figures to report are medians of at least 3")
    work = Path(tempfile.mkdtemp(prefix="vpnd-throughput-"))
    if args.side_by_side:
        harness, why = find_harness(args.harness)
        if harness is None:
            print(f"side by side with SoftEther: skipped: {why}; only vpnd's own figures follow")
        else:
            side_by_side(harness, work, args.rounds, args.seconds, args.pin)
    with own_tunnel(work, args.pin) as tunnel:
        tcp_runs(tunnel, args.rounds, args.seconds)
        if not args.no_udp:
            udp_runs(tunnel, args.rounds, args.seconds)


if __name__ == "__main__":
    main()
