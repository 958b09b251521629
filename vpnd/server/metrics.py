"""Prometheus metrics, read from the daemon's own counters when Prometheus scrapes.

prometheus_client's HTTP server answers on a thread of its own. A scrape asks the event loop for
the metric families (one pass over the counters and sessions the daemon keeps anyway; nothing is
counted per packet for metrics) and formats them on that thread: the daemon's state is read only
on the loop, and the loop never waits for a socket.

Names follow accel-ppp's exporters where there is a counterpart (sessions by state, per-RADIUS-
server requests, losses, state), prefixed ``vpnd_``; causes, reasons and results are labels.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import platform
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric

import vpnd
from vpnd.histogram import Histogram
from vpnd.server.limits import ThrottleReason

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from vpnd.aaa.accounting import Accounting
    from vpnd.aaa.dae import DaeCounters
    from vpnd.aaa.radius import RadiusClient
    from vpnd.ipam.pool import Ipam
    from vpnd.ipam.prefix_pool import PrefixIpam
    from vpnd.server.aaa import AaaServices
    from vpnd.server.connection import ServerConnection
    from vpnd.server.limits import AuthThrottle
    from vpnd.server.statistics import Statistics

SCRAPE_TIMEOUT = 5.0  # seconds a scrape waits for the loop; a stuck loop fails the scrape instead
DAE_DROP_PREFIX = "dropped_"


class MetricsSource(Protocol):
    """What the exporter reads of the daemon (on its loop): a protocol, so that this module does
    not import the daemon that serves it."""

    workers: int
    stats: Statistics
    connections: dict[str, ServerConnection]
    auth_throttle: AuthThrottle | None
    ipam: Ipam
    ipam6: PrefixIpam
    aaa: AaaServices

    def now(self) -> float: ...


class DaemonCollector:
    """The daemon's metrics, gathered on its event loop whichever thread asks."""

    def __init__(self, daemon: MetricsSource, loop: asyncio.AbstractEventLoop) -> None:
        self._daemon = daemon
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def collect(self) -> Iterable[Metric]:
        if threading.get_ident() == self._loop_thread:
            return self.families()
        answer: concurrent.futures.Future[list[Metric]] = concurrent.futures.Future()

        def gather() -> None:
            if not answer.set_running_or_notify_cancel():
                return  # the scrape gave up waiting
            try:
                answer.set_result(self.families())
            except Exception as error:  # reported to the scraper as an HTTP error, not lost
                answer.set_exception(error)

        self._loop.call_soon_threadsafe(gather)
        try:
            return answer.result(timeout=SCRAPE_TIMEOUT)
        except concurrent.futures.TimeoutError:
            answer.cancel()
            raise

    def families(self) -> list[Metric]:
        """Every metric family, from the daemon's state as it is now (on the loop thread)."""
        daemon = self._daemon
        out = [*self._build(), *self._sessions(), *self._refusals()]
        out.extend(self._pools())
        if daemon.aaa.radius is not None:
            out.extend(_radius(daemon.aaa.radius))
        if daemon.aaa.accounting is not None:
            out.extend(_accounting(daemon.aaa.accounting))
        if daemon.aaa.dae is not None:
            out.extend(_dae(daemon.aaa.dae.counters))
        return out

    def _build(self) -> Iterator[Metric]:
        info = InfoMetricFamily("vpnd_build", "vpnd's version, Python and event loop")
        info.add_metric([], {"version": vpnd.__version__, "python": platform.python_version(),
                             "event_loop": type(self._loop).__module__.split(".")[0]})
        yield info
        yield GaugeMetricFamily("vpnd_workers", "Daemon processes serving sessions",
                                value=self._daemon.workers)
        yield GaugeMetricFamily("vpnd_start_time_seconds", "When the daemon started (Unix time)",
                                value=self._daemon.stats.started)

    def _sessions(self) -> Iterator[Metric]:
        daemon = self._daemon
        stats = daemon.stats
        states = {"starting": 0, "active": 0}
        rx_bytes, tx_bytes = stats.counters["rx_bytes"], stats.counters["tx_bytes"]
        rx_packets, tx_packets = stats.counters["rx_packets"], stats.counters["tx_packets"]
        # Ended sessions' traffic was added to the counters when they closed; live sessions' is
        # read from the counters their data path keeps.
        for connection in daemon.connections.values():
            state = connection.info.state
            if state in states:
                states[state] += 1
            session = connection.session
            rx_bytes += session.rx_bytes
            tx_bytes += session.tx_bytes
            rx_packets += session.rx_packets
            tx_packets += session.tx_packets
        sessions = GaugeMetricFamily("vpnd_sessions", "Sessions by state (starting: not up yet)",
                                     labels=["state"])
        for state, count in states.items():
            sessions.add_metric([state], count)
        yield sessions
        yield _labelled(CounterMetricFamily, "vpnd_session_bytes",
                        "Bytes of user traffic: rx from clients, tx to clients", "direction",
                        {"rx": rx_bytes, "tx": tx_bytes})
        yield _labelled(CounterMetricFamily, "vpnd_session_packets",
                        "Packets of user traffic: rx from clients, tx to clients", "direction",
                        {"rx": rx_packets, "tx": tx_packets})
        yield CounterMetricFamily("vpnd_session_setups", "Sessions that came up (a network protocol up)",
                                  value=stats.counters["sessions_established"])
        yield _labelled(CounterMetricFamily, "vpnd_session_setup_failures",
                        "Connections that ended before their session came up, by the first cause",
                        "cause", stats.setup_failures)
        yield _histogram("vpnd_session_setup_duration_seconds",
                         "Time from TCP accept to the session's first network protocol up", [],
                         [([], stats.setup_seconds)])

    def _refusals(self) -> Iterator[Metric]:
        stats = self._daemon.stats
        yield _labelled(CounterMetricFamily, "vpnd_refusals", "Connections and logins refused, by cause",
                        "cause", stats.refusals())
        counters = stats.counters
        held = {reason.value: stats.throttled[reason] for reason in ThrottleReason}
        yield CounterMetricFamily("vpnd_auth_throttled", "Authentication attempts held back after "
                                  "recent failures", value=sum(held.values()))
        yield _labelled(CounterMetricFamily, "vpnd_auth_throttled_by_reason",
                        "Authentication attempts held back, by the reason that set the wait", "reason", held)
        throttle = self._daemon.auth_throttle
        if throttle is not None:
            yield _labelled(GaugeMetricFamily, "vpnd_auth_throttle_entries",
                            "What the login throttle remembers, by table", "table",
                            asdict(throttle.tables(self._daemon.now())))
        yield _labelled(CounterMetricFamily, "vpnd_events",
                        "Every counter of `vpnd show statistics`, by its name", "event", counters)

    def _pools(self) -> Iterator[Metric]:
        daemon = self._daemon
        size = GaugeMetricFamily("vpnd_pool_size", "Addresses in an IPv4 pool", labels=["pool"])
        used = GaugeMetricFamily("vpnd_pool_used", "Addresses of an IPv4 pool held by sessions",
                                 labels=["pool"])
        for name, usage in daemon.ipam.usage().items():
            size.add_metric([name], usage.total)
            used.add_metric([name], usage.used)
        yield size
        yield used
        size6 = GaugeMetricFamily("vpnd_ipv6_pool_size", "Prefixes in an IPv6 pool, by kind (prefix, "
                                  "delegate)", labels=["pool", "kind"])
        used6 = GaugeMetricFamily("vpnd_ipv6_pool_used", "Prefixes of an IPv6 pool held by sessions, by "
                                  "kind", labels=["pool", "kind"])
        for name, usage6 in daemon.ipam6.usage().items():
            for kind, space in (("prefix", usage6.prefix), ("delegate", usage6.delegate)):
                if space.total:
                    size6.add_metric([name, kind], space.total)
                    used6.add_metric([name, kind], space.used)
        yield size6
        yield used6


