"""config-schema/ is generated from the model and kept current; the command tree is complete."""

from pathlib import Path

from vpnd.config import schema
from vpnd.config.nodes import Kind, schema_root


def test_generated_files_are_current() -> None:
    assert schema.stale_files() == [], "run: python -m vpnd.config.schema --write"


def test_write_and_check(tmp_path: Path) -> None:
    assert schema.main(["--check", "--dir", str(tmp_path)]) == 1
    assert schema.main(["--write", "--dir", str(tmp_path)]) == 0
    assert schema.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / schema.COMMAND_TREE_FILE).write_text("{}\n")
    assert schema.main(["--check", "--dir", str(tmp_path)]) == 1


def node(*path: str) -> dict:
    entry = schema.command_tree()
    for name in path:
        entry = entry["children"][name]
    return entry


def test_command_tree_kinds_help_values_and_defaults() -> None:
    assert node("vpn", "sstp")["kind"] == "node"
    assert node("vpn", "sstp", "mtu") == {
        "kind": "leaf", "help": "Maximum Transmission Unit of client links", "format": "number 68-1500",
        "range": [68, 1500], "default": "1500"}
    assert node("vpn", "sstp", "authentication", "protocols")["kind"] == "multi"
    protocols = node("vpn", "sstp", "authentication", "protocols")
    assert protocols["default"] == ["pap", "chap", "mschap", "mschap-v2"]
    assert protocols["values"] == [*protocols["default"], "eap"]
    users = node("vpn", "sstp", "authentication", "local-users", "username")
    assert users["kind"] == "tag"
    assert users["children"]["disable"]["kind"] == "valueless"
    assert users["children"]["password"]["secret"] is True
    assert node("vpn", "sstp", "ppp-options", "mppe")["default"] == "prefer"
    assert node("vpn", "sstp", "ssl", "certificate")["completion"] == "pki certificate"
    assert node("vpn", "sstp", "default-pool")["completion"] == "vpn sstp client-ip-pool"
    radius_server = node("vpn", "sstp", "authentication", "radius", "server")
    assert radius_server["key"]["format"] == "IPv4 address"
    assert radius_server["children"]["port"]["default"] == "1812"
    assert node("vpn", "sstp", "client-ip-pool")["old-syntax"]["subnet"]["kind"] == "multi"
    assert node("interfaces", "sstpc")["key"]["pattern"] == "^sstpc[0-9]+$"


def test_every_node_has_help_and_every_value_a_format() -> None:
    def walk(entry: dict, path: str) -> None:
        assert entry["help"], path
        if entry["kind"] in ("leaf", "multi"):
            assert entry["format"], path
        if entry["kind"] == "tag":
            assert entry["key"]["format"], path
        for name, child in entry.get("children", {}).items():
            walk(child, f"{path} {name}")

    for name, child in schema.command_tree()["children"].items():
        walk(child, name)


def test_schema_kinds_follow_the_types() -> None:
    sstp = schema_root().children["vpn"].children["sstp"]
    assert sstp.children["client-ip-pool"].kind is Kind.TAG
    assert sstp.children["name-server"].kind is Kind.MULTI
    assert sstp.children["ppp-options"].children["disable-ccp"].kind is Kind.VALUELESS
    # A bool declared as a yes/no leaf is a leaf, not a valueless node.
    sstpc = schema_root().children["interfaces"].children["sstpc"]
    assert sstpc.children["verify-server-certificate"].kind is Kind.LEAF


def test_json_schema_uses_cli_names_and_marks_secrets() -> None:
    data = schema.json_schema()
    defs = data["$defs"]
    assert "ppp-options" in defs["SstpServer"]["properties"]
    password = defs["LocalUser"]["properties"]["password"]
    assert "writeOnly" in str(password) and "password" in str(password)
