"""Per-session shaping with HTB and an IFB, measured with iperf3.

The root tests build two network namespaces joined by a veth pair. The server end is named
`sstp5` and shaped as if it were a session interface (the shaper works on any interface); iperf3
runs between the namespaces in both directions. The shaper itself runs in a child process
inside the server namespace: this file is that child's script too (see the bottom), one
operation per run, so the kernel state is all that carries over between calls, as in the daemon.

The tests without the `root` mark check the pure parts and the in-memory stand-in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.peers import require_kernel
from vpnd.aaa.ratelimit import RateLimit
from vpnd.net.link import IFNAMSIZ
from vpnd.net.shaper import MemoryShaper, Shaper, class_parameters, ifb_name
from vpnd.net.tun import open_tun

REPO = Path(__file__).resolve().parents[2]
SESSION_IF = "sstp5"
CLIENT_IF = "veth-client"
SERVER_ADDRESS = "198.18.0.1"  # RFC 2544 benchmarking addresses, only inside the namespaces
CLIENT_ADDRESS = "198.18.0.2"
TOLERANCE = 0.10
SECONDS = 4


# -- child side: runs inside the server namespace -----------------------------------------------


def child_main(operation: str, ifname: str, *rates: str) -> dict[str, Any]:
    if operation == "threaded":
        return asyncio.run(threaded_scenario(ifname))
    with Shaper() as shaper:
        if operation == "apply":
            shaper.apply(ifname, RateLimit(int(rates[0]), int(rates[1])))
        elif operation == "change":
            shaper.change(ifname, RateLimit(int(rates[0]), int(rates[1])))
        elif operation == "remove":
            shaper.remove(ifname)
        elif operation == "tun":
            return tun_scenario()
        elif operation == "state":
            return tc_state(ifname)
        else:
            raise SystemExit(f"unknown operation {operation}")
    return {"done": operation}


def tun_scenario() -> dict[str, Any]:
    """The same calls on a real TUN (no link layer): accepted, visible, and the IFB outlives a
    closed TUN until remove()."""
    seen: dict[str, Any] = {}
    with Shaper() as shaper:
        tun = open_tun("sstp9", mtu=1400)
        shaper.apply(tun.name, RateLimit(8000, 2000))
        seen["applied"] = tc_state(tun.name)
        shaper.change(tun.name, RateLimit(16000, 0))
        seen["changed"] = tc_state(tun.name)
        shaper.change(tun.name, RateLimit(16000, 4000))
        seen["upload_back"] = tc_state(tun.name)
        tun.close()
        seen["ifb_after_close"] = link_exists(ifb_name(tun.name))
        shaper.remove(tun.name)
        seen["ifb_after_remove"] = link_exists(ifb_name(tun.name))
    return seen


async def threaded_scenario(ifname: str) -> dict[str, Any]:
    """The daemon's way: the Shaper lives on one worker thread while the event loop runs."""
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vpnd-net")
    loop = asyncio.get_running_loop()
    shaper = await loop.run_in_executor(worker, Shaper)
    await loop.run_in_executor(worker, shaper.apply, ifname, RateLimit(700, 300))
    applied = await loop.run_in_executor(worker, tc_state, ifname)
    await loop.run_in_executor(worker, shaper.remove, ifname)
    await loop.run_in_executor(worker, shaper.close)
    worker.shutdown()
    return {"session_rates": applied["session"]["class_rates"], "ifb_rates": applied["ifb"]["class_rates"]}


def run_json(argv: list[str]) -> Any:
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30)
    return json.loads(done.stdout or "[]")


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True, check=False).returncode == 0


def tc_state(ifname: str) -> dict[str, Any]:
    """What `tc` reports for the interface and its IFB (both kinds, rates in bit/s)."""
    ifb = ifb_name(ifname)

    def summary(device: str) -> dict[str, Any]:
        if not link_exists(device):
            return {"exists": False}
        qdiscs = run_json(["tc", "-s", "-j", "qdisc", "show", "dev", device])
        # iproute2 6.1 prints HTB classes as text even with -j
        classes = subprocess.run(
            ["tc", "class", "show", "dev", device], capture_output=True, text=True, check=True, timeout=30
        ).stdout
        filters = run_json(["tc", "-j", "filter", "show", "dev", device, "ingress"])
        return {
            "exists": True,
            "qdiscs": {q["handle"]: {"kind": q["kind"], "bytes": q.get("bytes", 0)} for q in qdiscs},
            "class_rates": re.findall(r"^class htb \S+ .*? rate (\S+)", classes, re.MULTILINE),
            "redirects": [
                action.get("to_dev")
                for entry in filters
                for action in entry.get("options", {}).get("actions", [])
                if action.get("kind") == "mirred"
            ],
        }

    return {"session": summary(ifname), "ifb": summary(ifb)}


# -- host side: namespaces, iperf3 ---------------------------------------------------------------


