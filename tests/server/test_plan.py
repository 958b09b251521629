"""plan_commit, the one judge of a commit, and Daemon.apply, which makes a plan live all or nothing.

The daemon here runs on `vpnd.net.link.MemoryNet` (no TUN is opened: no session dials it) and
listens on loopback, so these tests need neither root nor a namespace.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
from ipaddress import IPv4Network

import pytest

from tests.config.test_session import START, VYOS_DOCS_LINES, FreePorts, Pki
from vpnd.config.definitions import Config
from vpnd.config.errors import ConfigError
from vpnd.config.model import model_from_tree
from vpnd.config.tree import ConfigTree
from vpnd.net.link import MemoryNet
from vpnd.server.daemon import Daemon
from vpnd.server.plan import ApplyPlan, plan_commit


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def config_of(pki: Pki, *extra: str) -> Config:
    return model_from_tree(ConfigTree.from_commands([*pki.lines(), *VYOS_DOCS_LINES, *extra]))


def judge(old: Config | None, new: Config, *, force: bool = False) -> ApplyPlan:
    return plan_commit(old, new, probe=FreePorts(), now=START, force=force)


def test_a_plan_is_values_only_and_pickles(pki: Pki) -> None:
    old = config_of(pki)
    plan = judge(old, config_of(pki, "set vpn sstp name-server 10.0.0.53"))
    copy = pickle.loads(pickle.dumps(plan))
    assert (copy.config, copy.changes, copy.warnings) == (plan.config, plan.changes, plan.warnings)
    assert any("name-server" in change for change in plan.changes)
    assert plan.server is not None and copy.server is not None
    assert (copy.server.service, copy.server.tls) == (plan.server.service, plan.server.tls)
    assert copy.server.local_auth.has_user("test") and not copy.server.local_auth.has_user("bob")
    assert copy.server.tls.load().leaf_der == plan.server.tls.load().leaf_der


def test_what_verify_lets_through_but_cannot_run_is_refused_by_the_plan(pki: Pki) -> None:
    with pytest.raises(ConfigError) as refused:
        judge(None, config_of(pki, "set vpn sstp ssl ciphers NO-SUCH-CIPHER"))
    assert refused.value.messages[0].startswith("ciphers 'NO-SUCH-CIPHER'")


def test_force_turns_verify_errors_into_warnings_but_not_what_cannot_run(pki: Pki) -> None:
    broken = config_of(pki, "set vpn sstp default-pool NOPE")
    with pytest.raises(ConfigError, match='pool "NOPE" does not exist'):
        plan_commit(None, broken, probe=FreePorts(), now=START)
    forced = plan_commit(None, config_of(pki, "set vpn sstp name-server 10.0.0.2",
                                         "set vpn sstp name-server 10.0.0.3"),
                         probe=FreePorts(), now=START, force=True)
    assert forced.server is not None
    with pytest.raises(ConfigError):
        judge(None, config_of(pki, "set vpn sstp ssl ciphers NO-SUCH-CIPHER",
                              "set vpn sstp default-pool NOPE"), force=True)


def test_the_plan_says_which_sessions_end(pki: Pki) -> None:
    old = config_of(pki, "set vpn sstp authentication local-users username bob password b0b")
    plan = judge(old, config_of(pki, "set vpn sstp authentication local-users username bob password b0b",
                                "set vpn sstp authentication local-users username bob disable"))
    assert plan.server is not None
    assert plan.server.ends("bob", active=True) == "user bob was deleted or disabled"
    assert plan.server.ends("DOMAIN\\bob", active=True) == "user DOMAIN\\bob was deleted or disabled"
    assert plan.server.ends("test", active=True) is None
    assert plan.server.ends("bob", active=False) is None  # not logged in yet: its login decides
    moved = judge(old, config_of(pki, "set vpn sstp gateway-address 10.0.1.1"))
    assert moved.server is not None and moved.server.ends("test", active=True) == "gateway-address changed"


def test_an_apply_that_fails_changes_nothing(pki: Pki) -> None:
    """The new port is taken when the daemon binds it: the new user, the certificate and the pools
    of the same plan stay out too."""

    async def scenario() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free_port = probe.getsockname()[1]
        first = config_of(pki, f"set vpn sstp port {free_port}")
        daemon = Daemon(plan_commit(None, first, probe=FreePorts(), now=START), listen_host="127.0.0.1",
                        net=MemoryNet())
        await daemon.start()
        try:
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", 0))
                taken.listen()
                busy = taken.getsockname()[1]
                new = config_of(pki, f"set vpn sstp port {busy}",
                                "set vpn sstp authentication local-users username bob password b0b",
                                "set vpn sstp client-ip-pool SSTP-POOL range 10.0.9.0/24")
                plan = plan_commit(daemon.config, new, probe=FreePorts(), now=START)
                with pytest.raises(ConfigError, match="in use"):
                    daemon.apply(plan)
            assert daemon.port == free_port
            assert not daemon.local_auth.has_user("bob")
            assert daemon.config is first
            assert list(daemon.statistics()["pools"]) == ["SSTP-POOL"]
            assert daemon.ipam.allocate("s1").address in IPv4Network("10.0.0.0/24")
            # The same plan without the port change goes through.
            applied = daemon.apply(plan_commit(daemon.config, config_of(
                pki, f"set vpn sstp port {free_port}",
                "set vpn sstp authentication local-users username bob password b0b"),
                probe=FreePorts(), now=START))
            assert any("bob" in line for line in applied.applied)
            assert daemon.local_auth.has_user("bob")
        finally:
            await daemon.stop(grace=0)

    asyncio.run(scenario())
