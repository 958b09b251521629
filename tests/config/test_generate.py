"""generate(): the commit's files and the client profiles, rendered from templates/."""

from __future__ import annotations

import configparser
import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.config.test_session import VYOS_DOCS_LINES, Pki, b64_der, b64_key, make_certificate
from vpnd.config.definitions import Config
from vpnd.config.errors import ConfigError
from vpnd.config.generate import (
    DROP_IN,
    generate,
    keyfile_value,
    nofile_limit,
    powershell_quote,
    render_client_profile,
    routeros_quote,
    running_text,
)
from vpnd.config.model import model_from_tree
from vpnd.config.profiles import profile_facts
from vpnd.config.tree import ConfigTree
from vpnd.paths import Paths

NO_BUNDLE: tuple[Path, ...] = ()  # no system trust: every CA counts as private


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def docs_config(pki: Pki, *extra: str) -> tuple[ConfigTree, Config]:
    tree = ConfigTree.from_commands([*pki.lines(), *VYOS_DOCS_LINES, *extra])
    return tree, model_from_tree(tree)


def test_running_text_and_drop_in(tmp_path: Path, pki: Pki) -> None:
    tree, config = docs_config(pki)
    paths = Paths(tmp_path / "cfg", tmp_path / "run")
    running = running_text(tree)
    assert running.startswith("// vpnd configuration")
    assert ConfigTree.from_boot_text(running) == tree
    (drop_in,) = generate(config, paths)
    assert drop_in.path == paths.config_dir / "generated" / DROP_IN and drop_in.mode == 0o644
    assert f"Environment=VPND_CONFIG_DIR={paths.config_dir}\n" in drop_in.content
    assert f"Environment=VPND_RUN_DIR={paths.run_dir}\n" in drop_in.content
    assert f"ReadWritePaths={paths.config_dir} {paths.run_dir}\n" in drop_in.content
    assert "LimitNOFILE=65536\n" in drop_in.content and "(256 pool addresses)" in drop_in.content
    assert drop_in.content.splitlines()[2] == "[Service]"


def test_nofile_grows_with_the_pools(pki: Pki) -> None:
    _, config = docs_config(pki, "set vpn sstp client-ip-pool BIG range 10.8.0.0/14")
    assert nofile_limit(config) == 4 * (256 + 2**18) + 1024


def test_default_paths_need_no_extra_write_access(pki: Pki) -> None:
    _, config = docs_config(pki)
    (drop_in,) = generate(config, Paths(Path("/etc/vpnd"), Path("/run/vpnd")))
    assert "ReadWritePaths" not in drop_in.content


def test_running_text_notes(pki: Pki) -> None:
    tree, _ = docs_config(pki)
    text = running_text(tree, ["migrated: x"])
    assert "// migrated: x\n" in text and ConfigTree.from_boot_text(text) == tree


# --- client profiles -------------------------------------------------------------------------------


def test_windows_profile_imports_the_private_ca(pki: Pki) -> None:
    _, config = docs_config(pki)
    facts = profile_facts(config, "test", trust_bundles=NO_BUNDLE)
    assert facts.server == "vpn.example.com"  # from the certificate's name
    text = render_client_profile(facts, "windows")
    assert ("Add-VpnConnection -Name 'vpnd vpn.example.com' -ServerAddress 'vpn.example.com' "
            "-TunnelType Sstp -AuthenticationMethod MSChapv2 -EncryptionLevel Required "
            "-RememberCredential") in text
    assert "Import-Certificate -FilePath $caFile -CertStoreLocation Cert:\\LocalMachine\\Root" in text
    ca_pem = pki.ca.public_bytes(serialization.Encoding.PEM).decode()
    assert "@'\n" + ca_pem + "'@ | Set-Content" in text
    assert 'private CA "ca"' in text


def test_windows_profile_server_port_and_name(pki: Pki) -> None:
    _, config = docs_config(pki, "set vpn sstp port 8443", "set vpn sstp host-name vpn.example.com")
    facts = profile_facts(config, "test", server="gw.example.net", connection_name="Joe's VPN",
                          trust_bundles=NO_BUNDLE)
    text = render_client_profile(facts, "windows")
    assert "-Name 'Joe''s VPN' -ServerAddress 'gw.example.net:8443' -TunnelType Sstp" in text
    facts = profile_facts(config, "test", trust_bundles=NO_BUNDLE)
    assert facts.server == "vpn.example.com"