def _radius(client: RadiusClient) -> Iterator[Metric]:
    label = ["server"]
    state = GaugeMetricFamily("vpnd_radius_state", "RADIUS server state: 1 active, 0 failed (inside its "
                              "fail-time)", labels=label)
    requests = CounterMetricFamily("vpnd_radius_requests", "Requests sent to a RADIUS server (first "
                                   "transmissions)", labels=label)
    retransmissions = CounterMetricFamily("vpnd_radius_retransmissions", "Requests sent again after a "
                                          "try went unanswered", labels=label)
    timeouts = CounterMetricFamily("vpnd_radius_timeouts", "Tries left unanswered", labels=label)
    failures = CounterMetricFamily("vpnd_radius_failures", "Requests given up on a server after max-try "
                                   "unanswered tries", labels=label)
    replies = CounterMetricFamily("vpnd_radius_replies", "Verified replies, by code",
                                  labels=["server", "code"])
    dropped = CounterMetricFamily("vpnd_radius_dropped_replies", "Replies dropped, by reason "
                                  "(bad_authenticator includes unsigned replies)",
                                  labels=["server", "reason"])
    latencies: list[tuple[list[str], Histogram]] = []
    for stats, active in client.server_states():
        server = [stats.server]
        state.add_metric(server, 1 if active else 0)
        requests.add_metric(server, stats.requests)
        retransmissions.add_metric(server, stats.retransmissions)
        timeouts.add_metric(server, stats.timeouts)
        failures.add_metric(server, stats.failures)
        for code, count in (("access_accept", stats.accepts), ("access_reject", stats.rejects),
                            ("access_challenge", stats.challenges),
                            ("accounting_response", stats.accounting_responses)):
            replies.add_metric([*server, code], count)
        dropped.add_metric([*server, "bad_authenticator"], stats.dropped_bad_authenticator)
        dropped.add_metric([*server, "malformed"], stats.dropped_malformed)
        latencies.append((server, stats.latency))
    yield from (state, requests, retransmissions, timeouts, failures, replies, dropped)
    yield _histogram("vpnd_radius_request_duration_seconds", "Time from a request's last transmission "
                     "to its verified reply", label, latencies)
    yield CounterMetricFamily("vpnd_radius_unmatched_replies", "Datagrams from addresses that are no "
                              "configured server", value=client.unmatched_replies)


