"""What one Prometheus scrape costs the daemon, by the number of sessions.

A scrape gathers the metric families on the event loop (one pass over the sessions for their
states and traffic counters) and formats them on the HTTP server's thread. This prints, for each
session count, the loop's share (``families()``, the time the loop is held) and the whole scrape
through the endpoint over loopback, in milliseconds (median of REPEAT), and the response size.
The sessions are stand-ins carrying the fields the collector reads: no TLS, no TUN.

usage: python bench/metrics_scrape.py [--sessions 0,1000,10000,50000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vpnd.config.model import model_from_tree
from vpnd.config.tree import ConfigTree
from vpnd.net.link import MemoryNet
from vpnd.server.daemon import Daemon
from vpnd.server.metrics import DaemonCollector, MetricsEndpoint
from vpnd.server.tls import make_self_signed


def _daemon(workdir: Path) -> Daemon:
    cert, key = make_self_signed(workdir, "bench.metrics")
    config = model_from_tree(ConfigTree.from_commands(f"""
set vpn sstp authentication local-users username alice password 'pw'
set vpn sstp client-ip-pool P range '10.0.0.0/16'
set vpn sstp default-pool 'P'
set vpn sstp gateway-address '10.255.0.1'
set vpn sstp ssl cert-file '{cert}'
set vpn sstp ssl key-file '{key}'
"""))
    return Daemon(config, listen_host="127.0.0.1", net=MemoryNet())


def _stand_ins(daemon: Daemon, count: int) -> None:
    daemon.connections.clear()
    for number in range(count):
        connection = SimpleNamespace(
            info=SimpleNamespace(state="active" if number % 50 else "starting"),
            session=SimpleNamespace(rx_bytes=number * 1000, tx_bytes=number * 3000, rx_packets=number,
                                    tx_packets=number * 2))
        daemon.connections[f"s{number}"] = connection  # type: ignore[assignment]


def _fetch(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return len(answer.read())


async def _run(counts: list[int], repeat: int) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        daemon = _daemon(Path(workdir))
        collector = DaemonCollector(daemon, asyncio.get_running_loop())
        endpoint = MetricsEndpoint(daemon)
        await endpoint.serve(("127.0.0.1", 0))
        assert endpoint.address is not None
        url = f"http://127.0.0.1:{endpoint.address[1]}/metrics"
        print(f"{'sessions':>9} {'loop ms':>9} {'scrape ms':>10} {'bytes':>7}")
        try:
            for count in counts:
                _stand_ins(daemon, count)
                loop_times, scrape_times, size = [], [], 0
                for _ in range(repeat):
                    started = time.perf_counter()
                    collector.families()
                    loop_times.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    size = await asyncio.to_thread(_fetch, url)
                    scrape_times.append(time.perf_counter() - started)
                print(f"{count:>9} {statistics.median(loop_times) * 1000:>9.2f} "
                      f"{statistics.median(scrape_times) * 1000:>10.2f} {size:>7}")
        finally:
            await endpoint.serve(None)
            daemon.connections.clear()
            daemon.net.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", default="0,1000,10000,50000")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(_run([int(n) for n in args.sessions.split(",")], args.repeat))


if __name__ == "__main__":
    main()
