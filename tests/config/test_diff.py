"""diff(old, new): what the apply step is told changed."""

from tests.config import examples
from vpnd.config.diff import Change, diff
from vpnd.config.model import Config, model_from_tree
from vpnd.config.tree import ConfigTree


def model(text: str) -> Config:
    return model_from_tree(ConfigTree.from_commands(text))


BASE = """
set vpn sstp authentication local-users username alice password 'a'
set vpn sstp client-ip-pool P range '10.0.0.0/24'
set vpn sstp name-server '192.0.2.1'
"""


def kinds(changes: list[Change]) -> list[tuple[str, str]]:
    return [(" ".join(change.path), change.kind) for change in changes]


def test_no_change() -> None:
    assert diff(model(BASE), model(BASE)) == []


def test_first_commit_from_nothing() -> None:
    assert kinds(diff(None, model(BASE))) == [("vpn sstp", "added")]
    assert diff(None, Config()) == []


def test_removing_the_service() -> None:
    assert kinds(diff(model(BASE), Config())) == [("vpn sstp", "removed")]


def test_new_user_is_one_added_entry() -> None:
    new = model(BASE + "set vpn sstp authentication local-users username bob password 'b'")
    assert kinds(diff(model(BASE), new)) == [("vpn sstp authentication local-users username bob", "added")]


def test_removed_pool_and_changed_leaf() -> None:
    new = model("""
set vpn sstp authentication local-users username alice password 'n3w-pass'
set vpn sstp authentication local-users username alice disable
set vpn sstp name-server '192.0.2.2'
set vpn sstp mtu 1400
""")
    changes = diff(model(BASE), new)
    assert kinds(changes) == [
        ("vpn sstp authentication local-users username alice password", "changed"),
        ("vpn sstp authentication local-users username alice disable", "added"),
        ("vpn sstp client-ip-pool P", "removed"),
        ("vpn sstp name-server", "changed"),
        ("vpn sstp mtu", "changed"),
    ]
    password, _, _, servers, mtu = changes
    assert password.secret
    assert str(password) == "changed vpn sstp authentication local-users username alice password"
    assert str(mtu) == "changed vpn sstp mtu: 1500 -> 1400"
    assert str(servers) == "changed vpn sstp name-server: [192.0.2.1] -> [192.0.2.2]"
    assert mtu.old == 1500 and mtu.new == 1400


def test_explicit_default_is_not_a_change() -> None:
    explicit = model(BASE + "set vpn sstp port 443\nset vpn sstp ppp-options mppe prefer")
    assert diff(model(BASE), explicit) == []


def test_optional_leaf_added_and_removed() -> None:
    with_gateway = model(BASE + "set vpn sstp gateway-address 10.0.1.1")
    assert kinds(diff(model(BASE), with_gateway)) == [("vpn sstp gateway-address", "added")]
    assert kinds(diff(with_gateway, model(BASE))) == [("vpn sstp gateway-address", "removed")]


def test_client_and_pki_changes_are_separate_from_the_server() -> None:
    old = model(examples.SSTPC)
    new = model(examples.SSTPC + "set interfaces sstpc sstpc0 mtu 1300\n"
                "set pki ca x certificate 'AAAA'")
    changes = diff(old, new)
    assert kinds(changes) == [("interfaces sstpc sstpc0 mtu", "changed"), ("pki ca x", "added")]
    assert changes[0].is_under("interfaces", "sstpc", "sstpc0")
    assert not changes[0].is_under("vpn")
