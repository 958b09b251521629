"""Whole configurations: load, convert, render, and come back unchanged."""

import pytest
from pydantic import SecretStr

from tests.config import examples
from vpnd.config.errors import ConfigError
from vpnd.config.migrate import migrate
from vpnd.config.model import Config, SstpServer, model_from_tree, tree_from_model
from vpnd.config.tree import SECRET_MASK, ConfigTree

CURRENT = [examples.VYOS_DOCS_EXAMPLE, examples.SMOKETEST_LOCAL, examples.SMOKETEST_RADIUS, examples.SSTPC]


def lines_of(text: str) -> list[str]:
    return [line.strip() for line in text.strip().splitlines()]


@pytest.mark.parametrize("text", CURRENT)
def test_set_lines_model_boot_model_set_lines_is_identity(text: str) -> None:
    tree = ConfigTree.from_commands(text)
    model = model_from_tree(tree)
    boot = tree_from_model(model).to_boot_text()
    again = model_from_tree(ConfigTree.from_boot_text(boot))
    assert again == model
    assert tree_from_model(again).to_commands(secrets=True) == lines_of(text)


@pytest.mark.parametrize("text", CURRENT)
def test_commands_are_printed_in_show_order(text: str) -> None:
    assert ConfigTree.from_commands(text).to_commands(secrets=True) == lines_of(text)


def test_docs_example_model_values_and_defaults() -> None:
    config = model_from_tree(ConfigTree.from_commands(examples.VYOS_DOCS_EXAMPLE))
    sstp = config.vpn.sstp
    assert sstp is not None
    assert sstp.authentication.mode == "local"
    user = sstp.authentication.local_users.username["test"]
    assert user.password is not None and user.password.get_secret_value() == "test"
    assert user.disable is False
    assert sstp.client_ip_pool["SSTP-POOL"].range == ["10.0.0.2-10.0.0.100"]
    assert sstp.default_pool == "SSTP-POOL"
    assert str(sstp.gateway_address) == "10.0.0.1"
    assert sstp.ssl is not None and sstp.ssl.certificate == "server" and sstp.ssl.ca_certificate == "ca"
    # Defaults from the VyOS schema.
    assert sstp.port == 443 and sstp.mtu == 1500
    assert sstp.authentication.protocols == ["pap", "chap", "mschap", "mschap-v2"]
    assert sstp.ppp_options.lcp_echo_interval == 30
    assert sstp.ppp_options.lcp_echo_failure == 3
    assert sstp.ppp_options.lcp_echo_timeout == 0
    assert sstp.ppp_options.mppe == "prefer"
    assert sstp.ppp_options.ipv6 == "deny"
    assert sstp.log.level == 3
    assert sstp.authentication.radius.timeout == 3


def test_radius_and_client_models_are_typed() -> None:
    radius = model_from_tree(ConfigTree.from_commands(examples.SMOKETEST_RADIUS)).vpn.sstp
    assert radius is not None
    servers = radius.authentication.radius.server
    assert [str(address) for address in servers] == ["192.0.2.10", "192.0.2.11", "192.0.2.12"]
    first = next(iter(servers.values()))
    assert (first.port, first.acct_port, first.fail_time, first.priority) == (1815, 1814, 10, 10)
    second = list(servers.values())[1]
    assert second.backup and second.disable_accounting and second.port == 1812 and second.acct_port == 1813
    assert radius.authentication.radius.rate_limit is not None
    assert radius.authentication.radius.rate_limit.multiplier == 0.5
    clients = model_from_tree(ConfigTree.from_commands(examples.SSTPC)).interfaces.sstpc
    assert list(clients) == ["sstpc0", "sstpc2", "sstpc10"]
    assert clients["sstpc0"].verify_server_certificate is True  # secure default
    assert clients["sstpc2"].verify_server_certificate is False
    assert clients["sstpc2"].add_sni is False and clients["sstpc2"].disable
    assert clients["sstpc10"].mtu == 1452 and clients["sstpc10"].default_route_distance == 210
    assert clients["sstpc10"].keepalive_timeout == 60


def test_old_syntax_is_migrated_and_printed_in_current_form() -> None:
    tree = ConfigTree.from_commands(examples.VYOS_DOCS_OLD_EXAMPLE)
    notes = migrate(tree.root)
    assert tree.to_commands(secrets=True) == examples.VYOS_DOCS_OLD_MIGRATED
    assert any("default-range-pool" in note for note in notes)
    assert any("ipv6-pool" in note for note in notes)
    assert migrate(tree.root) == []  # nothing left to do


def test_old_syntax_from_boot_text_is_migrated() -> None:
    text = """
vpn {
    sstp {
        client-ip-pool {
            subnet 10.1.0.0/24
            subnet 10.2.0.0/24
        }
        client-ipv6-pool {
            prefix 2001:db8::/48 {
                mask 56
            }
        }
    }
}
"""
    tree = ConfigTree.from_boot_text(text)
    migrate(tree.root)
    assert tree.to_commands() == [
        "set vpn sstp client-ip-pool default-range-pool range '10.1.0.0/24'",
        "set vpn sstp client-ip-pool default-range-pool range '10.2.0.0/24'",
        "set vpn sstp client-ipv6-pool ipv6-pool prefix 2001:db8::/48 mask '56'",
        "set vpn sstp default-ipv6-pool 'ipv6-pool'",
        "set vpn sstp default-pool 'default-range-pool'",
    ]


