"""The Prometheus endpoint: the config node and its rules, the bucket counts, and a real daemon's
endpoint scraped over HTTP on 127.0.0.1 (no root: the daemon runs on the in-memory data plane and
serves no session; tests/e2e/test_prometheus.py scrapes one with live sessions through Prometheus).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.netns import REPO
from vpnd.config.definitions import Config
from vpnd.config.errors import ConfigError
from vpnd.config.model import model_from_tree
from vpnd.config.tree import ConfigTree
from vpnd.config.verify import verify
from vpnd.histogram import Histogram
from vpnd.net.link import MemoryNet
from vpnd.server import metrics
from vpnd.server.daemon import Daemon
from vpnd.server.limits import ThrottleReason
from vpnd.server.metrics import MetricsEndpoint
from vpnd.server.plan import build_plan
from vpnd.server.tls import make_self_signed

BASE = """
set vpn sstp authentication local-users username alice password 'alice-pw'
set vpn sstp client-ip-pool P range '10.0.0.2-10.0.0.100'
set vpn sstp default-pool 'P'
set vpn sstp gateway-address '10.0.0.1'
"""


class _Probe:
    def __init__(self, taken: dict[int, str] | None = None) -> None:
        self.taken = taken or {}

    def port_in_use(self, port: int) -> str | None:
        return self.taken.get(port)


def _model(extra: str) -> Config:
    return model_from_tree(ConfigTree.from_commands(BASE + extra))


def _messages(extra: str, probe: _Probe | None = None) -> tuple[list[str], list[str]]:
    result = verify(_model(extra), probe or _Probe())
    return ([m for m in result.errors if "prometheus" in m],
            [m for m in result.warnings if "prometheus" in m])


# --- config ------------------------------------------------------------------------------------


def test_off_by_default_and_on_with_defaults() -> None:
    sstp = _model("").vpn.sstp
    assert sstp is not None and sstp.prometheus is None
    sstp = _model("set vpn sstp prometheus\n").vpn.sstp
    assert sstp is not None and sstp.prometheus is not None
    assert (sstp.prometheus.listen_address, sstp.prometheus.port) == (IPv4Address("127.0.0.1"), 9101)
    assert _messages("set vpn sstp prometheus\n") == ([], [])


def test_port_of_the_sstp_listener_is_refused() -> None:
    errors, _ = _messages("set vpn sstp port 8443\nset vpn sstp prometheus port 8443\n")
    assert errors == ["vpn sstp prometheus port 8443: TCP port 8443 is the SSTP listener's (vpn sstp port), "
                      "which listens on every address"]


def test_port_taken_by_another_program_is_refused() -> None:
    errors, _ = _messages("set vpn sstp prometheus port 9200\n", _Probe({9200: "node_exporter (pid 7)"}))
    assert errors == ["vpn sstp prometheus port 9200: TCP port 9200 is in use by node_exporter (pid 7)"]


def test_addresses() -> None:
    errors, _ = _messages("set vpn sstp prometheus listen-address 224.0.0.1\n")
    assert errors == ["vpn sstp prometheus listen-address 224.0.0.1: a multicast address cannot be "
                      "listened on"]
    errors, warnings = _messages("set vpn sstp prometheus listen-address 0.0.0.0\n")
    assert errors == [] and len(warnings) == 1 and "every address" in warnings[0]
    assert _messages("set vpn sstp prometheus listen-address 2001:db8::1\n") == ([], [])
    with pytest.raises(ConfigError, match=r'"300\.1\.1\.1" is not a valid IPv4 or IPv6 address'):
        _model("set vpn sstp prometheus listen-address 300.1.1.1\n")
    with pytest.raises(ConfigError, match="port 70000: value 70000 out of range 1-65535"):
        _model("set vpn sstp prometheus port 70000\n")


# --- bucket counts -----------------------------------------------------------------------------


def test_histogram_buckets_are_inclusive_upper_bounds() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(0.1, 2), (1.0, 4), (float("inf"), 5)]
    assert histogram.count == 5 and histogram.sum == pytest.approx(8.65)
    with pytest.raises(ValueError, match="increasing"):
        Histogram((1.0, 0.5))


# --- a daemon's endpoint -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[str]:
    cert, key = make_self_signed(tmp_path, "vpn.metrics.test")
    yield f"set vpn sstp ssl cert-file '{cert}'\nset vpn sstp ssl key-file '{key}'\n"


def _fetch(address: tuple[str, int]) -> str:
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics", timeout=10) as answer:
        return str(answer.read().decode())


def _scrape(address: tuple[str, int]) -> dict[str, float]:
    """Every sample of the endpoint as "name{label=value,...}" -> value."""
    samples = {}
    for family in text_string_to_metric_families(_fetch(address)):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "info": ("_info",)}


def _exported_names(address: tuple[str, int]) -> set[str]:
    """The sample names the endpoint's families have, also those with no sample yet (a cause
    nobody was refused for): what a query may read."""
    return {family.name + suffix for family in text_string_to_metric_families(_fetch(address))
            for suffix in SAMPLE_SUFFIXES.get(family.type, ("",))}


def test_daemon_serves_moves_and_closes_the_endpoint(tls: str) -> None:
    sstp_port, first, second = _free_port(), _free_port(), _free_port()
    config = _model(f"{tls}set vpn sstp port {sstp_port}\nset vpn sstp prometheus port {first}\n")

    async def scenario() -> None:
        daemon = Daemon(config, listen_host="127.0.0.1", net=MemoryNet())
        await daemon.start()
        try:
            assert daemon.metrics is not None and daemon.metrics.address == ("127.0.0.1", first)
            # The scrape runs on the server's thread and is answered by this loop meanwhile.
            samples = await asyncio.to_thread(_scrape, ("127.0.0.1", first))
            assert samples["vpnd_sessions{state=active}"] == 0
            assert samples["vpnd_sessions{state=starting}"] == 0
            assert samples["vpnd_pool_size{pool=P}"] == 99
            assert samples["vpnd_pool_used{pool=P}"] == 0
            assert samples["vpnd_workers{}"] == 1
            assert samples["vpnd_session_setup_duration_seconds_count{}"] == 0
            assert samples["vpnd_session_bytes_total{direction=rx}"] == 0
            build = next(name for name in samples if name.startswith("vpnd_build_info{"))
            assert "event_loop=asyncio" in build and "version=" in build
            assert samples["process_open_fds{}"] > 0
            assert not any(name.startswith("vpnd_radius_") for name in samples)  # local authentication

            new = _model(f"{tls}set vpn sstp port {sstp_port}\nset vpn sstp prometheus port {second}\n")
            daemon.apply(build_plan(daemon.config, new))
            await _until(lambda: daemon.metrics is not None
                         and daemon.metrics.address == ("127.0.0.1", second))
            assert "vpnd_workers{}" in await asyncio.to_thread(_scrape, ("127.0.0.1", second))
            with pytest.raises(urllib.error.URLError):
                await asyncio.to_thread(_scrape, ("127.0.0.1", first))

            daemon.apply(build_plan(daemon.config, _model(f"{tls}set vpn sstp port {sstp_port}\n")))
            await _until(lambda: daemon.metrics is not None and daemon.metrics.address is None)
        finally:
            await daemon.stop()
        with pytest.raises(urllib.error.URLError):
            await asyncio.to_thread(_scrape, ("127.0.0.1", second))

    asyncio.run(scenario())


def test_counters_by_cause_and_reason_appear_without_more_work(tls: str) -> None:
    """Any refusal cause the daemon counts, and every reason the login throttle holds for, is exported."""
    config = _model(tls)

    async def scenario() -> None:
        daemon = Daemon(config, listen_host="127.0.0.1", net=MemoryNet())
        daemon.refuse("refused_connection_rate", "192.0.2.7", "refused a connection from 192.0.2.7")
        daemon.stats.throttled[ThrottleReason.PAIR] += 2
        daemon.stats.throttled[ThrottleReason.SPRAYING_ADDRESS] += 1
        daemon.stats.setup_failures["auth_failed"] += 1
        endpoint = MetricsEndpoint(daemon)
        await endpoint.serve(("127.0.0.1", 0))
        try:
            assert endpoint.address is not None
            samples = await asyncio.to_thread(_scrape, endpoint.address)
        finally:
            await endpoint.serve(None)
            daemon.net.close()
        assert samples["vpnd_refusals_total{cause=refused_connection_rate}"] == 1
        assert samples["vpnd_auth_throttled_total{}"] == 3
        assert samples["vpnd_auth_throttled_by_reason_total{reason=pair}"] == 2
        assert samples["vpnd_auth_throttled_by_reason_total{reason=spraying_address}"] == 1
        assert samples["vpnd_session_setup_failures_total{cause=auth_failed}"] == 1
        assert samples["vpnd_auth_throttled_by_reason_total{reason=user}"] == 0
        assert samples["vpnd_auth_throttle_entries{table=failing_pairs}"] == 0

    asyncio.run(scenario())


def test_a_taken_port_refuses_the_start_and_a_commit_keeps_the_daemon(
        tls: str, caplog: pytest.LogCaptureFixture) -> None:
    sstp_port, metrics_port = _free_port(), _free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", metrics_port))
        squatter.listen()
        taken = _model(f"{tls}set vpn sstp port {sstp_port}\nset vpn sstp prometheus port {metrics_port}\n")

        async def refused_start() -> None:
            daemon = Daemon(taken, listen_host="127.0.0.1", net=MemoryNet())
            with pytest.raises(OSError, match=f"metrics endpoint 127.0.0.1 port {metrics_port}: "
                                              "Address already in use"):
                await daemon.start()
            daemon.net.close()

        asyncio.run(refused_start())

        async def refused_commit() -> None:
            daemon = Daemon(_model(f"{tls}set vpn sstp port {sstp_port}\n"), listen_host="127.0.0.1",
                            net=MemoryNet())
            await daemon.start()
            try:
                daemon.apply(build_plan(daemon.config, taken))
                await _until(lambda: "metrics endpoint not served" in caplog.text)
                assert daemon.metrics is not None and daemon.metrics.address is None
                with socket.create_connection(("127.0.0.1", sstp_port), timeout=5):
                    pass  # the SSTP listener still accepts
            finally:
                await daemon.stop()

        asyncio.run(refused_commit())


def test_a_scrape_while_the_loop_is_stuck_fails_alone(tls: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop that does not answer in time fails that scrape (HTTP 500), not the endpoint."""
    monkeypatch.setattr(metrics, "SCRAPE_TIMEOUT", 0.2)
    config = _model(tls)

    async def scenario() -> None:
        daemon = Daemon(config, listen_host="127.0.0.1", net=MemoryNet())
        endpoint = MetricsEndpoint(daemon)
        await endpoint.serve(("127.0.0.1", 0))
        try:
            address = endpoint.address
            assert address is not None
            scrape = asyncio.ensure_future(asyncio.to_thread(_scrape, address))
            await asyncio.sleep(0)  # the scrape's thread is on its way
            time.sleep(1.0)  # the loop is stuck (on purpose) past the scrape's patience
            with pytest.raises(urllib.error.HTTPError, match="500"):
                await scrape
            assert (await asyncio.to_thread(_scrape, address))["vpnd_workers{}"] == 1
        finally:
            await endpoint.serve(None)
            daemon.net.close()

    asyncio.run(scenario())


