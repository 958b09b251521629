"""The configure session through its Python API and through command lines (`execute`).

Certificates are made here; the clock is a FakeClock so commit-confirm is deterministic; the
daemon is replaced by recording appliers (the real control path is tested in
tests/cli/test_configure.py against a real ControlServer and Daemon).
"""

from __future__ import annotations

import base64
import datetime
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpnd.config.errors import ConfigError
from vpnd.config.session import (
    ApplyOutcome,
    ApplyRefusedError,
    ConfigSession,
    DaemonNotRunningError,
    split_line,
)
from vpnd.config.tree import ConfigTree
from vpnd.paths import Paths, write_atomic
from vpnd.server.plan import plan_commit

START = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC).timestamp()


# --- shared helpers (imported by the generate and CLI tests) --------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_certificate(key: rsa.RSAPrivateKey, cn: str, *, issuer_key: rsa.RSAPrivateKey | None = None,
                     issuer_cn: str = "", ca: bool = False, dns: str | None = None) -> x509.Certificate:
    now = datetime.datetime.fromtimestamp(START, datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(cn))
               .issuer_name(_name(issuer_cn or cn))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=30))
               .not_valid_after(now + datetime.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def b64_der(certificate: x509.Certificate) -> str:
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


def b64_key(key: rsa.RSAPrivateKey) -> str:
    return base64.b64encode(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())).decode()


class Pki:
    """A private CA `ca` and a server certificate `srv` for vpn.example.com, issued by it."""

    def __init__(self) -> None:
        self.ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.srv_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ca = make_certificate(self.ca_key, "Example Private CA", ca=True)
        self.srv = make_certificate(self.srv_key, "vpn.example.com", issuer_key=self.ca_key,
                                    issuer_cn="Example Private CA", dns="vpn.example.com")

    def lines(self) -> list[str]:
        return [
            f"set pki ca ca certificate '{b64_der(self.ca)}'",
            f"set pki certificate srv certificate '{b64_der(self.srv)}'",
            f"set pki certificate srv private key '{b64_key(self.srv_key)}'",
        ]


# The example blocks of VyOS's SSTP documentation, exactly as an operator types them.
VYOS_DOCS_LINES = [
    "set vpn sstp authentication local-users username test password 'test'",
    "set vpn sstp authentication mode local",
    "set vpn sstp gateway-address 10.0.0.1",
    "set vpn sstp client-ip-pool SSTP-POOL range 10.0.0.0/24",
    "set vpn sstp default-pool SSTP-POOL",
    "set vpn sstp name-server 10.0.0.1",
    "set vpn sstp ssl ca-certificate ca",
    "set vpn sstp ssl certificate srv",
]


@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki()


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FreePorts:
    """verify's probe: every port free; files read from disk."""

    def port_in_use(self, port: int) -> str | None:
        return None

    def read_file(self, path: str) -> bytes:
        return Path(path).read_bytes()


class RecordingDaemon:
    """Stands in for the daemon's control socket (tests/cli/test_configure.py uses the real one):
    records what it is sent and, as the daemon does, writes the running file once it accepts."""

    def __init__(self, refuse: str | None = None, running: bool = True) -> None:
        self.received: list[str] = []
        self.refuse = refuse
        self.running = running
        self.running_config: Path | None = None

    def __call__(self, boot_text: str, *, force: bool = False) -> ApplyOutcome:
        if not self.running:
            raise DaemonNotRunningError("vpnd is not running (no control socket at /x)")
        if self.refuse is not None:
            raise ApplyRefusedError(self.refuse)
        self.received.append(boot_text)
        if self.running_config is not None:
            write_atomic(self.running_config, boot_text, mode=0o600)
        return ApplyOutcome(["name-server (new sessions)"], [], 3)


def make_paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "etc", tmp_path / "run")


def new_session(tmp_path: Path, clock: FakeClock | None = None, applier=None, **kwargs) -> ConfigSession:
    paths = make_paths(tmp_path)
    applier = applier or RecordingDaemon()
    if isinstance(applier, RecordingDaemon):
        applier.running_config = paths.running_config
    return ConfigSession(paths, planner=plan_commit, applier=applier, probe=FreePorts(),
                         clock=clock or FakeClock(), user="alice", **kwargs)


