"""ConfigTree: every node kind through set/delete/exists, messages, config.boot text, hostile input."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpnd.config.errors import ConfigError
from vpnd.config.nodes import schema_root
from vpnd.config.tree import ConfigTree

SSTP = ["vpn", "sstp"]


def error_of(path: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        ConfigTree().set(path)
    assert len(info.value.messages) == 1
    return info.value.messages[0]


# --- node kinds ---------------------------------------------------------------------------------


def test_leaf_is_replaced_by_a_new_value() -> None:
    tree = ConfigTree()
    tree.set([*SSTP, "mtu", "1400"])
    tree.set([*SSTP, "mtu", "1300"])
    assert tree.values([*SSTP, "mtu"]) == ["1300"]
    assert tree.exists([*SSTP, "mtu", "1300"]) and not tree.exists([*SSTP, "mtu", "1400"])


def test_multi_leaf_keeps_order_and_ignores_duplicates() -> None:
    tree = ConfigTree()
    for server in ("192.0.2.2", "192.0.2.1", "192.0.2.2"):
        tree.set([*SSTP, "name-server", server])
    assert tree.values([*SSTP, "name-server"]) == ["192.0.2.2", "192.0.2.1"]
    tree.delete([*SSTP, "name-server", "192.0.2.2"])
    assert tree.values([*SSTP, "name-server"]) == ["192.0.2.1"]
    tree.delete([*SSTP, "name-server", "192.0.2.1"])
    assert not tree.exists([*SSTP, "name-server"])


def test_valueless_leaf() -> None:
    tree = ConfigTree()
    path = [*SSTP, "authentication", "local-users", "username", "alice", "disable"]
    tree.set(path)
    tree.set(path)
    assert tree.exists(path)
    assert tree.to_commands() == ["set vpn sstp authentication local-users username alice disable"]
    assert error_of([*path, "yes"]) == (
        'set vpn sstp authentication local-users username alice disable yes: "disable" takes no value')


def test_misspelt_valueless_leaf_is_refused() -> None:
    message = error_of([*SSTP, "authentication", "local-users", "username", "alice", "disabled"])
    assert 'unknown node "disabled"' in message and "disable," in message


def test_tag_node_entries_and_deleting_the_last_entry_removes_the_tag() -> None:
    tree = ConfigTree()
    tree.set([*SSTP, "client-ip-pool", "A", "range", "10.0.0.0/24"])
    tree.set([*SSTP, "client-ip-pool", "B"])
    assert tree.list_nodes([*SSTP, "client-ip-pool"]) == ["A", "B"]
    tree.delete([*SSTP, "client-ip-pool", "A"])
    assert tree.list_nodes([*SSTP, "client-ip-pool"]) == ["B"]
    tree.delete([*SSTP, "client-ip-pool", "B"])
    assert not tree.exists([*SSTP, "client-ip-pool"])
    assert tree.exists(SSTP)  # the plain node stays, as in VyOS


def test_tag_values_are_canonical_and_found_in_any_spelling() -> None:
    tree = ConfigTree()
    tree.set([*SSTP, "client-ipv6-pool", "P", "prefix", "2001:DB8:0:0::/48", "mask", "64"])
    assert tree.list_nodes([*SSTP, "client-ipv6-pool", "P", "prefix"]) == ["2001:db8::/48"]
    assert tree.exists([*SSTP, "client-ipv6-pool", "P", "prefix", "2001:DB8::/48"])
    tree.delete([*SSTP, "client-ipv6-pool", "P", "prefix", "2001:DB8::/48"])
    assert not tree.exists([*SSTP, "client-ipv6-pool", "P", "prefix"])
    assert tree.to_commands() == ["set vpn sstp client-ipv6-pool P"]


def test_node_can_be_set_empty() -> None:
    tree = ConfigTree()
    tree.set(SSTP)
    assert tree.to_commands() == ["set vpn sstp"]
    assert tree.to_boot_text() == "vpn {\n    sstp {\n    }\n}\n"


def test_tag_node_sorting_is_natural() -> None:
    tree = ConfigTree()
    for name in ("sstpc10", "sstpc2", "sstpc1"):
        tree.set(["interfaces", "sstpc", name, "disable"])
    assert tree.list_nodes(["interfaces", "sstpc"]) == ["sstpc1", "sstpc2", "sstpc10"]


def test_delete_whole_subtree_and_leaf() -> None:
    tree = ConfigTree.from_commands("set vpn sstp mtu 1400\nset vpn sstp ppp-options mppe deny")
    tree.delete([*SSTP, "mtu"])
    assert tree.to_commands() == ["set vpn sstp ppp-options mppe 'deny'"]
    tree.delete(["vpn"])
    assert tree.is_empty()


def test_delete_of_missing_paths_names_them() -> None:
    tree = ConfigTree.from_commands("set vpn sstp mtu 1400")
    with pytest.raises(ConfigError, match=r'delete vpn sstp port: "port" is not set'):
        tree.delete([*SSTP, "port"])
    with pytest.raises(ConfigError, match=r'delete vpn sstp mtu 1300: value "1300" is not set'):
        tree.delete([*SSTP, "mtu", "1300"])
    with pytest.raises(ConfigError, match="a path is required"):
        tree.delete([])


def test_copy_is_independent() -> None:
    tree = ConfigTree.from_commands("set vpn sstp mtu 1400")
    clone = tree.copy()
    clone.set([*SSTP, "mtu", "1300"])
    assert tree.value([*SSTP, "mtu"]) == "1400" and clone != tree


# --- messages -------------------------------------------------------------------------------------


def test_unknown_node_lists_the_expected_ones() -> None:
    expected = ", ".join(sorted(schema_root().children["vpn"].children["sstp"].children))
    assert error_of([*SSTP, "foo"]) == f'set vpn sstp foo: unknown node "foo" (expected one of: {expected})'
    assert error_of([*SSTP, "foo"]).startswith(
        'set vpn sstp foo: unknown node "foo" (expected one of: accept-proxy-protocol, authentication, ')


@pytest.mark.parametrize(("path", "message"), [
    ([*SSTP, "mtu", "9000"], "set vpn sstp mtu 9000: value 9000 out of range 68-1500"),
    ([*SSTP, "mtu", "67"], "set vpn sstp mtu 67: value 67 out of range 68-1500"),
    ([*SSTP, "mtu", "big"], 'set vpn sstp mtu big: value "big" is not a valid number 68-1500'),
    ([*SSTP, "mtu"], 'set vpn sstp mtu: "mtu" needs a value (number 68-1500)'),
    ([*SSTP, "mtu", "1400", "1500"], 'set vpn sstp mtu 1400 1500: "mtu" takes one value, not 2'),
    ([*SSTP, "ppp-options", "mppe", "maybe"],
     'set vpn sstp ppp-options mppe maybe: value "maybe" is not one of: require, prefer, deny'),
    ([*SSTP, "gateway-address", "10.0.0.256"],
     'set vpn sstp gateway-address 10.0.0.256: value "10.0.0.256" is not a valid IPv4 address'),
    ([*SSTP, "client-ip-pool"], 'set vpn sstp client-ip-pool: "client-ip-pool" needs a name (pool name)'),
    ([*SSTP, "client-ip-pool", "bad name"],
     "set vpn sstp client-ip-pool 'bad name': value \"bad name\" is not a valid pool name"),
    ([*SSTP, "client-ip-pool", "P", "range", "10.0.0.0-10.0.1.5"],
     'set vpn sstp client-ip-pool P range 10.0.0.0-10.0.1.5: value "10.0.0.0-10.0.1.5" is not a valid '
     "IPv4 prefix, address or range a.b.c.d-a.b.c.e: range 10.0.0.0-10.0.1.5 must lie within one /24"),
    ([*SSTP, "authentication", "radius", "rate-limit", "multiplier", "0"],
     "set vpn sstp authentication radius rate-limit multiplier 0: value 0 out of range 0.001-1000"),
    (["interfaces", "sstpc", "eth0"],
     'set interfaces sstpc eth0: value "eth0" is not a valid interface name sstpcN'),
    (["interfaces", "sstpc", "sstpc0", "add-sni", "perhaps"],
     'set interfaces sstpc sstpc0 add-sni perhaps: value "perhaps" is not a valid yes or no'),
    ([*SSTP, "limits", "connection-limit", "10/hour"],
     'set vpn sstp limits connection-limit 10/hour: value "10/hour" is not a valid rate N/sec or N/min'),
    ([*SSTP, "limits", "single-session", "kick"],
     'set vpn sstp limits single-session kick: value "kick" is not one of: deny, replace'),
    ([*SSTP, "limits", "negotiation-timeout", "2"],
     "set vpn sstp limits negotiation-timeout 2: value 2 out of range 5-600"),
    ([*SSTP, "http-error", "ftp://example.com/"],
     'set vpn sstp http-error ftp://example.com/: value "ftp://example.com/" is not a valid allow, deny or '
     "a redirect URL (http:// or https://)"),
    (["pki", "certificate", "c", "certificate", "not base64!"],
     "set pki certificate c certificate 'not base64!': value \"not base64!\" is not a valid base64 DER "
     "(PEM body): not valid base64 (the PEM body without header lines)"),
    ([*SSTP, "description", "x" * 256],
     f'set vpn sstp description {"x" * 256}: value "{"x" * 256}" is too long (at most 255 characters)'),
    ([], "set: a path is required"),
])
def test_value_messages(path: list[str], message: str) -> None:
    assert error_of(path) == message


def test_secret_values_are_not_echoed_in_messages() -> None:
    message = error_of([*SSTP, "authentication", "radius", "server", "192.0.2.1", "key", "x" * 200])
    assert "(hidden)" in message and "x" * 129 not in message.split(":", 1)[1]


def test_control_characters_are_refused() -> None:
    assert "control characters" in error_of([*SSTP, "description", "two\nlines"])


def test_path_must_be_a_list_of_strings() -> None:
    with pytest.raises(ConfigError):
        ConfigTree().set("vpn sstp mtu 1400")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ConfigTree().set(["vpn", 1])  # type: ignore[list-item]


# --- text forms ----------------------------------------------------------------------------------


def test_boot_text_quoting_comments_and_vyos_footer() -> None:
    text = '''/* a comment
   over two lines */
vpn {
    sstp {
        description "office \\"main\\" {access}"
        authentication {
            local-users {
                username "o'brien{x}" {
                    password 'it\\'s'
                }
            }
        }
        ssl {
            ciphers "ECDHE+AESGCM:!aNULL"
        }
    }
}
// Warning: Do not remove the following line.
// vyos-config-version: "sstp@6"
'''
    tree = ConfigTree.from_boot_text(text)
    assert tree.value([*SSTP, "description"]) == 'office "main" {access}'
    assert tree.list_nodes([*SSTP, "authentication", "local-users", "username"]) == ["o'brien{x}"]
    assert ConfigTree.from_boot_text(tree.to_boot_text()) == tree
    assert ConfigTree.from_commands(tree.to_commands(secrets=True)) == tree
    assert "username \"o'brien{x}\" {" in tree.to_boot_text()


@pytest.mark.parametrize(("text", "fragment"), [
    ("vpn {\n  sstp {\n    mtu 9000\n  }\n}\n", "line 3: set vpn sstp mtu 9000: value 9000 out of range"),
    ("vpn {\n  sstp {\n", 'line 2: "{" not closed'),
    ("}\n", 'line 1: "}" without a matching "{"'),
    ("vpn {\n  sstp {\n    mtu 1 2 3\n  }\n}\n", "line 3: expected"),
    ('vpn {\n  sstp {\n    description "open\n  }\n}\n', "line 3: string not closed"),
    ("/* never closed", "line 1: comment not closed"),
    ("{\n}\n", 'line 1: expected "name {"'),
    ("vpn {\n  sstp {\n    foo 1\n    bar 2\n  }\n}\n", 'line 4: set vpn sstp bar 2: unknown node "bar"'),
])
def test_boot_text_errors_name_the_line(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        ConfigTree.from_boot_text(text)
    assert fragment in str(info.value)


def test_boot_text_reports_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        ConfigTree.from_boot_text("vpn {\n sstp {\n  mtu 1\n  port 0\n }\n}\n")
    assert len(info.value.messages) == 2


def test_commands_support_delete_comments_and_report_all_lines() -> None:
    tree = ConfigTree.from_commands(["# comment", "", "set vpn sstp mtu 1400", "delete vpn sstp mtu",
                                     "set vpn sstp port 444"])
    assert tree.to_commands() == ["set vpn sstp port '444'"]
    with pytest.raises(ConfigError) as info:
        ConfigTree.from_commands(["show vpn", "set vpn sstp mtu 'unclosed", "set vpn x"])
    messages = info.value.messages
    assert messages[0] == 'line 1: unknown command "show" (expected set or delete)'
    assert messages[1].startswith("line 2: ")
    assert messages[2].startswith('line 3: set vpn x: unknown node "x"')


def test_command_values_with_quotes_round_trip() -> None:
    tree = ConfigTree()
    tree.set([*SSTP, "description", "it's \"quoted\""])
    assert ConfigTree.from_commands(tree.to_commands()) == tree


# --- hostile input ---------------------------------------------------------------------------------

_WORDS = st.sampled_from([
    "vpn", "sstp", "interfaces", "sstpc", "sstpc0", "pki", "authentication", "local-users", "username",
    "client-ip-pool", "client-ipv6-pool", "subnet", "prefix", "delegate", "mask", "range", "mtu", "1400",
    "10.0.0.0/24", "2001:db8::/48", "disable", "ssl", "{", "}", "", "'", '"', "x" * 300, "\x00", "64",
])
_TOKENS = st.lists(st.one_of(_WORDS, st.text(max_size=12)), max_size=9)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_TOKENS, max_size=6))
def test_random_set_and_delete_raise_only_config_error(paths: list[list[str]]) -> None:
    tree = ConfigTree()
    for path in paths:
        for action in (tree.set, tree.delete, tree.exists):
            try:
                action(path)
            except ConfigError as exc:
                assert exc.messages and all(message for message in exc.messages)
        tree.to_boot_text()
    assert ConfigTree.from_boot_text(tree.to_boot_text()) == tree
    assert ConfigTree.from_commands(tree.to_commands(secrets=True)) == tree


_BOOT_PIECES = st.sampled_from([
    "vpn", "sstp", "{", "}", "\n", " ", '"', "'", "\\", "/*", "*/", "//", "#", "mtu", "1400",
    "client-ip-pool", "subnet", "10.0.0.0/24", "P", "range", "disable", "username", "a", "local-users",
    "authentication",
])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), st.lists(_BOOT_PIECES, max_size=60).map(" ".join),
                 st.lists(_BOOT_PIECES, max_size=60).map("".join)))
def test_random_boot_text_raises_only_config_error(text: str) -> None:
    try:
        tree = ConfigTree.from_boot_text(text)
    except ConfigError as exc:
        assert exc.messages and all(message.startswith("line ") for message in exc.messages)
        return
    assert ConfigTree.from_boot_text(tree.to_boot_text()) == tree


@settings(max_examples=200)
@given(st.lists(st.text(max_size=40), max_size=8))
def test_random_command_lines_raise_only_config_error(lines: list[str]) -> None:
    try:
        ConfigTree.from_commands(lines)
    except ConfigError as exc:
        assert exc.messages
