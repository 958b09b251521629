"""Session setup rate and idle-session cost of the daemon (root; runs in its own namespace).

  setup: N clients connect at once (TLS + MS-CHAPv2 + crypto binding + IPCP + TUN) ->
         sessions per second and p50/p99 setup time, with an RSA-2048 and an ECDSA P-256
         certificate.
  idle:  N sessions held open -> the daemon's RSS and file descriptors per session.

The daemon is the real `vpnd run` in a network namespace of its own; the clients are
ClientSession dialers (tests/support/dialer.py) in one process in the same namespace. Nothing
leaves the namespace; it is deleted at the end.

usage: python bench/sessions.py [--clients 200] [--idle 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import resource
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

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.dialer import Dialer
from vpnd.server.tls import make_self_signed

PORT = 4443


def ecdsa_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vpn.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "ecdsa.pem", directory / "ecdsa.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def write_config(config_dir: Path, cert: Path, key: Path, users: int) -> None:
    lines = ["vpn {", "    sstp {", "        authentication {", "            local-users {"]
    for index in range(users):
        lines += [f"                username u{index} {{", f"                    password pw{index}",
                  "                }"]
    lines += ["            }", "            protocols mschap-v2", "        }",
              "        client-ip-pool P {", "            range 10.80.0.0/18", "        }",
              "        default-pool P", "        gateway-address 10.80.255.1",
              f"        port {PORT}",
              "        ppp-options {", "            lcp-echo-interval 3600", "        }",
              "        ssl {", f"            ca-cert-file {cert}",  # self-signed: its own CA
              f"            cert-file {cert}", f"            key-file {key}", "        }",
              "    }", "}"]
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.boot").write_text("\n".join(lines) + "\n")


def daemon_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_thread_cpu_seconds(pid: int) -> dict[str, float]:
    """The daemon's CPU seconds in user space and in the kernel, of its event loop thread (the
    main thread) and of its other threads (the netlink worker)."""
    tick = os.sysconf("SC_CLK_TCK")
    threads: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        thread = "loop" if task.name == str(pid) else "other threads"
        for mode, ticks in (("user", fields[11]), ("kernel", fields[12])):
            name = f"{thread} {mode}"
            threads[name] = threads.get(name, 0.0) + int(ticks) / tick
    return threads


def daemon_usage(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open file descriptors) of the daemon process."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def dial_all(count: int, offset: int = 0) -> tuple[list[Dialer], list[float], float]:
    async def one(index: int) -> tuple[Dialer, float]:
        dialer = Dialer("127.0.0.1", PORT, f"u{index}", f"pw{index}")
        start = time.perf_counter()
        await dialer.connect()
        await asyncio.wait_for(dialer.up.wait(), 120)
        return dialer, time.perf_counter() - start

    start = time.perf_counter()
    results = await asyncio.gather(*(one(offset + i) for i in range(count)))
    return [d for d, _ in results], [t for _, t in results], time.perf_counter() - start


def dial_main(mode: str, count: int, daemon_pid: int) -> None:
    """Runs inside the namespace: dial, measure, print one JSON line."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def go() -> dict[str, object]:
        if mode == "setup":
            cpu_before = daemon_cpu_seconds(daemon_pid)
            threads_before = daemon_thread_cpu_seconds(daemon_pid)
            dialers, times, wall = await dial_all(count)
            cpu = daemon_cpu_seconds(daemon_pid) - cpu_before
            by_thread = {name: 1000 * (seconds - threads_before.get(name, 0.0)) / count
                         for name, seconds in daemon_thread_cpu_seconds(daemon_pid).items()}
            for dialer in dialers:
                await dialer.hang_up()
            times.sort()
            return {"sessions_per_second": count / wall, "p50_ms": 1000 * statistics.median(times),
                    "p99_ms": 1000 * times[min(len(times) - 1, int(len(times) * 0.99))], "wall_s": wall,
                    "daemon_cpu_ms_per_session": 1000 * cpu / count,
                    "daemon_cpu_ms_per_session_by_thread": by_thread}
        base_rss, base_fds = daemon_usage(daemon_pid)
        dialers: list[Dialer] = []
        for offset in range(0, count, 200):
            batch, _, _ = await dial_all(min(200, count - offset), offset)
            dialers += batch
        await asyncio.sleep(2)
        rss, fds = daemon_usage(daemon_pid)
        for dialer in dialers:
            await dialer.hang_up()
        return {"sessions": len(dialers), "rss_base_kib": base_rss, "rss_kib": rss,
                "rss_per_session_kib": (rss - base_rss) / len(dialers),
                "fds_per_session": (fds - base_fds) / len(dialers)}

    print(json.dumps(asyncio.run(go())))


def run_case(label: str, cert: Path, key: Path, mode: str, count: int) -> dict[str, object]:
    namespace = f"vpndb-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="vpnd-bench-"))
    write_config(work / "etc", cert, key, max(count, 1))
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    daemon = None
    try:
        subprocess.run(["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"], check=True)
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", namespace, str(REPO / ".venv/bin/vpnd"),
             "--config-dir", str(work / "etc"), "--run-dir", str(work / "run"),
             "run", "--listen", "127.0.0.1", "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=open(work / "daemon.log", "w"))  # noqa: SIM115
        deadline = time.monotonic() + 20
        while not (work / "run" / "vpnd.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        daemon_pid = int((work / "run" / "vpnd.pid").read_text())
        out = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, __file__, "--dial", mode,
             "--count", str(count), "--daemon-pid", str(daemon_pid)],
            capture_output=True, text=True, timeout=900, check=True,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
        result["case"] = label
        return result
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        subprocess.run(["ip", "netns", "del", namespace], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200, help="clients connecting at once (setup)")
    parser.add_argument("--idle", type=int, default=2000, help="sessions held open (idle)")
    parser.add_argument("--dial", choices=["setup", "idle"], help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--daemon-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dial:
        dial_main(args.dial, args.count, args.daemon_pid)
        return
    certs = Path(tempfile.mkdtemp(prefix="vpnd-bench-certs-"))
    rsa_cert, rsa_key = make_self_signed(certs, "vpn.test")
    ec_cert, ec_key = ecdsa_certificate(certs)
    cases = (("RSA-2048", rsa_cert, rsa_key), ("ECDSA P-256", ec_cert, ec_key)) if args.clients else ()
    for label, cert, key in cases:
        r = run_case(label, cert, key, "setup", args.clients)
        by_thread = r["daemon_cpu_ms_per_session_by_thread"]
        assert isinstance(by_thread, dict)
        threads = ", ".join(f"{name} {ms:.2f}" for name, ms in by_thread.items() if ms)
        print(f"setup {label:12s} {args.clients} clients at once: {r['sessions_per_second']:.0f} sessions/s, "
              f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, "
              f"daemon CPU {r['daemon_cpu_ms_per_session']:.2f} ms per session ({threads})")
    if args.idle:
        r = run_case("RSA-2048", rsa_cert, rsa_key, "idle", args.idle)
        print(f"idle  {r['sessions']} sessions: daemon RSS {r['rss_kib'] / 1024:.0f} MiB "
              f"({r['rss_per_session_kib']:.1f} KiB per session), {r['fds_per_session']:.2f} fds per session")


if __name__ == "__main__":
    main()