def run(session: ConfigSession, *lines: str) -> list[str]:
    """Execute lines that must succeed; returns everything they printed."""
    printed: list[str] = []
    for line in lines:
        result = session.execute(line)
        assert result.ok, f"{line!r} failed: {result.errors}"
        printed += result.lines
    return printed


def committed_session(tmp_path: Path, pki: Pki, **kwargs) -> ConfigSession:
    session = new_session(tmp_path, **kwargs)
    run(session, *pki.lines(), *VYOS_DOCS_LINES, "commit initial")
    return session


# --- the tests -------------------------------------------------------------------------------------


def test_vyos_docs_example_runs_unchanged_and_commits(tmp_path: Path, pki: Pki) -> None:
    daemon = RecordingDaemon()
    session = new_session(tmp_path, applier=daemon)
    printed = run(session, *pki.lines(), *VYOS_DOCS_LINES, "commit")
    assert not session.changed
    assert "applied: name-server (new sessions)" in printed
    assert "kept 3 session(s)" in printed
    # The daemon got config.boot text that parses back to what was typed.
    sent = ConfigTree.from_boot_text(daemon.received[0])
    user = ["vpn", "sstp", "authentication", "local-users", "username", "test"]
    assert sent.value([*user, "password"]) == "test"
    assert sent.value(["vpn", "sstp", "default-pool"]) == "SSTP-POOL"
    paths = make_paths(tmp_path)
    assert ConfigTree.from_boot_text(paths.running_config.read_text()) == session.running
    assert len(session.archive) == 1


def test_show_and_show_commands(tmp_path: Path, pki: Pki) -> None:
    session = committed_session(tmp_path, pki)
    shown = "\n".join(run(session, "show vpn sstp client-ip-pool"))
    assert shown == "client-ip-pool SSTP-POOL {\n    range 10.0.0.0/24\n}"
    commands = run(session, "show vpn sstp | commands")
    assert "set vpn sstp client-ip-pool SSTP-POOL range '10.0.0.0/24'" in commands
    assert "set vpn sstp authentication local-users username test password 'test'" in commands
    stripped = run(session, "show vpn sstp authentication | commands | strip-private")
    assert "set vpn sstp authentication local-users username test password '********'" in stripped
    whole = run(session, "show")
    assert whole[0] == "pki {" and "vpn {" in whole
    assert run(session, "show vpn sstp gateway-address") == ["gateway-address 10.0.0.1"]
    # `show | commands` replays to the same tree.
    replay = ConfigTree.from_commands(run(session, "show | commands"))
    assert replay == session.working