def test_model_from_tree_accepts_old_syntax_without_changing_the_tree() -> None:
    tree = ConfigTree.from_commands(examples.VYOS_DOCS_OLD_EXAMPLE)
    before = tree.to_commands()
    sstp = model_from_tree(tree).vpn.sstp
    assert sstp is not None
    assert sstp.client_ip_pool["default-range-pool"].range == ["192.168.170.0/24"]
    assert sstp.default_pool == "default-range-pool"
    assert sstp.default_ipv6_pool == "ipv6-pool"
    assert tree.to_commands() == before


def test_old_and_new_pool_syntax_mixed_in_one_session() -> None:
    tree = ConfigTree.from_commands("""
set vpn sstp client-ip-pool subnet 10.1.0.0/24
set vpn sstp client-ip-pool NEW range 10.9.0.0/24
set vpn sstp client-ip-pool subnet 10.2.0.0/24
set vpn sstp default-pool NEW
""")
    assert tree.to_commands() == [
        "set vpn sstp client-ip-pool NEW range '10.9.0.0/24'",
        "set vpn sstp client-ip-pool default-range-pool range '10.1.0.0/24'",
        "set vpn sstp client-ip-pool default-range-pool range '10.2.0.0/24'",
        "set vpn sstp default-pool 'NEW'",
    ]


def test_migration_keeps_an_existing_default_pool() -> None:
    tree = ConfigTree.from_commands("""
set vpn sstp default-pool OTHER
set vpn sstp client-ip-pool subnet 10.1.0.0/24
""")
    migrate(tree.root)
    assert tree.value(["vpn", "sstp", "default-pool"]) == "OTHER"


def test_a_pool_named_subnet_is_current_syntax() -> None:
    tree = ConfigTree.from_commands("set vpn sstp client-ip-pool subnet range 10.0.0.0/24")
    assert migrate(tree.root) == []
    assert tree.to_commands() == ["set vpn sstp client-ip-pool subnet range '10.0.0.0/24'"]


def test_secrets_are_masked_by_default() -> None:
    tree = ConfigTree.from_commands(examples.SMOKETEST_RADIUS + examples.SSTPC + examples.VYOS_DOCS_EXAMPLE)
    shown = "\n".join(tree.to_commands())
    for secret in ("secret1", "secret2", "secret3", "dae-secret", "client-pass", "p2", "'test'"):
        assert secret not in shown
    assert f"username test password '{SECRET_MASK}'" in shown
    assert f"server 192.0.2.10 key '{SECRET_MASK}'" in shown
    assert "secret1" in "\n".join(tree.to_commands(secrets=True))
    assert "secret1" in tree.to_boot_text()
    assert "secret1" not in tree.to_boot_text(secrets=False)
    assert "username 'client'" in shown  # not a secret


def test_secrets_are_secret_str_in_the_model_and_hidden_in_repr() -> None:
    config = model_from_tree(ConfigTree.from_commands(examples.SMOKETEST_RADIUS))
    sstp = config.vpn.sstp
    assert sstp is not None
    key = sstp.authentication.radius.server[next(iter(sstp.authentication.radius.server))].key
    assert isinstance(key, SecretStr)
    assert "secret1" not in repr(config) and "secret1" not in str(config)


def test_tree_from_model_of_python_built_model_omits_defaults() -> None:
    config = Config()
    config.vpn.sstp = SstpServer(mtu=1400)
    assert tree_from_model(config).to_commands() == ["set vpn sstp mtu '1400'"]
    config.vpn.sstp.ppp_options.mppe = "require"
    assert tree_from_model(config).to_commands() == [
        "set vpn sstp mtu '1400'", "set vpn sstp ppp-options mppe 'require'",
    ]


def test_empty_nodes_survive_the_round_trip() -> None:
    text = "set vpn sstp\nset vpn sstp authentication local-users username bob\nset vpn sstp ppp-options"
    tree = ConfigTree.from_commands(text)
    model = model_from_tree(tree)
    assert model.vpn.sstp is not None
    assert tree_from_model(model).to_commands() == [
        "set vpn sstp authentication local-users username bob",
        "set vpn sstp ppp-options",
    ]
    assert ConfigTree.from_boot_text(tree.to_boot_text()) == tree


def test_empty_configuration() -> None:
    tree = ConfigTree()
    assert tree.to_commands() == [] and tree.to_boot_text() == ""
    assert model_from_tree(tree) == Config()
    assert model_from_tree(tree).vpn.sstp is None
    assert tree_from_model(Config()).is_empty()


def test_model_errors_are_config_errors_naming_the_path() -> None:
    tree = ConfigTree.from_commands("set vpn sstp mtu 1400")
    # Bypass `set` (which would refuse it) to reach the model's own check.
    tree.root.children["vpn"].children["sstp"].children["mtu"].values = ["9000"]
    with pytest.raises(ConfigError) as info:
        model_from_tree(tree)
    assert len(info.value.messages) == 1
    assert info.value.messages[0].startswith("vpn sstp mtu: ")


def test_canonical_values_are_stored() -> None:
    tree = ConfigTree.from_commands("""
set vpn sstp client-ipv6-pool P prefix 2001:DB8:0::/48 mask 064
set vpn sstp authentication radius rate-limit multiplier 2.50
set interfaces sstpc sstpc1 add-sni false
""")
    assert tree.to_commands() == [
        "set interfaces sstpc sstpc1 add-sni 'no'",
        "set vpn sstp authentication radius rate-limit multiplier '2.5'",
        "set vpn sstp client-ipv6-pool P prefix 2001:db8::/48 mask '64'",
    ]
