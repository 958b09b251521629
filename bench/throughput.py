"""Single-session TCP throughput through the tunnel, and what it costs the daemon (root).

Two network namespaces joined by a veth pair: the daemon (`vpnd run`) and an iperf3 server
in one, our client (`vpnd client`) and the iperf3 client in the other. iperf3 runs through the
tunnel (upload, then download with -R) and then over the bare veth for reference. For each
run it prints Mbit/s, the ratio to the bare veth, and the daemon's and client's CPU seconds per
GB of payload (utime+stime from /proc, the same measure as the SoftEther baseline: 14 cpu-s/GB,
620 Mbit/s here), and how much CPU the host stole during each run: on a shared VM the figures
move with it, and the baseline counts only runs below 10% steal as clean.

usage: python bench/throughput.py [--seconds 10] [--pin split|none] [--runs 1]
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vpnd.server.tls import make_self_signed

PORT = 4443
GATEWAY = "10.81.255.1"
# This checkout's vpnd, not whichever one the virtualenv has installed.
VPND = [str(REPO / ".venv/bin/python"), "-m", "vpnd.cli.main"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ticks() -> tuple[int, int]:
    """(all, stolen) CPU ticks of the machine so far: the host's steal shows how clean a run was."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[7]


def child_pid(wrapper_pid: int, name: str) -> int:
    """`ip netns exec` execs its command, so the PID is the program's own; check its name."""
    comm = Path(f"/proc/{wrapper_pid}/cmdline").read_bytes().split(b"\0")
    assert any(name.encode() in part for part in comm), comm
    return wrapper_pid


def iperf(namespace: str, target: str, seconds: int, reverse: bool, pin: str | None) -> dict[str, float]:
    argv = ["ip", "netns", "exec", namespace]
    if pin is not None:
        argv += ["taskset", "-c", pin]
    argv += ["iperf3", "-c", target, "-t", str(seconds), "-J", "-M", "1360"]
    if reverse:
        argv.append("-R")
    out = json.loads(sh(*argv).stdout)
    received = out["end"]["sum_received"]
    return {"mbit": received["bits_per_second"] / 1e6, "bytes": received["bytes"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--pin",
        choices=["split", "none"],
        default="split",
        help="split: daemon on CPU 0, client and iperf3 on CPU 1",
    )
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:6]
    server_ns, client_ns = f"vpndbs-{tag}", f"vpndbc-{tag}"
    work = Path(tempfile.mkdtemp(prefix="vpnd-throughput-"))
    cert, key = make_self_signed(work, "vpn.test")
    etc = work / "etc"
    etc.mkdir()
    (etc / "config.boot").write_text(
        "vpn {\n sstp {\n  authentication {\n   local-users {\n    username bench {\n     password benchpw\n"
        "    }\n   }\n  }\n  client-ip-pool P {\n   range 10.81.0.0/24\n  }\n  default-pool P\n"
        f"  gateway-address {GATEWAY}\n  mtu 1400\n  port {PORT}\n"
        f"  ssl {{\n   cert-file {cert}\n   key-file {key}\n  }}\n }}\n}}\n"
    )
    processes: list[subprocess.Popen[bytes]] = []
    daemon_pin = ["taskset", "-c", "0"] if args.pin == "split" else []
    other_pin = "1" if args.pin == "split" else None
    try:
        sh("ip", "netns", "add", server_ns)
        sh("ip", "netns", "add", client_ns)
        sh(
            "ip",
            "link",
            "add",
            f"vb{tag}s",
            "netns",
            server_ns,
            "type",
            "veth",
            "peer",
            f"vb{tag}c",
            "netns",
            client_ns,
        )
        for ns, dev, addr in (
            (server_ns, f"vb{tag}s", "10.250.250.1/30"),
            (client_ns, f"vb{tag}c", "10.250.250.2/30"),
        ):
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", addr, "dev", dev)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        daemon = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                server_ns,
                *daemon_pin,
                *VPND,
                "--config-dir",
                str(etc),
                "--run-dir",
                str(work / "run"),
                "run",
                "--listen",
                "0.0.0.0",
                "--log-level",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(work / "daemon.log", "wb"),  # noqa: SIM115 (lives as long as the process)
            env=ENV,
        )
        processes.append(daemon)
        iperf_server = subprocess.Popen(
            ["ip", "netns", "exec", server_ns, *(daemon_pin and ["taskset", "-c", "1"]), "iperf3", "-s"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(iperf_server)
        time.sleep(1.5)
        client = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                client_ns,
                *(["taskset", "-c", "1"] if other_pin else []),
                *VPND,
                "client",
                "--server",
                "10.250.250.1",
                "--port",
                str(PORT),
                "--user",
                "bench",
                "--password",
                "benchpw",
                "--no-verify",
                "--no-default-route",
                "--once",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(work / "client.log", "wb"),  # noqa: SIM115 (lives as long as the process)
            env=ENV,
        )
        processes.append(client)
        deadline = time.monotonic() + 20
        while "connected:" not in (work / "client.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        print((work / "client.log").read_text().strip().splitlines()[-1])
        daemon_pid, client_pid = child_pid(daemon.pid, "vpnd"), child_pid(client.pid, "vpnd")
        bare = iperf(client_ns, "10.250.250.1", args.seconds, False, other_pin)
        print(f"bare veth:           {bare['mbit']:8.0f} Mbit/s")
        for label, reverse in (("upload (client->server)", False), ("download (server->client)", True)):
            rates, server_costs, client_costs, steals = [], [], [], []
            for _ in range(args.runs):
                d0, c0 = cpu_seconds(daemon_pid), cpu_seconds(client_pid)
                ticks0, stolen0 = cpu_ticks()
                result = iperf(client_ns, GATEWAY, args.seconds, reverse, other_pin)
                ticks1, stolen1 = cpu_ticks()
                steals.append(100 * (stolen1 - stolen0) / max(ticks1 - ticks0, 1))
                gigabytes = result["bytes"] / 1e9
                rates.append(result["mbit"])
                server_costs.append((cpu_seconds(daemon_pid) - d0) / gigabytes)
                client_costs.append((cpu_seconds(client_pid) - c0) / gigabytes)
            rate = statistics.median(rates)
            print(
                f"{label:26s} {rate:8.0f} Mbit/s ({rate / bare['mbit']:.2f} of bare veth, "
                f"{rate / 620:.2f}x SoftEther's 620), daemon {statistics.median(server_costs):.2f} cpu-s/GB "
                f"({statistics.median(server_costs) / 14:.2f} of SoftEther's 14), "
                f"client {statistics.median(client_costs):.2f} cpu-s/GB"
            )
            if args.runs > 1:
                print(f"{'':26s} runs: {', '.join(f'{r:.0f}' for r in rates)} Mbit/s; daemon "
                      f"{', '.join(f'{c:.2f}' for c in server_costs)}; client "
                      f"{', '.join(f'{c:.2f}' for c in client_costs)} cpu-s/GB")
            # The SoftEther baseline counts a run as clean below 10% steal by the host.
            print(f"{'':26s} host CPU steal: {', '.join(f'{s:.0f}%' for s in steals)}")
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


if __name__ == "__main__":
    main()