def require_root_and_tools() -> None:
    """Root, ip, tc and iperf3; under CI=true, where these tests must run, fail without them."""
    require_kernel("shaper tests: network namespaces, tc", "ip", "tc", "iperf3")


@dataclass
class Lab:
    server_ns: str
    client_ns: str
    iperf_server: subprocess.Popen[bytes] | None = None

    def shaper(self, operation: str, *args: str) -> Any:
        done = subprocess.run(
            ["ip", "netns", "exec", self.server_ns, sys.executable, __file__, operation, *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=REPO,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"shaper {operation} {args} failed ({done.returncode}):\n{done.stderr}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.shaper("state", SESSION_IF)
        return state

    def measure(self, direction: str, seconds: int = SECONDS) -> float:
        """kbit/s that arrived (iperf3's receiver figure); download = server -> client."""
        argv = ["ip", "netns", "exec", self.client_ns, "iperf3", "-J", "-c", SERVER_ADDRESS]
        argv += ["-t", str(seconds)]
        if direction == "download":
            argv.append("-R")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 20, check=False)
        report = json.loads(done.stdout or "{}")
        if done.returncode != 0 or "error" in report:
            raise AssertionError(f"iperf3 {direction} failed: {report.get('error')} {done.stderr}")
        return float(report["end"]["sum_received"]["bits_per_second"]) / 1000


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=30, capture_output=True)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_root_and_tools()
    tag = secrets.token_hex(4)
    setup = Lab(server_ns=f"vpndt-{tag}-s", client_ns=f"vpndt-{tag}-c")
    try:
        for namespace in (setup.server_ns, setup.client_ns):
            _ip("netns", "add", namespace)
            _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", setup.server_ns, "link", "add", SESSION_IF, "type", "veth", "peer", "name", CLIENT_IF,
            "netns", setup.client_ns)
        _ip("-n", setup.server_ns, "addr", "add", f"{SERVER_ADDRESS}/30", "dev", SESSION_IF)
        _ip("-n", setup.client_ns, "addr", "add", f"{CLIENT_ADDRESS}/30", "dev", CLIENT_IF)
        _ip("-n", setup.server_ns, "link", "set", SESSION_IF, "up")
        _ip("-n", setup.client_ns, "link", "set", CLIENT_IF, "up")
        setup.iperf_server = subprocess.Popen(
            ["ip", "netns", "exec", setup.server_ns, "iperf3", "-s", "-B", SERVER_ADDRESS],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)  # let iperf3 bind before the first client
        yield setup
    finally:
        if setup.iperf_server is not None:
            setup.iperf_server.send_signal(signal.SIGTERM)
            try:
                setup.iperf_server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                setup.iperf_server.kill()
                setup.iperf_server.wait(timeout=5)
        for namespace in (setup.server_ns, setup.client_ns):
            subprocess.run(["ip", "netns", "del", namespace], check=False, timeout=30, capture_output=True)


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n    {line}")


def assert_within(measured: float, limit: int, what: str) -> None:
    assert limit * (1 - TOLERANCE) <= measured <= limit * (1 + TOLERANCE), (
        f"{what}: measured {measured:.0f} kbit/s, limit {limit} kbit/s"
    )


# -- root tests ----------------------------------------------------------------------------------


