"""One commit, decided once: (old config, new config) -> ApplyPlan.

`plan_commit` is the one judge of a configuration. `vpnd configure` calls it before it sends a
commit; the daemon calls it again on every apply, on SIGHUP and at start, so all of them accept
and refuse with the same messages. It runs verify, then derives what the runtime runs on (the
service settings, the TLS material, the address pools, which sessions the change ends) without
touching live state: the TLS context and the pools it builds to prove they load are thrown
away. A plan holds values only (no sockets, SSL contexts or leases), so it pickles and can be
handed to another process; `Daemon.apply` makes it live, all or nothing.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from vpnd.aaa.local import LocalAuthenticator
from vpnd.config.definitions import Config, SstpServer
from vpnd.config.diff import diff
from vpnd.config.errors import ConfigError
from vpnd.config.verify import Probe, verify
from vpnd.ipam.pool import Ipam
from vpnd.ipam.prefix_pool import PrefixIpam
from vpnd.server.settings import ServiceSettings, SettingsError, service_settings
from vpnd.server.tls import TlsConfigError, TlsSource, tls_source


@dataclass(frozen=True, slots=True)
class ServerPlan:
    """What `vpn sstp` runs on under the new configuration."""

    sstp: SstpServer
    service: ServiceSettings
    tls: TlsSource
    local_auth: LocalAuthenticator
    gateway_changed: bool
    authentication_changed: bool

    def ends(self, username: str | None, active: bool) -> str | None:
        """Why a live session must end under this plan, as far as the configuration alone says
        (an address that left every pool is found against the live leases)."""
        if not active:
            return None
        if self.sstp.authentication.mode == "local" and username is not None \
                and not self.local_auth.has_user(username):
            return f"user {username} was deleted or disabled"
        if self.gateway_changed:
            return "gateway-address changed"
        return None


@dataclass(frozen=True, slots=True)
class ApplyPlan:
    config: Config
    changes: tuple[str, ...]  # what changed, as config paths
    warnings: tuple[str, ...]  # verify's warnings (and its errors, when forced)
    server: ServerPlan | None  # None: no `vpn sstp` to serve


def plan_commit(old: Config | None, new: Config, *, probe: Probe | None = None,
                now: datetime.datetime | float | None = None, force: bool = False) -> ApplyPlan:
    """Verify `new` and plan the change from `old` (None: nothing runs yet).

    Raises ConfigError with every reason when it cannot be applied; `force` (the automatic
    rollback of commit-confirm) turns verify's errors into warnings, but not what cannot run.
    """
    result = verify(new, probe=probe, now=now)
    if result.errors and not force:
        raise ConfigError(result.errors)
    return build_plan(old, new, warnings=(*result.errors, *result.warnings))


def build_plan(old: Config | None, new: Config, *, warnings: tuple[str, ...] = ()) -> ApplyPlan:
    """The plan of a configuration taken as it is, without verify (`plan_commit` verifies first;
    tests and benchmarks start daemons from configurations they built themselves)."""
    changes = tuple(str(change) for change in diff(old, new))
    sstp = new.vpn.sstp
    if sstp is None:
        return ApplyPlan(new, changes, warnings, None)
    try:
        service = service_settings(sstp)
        tls = tls_source(new)
        tls.load()  # proves that the chain, the key and the ciphers load together
        # The pools are built once here so that a live reconfigure cannot fail half-way.
        Ipam(list(service.pools), service.default_pool, reserved=[service.gateway])
        PrefixIpam(service.ipv6_pools, service.default_ipv6_pool)
    except (SettingsError, TlsConfigError, ValueError) as error:
        raise ConfigError(str(error)) from None
    old_sstp = old.vpn.sstp if old is not None else None
    server = ServerPlan(
        sstp, service, tls, LocalAuthenticator(sstp.authentication.local_users.username),
        gateway_changed=old_sstp is not None and old_sstp.gateway_address != sstp.gateway_address,
        authentication_changed=old_sstp is not None and old_sstp.authentication != sstp.authentication,
    )
    return ApplyPlan(new, changes, warnings, server)