def test_radius_servers_are_labelled_and_counted_from_the_client(tls: str) -> None:
    config = _model(f"{tls}set vpn sstp authentication mode radius\n"
                    "set vpn sstp authentication radius server 192.0.2.10 key 's3cret'\n"
                    "set vpn sstp authentication radius server 192.0.2.11 key 's3cret'\n")

    async def scenario() -> None:
        daemon = Daemon(config, listen_host="127.0.0.1", net=MemoryNet())
        assert daemon.aaa.radius is not None
        first = daemon.aaa.radius.server_statistics(daemon.aaa.radius.servers[0])
        first.requests, first.timeouts, first.failed_until = 3, 2, float("inf")
        first.latency.observe(0.004)
        endpoint = MetricsEndpoint(daemon)
        await endpoint.serve(("127.0.0.1", 0))
        try:
            assert endpoint.address is not None
            samples = await asyncio.to_thread(_scrape, endpoint.address)
        finally:
            await endpoint.serve(None)
        assert samples["vpnd_radius_state{server=192.0.2.10}"] == 0
        assert samples["vpnd_radius_state{server=192.0.2.11}"] == 1
        assert samples["vpnd_radius_requests_total{server=192.0.2.10}"] == 3
        assert samples["vpnd_radius_timeouts_total{server=192.0.2.10}"] == 2
        assert samples["vpnd_radius_request_duration_seconds_bucket{le=0.005,server=192.0.2.10}"] == 1
        assert samples["vpnd_radius_request_duration_seconds_bucket{le=0.002,server=192.0.2.10}"] == 0
        assert samples["vpnd_radius_request_duration_seconds_count{server=192.0.2.11}"] == 0
        assert samples["vpnd_radius_dropped_replies_total{reason=bad_authenticator,server=192.0.2.10}"] == 0
        daemon.net.close()

    asyncio.run(scenario())