@pytest.mark.root
def test_limits_hold_both_ways_change_live_and_remove_cleans_up(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    # Unshaped, the veth is far faster than any limit below: the limits are what we measure.
    baseline = lab.measure("upload", seconds=1)
    report(capsys, f"unshaped veth: {baseline:.0f} kbit/s")
    assert baseline > 50_000

    lab.shaper("apply", SESSION_IF, "5000", "1000")
    applied = lab.state()
    assert applied["session"]["qdiscs"]["1:"]["kind"] == "htb"
    assert applied["session"]["qdiscs"]["ffff:"]["kind"] == "ingress"
    assert applied["session"]["redirects"] == [ifb_name(SESSION_IF)]
    assert applied["ifb"]["qdiscs"]["1:"]["kind"] == "htb"

    download = lab.measure("download")
    upload = lab.measure("upload")
    report(capsys, f"5000/1000 kbit/s: download {download:.0f}, upload {upload:.0f} kbit/s")
    assert_within(download, 5000, "download")
    assert_within(upload, 1000, "upload")

    before = lab.state()
    ifb_index_before = run_json(["ip", "-n", lab.server_ns, "-j", "link", "show", ifb_name(SESSION_IF)])[0][
        "ifindex"
    ]
    lab.shaper("change", SESSION_IF, "2000", "3000")
    after = lab.state()
    # Same qdiscs and the same IFB: their byte counters carried on instead of starting at zero.
    for device in ("session", "ifb"):
        assert after[device]["qdiscs"].keys() == before[device]["qdiscs"].keys()
        assert after[device]["qdiscs"]["1:"]["bytes"] >= before[device]["qdiscs"]["1:"]["bytes"] > 0
    assert after["session"]["redirects"] == [ifb_name(SESSION_IF)]
    ifb_index_after = run_json(["ip", "-n", lab.server_ns, "-j", "link", "show", ifb_name(SESSION_IF)])[0][
        "ifindex"
    ]
    assert ifb_index_after == ifb_index_before

    download = lab.measure("download")
    upload = lab.measure("upload")
    report(capsys, f"changed to 2000/3000 kbit/s: download {download:.0f}, upload {upload:.0f} kbit/s")
    assert_within(download, 2000, "download after change")
    assert_within(upload, 3000, "upload after change")

    lab.shaper("remove", SESSION_IF)
    removed = lab.state()
    assert removed["ifb"] == {"exists": False}
    assert all(q["kind"] not in ("ingress", "htb") for q in removed["session"]["qdiscs"].values())
    assert removed["session"]["redirects"] == []
    lab.shaper("remove", SESSION_IF)  # a second remove is harmless


@pytest.mark.root
def test_tun_interface_is_shaped_and_ifb_outlives_it_until_remove(lab: Lab) -> None:
    seen = lab.shaper("tun", "sstp9")
    applied = seen["applied"]
    assert applied["session"]["qdiscs"]["1:"]["kind"] == "htb"
    assert applied["session"]["class_rates"] == ["8Mbit"]
    assert applied["ifb"]["class_rates"] == ["2Mbit"]
    assert applied["session"]["redirects"] == ["ifbsstp9"]
    # Upload to 0 = not limited: redirect and IFB go, download is changed in place.
    changed = seen["changed"]
    assert changed["session"]["class_rates"] == ["16Mbit"]
    assert "ffff:" not in changed["session"]["qdiscs"]
    assert changed["ifb"] == {"exists": False}
    assert seen["upload_back"]["ifb"]["class_rates"] == ["4Mbit"]
    assert seen["upload_back"]["session"]["redirects"] == ["ifbsstp9"]
    assert seen["ifb_after_close"] is True
    assert seen["ifb_after_remove"] is False


@pytest.mark.root
def test_shaper_runs_on_a_worker_thread_beside_a_running_event_loop(lab: Lab) -> None:
    seen = lab.shaper("threaded", SESSION_IF)
    assert seen == {"session_rates": ["700Kbit"], "ifb_rates": ["300Kbit"]}
    assert lab.state()["ifb"] == {"exists": False}


@pytest.mark.root
def test_missing_interface_and_foreign_device_are_errors(lab: Lab) -> None:
    with pytest.raises(AssertionError, match="interface nosuch0 does not exist"):
        lab.shaper("apply", "nosuch0", "1000", "1000")
    # A device that happens to carry the IFB's name but is not an IFB is left alone.
    _ip("-n", lab.server_ns, "link", "add", ifb_name("other0"), "type", "veth", "peer", "name", "other0")
    with pytest.raises(AssertionError, match="ifbother0 exists and is not an IFB device"):
        lab.shaper("apply", "other0", "1000", "1000")
    foreign = run_json(["ip", "-n", lab.server_ns, "-j", "link", "show", "ifbother0"])
    assert foreign[0]["ifname"] == "ifbother0"


# -- no root needed ------------------------------------------------------------------------------


def test_ifb_names_fit_and_differ() -> None:
    assert ifb_name("sstp0") == "ifbsstp0"
    assert ifb_name("sstp12345678") == "ifbsstp12345678"
    long_names = {ifb_name(f"sstp{n:011d}") for n in range(100)}
    assert len(long_names) == 100
    assert all(len(name) < IFNAMSIZ and name.startswith("ifb") for name in long_names)
    assert ifb_name("0") != "ifb0"  # the kernel's own ifbN devices are not ours


def test_class_parameters_scale_with_rate() -> None:
    slow = class_parameters(1000, 1400)
    assert slow.rate_bytes == 125_000
    assert slow.burst_bytes == 2800  # 10 ms would be 1250 bytes: two packets instead
    assert slow.queue_packets == 16
    fast = class_parameters(100_000, 1400)
    assert fast.burst_bytes == 125_000  # 10 ms at 100 Mbit/s
    assert fast.queue_packets == 893  # 100 ms of 1400-byte packets
    assert class_parameters(10_000_000, 1500).queue_packets == 1000
    with pytest.raises(ValueError, match="not a limit"):
        class_parameters(0, 1500)


def test_memory_shaper_keeps_rates_per_interface() -> None:
    shaper = MemoryShaper()
    shaper.apply("sstp0", RateLimit(5000, 1000))
    shaper.change("sstp0", RateLimit(2000, 0))
    shaper.apply("sstp1", RateLimit(64, 64))
    shaper.remove("sstp1")
    assert shaper.shaped == {"sstp0": (2000, 0)}
    assert [call[0] for call in shaper.calls] == ["apply", "change", "apply", "remove"]


if __name__ == "__main__":
    # Child-process entry: `python test_shaper.py OPERATION IFNAME [DOWN UP]`, in the namespace.
    print(json.dumps(child_main(*sys.argv[1:])), flush=True)