def _accounting(accounting: Accounting) -> Iterator[Metric]:
    stats = accounting.stats()
    spool = stats.spool
    yield GaugeMetricFamily("vpnd_accounting_spool_records", "Accounting records waiting for an "
                            "acknowledgement", value=spool.records)
    yield GaugeMetricFamily("vpnd_accounting_spool_bytes", "Size of the waiting accounting records",
                            value=spool.bytes)
    yield GaugeMetricFamily("vpnd_accounting_spool_oldest_age_seconds", "Age of the oldest waiting "
                            "accounting record (0 when none waits)", value=spool.oldest_age or 0.0)
    yield _labelled(CounterMetricFamily, "vpnd_accounting_spool_refused", "Records the full spool "
                    "refused, by kind", "kind", spool.refused)
    yield CounterMetricFamily("vpnd_accounting_spool_evicted_interims", "Interim-Updates dropped to make "
                              "room in a full spool", value=spool.evicted_interims)
    yield CounterMetricFamily("vpnd_accounting_records_sent", "Accounting records acknowledged by a "
                              "server", value=stats.sent)
    yield CounterMetricFamily("vpnd_accounting_failed_attempts", "Sends of a record no server answered",
                              value=stats.failed_attempts)
    yield GaugeMetricFamily("vpnd_accounting_servers_down", "1 while no accounting server answers and "
                            "records wait in the spool", value=1 if stats.servers_down else 0)


def _dae(counters: DaeCounters) -> Iterator[Metric]:
    requests = CounterMetricFamily("vpnd_dae_requests", "Disconnect and CoA requests answered, by type "
                                   "and result", labels=["type", "result"])
    for kind, result, count in (("disconnect", "ack", counters.disconnect_acks),
                                ("disconnect", "nak", counters.disconnect_naks),
                                ("coa", "ack", counters.coa_acks), ("coa", "nak", counters.coa_naks)):
        requests.add_metric([kind, result], count)
    yield requests
    yield _labelled(CounterMetricFamily, "vpnd_dae_dropped", "Dynamic authorization requests dropped "
                    "unanswered, by reason", "reason",
                    {f.name.removeprefix(DAE_DROP_PREFIX): getattr(counters, f.name)
                     for f in fields(counters) if f.name.startswith(DAE_DROP_PREFIX)})
    yield CounterMetricFamily("vpnd_dae_duplicates", "Retransmitted requests answered again from the "
                              "cache", value=counters.duplicates)
    yield _labelled(CounterMetricFamily, "vpnd_dae_nak_error_causes", "NAKs by RFC 5176 Error-Cause",
                    "error_cause",
                    {str(cause): count for cause, count in counters.naks_by_error_cause.items()})


def _labelled(kind: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str, documentation: str,
              label: str, values: dict[str, int] | dict[str, float]) -> Metric:
    family = kind(name, documentation, labels=[label])
    for value_label, value in sorted(values.items()):
        family.add_metric([value_label], value)
    return family


def _histogram(name: str, documentation: str, labels: list[str],
               series: list[tuple[list[str], Histogram]]) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for label_values, histogram in series:
        buckets = [("+Inf" if bound == float("inf") else repr(bound), count)
                   for bound, count in histogram.cumulative()]
        family.add_metric(label_values, buckets, histogram.sum)
    return family


class MetricsEndpoint:
    """The /metrics endpoint: prometheus_client's HTTP server on its own thread."""

    def __init__(self, daemon: MetricsSource) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DaemonCollector(daemon, asyncio.get_running_loop()))
        ProcessCollector(registry=self.registry)  # CPU, memory, open files (two per session)
        self._server: tuple[WSGIServer, threading.Thread] | None = None
        self._changing = asyncio.Lock()  # a commit and a shutdown may both move the endpoint

    @property
    def address(self) -> tuple[str, int] | None:
        """Where it listens (host, port), or None when it is off."""
        if self._server is None:
            return None
        host, port = self._server[0].server_address[:2]
        return str(host), int(port)

    async def serve(self, where: tuple[str, int] | None) -> None:
        """Listen on (host, port) (port 0: any free one) after closing the old listener, or only
        close it (None); raises OSError when the new one cannot be bound."""
        async with self._changing:
            if self._server is not None:
                server, thread = self._server
                # The server thread's wind-down takes up to half a second: not on the loop.
                await asyncio.to_thread(_shut_down, server, thread)
                self._server = None
            if where is not None:
                try:
                    self._server = start_http_server(where[1], addr=where[0], registry=self.registry)
                except OSError as error:
                    raise OSError(error.errno, f"metrics endpoint {where[0]} port {where[1]}: "
                                               f"{error.strerror or error}") from error


def _shut_down(server: WSGIServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join()
