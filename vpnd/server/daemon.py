"""The concentrator: listener, session registry, AAA dispatch, config apply, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import itertools
import logging
import socket
import struct
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vpnd.aaa.accounting import AccountingSession, TerminateCause
from vpnd.aaa.local import LocalAuthenticator
from vpnd.aaa.radius import SessionContext
from vpnd.aaa.ratelimit import RateLimit
from vpnd.config.definitions import Config, Prometheus, SstpServer
from vpnd.config.errors import ConfigError
from vpnd.ipam.pool import Ipam
from vpnd.ipam.prefix_pool import PrefixIpam
from vpnd.net.link import IfnameAllocator, NetBackend
from vpnd.net.threaded import ThreadedNet
from vpnd.proto.ppp.auth.types import AuthDecision, AuthRequest, EapRelayRequest
from vpnd.proto.proxy import ProxyCommand, ProxyHeader
from vpnd.server.aaa import AaaServices, DaeRegistry
from vpnd.server.connection import ServerConnection
from vpnd.server.edge import EdgePolicy, HeaderReads, canonical_host, client_of, edge_policy
from vpnd.server.limits import (
    Admission,
    AuthThrottle,
    ConnectionRateLimit,
    RefusalLog,
    ThrottleReason,
    ThrottleVerdict,
    source_key,
)
from vpnd.server.metrics import MetricsEndpoint
from vpnd.server.plan import ApplyPlan, ServerPlan, build_plan
from vpnd.server.scripts import ScriptRunner
from vpnd.server.settings import ServiceSettings, lcp_echo
from vpnd.server.statistics import Statistics
from vpnd.server.tls import TlsConfigError, TlsMaterial

log = logging.getLogger("vpnd")

ACCEPT_BATCH = 64


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """What an apply changed (config paths), which sessions it ended, how many it kept."""

    applied: list[str]
    ended_sessions: list[str]
    kept_sessions: int


class Daemon:
    def __init__(
        self,
        plan: ApplyPlan | Config,
        *,
        listen_host: str = "::",
        net: NetBackend | None = None,
        ifname_prefix: str = "sstp",
        state_dir: Path | None = None,
    ) -> None:
        """Serve a plan (see vpnd.server.plan); a bare Config is served as it is, unverified
        (tests and benchmarks build theirs)."""
        if isinstance(plan, Config):
            plan = build_plan(None, plan)
        server = _server_of(plan, "vpn sstp is not configured")
        self.config = plan.config
        self.sstp: SstpServer = server.sstp
        self.service: ServiceSettings = server.service
        self.tls: TlsMaterial = server.tls.load()
        self.listen_host = listen_host
        self.net: NetBackend = net if net is not None else ThreadedNet()
        self.ifnames = IfnameAllocator(ifname_prefix, exists=self.net.interface_exists)
        self.ipam = Ipam(list(self.service.pools), self.service.default_pool, reserved=[self.service.gateway],
                         set_aside=self.service.static_addresses)
        self.ipam6 = PrefixIpam(self.service.ipv6_pools, self.service.default_ipv6_pool)
        # The DHCPv6 server's DUID must stay the same across restarts (clients keep it): made of
        # the host name, not of anything random.
        self.server_id = hashlib.sha256(f"vpnd:{socket.gethostname()}".encode()).digest()[:8]
        self.local_auth: LocalAuthenticator = server.local_auth
        self.state_dir = state_dir
        self.aaa = AaaServices(server.sstp, state_dir=state_dir, net=self.net)
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = Statistics()
        self.connections: dict[str, ServerConnection] = {}
        self._ids = itertools.count(1)
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = asyncio.Event()
        self.rate_limit = _rate_limit(self.service)
        self.auth_throttle = _auth_throttle(self.service)
        self.refusals = RefusalLog()
        # What the throttle holds is logged once a minute per user name (pair, user) or address
        # (spraying), whatever the reason: a guess spread over many addresses is one line.
        self.throttle_log = RefusalLog(per_cause=False, action="attempts held", preposition="for")
        self._refusal_timer: asyncio.TimerHandle | None = None
        self.workers = 1  # processes serving sessions: this one
        self.metrics: MetricsEndpoint | None = None  # made on start (it needs the running loop)
        self.scripts = ScriptRunner()
        self.scripts.configure(server.sstp)

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._listener is not None
        return int(self._listener.getsockname()[1])

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.metrics = MetricsEndpoint(self)
        await self._serve_metrics(self.sstp.prometheus)  # first: nothing else is open if it fails
        self._listener = self._listen(self.service.port)
        self._loop.add_reader(self._listener.fileno(), self._on_accept)
        await self.aaa.start(DaeRegistry(lambda: list(self.connections.values())))
        log.info("listening on [%s]:%d, certificate %s", self.listen_host, self.port, self.tls.description)

    async def _serve_metrics(self, settings: Prometheus | None) -> None:
        """Open, move or close the Prometheus endpoint as `vpn sstp prometheus` says."""
        assert self.metrics is not None
        await self.metrics.serve(None if settings is None else (str(settings.listen_address), settings.port))
        if self.metrics.address is not None:
            host, port = self.metrics.address
            shown = f"[{host}]" if ":" in host else host
            log.info("metrics for Prometheus on http://%s:%d/metrics", shown, port)

    async def _reconfigure_metrics(self, settings: Prometheus | None) -> None:
        try:
            await self._serve_metrics(settings)
        except OSError as error:
            log.error("metrics endpoint not served: %s", error)

    def _listen(self, port: int) -> socket.socket:
        if not hasattr(self, "_header_reads"):  # PROXY headers on their way, across rebinds
            self._header_reads = HeaderReads()
        family = socket.AF_INET6 if ":" in self.listen_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((self.listen_host, port))
        sock.listen(1024)
        sock.setblocking(False)
        return sock

    async def stop(self, reason: str = "daemon shutdown", grace: float = 2.0) -> None:
        """Close the listener, end every session in order, then force what is left."""
        if self._listener is not None and self._loop is not None:
            self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for connection in list(self.connections.values()):
            connection.close(reason, TerminateCause.NAS_REBOOT)
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections.values()):
            connection._terminate(reason, cause=TerminateCause.NAS_REBOOT)
        if self._refusal_timer is not None:
            self._refusal_timer.cancel()
            self._refusal_timer = None
        if self.metrics is not None:
            await self.metrics.serve(None)
        await self.scripts.close(grace)  # the last sessions' on-down scripts
        await self.aaa.stop()
        self.net.close()
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # ---- connections -----------------------------------------------------------------------

    def _on_accept(self) -> None:
        assert self._listener is not None
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE):
                    self.stats.count("accept_failed_fd_limit")
                    log.error("cannot accept: %s", error.strerror)
                return
            self._accept(sock, address)

    def _accept(self, sock: socket.socket, address: tuple[str, int] | tuple[str, int, int, int]) -> None:
        connection_peer = (canonical_host(address[0]), address[1])
        policy = edge_policy(self.sstp)
        if not policy.proxy_protocol:
            if self._within_rate(sock, connection_peer[0]) and self._room_to_start(sock, connection_peer[0]):
                self._start_connection(sock, connection_peer, policy)
            return
        # Behind a balancer the client is known once the header is read: what reads headers
        # counts against max-concurrent-sessions, the client's address against connection-limit.
        if not self._room_to_start(sock, connection_peer[0]):
            return
        if not policy.source_allowed(connection_peer[0]):
            self.refuse("proxy_refused_source", connection_peer[0],
                        f"dropped a connection from {connection_peer[0]}: not a proxy-protocol-source")
            sock.close()
            return

        def header(value: ProxyHeader) -> None:
            peer = client_of(value, connection_peer)
            # A balancer's own connection (PROXY LOCAL) is a health check: no client to rate-limit.
            health_check = value.command is ProxyCommand.LOCAL
            if self._listener is None:  # the daemon stopped while the header was on its way
                sock.close()
            elif health_check or self._within_rate(sock, peer[0]):
                self._start_connection(sock, peer, policy, health_check=health_check)

        def failed(kind: str, reason: str) -> None:
            self.refuse(f"proxy_header_{kind}", connection_peer[0],
                        f"dropped a connection from {connection_peer[0]}: {reason}")
            sock.close()

        self._header_reads.start(sock, policy.header_timeout, on_header=header, on_failure=failed)

    def _start_connection(self, sock: socket.socket, peer: tuple[str, int], policy: EdgePolicy,
                          *, health_check: bool = False) -> None:
        session_id = f"{int(time.time()):x}{next(self._ids):06x}"
        settings = self.service.session_settings(policy.cert_hashes(self.tls.cert_hashes),
                                                 lcp_echo(self.sstp), self.tls.eap_tls)
        connection = ServerConnection(self, sock, peer=peer,
                                      tls_context=None if policy.offload else self.tls.context,
                                      settings=settings, session_id=session_id)
        connection.on_closed = self._on_connection_closed
        # A health check is served like any other connection, since a check may speak TLS or
        # HTTP, but its end is not news for the log.
        connection.quiet = health_check
        self.connections[session_id] = connection
        self.stats.count("proxy_health_checks" if health_check else "connections_accepted")

    def _room_to_start(self, sock: socket.socket, host: str) -> bool:
        """max-concurrent-sessions: connections not yet up (PROXY header reads included)."""
        limit = self.service.max_sessions
        if limit is None:
            return True
        starting = sum(1 for c in self.connections.values() if c.info.state == "starting")
        starting += len(self._header_reads)
        if starting < limit:
            return True
        self.refuse("refused_max_concurrent", host, f"refused a connection from {host}: {starting} sessions "
                    f"are starting (max-concurrent-sessions {limit})")
        _drop(sock)
        return False

    def _within_rate(self, sock: socket.socket, host: str) -> bool:
        """limits connection-limit: refused before any TLS work, blocked for `timeout` once over."""
        limit = self.rate_limit
        if limit is None:
            return True
        key = source_key(host)
        verdict = limit.admit(key, self.now())
        if verdict is Admission.ADMITTED:
            return True
        if verdict is Admission.LIMITED:
            self.refuse("refused_connection_rate", host, f"refused a connection from {host}: over "
                        f"connection-limit, {key} blocked for {limit.block_seconds:g} s")
        else:
            self.refuse("refused_source_blocked", host,
                        f"refused a connection from {host}: {key} is blocked (connection-limit)")
        _drop(sock)
        return False

    def now(self) -> float:
        return self._loop.time() if self._loop is not None else time.monotonic()

    # ---- refusals --------------------------------------------------------------------------

    def refuse(self, cause: str, source: str, message: str, *, level: int = logging.INFO) -> None:
        """Count a refusal under ``cause`` and log ``message`` if it is the source's first for this
        cause in the interval; the others of the interval are summed up in one line when it ends."""
        self.stats.refused(cause)
        if self.refusals.note(source_key(source), cause, self.now()):
            log.log(level, "%s", message)
        self._schedule_refusal_summaries()

    def _schedule_refusal_summaries(self) -> None:
        if self._refusal_timer is not None or self._loop is None:
            return
        dues = [due for due in (self.refusals.next_due(), self.throttle_log.next_due()) if due is not None]
        if dues:
            self._refusal_timer = self._loop.call_at(max(min(dues), self._loop.time()),
                                                     self._log_refusal_summaries)

    def _log_refusal_summaries(self) -> None:
        self._refusal_timer = None
        now = self.now()
        for summary in [*self.refusals.due(now), *self.throttle_log.due(now)]:
            log.info("%s", summary.text())
        self._schedule_refusal_summaries()

    def _on_connection_closed(self, connection: ServerConnection) -> None:
        self.connections.pop(connection.info.session_id, None)
        session = connection.session
        self.stats.count("rx_bytes", session.rx_bytes)
        self.stats.count("tx_bytes", session.tx_bytes)
        self.stats.count("rx_packets", session.rx_packets)
        self.stats.count("tx_packets", session.tx_packets)
        self.stats.count("sessions_ended")
        health_check = connection.quiet and connection.info.username is None
        if not connection.established and not health_check:
            self.stats.setup_failures[connection.setup_failure or "closed"] += 1

    def session_up(self, connection: ServerConnection) -> None:
        self.stats.count("sessions_established")
        self.stats.setup_seconds.observe(max(0.0, time.time() - connection.info.started))

    def authenticate(self, connection: ServerConnection, request: AuthRequest) -> None:
        """Ask the configured backend, after the wait recent failures impose on this pair of
        address and user name, this user name or this (spraying) address; the answer goes back
        through ``connection.decide``."""
        throttle = self.auth_throttle
        # An EAP round trip after the first continues one attempt: it was held already.
        continuing = isinstance(request, EapRelayRequest) and request.relay_state is not None
        if throttle is not None and self._loop is not None and not continuing:
            source = source_key(connection.peer_ip)
            verdict = throttle.assess(source, request.username, self.now())
            if verdict is not None:
                self._held(connection, source, request.username, verdict)
                self._loop.call_later(verdict.wait, self._ask_backend, connection, request)
                return
        self._ask_backend(connection, request)

    def _held(self, connection: ServerConnection, source: str, username: str,
              verdict: ThrottleVerdict) -> None:
        """Count a held attempt and say why, in full once a minute per user name or address."""
        reason = verdict.reason
        self.stats.throttled[reason] += 1
        subject = f"address {source}" if reason is ThrottleReason.SPRAYING_ADDRESS else f"user {username}"
        first = self.throttle_log.note(subject, reason.value, self.now())
        connection._log(logging.INFO if first else logging.DEBUG,
                        f"authentication held for {verdict.wait:g} s: {verdict.explain(source, username)}")
        self._schedule_refusal_summaries()

    def _ask_backend(self, connection: ServerConnection, request: AuthRequest) -> None:
        if connection.closed:
            return
        mode = self.sstp.authentication.mode
        if mode == "radius" and self.aaa.radius_auth is not None:
            task = asyncio.create_task(self._radius_authenticate(connection, request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if mode == "local":
            decision = self.local_auth.authenticate(request)
        else:
            decision = AuthDecision(False, message=f"authentication mode {mode} cannot authenticate "
                                                   "PPP peers", unavailable=True)
        if not decision.accepted:
            self.stats.count(f"auth_rejected_{mode}")
        self._decided(connection, request, decision)

    async def _radius_authenticate(self, connection: ServerConnection, request: AuthRequest) -> None:
        assert self.aaa.radius_auth is not None
        info = connection.info
        context = SessionContext(ifname=info.ifname or "", calling_station_id=connection.peer_ip,
                                 called_station_id=connection.called_station_id,
                                 acct_session_id=info.session_id, nas_port=connection.nas_port)
        try:
            decision = await self.aaa.radius_auth.authenticate(request, context)
        except Exception as error:  # a backend bug must not leave the session waiting forever
            log.exception("RADIUS authentication failed unexpectedly")
            decision = AuthDecision(False, message=f"RADIUS error: {error}", unavailable=True)
        if not decision.accepted and not decision.eap_continue:
            self.stats.count("auth_rejected_radius")
        self._decided(connection, request, decision)

    def _decided(self, connection: ServerConnection, request: AuthRequest, decision: AuthDecision) -> None:
        """The backend answered: remember the outcome for throttling (also when the client has
        gone meanwhile: giving up early must not spare it), apply single-session."""
        if decision.eap_continue:  # an EAP round trip, not a verdict
            if not connection.closed:
                connection.decide(decision)
            return
        if self.auth_throttle is not None:
            source = source_key(connection.peer_ip)
            if decision.accepted:
                self.auth_throttle.succeeded(source, request.username, self.now())
            elif not decision.unavailable:  # a backend outage is not the client's failure
                self.auth_throttle.failed(source, request.username, self.now())
        if connection.closed:
            return
        if decision.accepted and self.service.single_session is not None:
            decision = self._single_session(connection, request.username, decision)
        connection.decide(decision)

    def _single_session(self, connection: ServerConnection, username: str,
                        decision: AuthDecision) -> AuthDecision:
        others = [c for c in self.connections.values()
                  if c is not connection and not c.closed and c.admitted_user == username]
        if not others:
            return decision
        where = ", ".join(c.info.ifname or c.info.session_id for c in others)
        if self.service.single_session == "deny":
            connection.refuse("refused_single_session", f"refused: user {username} already has a session "
                              f"({where}); single-session deny", level=logging.WARNING)
            return AuthDecision(False, message=f"user {username} already has a session")
        for old in others:
            old.end_now(f"replaced by a new login of {username} from {connection.peer_ip} "
                        "(single-session replace)", TerminateCause.PORT_PREEMPTED)
        self.stats.count("sessions_replaced", len(others))
        return decision

    def rate_limit_for(self, attributes: dict[str, object]) -> RateLimit | None:
        """The session's rate limit: the local user's, or the one RADIUS sent."""
        local = attributes.get("rate_limit")
        if isinstance(local, RateLimit):
            return local
        return self.aaa.rate_from_radius(attributes)

    def shape(self, ifname: str, rate: RateLimit | None, *, change: bool = False) -> None:
        if rate is None:
            self.aaa.shaper.remove(ifname)
        elif change:
            self.aaa.shaper.change(ifname, rate)
        else:
            self.aaa.shaper.apply(ifname, rate)

    def accounting_start(self, session: AccountingSession) -> None:
        if self.aaa.accounting is not None:
            self._spawn(self.aaa.accounting.start(session))

    def accounting_stop(self, session: AccountingSession, cause: TerminateCause) -> None:
        if self.aaa.accounting is not None:
            self._spawn(self.aaa.accounting.stop(session, cause))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- operations ------------------------------------------------------------------------

    def sessions(self) -> list[dict[str, object]]:
        now = time.time()
        loop_now = asyncio.get_running_loop().time() if self._loop is not None else time.monotonic()
        rows: list[dict[str, object]] = []
        for connection in self.connections.values():
            info, session = connection.info, connection.session
            rows.append({
                "ifname": info.ifname, "username": info.username,
                "ip": str(info.address) if info.address else None, "calling-sid": info.peer.rsplit(":", 1)[0],
                "ip6": str(info.ipv6_prefix) if info.ipv6_prefix else None,
                "ip6-dp": str(info.delegated_prefix) if info.delegated_prefix else None,
                "rate-limit": info.rate_limit, "state": info.state, "uptime": int(now - info.started),
                "rx-bytes": session.rx_bytes, "tx-bytes": session.tx_bytes,
                "rx-pkts": session.rx_packets, "tx-pkts": session.tx_packets,
                "sid": info.session_id, "mtu": info.mtu, "auth": info.auth_method,
                "idle-time": int(max(0.0, loop_now - info.last_activity)),
            })
        return rows

    def statistics(self) -> dict[str, object]:
        states = Counter(c.info.state for c in self.connections.values())
        return {
            "uptime": int(time.time() - self.stats.started),
            "sessions": {"starting": states.get("starting", 0), "active": states.get("active", 0)},
            "counters": dict(self.stats.counters),
            "refused": self.stats.refusals(),
            "auth_throttle": self._throttle_statistics(),
            "setup-failures": dict(self.stats.setup_failures),
            "pools": {name: {"total": u.total, "used": u.used, "free": u.free}
                      for name, u in self.ipam.usage().items()},
            "ipv6-pools": {name: {kind: {"total": u.total, "used": u.used, "free": u.free}
                                  for kind, u in (("prefix", usage.prefix), ("delegate", usage.delegate))}
                           for name, usage in self.ipam6.usage().items()},
            **self.aaa.statistics(),
        }

    def _throttle_statistics(self) -> dict[str, object]:
        """Attempts held by reason (every reason listed, 0 included, so an exporter sees each
        label from the start) and the sizes of the throttle's tables."""
        throttle = self.auth_throttle
        return {
            "held": {reason.value: self.stats.throttled[reason] for reason in ThrottleReason},
            "tables": asdict(throttle.tables(self.now())) if throttle is not None else None,
        }

    def reset(self, *, user: str | None = None, ifname: str | None = None, everyone: bool = False) -> int:
        """End matching sessions (Admin-Reset); returns how many."""
        ended = 0
        for connection in list(self.connections.values()):
            info = connection.info
            if everyone or (user is not None and info.username == user) or \
                    (ifname is not None and info.ifname == ifname):
                connection.close("administrative reset", TerminateCause.ADMIN_RESET)
                ended += 1
        self.stats.count("admin_resets", ended)
        return ended

    def apply(self, plan: ApplyPlan) -> ApplyReport:
        """Make a plan live, changing only what changed; live sessions stay up unless their user
        was deleted or disabled or their address left every pool. All or nothing: what can still
        fail here (the TLS context, binding a new port) runs before anything changes."""
        server = _server_of(plan, "vpn sstp was deleted: stop the service instead")
        service = server.service
        try:
            new_tls = server.tls.load()
            listener = self._listen(service.port) if service.port != self.service.port and \
                self._loop is not None else None
        except (OSError, TlsConfigError) as error:
            raise ConfigError(str(error)) from None
        # From here on nothing fails: the plan built these pools once already.
        orphans = self.ipam.reconfigure(list(service.pools), service.default_pool, reserved=[service.gateway],
                                        set_aside=service.static_addresses)
        orphans6 = self.ipam6.reconfigure(service.ipv6_pools, service.default_ipv6_pool)
        if listener is not None:
            self._swap_listener(listener)
        if new_tls.leaf_der != self.tls.leaf_der:
            log.info("new certificate for new connections: %s", new_tls.description)
        self.tls = new_tls
        self.local_auth = server.local_auth
        self.scripts.configure(server.sstp)
        applied = list(plan.changes)
        if server.authentication_changed:
            restart = self.aaa.reconfigure(server.sstp)
            applied += [f"{item}: takes effect when vpnd restarts" for item in restart]
        orphan_owners = {lease.owner for lease in orphans}
        orphan_prefixes = {lease.owner: lease.prefix for lease in orphans6}
        ended: list[str] = []
        for connection in list(self.connections.values()):
            info = connection.info
            why = server.ends(info.username, info.state == "active")
            if why is None and info.session_id in orphan_owners:
                why = f"address {info.address} is no longer in any pool"
            elif why is None and info.session_id in orphan_prefixes:
                why = f"IPv6 prefix {orphan_prefixes[info.session_id]} is no longer in any pool"
            if why is not None:
                connection.close(why)
                ended.append(f"{info.ifname or info.session_id} ({info.username}): {why}")
        for lease in orphans:
            if lease.owner not in self.connections:
                self.ipam.release(lease)
        for prefix_lease in orphans6:
            if prefix_lease.owner not in self.connections:
                self.ipam6.release(prefix_lease)
        if service.connection_limit != self.service.connection_limit:
            self.rate_limit = _rate_limit(service)
        if service.auth_throttle is None or self.auth_throttle is None:
            self.auth_throttle = _auth_throttle(service)
        else:  # new settings, same memory: a commit must not forgive the failures seen so far
            self.auth_throttle.settings = service.auth_throttle
        if server.sstp.prometheus != self.sstp.prometheus and self.metrics is not None:
            self._spawn(self._reconfigure_metrics(server.sstp.prometheus))
        self.service = service
        self.sstp = server.sstp
        self.config = plan.config
        kept = len(self.connections) - len(ended)
        log.info("configuration applied: %s; ended %d session(s), kept %d",
                 ", ".join(applied) or "no listener change", len(ended), kept)
        return ApplyReport(applied, ended, kept)

    def _swap_listener(self, new_listener: socket.socket) -> None:
        assert self._loop is not None
        if self._listener is not None:
            self._loop.remove_reader(self._listener.fileno())
            with contextlib.suppress(OSError):
                self._listener.close()
        self._listener = new_listener
        self._loop.add_reader(new_listener.fileno(), self._on_accept)


def _drop(sock: socket.socket) -> None:
    """Close a refused connection with a reset: no FIN exchange, no TIME_WAIT kept on our side."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _server_of(plan: ApplyPlan, missing: str) -> ServerPlan:
    if plan.server is None:
        raise ConfigError(missing)
    return plan.server


def _rate_limit(service: ServiceSettings) -> ConnectionRateLimit | None:
    if service.connection_limit is None:
        return None
    return ConnectionRateLimit.from_config(*service.connection_limit)


def _auth_throttle(service: ServiceSettings) -> AuthThrottle | None:
    return AuthThrottle(service.auth_throttle) if service.auth_throttle is not None else None