def test_every_metric_of_the_dashboard_is_exported(tls: str, tmp_path: Path) -> None:
    """The Grafana dashboard reads only metrics a daemon with RADIUS, accounting and dynamic
    authorization exports (tests/e2e/test_prometheus.py also runs its queries in Prometheus)."""
    panels = json.loads((REPO / "packaging" / "grafana-vpnd.json").read_text())["panels"]
    expressions = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    read = {name for expression in expressions
            for name in re.findall(r"\b(?:vpnd|process)_[a-z_]+\b", expression)}
    assert len(expressions) >= 20 and len(read) >= 20
    radius_port, dae_port = _free_port(), _free_port()  # nobody answers on 127.0.0.1: no traffic leaves
    config = _model(f"{tls}set vpn sstp port {_free_port()}\nset vpn sstp authentication mode radius\n"
                    f"set vpn sstp authentication radius server 127.0.0.1 key 's3cret'\n"
                    f"set vpn sstp authentication radius server 127.0.0.1 port {radius_port}\n"
                    f"set vpn sstp authentication radius server 127.0.0.1 acct-port {radius_port}\n"
                    "set vpn sstp authentication radius dynamic-author server 127.0.0.1\n"
                    f"set vpn sstp authentication radius dynamic-author port {dae_port}\n"
                    "set vpn sstp authentication radius dynamic-author key 'dae-s3cret'\n"
                    f"set vpn sstp prometheus port {_free_port()}\n")

    async def scenario() -> set[str]:
        daemon = Daemon(config, listen_host="127.0.0.1", net=MemoryNet(), state_dir=tmp_path / "state")
        await daemon.start()
        try:
            assert daemon.metrics is not None and daemon.metrics.address is not None
            return await asyncio.to_thread(_exported_names, daemon.metrics.address)
        finally:
            await daemon.stop()

    exported = asyncio.run(scenario())
    assert read <= exported, f"the dashboard reads what is not exported: {sorted(read - exported)}"


async def _until(condition: object, timeout: float = 10) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