def test_publicly_trusted_ca_is_not_imported(tmp_path: Path, pki: Pki) -> None:
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes(pki.ca.public_bytes(serialization.Encoding.PEM))
    _, config = docs_config(pki)
    facts = profile_facts(config, "test", trust_bundles=(bundle,))
    assert facts.ca is None
    assert "Import-Certificate" not in render_client_profile(facts, "windows")


def test_self_signed_server_certificate_is_imported(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = make_certificate(key, "vpn.self.test", dns="vpn.self.test")
    cert_file, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    lines = [line for line in VYOS_DOCS_LINES if " ssl " not in line]
    config = model_from_tree(ConfigTree.from_commands([
        *lines, f"set vpn sstp ssl cert-file {cert_file}", f"set vpn sstp ssl key-file {key_file}"]))
    facts = profile_facts(config, "test", trust_bundles=NO_BUNDLE)
    assert facts.ca is not None and facts.ca.reason == "self-signed server certificate"
    assert x509.load_pem_x509_certificate(facts.ca.pem.encode()) == cert
    assert "Cert:\\LocalMachine\\Root" in render_client_profile(facts, "windows")


def test_routeros_profile(pki: Pki) -> None:
    _, config = docs_config(pki, "set vpn sstp authentication local-users username test password 'p$ss?\"'")
    facts = profile_facts(config, "test", include_password=True, trust_bundles=NO_BUNDLE)
    text = render_client_profile(facts, "routeros")
    line = next(line for line in text.splitlines() if line.startswith("/interface sstp-client add"))
    assert ('connect-to="vpn.example.com" port=443 user="test" password="p\\$ss\\?\\"" '
            "profile=default-encryption authentication=mschap2,mschap1,chap,pap "
            "verify-server-certificate=yes") in line
    assert '/certificate import file-name="vpnd-ca.crt" passphrase="" name="vpnd-ca"' in text
    assert "-----BEGIN CERTIFICATE-----\\n" in text  # the CA travels inside the script
    without = render_client_profile(profile_facts(config, "test", trust_bundles=NO_BUNDLE), "routeros")
    assert 'password="PASSWORD"' in without and "replace the password placeholder" in without


def test_linux_profile_client_command_and_keyfile(pki: Pki, tmp_path: Path) -> None:
    _, config = docs_config(pki, "set vpn sstp authentication protocols mschap-v2")
    facts = profile_facts(config, "test", include_password=True, trust_bundles=NO_BUNDLE)
    text = render_client_profile(facts, "linux")
    assert ("vpnd client --server vpn.example.com --port 443 --user test --ca /etc/vpnd/client/vpnd-ca.crt "
            "--password-file /etc/vpnd/client/test.password") in text
    keyfile = text.split("<<'VPND_NM'\n", 1)[1].split("VPND_NM\n", 1)[0]
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(keyfile)
    assert parser["vpn"]["service-type"] == "org.freedesktop.NetworkManager.sstp"
    assert parser["vpn"]["gateway"] == "vpn.example.com"
    assert parser["vpn"]["user"] == "test"
    assert parser["vpn"]["ca-cert"] == "/etc/vpnd/client/vpnd-ca.crt"
    assert parser["vpn"]["password-flags"] == "0" and parser["vpn-secrets"]["password"] == "test"
    assert parser["vpn"]["refuse-pap"] == "yes" and "refuse-mschapv2" not in parser["vpn"]
    assert parser["connection"]["uuid"] == facts.uuid and parser["ipv6"]["method"] == "ignore"
    # The script is valid sh.
    script = tmp_path / "profile.sh"
    script.write_text(text)
    assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0


def test_linux_profile_asks_for_the_password_by_default(pki: Pki) -> None:
    _, config = docs_config(pki)
    text = render_client_profile(profile_facts(config, "test", trust_bundles=NO_BUNDLE), "linux")
    assert "password-flags=2" in text and "[vpn-secrets]" not in text and "--password-file" not in text


@pytest.mark.parametrize(("extra", "user", "message"), [
    ((), "nobody", "username nobody: no such user (local users: test)"),
    (("set vpn sstp authentication local-users username test disable",), "test", "the user is disabled"),
    (("set vpn sstp authentication mode noauth",), "test", "mode noauth"),
    (("set vpn sstp authentication protocols mschap",), "test", "Windows needs eap, mschap-v2, chap or pap"),
])
def test_profile_errors_name_the_problem(pki: Pki, extra: tuple[str, ...], user: str, message: str) -> None:
    _, config = docs_config(pki, *extra)
    with pytest.raises(ConfigError, match=re.escape(message)):
        profile_facts(config, user, trust_bundles=NO_BUNDLE)


def test_server_name_must_be_known(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = make_certificate(key, "Some Server Name")  # no SAN, a CN that is not a host name
    lines = [line for line in VYOS_DOCS_LINES if " ssl " not in line]
    config = model_from_tree(ConfigTree.from_commands([
        *lines, f"set pki certificate s certificate '{b64_der(cert)}'",
        f"set pki certificate s private key '{b64_key(key)}'", "set vpn sstp ssl certificate s"]))
    with pytest.raises(ConfigError, match="give --server NAME"):
        profile_facts(config, "test", trust_bundles=NO_BUNDLE)
    assert profile_facts(config, "test", server="10.1.2.3", trust_bundles=NO_BUNDLE).server == "10.1.2.3"


def test_windows_profile_with_eap_lets_windows_write_its_eap_settings(pki: Pki) -> None:
    """The EapHostConfig XML is what Windows' New-EapConfiguration makes; no Windows could run the
    script here, so the cmdlet and switches follow Microsoft's VpnClient documentation."""
    _, local = docs_config(pki, "set vpn sstp authentication protocols eap")
    text = render_client_profile(profile_facts(local, "test", trust_bundles=NO_BUNDLE), "windows")
    assert "$eap = New-EapConfiguration \n" in text  # no switch: EAP-MSCHAPv2
    assert ("-TunnelType Sstp -AuthenticationMethod Eap -EapConfigXmlStream $eap.EapConfigXmlStream "
            "-EncryptionLevel Required") in text
    with pytest.raises(ConfigError, match="EAP tls needs authentication mode radius"):
        profile_facts(local, "test", trust_bundles=NO_BUNDLE, eap="tls")
    _, radius = docs_config(pki, "set vpn sstp authentication protocols eap",
                            "set vpn sstp authentication mode radius")
    peap = render_client_profile(profile_facts(radius, "test", trust_bundles=NO_BUNDLE), "windows")
    assert "$eap = New-EapConfiguration -Peap\n" in peap
    tls = render_client_profile(profile_facts(radius, "test", trust_bundles=NO_BUNDLE, eap="tls"), "windows")
    assert "$eap = New-EapConfiguration -Tls -UserCertificate\n" in tls
    _, plain = docs_config(pki)
    with pytest.raises(ConfigError, match="--eap needs eap"):
        profile_facts(plain, "test", trust_bundles=NO_BUNDLE, eap="peap")


def test_radius_mode_profile_notes(pki: Pki) -> None:
    _, config = docs_config(pki, "set vpn sstp authentication mode radius")
    facts = profile_facts(config, "anyone", include_password=True, trust_bundles=NO_BUNDLE)
    assert facts.password is None and any("RADIUS" in note for note in facts.notes)


def test_quoting_functions() -> None:
    assert powershell_quote("it's $x") == "'it''s $x'"
    assert powershell_quote("a\u2019b") == "'a\u2019\u2019b'"
    assert routeros_quote('a"b\\c$d?e\nf\x01') == '"a\\"b\\\\c\\$d\\?e\\nf\\01"'
    assert keyfile_value(" lead\\x\n") == "\\slead\\\\x\\n"
    with pytest.raises(ConfigError, match="not one of"):
        render_client_profile(None, "macos")  # type: ignore[arg-type]


# --- packaging -------------------------------------------------------------------------------------

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"


def test_sample_config_parses_into_the_model() -> None:
    tree = ConfigTree.from_boot_text((PACKAGING / "config.boot.sample").read_text())
    config = model_from_tree(tree)
    assert config.vpn.sstp is not None and config.vpn.sstp.default_pool == "SSTP-POOL"
    assert set(config.vpn.sstp.authentication.local_users.username) == {"alice", "bob"}


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((PACKAGING / "vpnd.service").read_text())
    service = unit["Service"]
    assert service["ExecStart"] == "/usr/local/bin/vpnd run"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert "CAP_NET_ADMIN" in service["CapabilityBoundingSet"]
    assert "AF_NETLINK" in service["RestrictAddressFamilies"]
    assert service["DeviceAllow"] == "/dev/net/tun rw"
