"""`vpnd configure` from arguments, stdin, a file and a (scripted) terminal; the apply path
against the real daemon objects; `vpnd show client-profile`.

The apply test runs a real `vpnd.server.control.ControlServer` on a unix socket in a temporary
run directory, whose daemon is a real `vpnd.server.daemon.Daemon` built with
`net=vpnd.net.link.MemoryNet()`: constructing it and applying a configuration needs no root
and binds nothing (the listener is only opened by `start()`, which this test does not call).
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.config.test_session import VYOS_DOCS_LINES, FakeClock, Pki, run
from vpnd.cli import configure
from vpnd.cli.main import main
from vpnd.config.model import model_from_tree
from vpnd.config.tree import ConfigTree
from vpnd.net.link import MemoryNet
from vpnd.paths import Paths
from vpnd.server.control import ControlServer
from vpnd.server.daemon import Daemon


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "etc", tmp_path / "run")


@pytest.fixture(autouse=True)
def no_watcher(monkeypatch: pytest.MonkeyPatch) -> list[Paths]:
    """Record instead of starting the detached commit-confirm watcher."""
    started: list[Paths] = []
    monkeypatch.setattr(configure, "spawn_watcher", started.append)
    return started


def vpnd(paths: Paths, *args: str) -> int:
    return main(["--config-dir", str(paths.config_dir), "--run-dir", str(paths.run_dir), *args])


def commands(*lines: str) -> list[str]:
    out: list[str] = []
    for line in lines:
        out += ["-c", line]
    return out


def test_arguments_commit_the_vyos_example(paths: Paths, pki: Pki,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    status = vpnd(paths, "configure", *commands(*pki.lines(), *VYOS_DOCS_LINES, "commit", "save"))
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "vpnd is not running" in out and "the configuration applies when it starts" in out
    assert f"Saved the running configuration to {paths.saved_config}" in out
    saved = ConfigTree.from_boot_text(paths.saved_config.read_text())
    assert saved.value(["vpn", "sstp", "gateway-address"]) == "10.0.0.1"
    # `show | commands` in a new session prints set lines that rebuild it.
    assert vpnd(paths, "configure", "-c", "show | commands") == 0
    out, _ = capsys.readouterr()
    assert ConfigTree.from_commands(out) == saved


def test_failing_commit_exits_non_zero_with_verify_messages(paths: Paths, pki: Pki,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    lines = [*pki.lines(), *VYOS_DOCS_LINES, "set vpn sstp default-pool MISSING", "commit", "show"]
    status = vpnd(paths, "configure", *commands(*lines))
    out, err = capsys.readouterr()
    assert status == 1
    assert f"-c line {len(lines) - 1}: commit" in err
    assert "Commit failed:" in err and "MISSING" in err and "vpn sstp default-pool" in err
    assert "vpn {" not in out  # stopped before `show`
    assert not paths.running_config.exists()


def test_bad_line_names_its_number(paths: Paths, capsys: pytest.CaptureFixture[str]) -> None:
    assert vpnd(paths, "configure", *commands("show", "set vpn sstp mtu 20")) == 1
    err = capsys.readouterr().err
    assert "-c line 2: set vpn sstp mtu 20" in err and "value 20 out of range 68-1500" in err


def test_script_on_stdin(paths: Paths, pki: Pki, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str], daemon_server: tuple[Daemon, MemoryNet]) -> None:
    script = "\n".join([*pki.lines(), *VYOS_DOCS_LINES, "# a comment", "", "commit comment from stdin", ""])
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    assert vpnd(paths, "configure") == 0
    assert vpnd(paths, "configure", "-c", "show system commit") == 0
    out = capsys.readouterr().out
    assert "from stdin" in out.splitlines()[-1]


def test_script_file_and_uncommitted_warning(paths: Paths, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "edit.vpnd"
    script.write_text("set vpn sstp port 8443\ncompare commands\n")
    assert vpnd(paths, "configure", str(script)) == 0
    out, err = capsys.readouterr()
    assert "set vpn sstp port '8443'" in out
    assert "end of input with uncommitted changes" in err
    assert vpnd(paths, "configure", str(tmp_path / "missing")) == 1
    assert "cannot read" in capsys.readouterr().err


def test_commit_confirm_leaves_a_watcher(paths: Paths, pki: Pki, no_watcher: list[Paths],
                                         daemon_server: tuple[Daemon, MemoryNet]) -> None:
    assert vpnd(paths, "configure", *commands(*pki.lines(), *VYOS_DOCS_LINES, "commit")) == 0
    assert no_watcher == []
    assert vpnd(paths, "configure", *commands("set vpn sstp port 8443", "commit-confirm 3")) == 0
    assert no_watcher == [paths]


def test_watcher_rolls_back_when_the_time_is_up(paths: Paths, pki: Pki,
                                                daemon_server: tuple[Daemon, MemoryNet]) -> None:
    assert configure.await_confirm(paths) == 0  # nothing pending: returns at once
    assert vpnd(paths, "configure", *commands(*pki.lines(), *VYOS_DOCS_LINES, "commit")) == 0
    assert vpnd(paths, "configure", *commands("set vpn sstp port 8443", "commit-confirm 1")) == 0
    clock = FakeClock(configure.make_session(paths).pending.deadline - 30)  # type: ignore[union-attr]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    assert configure.await_confirm(paths, sleep=sleep, clock=clock) == 0
    assert slept == [30]
    running = ConfigTree.from_boot_text(paths.running_config.read_text())
    assert running.value(["vpn", "sstp", "port"]) is None
    assert daemon_server[0].service.port == 443


def test_interactive_shell(paths: Paths, pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    session = configure.make_session(paths)
    typed = iter([*pki.lines(), *VYOS_DOCS_LINES, "set vpn sstp ssl ?", "exit", "commit"])

    def fake_input(prompt: str) -> str:
        assert prompt == configure.PROMPT
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    assert configure.interactive(session, stdin=fake_input) == 0
    out, err = capsys.readouterr()
    assert "Possible completions:" in out and "ca-certificate" in out
    assert "Cannot exit: the configuration is modified" in err
    # The commit ran (no daemon runs it, so it stays in the session); then Ctrl-D left the shell.
    assert "committed in this session; not archived, since no daemon applied it" in out
    assert not paths.running_config.exists()


def test_interactive_end_of_input_twice_discards(paths: Paths, capsys: pytest.CaptureFixture[str]) -> None:
    session = configure.make_session(paths)
    typed = iter(["set vpn sstp port 8443"])

    def fake_input(prompt: str) -> str:
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    assert configure.interactive(session, stdin=fake_input) == 0
    assert "Uncommitted changes discarded" in capsys.readouterr().out


def test_client_profile_verb(paths: Paths, pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    assert vpnd(paths, "show", "client-profile", "test") == 1
    assert "no configuration in" in capsys.readouterr().err
    assert vpnd(paths, "configure", *commands(*pki.lines(), *VYOS_DOCS_LINES, "commit", "save")) == 0
    capsys.readouterr()
    assert vpnd(paths, "show", "client-profile", "test", "--format", "windows") == 0
    out = capsys.readouterr().out
    assert "Add-VpnConnection" in out and "-ServerAddress 'vpn.example.com'" in out
    assert "-TunnelType Sstp" in out
    assert vpnd(paths, "show", "client-profile", "test", "--format", "routeros",
                "--server", "gw.example.net", "--include-password") == 0
    out = capsys.readouterr().out
    assert 'connect-to="gw.example.net"' in out and 'password="test"' in out
    assert vpnd(paths, "show", "client-profile", "nobody", "--format", "linux") == 1
    assert "no such user" in capsys.readouterr().err


# --- apply through the real control server and daemon ----------------------------------------------


@pytest.fixture
def daemon_server(paths: Paths, pki: Pki) -> Iterator[tuple[Daemon, MemoryNet]]:
    tree = ConfigTree.from_commands([*pki.lines(), *VYOS_DOCS_LINES])
    net = MemoryNet()
    daemon = Daemon(model_from_tree(tree), net=net)
    server = ControlServer(daemon, paths.control_socket, paths.running_config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield daemon, net
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_commit_applies_to_the_running_daemon(paths: Paths, pki: Pki, daemon_server: tuple[Daemon, MemoryNet],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    daemon, _net = daemon_server
    session = configure.make_session(paths)
    printed = run(session, *pki.lines(), *VYOS_DOCS_LINES, "set vpn sstp name-server 10.0.0.53",
                  "set vpn sstp authentication local-users username bob password 'b0b'", "commit")
    assert any(line.startswith("applied: ") and "name-server" in line for line in printed), printed
    assert "kept 0 session(s)" in printed
    assert daemon.local_auth.has_user("bob")
    assert [str(s) for s in daemon.sstp.name_server] == ["10.0.0.1", "10.0.0.53"]
    # The control server recorded what it applied: the text the session generated.
    running = ConfigTree.from_boot_text(paths.running_config.read_text())
    assert running == session.running


def test_daemon_refusal_keeps_the_previous_configuration(paths: Paths, pki: Pki,
                                                         daemon_server: tuple[Daemon, MemoryNet]) -> None:
    daemon, _net = daemon_server
    session = configure.make_session(paths)
    run(session, *pki.lines(), *VYOS_DOCS_LINES, "commit")
    before = paths.running_config.read_text()
    run(session, "delete vpn")  # verify has nothing against it; the daemon refuses to drop the service
    result = session.execute("commit")
    assert not result.ok
    assert result.errors[0] == "Commit failed: the daemon refused the configuration:"
    assert "vpn sstp was deleted" in result.errors[1]
    assert paths.running_config.read_text() == before
    assert daemon.config.vpn.sstp is not None
    assert len(session.archive) == 1


def test_apply_answer_shape(paths: Paths, pki: Pki, daemon_server: tuple[Daemon, MemoryNet]) -> None:
    """The applier turns the daemon's JSON answer into an ApplyOutcome."""
    tree = ConfigTree.from_commands([*pki.lines(), *VYOS_DOCS_LINES, "set vpn sstp name-server 10.0.0.9"])
    outcome = configure.control_applier(paths)(tree.to_boot_text())
    assert any("name-server" in line for line in outcome.applied)
    assert outcome.ended == [] and outcome.kept == 0
    assert json.loads(json.dumps(outcome.applied)) == outcome.applied


