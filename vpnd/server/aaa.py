"""The daemon's AAA services built from the config: RADIUS authentication, accounting with its
durable spool, dynamic authorization (CoA/Disconnect) and the tc shaper for rate limits.

Each piece exists only when configured; the daemon asks this object and never the pieces'
modules directly, so `authentication mode local` runs without any RADIUS socket.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vpnd.aaa.accounting import Accounting, AccountingSession, RadiusClientTransport, TerminateCause
from vpnd.aaa.accounting import NasSettings as AccountingNas
from vpnd.aaa.dae import DynamicAuthorizationServer, listen_address
from vpnd.aaa.radius import NasSettings, RadiusAuthenticator, RadiusClient
from vpnd.aaa.ratelimit import RateLimit, from_attributes
from vpnd.aaa.spool import Spool
from vpnd.config.definitions import Radius, SstpServer
from vpnd.net.link import NetBackend, NetError
from vpnd.net.shaper import MemoryShaper, RateSpec, Shaper, ShaperBackend, owner_tag
from vpnd.net.threaded import ThreadedNet

if TYPE_CHECKING:
    from vpnd.server.connection import ServerConnection

log = logging.getLogger("vpnd.aaa")


class ThreadedShaper:
    """The tc shaper, run on the network worker thread like every other netlink call."""

    def __init__(self, net: ThreadedNet, owner: str | None = None) -> None:
        self._net = net
        self._shaper: Shaper = net.run(Shaper, None, owner)

    def apply(self, ifname: str, rate: RateSpec) -> None:
        self._net.run(self._shaper.apply, ifname, rate)

    def change(self, ifname: str, rate: RateSpec) -> None:
        self._net.run(self._shaper.change, ifname, rate)

    def remove(self, ifname: str) -> None:
        self._net.run(self._shaper.remove, ifname)

    def remove_leftovers(self) -> list[str]:
        return self._net.run(self._shaper.remove_leftovers)

    def close(self) -> None:
        self._net.run(self._shaper.close)


def make_shaper(net: NetBackend, state_dir: Path | None = None) -> ShaperBackend:
    """tc on the kernel, its IFBs marked as the instance of ``state_dir``'s; a recording stand-in
    when the daemon runs on an in-memory data plane."""
    if not isinstance(net, ThreadedNet):
        return MemoryShaper()
    return ThreadedShaper(net, owner_tag(state_dir) if state_dir is not None else None)


@dataclass(frozen=True, slots=True)
class DaeSessionView:
    """One session as dynamic authorization matches it."""

    acct_session_id: str
    username: str
    framed_ip: IPv4Address | None
    calling_station_id: str | None
    nas_port_id: str | None
    nas_port: int | None
    connection: ServerConnection


class DaeRegistry:
    """Dynamic authorization's view of the daemon's sessions."""

    def __init__(self, connections: Callable[[], Iterable[ServerConnection]]) -> None:
        self._connections = connections

    def sessions(self) -> list[DaeSessionView]:
        views = []
        for connection in self._connections():
            info = connection.info
            if info.state != "active":
                continue
            views.append(DaeSessionView(info.session_id, info.username or "", info.address,
                                        connection.peer_ip, info.ifname, connection.nas_port, connection))
        return views

    def disconnect(self, session: DaeSessionView, cause: str) -> None:
        session.connection.close("RADIUS Disconnect-Request", cause=cause)

    def end_unaccounted(self, session: AccountingSession, reason: str) -> None:
        """acct-timeout: the servers left the session's Interim-Updates unanswered (NAS-Error,
        as accel-ppp reports it)."""
        for connection in self._connections():
            if connection.info.session_id == session.acct_session_id:
                connection.close(reason, TerminateCause.NAS_ERROR)
                return

    def change(self, session: DaeSessionView, *, rate_attributes: Mapping[str, Sequence[str]],
               session_timeout: int | None, idle_timeout: int | None,
               classes: Sequence[bytes] | None = None) -> str | None:
        return session.connection.change(dict(rate_attributes), session_timeout, idle_timeout, classes)


class AaaServices:
    def __init__(self, sstp: SstpServer, *, state_dir: Path | None, net: NetBackend) -> None:
        self.mode = sstp.authentication.mode
        self.radius_config: Radius = sstp.authentication.radius
        self.shaper: ShaperBackend = make_shaper(net, state_dir)
        self.radius: RadiusClient | None = None
        self.radius_auth: RadiusAuthenticator | None = None
        self.accounting: Accounting | None = None
        self.dae: DynamicAuthorizationServer | None = None
        self._state_dir = state_dir
        if self.mode == "radius":
            self._build_radius(self.radius_config)

    def _build_radius(self, radius: Radius) -> None:
        self.radius = RadiusClient.from_config(radius)
        self.radius_auth = RadiusAuthenticator(self.radius, NasSettings.from_config(radius))
        accounting_wanted = any(not s.disable and not s.disable_accounting for s in radius.server.values())
        if accounting_wanted and self._state_dir is not None:
            spool = Spool(self._state_dir / "acct-spool")
            self.accounting = Accounting(
                RadiusClientTransport(self.radius), spool, AccountingNas.from_config(radius),
                interim_interval=radius.accounting_interim_interval, jitter=radius.acct_interim_jitter or 0,
                acct_timeout=radius.acct_timeout,
            )
        elif accounting_wanted:
            log.warning("RADIUS accounting needs a state directory for its spool; accounting is off")

    def reconfigure(self, sstp: SstpServer) -> list[str]:
        """A commit changed `authentication`: new servers answer the next requests at once.

        The accounting spool and its pending records stay; they are sent to the new servers.
        Returns what needs a restart to take effect.
        """
        old = self.radius_config
        self.mode = sstp.authentication.mode
        self.radius_config = sstp.authentication.radius
        needs_restart = []
        if self.mode == "radius":
            self.radius = RadiusClient.from_config(self.radius_config)
            self.radius_auth = RadiusAuthenticator(self.radius, NasSettings.from_config(self.radius_config))
            if self.accounting is not None:
                self.accounting.transport = RadiusClientTransport(self.radius)
                self.accounting.acct_timeout = self.radius_config.acct_timeout
            elif any(not s.disable and not s.disable_accounting for s in self.radius_config.server.values()):
                needs_restart.append("RADIUS accounting (switched on)")
        if self.radius_config.dynamic_author != old.dynamic_author:
            needs_restart.append("radius dynamic-author")
        return needs_restart

    async def start(self, registry: DaeRegistry) -> None:
        self._remove_leftovers()
        if self.accounting is not None:
            self.accounting.on_unanswered = registry.end_unaccounted
            await self.accounting.open()
        if self.mode == "radius":
            self.dae = DynamicAuthorizationServer.from_config(self.radius_config, registry)
            if self.dae is not None:
                await self.dae.start(*listen_address(self.radius_config))

    async def stop(self) -> None:
        if self.dae is not None:
            self.dae.close()
        if self.accounting is not None:
            await self.accounting.close()
        if self.radius is not None:
            await self.radius.close()
        self.shaper.close()

    def _remove_leftovers(self) -> None:
        """Before the first session: delete the IFBs a killed run of this instance left (its TUNs
        and everything on them went with its file descriptors); its sessions' Stops come from
        the accounting spool. Blocks the loop once, before anything else runs on it."""
        started = time.monotonic()
        try:
            removed = self.shaper.remove_leftovers()
        except (OSError, NetError) as error:
            log.error("could not remove what a previous run left in the kernel: %s", error)
            return
        if removed:
            log.warning("removed %d devices a previous run of this instance left in the kernel in %.2f s: %s",
                        len(removed), time.monotonic() - started, " ".join(removed))

    def rate_from_radius(self, attributes: Mapping[str, Any]) -> RateLimit | None:
        """The rate limit an Access-Accept or CoA carries, per `radius rate-limit`."""
        settings = self.radius_config.rate_limit
        raw = attributes.get("rate_limit_attributes")
        if settings is None or not settings.enable or not isinstance(raw, Mapping) or not raw:
            return None
        return from_attributes(raw, settings.attribute, settings.vendor, settings.multiplier)

    def statistics(self) -> dict[str, object]:
        stats: dict[str, object] = {}
        if self.radius is not None:
            stats["radius_servers"] = self.radius.statistics()
        if self.accounting is not None:
            stats["accounting"] = _plain(self.accounting.stats())
        if self.dae is not None:
            stats["dynamic_authorization"] = self.dae.counters.as_dict()
        return stats


def _plain(value: object) -> object:
    """Dataclass statistics as JSON-friendly dicts."""
    if hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