def test_show_names_the_missing_part(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    result = session.execute("show vpn sstp")
    assert result.errors == ["show vpn: not set"]
    result = session.execute("show vpn sstpx")
    assert 'unknown node "sstpx"' in result.errors[0]
    result = session.execute("show vpn | bogus")
    assert 'unknown filter "| bogus"' in result.errors[0]


def test_set_delete_discard(tmp_path: Path, pki: Pki) -> None:
    session = committed_session(tmp_path, pki)
    run(session, "set vpn sstp name-server 10.0.0.2", "delete vpn sstp gateway-address")
    assert session.changed
    assert session.working.values(["vpn", "sstp", "name-server"]) == ["10.0.0.1", "10.0.0.2"]
    assert not session.working.exists(["vpn", "sstp", "gateway-address"])
    assert run(session, "discard") == ["Changes have been discarded"]
    assert not session.changed
    assert run(session, "discard") == ["No changes have been discarded"]
    result = session.execute("set vpn sstp port 70000")
    assert result.errors == ["set vpn sstp port 70000: value 70000 out of range 1-65535"]
    result = session.execute("delete")
    assert "a path is required" in result.errors[0]


def test_quotes_like_the_vyos_shell(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    run(session,
        "set vpn sstp authentication local-users username a password 'it''s'",
        'set vpn sstp authentication local-users username b password "say \\"hi\\" | $x"',
        "set vpn sstp authentication local-users username c password with\\ space",
        "set vpn sstp authentication local-users username d password '|'  # a comment")
    users = ["vpn", "sstp", "authentication", "local-users", "username"]
    assert session.working.value([*users, "a", "password"]) == "its"
    assert session.working.value([*users, "b", "password"]) == 'say "hi" | $x'
    assert session.working.value([*users, "c", "password"]) == "with space"
    assert session.working.value([*users, "d", "password"]) == "|"
    assert split_line("show | commands")[1] is not split_line("show '|'")[1]


def test_commit_verify_failure_names_the_object_and_keeps_running(tmp_path: Path, pki: Pki) -> None:
    daemon = RecordingDaemon()
    session = new_session(tmp_path, applier=daemon)
    run(session, *pki.lines(), *VYOS_DOCS_LINES, "commit")
    run(session, "set vpn sstp authentication local-users username bob static-ip 10.0.0.9",
        "set vpn sstp default-pool NOPE")
    result = session.execute("commit")
    assert not result.ok
    assert result.errors[0] == "Commit failed:"
    text = "\n".join(result.errors)
    assert "vpn sstp authentication local-users username bob" in text
    assert "NOPE" in text
    assert len(daemon.received) == 1 and len(session.archive) == 1
    assert session.changed  # the edits are still there to fix


def test_commit_with_nothing_to_commit(tmp_path: Path, pki: Pki) -> None:
    session = committed_session(tmp_path, pki)
    assert run(session, "commit") == ["No configuration changes to commit"]


def test_commit_warnings_are_printed(tmp_path: Path, pki: Pki) -> None:
    session = new_session(tmp_path)
    lines = [line for line in VYOS_DOCS_LINES if "default-pool" not in line]
    printed = run(session, *pki.lines(), *lines, "commit")
    assert any(line.startswith("WARNING: vpn sstp") for line in printed)


def test_daemon_not_running_and_save_hint(tmp_path: Path, pki: Pki) -> None:
    session = new_session(tmp_path, applier=RecordingDaemon(running=False))
    printed = run(session, *pki.lines(), *VYOS_DOCS_LINES, "commit")
    assert any("vpnd is not running" in line and "run 'save'" in line for line in printed)
    # Nothing runs it: no running file (the daemon writes that) and no revision in the archive.
    assert "committed in this session; not archived, since no daemon applied it" in printed
    assert not make_paths(tmp_path).running_config.exists() and len(session.archive) == 0
    run(session, "save")
    printed = run(session, "set vpn sstp name-server 10.0.0.3", "commit")
    assert any("run 'save'" in line for line in printed)
    # When the saved configuration already is the committed one, `vpnd run` starts with it.
    other = new_session(tmp_path / "other", applier=RecordingDaemon(running=False))
    run(other, *pki.lines(), *VYOS_DOCS_LINES)
    make_paths(tmp_path / "other").config_dir.mkdir(parents=True)
    make_paths(tmp_path / "other").saved_config.write_text(other.working.to_boot_text())
    printed = run(other, "commit")
    expected = "vpnd is not running (no control socket at /x): the configuration applies when it starts"
    assert expected in printed


def test_daemon_refusal_undoes_the_commit(tmp_path: Path, pki: Pki) -> None:
    daemon = RecordingDaemon()
    session = new_session(tmp_path, applier=daemon)
    run(session, *pki.lines(), *VYOS_DOCS_LINES, "commit")
    before = make_paths(tmp_path).running_config.read_text()
    daemon.refuse = "not applied: certificate and key do not load together"
    run(session, "set vpn sstp name-server 10.0.0.2")
    result = session.execute("commit")
    assert "not applied: certificate and key do not load together" in result.errors
    assert make_paths(tmp_path).running_config.read_text() == before
    assert len(session.archive) == 1
    assert session.changed


def test_commit_confirm_rolls_back_by_itself(tmp_path: Path, pki: Pki) -> None:
    clock = FakeClock()
    daemon = RecordingDaemon()
    session = committed_session(tmp_path, pki, clock=clock, applier=daemon)
    original = session.running.copy()
    run(session, "set vpn sstp port 8443")
    printed = run(session, "commit-confirm 5")
    assert any("'confirm' within 5 minute(s)" in line for line in printed)
    assert session.running.value(["vpn", "sstp", "port"]) == "8443"
    clock.advance(4 * 60)
    assert session.poll() == []
    clock.advance(61)
    printed = run(session, "show vpn sstp gateway-address")  # any command notices the deadline first
    assert any("not confirmed within 5 minute(s)" in line for line in printed)
    assert session.running == original
    assert session.pending is None
    assert not (make_paths(tmp_path).config_dir / "commit-confirm.json").exists()
    assert ConfigTree.from_boot_text(daemon.received[-1]) == original
    assert session.archive.get(0).info.comment.startswith("rollback: commit-confirm 5")
    assert len(session.archive) == 3


def test_confirm_keeps_the_commit(tmp_path: Path, pki: Pki) -> None:
    clock = FakeClock()
    session = committed_session(tmp_path, pki, clock=clock)
    run(session, "set vpn sstp port 8443", "commit-confirm 2 comment trying a new port")
    assert session.archive.get(0).info.comment == "trying a new port"
    assert run(session, "confirm") == ["Confirmed: the configuration stays"]
    clock.advance(3600)
    assert session.poll() == []
    assert session.running.value(["vpn", "sstp", "port"]) == "8443"
    assert session.execute("confirm").errors == ["confirm: no commit-confirm is pending"]


def test_commit_confirm_survives_the_session(tmp_path: Path, pki: Pki) -> None:
    """A new session (the watcher, or the operator logging in again) sees the pending rollback."""
    clock = FakeClock()
    first = committed_session(tmp_path, pki, clock=clock)
    run(first, "set vpn sstp port 8443", "commit-confirm 1")
    assert "commit-confirm pending" in run(first, "exit")[0]
    mode = stat.S_IMODE(os.stat(make_paths(tmp_path).config_dir / "commit-confirm.json").st_mode)
    assert mode == 0o600
    clock.advance(120)
    second = new_session(tmp_path, clock=clock)
    assert second.running.value(["vpn", "sstp", "port"]) == "8443"
    printed = second.poll()
    assert printed and "not confirmed" in printed[0]
    assert second.running.value(["vpn", "sstp", "port"]) is None
    assert first.poll() == ["commit-confirm was settled by another session"]


def test_commit_confirm_arguments(tmp_path: Path, pki: Pki) -> None:
    session = committed_session(tmp_path, pki)
    run(session, "set vpn sstp port 8443")
    errors = session.execute("commit-confirm soon").errors
    assert errors == ['commit-confirm: "soon" is not a number of minutes']
    assert "out of range" in session.execute("commit-confirm 0").errors[0]
    printed = run(session, "commit-confirm")
    assert any("within 10 minute(s)" in line for line in printed)


def test_rollback_and_compare_revisions(tmp_path: Path, pki: Pki) -> None:
    session = committed_session(tmp_path, pki)
    run(session, "set vpn sstp name-server 10.0.0.2", "commit second")
    run(session, "set vpn sstp port 8443", "commit third")
    history = run(session, "show system commit")
    assert len(history) == 3 and history[0].split()[0] == "0" and history[0].endswith("third")
    assert "by alice" in history[0]
    diff = run(session, "compare 2 0")
    assert "--- revision 2" in diff and "+++ revision 0" in diff
    assert "+        port 8443" in diff
    assert "+        name-server 10.0.0.2" in diff
    assert run(session, "compare 1 0 commands") == ["set vpn sstp port '8443'"]
    assert run(session, "compare 0 1 commands") == ["delete vpn sstp port '8443'"]
    run(session, "rollback 2")
    assert session.running.value(["vpn", "sstp", "port"]) is None
    assert session.running.values(["vpn", "sstp", "name-server"]) == ["10.0.0.1"]
    assert session.archive.get(0).info.comment == "rollback 2"
    assert run(session, "rollback 0") == ["revision 0 is what is running: nothing to do"]
    assert "revision 9 does not exist" in session.execute("rollback 9").errors[0]
    assert "is not a revision number" in session.execute("rollback -1").errors[0]
    run(session, "set vpn sstp port 1443")
    assert "uncommitted changes" in session.execute("rollback 1").errors[0]


def test_compare_working_and_running(tmp_path: Path, pki: Pki) -> None:
    session = committed_session(tmp_path, pki)
    assert run(session, "compare") == ["No changes between running and working"]
    run(session, "set vpn sstp port 8443", "delete vpn sstp name-server")
    diff = run(session, "compare")
    assert diff[:2] == ["--- running", "+++ working"]
    assert "-        name-server 10.0.0.1" in diff and "+        port 8443" in diff
    assert run(session, "compare commands") == ["delete vpn sstp name-server '10.0.0.1'",
                                                "set vpn sstp port '8443'"]
    assert "+        port 8443" in run(session, "compare 0")


def test_save_load_round_trip_and_modes(tmp_path: Path, pki: Pki) -> None:
    session = committed_session(tmp_path, pki)
    paths = make_paths(tmp_path)
    printed = run(session, "save")
    assert printed == [f"Saved the running configuration to {paths.saved_config}"]
    assert session.saved
    for path in (paths.saved_config, paths.running_config, *paths.archive_dir.iterdir()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert ConfigTree.from_boot_text(paths.saved_config.read_text()) == session.running
    run(session, "save backup.boot")
    assert (paths.config_dir / "backup.boot").exists()
    run(session, "delete vpn sstp", "load backup.boot")
    assert session.working == session.running
    # set commands load too (e.g. the output of `show | commands`).
    script = tmp_path / "lines.txt"
    script.write_text("\n".join(run(session, "show | commands")) + "\nset vpn sstp port 8443\n")
    run(session, f"load {script}")
    assert session.working.value(["vpn", "sstp", "port"]) == "8443"
    bad = tmp_path / "bad.boot"
    bad.write_text("vpn {\n  sstp {\n    port 99999\n  }\n}\n")
    result = session.execute(f"load {bad}")
    assert result.errors[0] == f"load {bad}: nothing loaded:"
    assert "99999" in result.errors[1]
    assert session.working.value(["vpn", "sstp", "port"]) == "8443"  # unchanged by the failed load
    assert "cannot read" in session.execute(f"load {tmp_path / 'missing.boot'}").errors[0]


def test_save_with_changes_warns(tmp_path: Path, pki: Pki) -> None:
    session = committed_session(tmp_path, pki)
    run(session, "set vpn sstp port 8443")
    printed = run(session, "save")
    assert printed[0].startswith("WARNING: uncommitted changes are not saved")
    saved = ConfigTree.from_boot_text(make_paths(tmp_path).saved_config.read_text())
    assert saved.value(["vpn", "sstp", "port"]) is None


def test_save_is_atomic(tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    session = committed_session(tmp_path, pki)
    run(session, "save")
    paths = make_paths(tmp_path)
    before = paths.saved_config.read_text()
    run(session, "set vpn sstp port 8443", "commit")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("vpnd.paths.os.fsync", broken_fsync)
    result = session.execute("save")
    assert result.errors == [f"save: cannot write {paths.saved_config}: No space left on device"]
    monkeypatch.undo()
    assert paths.saved_config.read_text() == before


def test_exit_refuses_uncommitted_changes(tmp_path: Path, pki: Pki) -> None:
    session = committed_session(tmp_path, pki)
    run(session, "set vpn sstp port 8443")
    result = session.execute("exit")
    assert not result.ok and "exit discard" in result.errors[0]
    result = session.execute("exit discard")
    assert result.ok and result.exit
    assert "Uncommitted changes discarded" in result.lines
    assert not session.changed


def test_exit_warns_when_not_saved(tmp_path: Path, pki: Pki) -> None:
    session = committed_session(tmp_path, pki)
    assert any("not saved" in line for line in run(session, "exit"))
    run(session, "save")
    assert run(session, "exit") == []


def test_session_starts_from_running_then_saved(tmp_path: Path, pki: Pki) -> None:
    first = committed_session(tmp_path, pki)
    run(first, "save")
    second = new_session(tmp_path)
    assert second.running == first.running and not second.changed
    make_paths(tmp_path).running_config.unlink()
    third = new_session(tmp_path)
    assert third.running == first.running
    make_paths(tmp_path).saved_config.write_text("vpn {\n")
    fourth = new_session(tmp_path)
    assert fourth.running.is_empty()
    assert any("does not parse" in notice for notice in fourth.notices)


def test_completion_and_help(tmp_path: Path, pki: Pki) -> None:
    session = committed_session(tmp_path, pki)
    words = [c.word for c in session.complete("se")]
    assert words == ["set"]
    words = [c.word for c in session.complete("set vpn sstp authentication mode ")]
    assert set(words) == {"local", "radius", "noauth"}
    pools = session.complete("set vpn sstp client-ip-pool ")
    assert [c.word for c in pools if c.literal] == ["SSTP-POOL"]
    assert any(not c.literal and c.word == "<pool name>" for c in pools)
    users = [c.word for c in session.complete("delete vpn sstp authentication local-users username ")]
    assert users == ["test"]
    certs = [c.word for c in session.complete("set vpn sstp ssl certificate ") if c.literal]
    assert certs == ["srv"]
    deletable = [c.word for c in session.complete("delete vpn sstp ")]
    assert "port" not in deletable and "gateway-address" in deletable
    assert [c.word for c in session.complete("show vpn sstp | c")] == ["commands"]
    assert [c.word for c in session.complete("rollback ")] == ["0"]
    help_lines = run(session, "set vpn sstp ?")
    assert help_lines[0] == "Possible completions:"
    assert any(line.split()[0] == "gateway-address" and "Server address" in line for line in help_lines[1:])
    help_lines = run(session, "set vpn sstp port ?")
    assert any("<number 1-65535>" in line and "TCP port" in line for line in help_lines)
    assert session.working == session.running  # help changed nothing


def test_unknown_verbs_and_arguments(tmp_path: Path) -> None:
    session = new_session(tmp_path)
    cases = {
        "frobnicate": 'unknown command "frobnicate"',
        "| commands": 'cannot start with "|"',
        "set vpn | x": '"|" is only understood after show',
        "confirm now": "confirm: takes no arguments",
        "load": "load: one file name is required",
        "save a b": "save: at most one file name",
        "compare 1 2 3": "at most two revision numbers",
        "compare x": '"x" is not a revision number',
        "exit now": "only 'discard' may follow",
        "commit comment": "'comment' needs a text",
        "set vpn sstp authentication mode 'unclosed": "missing closing single quote",
        'set vpn "unclosed': "missing closing double quote",
        "set vpn \\": "backslash at the end",
        "set vpn sstp port \x01": "control characters",
    }
    for line, expected in cases.items():
        result = session.execute(line)
        assert not result.ok, line
        assert any(expected in error for error in result.errors), (line, result.errors)


def test_archive_revisions_rotate_through_the_session(tmp_path: Path, pki: Pki) -> None:
    session = committed_session(tmp_path, pki, archive_revisions=3)
    for port in (1001, 1002, 1003, 1004):
        run(session, f"set vpn sstp port {port}", f"commit port {port}")
    assert [info.comment for info in session.archive.list()] == ["port 1004", "port 1003", "port 1002"]
    assert len(list(make_paths(tmp_path).archive_dir.iterdir())) == 3


def test_legacy_syntax_is_migrated_on_commit(tmp_path: Path, pki: Pki) -> None:
    session = new_session(tmp_path)
    lines = [line for line in VYOS_DOCS_LINES if "pool" not in line]
    printed = run(session, *pki.lines(), *lines, "set vpn sstp client-ip-pool subnet 10.0.0.0/24", "commit")
    assert any(line.startswith("migrated: ") for line in printed)
    assert session.running.value(["vpn", "sstp", "default-pool"]) == "default-range-pool"
    assert not session.changed


# --- hostile input ---------------------------------------------------------------------------------

VERB_WORDS = ["set", "delete", "show", "compare", "commit", "commit-confirm", "confirm", "rollback",
              "load", "discard", "exit", "help", "?", "|", "vpn", "sstp", "pki", "port", "'", '"', "\\"]
hostile_lines = st.one_of(
    st.text(max_size=80),
    st.lists(st.one_of(st.sampled_from(VERB_WORDS), st.text(max_size=12)), max_size=8).map(" ".join),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=hostile_lines)
def test_hostile_lines_never_crash(tmp_path: Path, line: str) -> None:
    session = new_session(tmp_path / "hostile")
    if line.split()[:1] == ["save"]:
        return  # save writes where it is told; not fuzzed
    result = session.execute(line)
    if not result.ok:
        assert all(isinstance(e, str) and e.strip() for e in result.errors)
        # The message says what was wrong, not merely that something was.
        assert len(" ".join(result.errors)) > 10


def test_split_line_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        split_line("set 'a")
    assert split_line("set a#b # c") == ["set", "a#b"]