@pytest.mark.parametrize("line", ["set vpn sstp default-pool NO-SUCH-POOL",
                                  "set vpn sstp ssl ciphers NO-SUCH-CIPHER"])
def test_cli_and_daemon_refuse_with_the_same_messages(paths: Paths, pki: Pki, line: str,
                                                      daemon_server: tuple[Daemon, MemoryNet]) -> None:
    """One judge: what verify lets through and the runtime could not run (ciphers) is refused
    by the commit already, and the daemon, sent the same text, gives the same reasons."""
    daemon, _net = daemon_server
    session = configure.make_session(paths)
    run(session, *pki.lines(), *VYOS_DOCS_LINES, "commit")
    run(session, line)
    result = session.execute("commit")
    assert result.errors[0] == "Commit failed:"
    reasons = result.errors[1:]
    assert reasons and ("NO-SUCH-POOL" in reasons[0] or "NO-SUCH-CIPHER" in reasons[0])
    server = ControlServer(daemon, paths.run_dir / "other.sock")
    answer = server.handle(json.dumps({"cmd": "apply", "config": session.working.to_boot_text()}).encode())
    assert answer == {"ok": False, "error": "\n".join(reasons)}
    assert len(session.archive) == 1 and daemon.sstp.default_pool != "NO-SUCH-POOL"
