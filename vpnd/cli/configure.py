"""`vpnd configure`: the configuration shell, a script on stdin or a file, or `-c LINE` arguments.

The session itself (verbs, commit pipeline, completion) is `vpnd.config.session`; this module
adds what needs a terminal or a socket: readline (Tab completes, `?` lists what may follow),
the control-socket applier, and the watcher process that still rolls back an unconfirmed
`commit-confirm` after the shell has gone (closed terminal, dropped SSH connection).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, TextIO

from vpnd.config.archive import DEFAULT_REVISIONS
from vpnd.config.errors import ConfigError
from vpnd.config.session import (
    Applier,
    ApplyOutcome,
    ApplyRefusedError,
    ConfigSession,
    DaemonNotRunningError,
    Output,
)
from vpnd.control import ControlError, request
from vpnd.paths import Paths
from vpnd.server.plan import plan_commit

PROMPT = "vpnd# "


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = verbs.add_parser(
        "configure", help="configuration session: set, delete, show, compare, commit, rollback, save ...",
        description="Interactive when stdin is a terminal; otherwise runs the lines of FILE, stdin, "
                    "or the -c arguments, stopping at the first failure (exit status 1).")
    parser.add_argument("-c", "--command", action="append", dest="commands", metavar="LINE",
                        help="run this line (repeatable), e.g. -c \"set vpn sstp port 8443\" -c commit")
    parser.add_argument("file", nargs="?", help="script of configure lines ('-' for stdin)")
    parser.add_argument("--archive-revisions", type=int, default=DEFAULT_REVISIONS,
                        help=f"commits kept for rollback and compare (default {DEFAULT_REVISIONS})")
    parser.add_argument("--await-confirm", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(handler=handle)


def control_applier(paths: Paths) -> Applier:
    """Send a committed configuration to the running daemon over its control socket."""

    def apply(boot_text: str, *, force: bool = False) -> ApplyOutcome:
        try:
            request(paths.control_socket, "ping", timeout=5.0)
        except ControlError as error:
            raise DaemonNotRunningError(str(error)) from error
        try:
            result: Any = request(paths.control_socket, "apply", config=boot_text, force=force)
        except ControlError as error:
            raise ApplyRefusedError(str(error)) from error
        if not isinstance(result, dict):
            raise ApplyRefusedError("the daemon's answer to apply is not an object")
        return ApplyOutcome([str(x) for x in result.get("applied", [])],
                            [str(x) for x in result.get("ended", [])], int(result.get("kept", 0)))

    return apply


def make_session(paths: Paths, archive_revisions: int = DEFAULT_REVISIONS) -> ConfigSession:
    return ConfigSession(paths, planner=plan_commit, applier=control_applier(paths),
                         archive_revisions=archive_revisions)


def _print(output: Output, out: TextIO, err: TextIO) -> None:
    for line in output.lines:
        print(line, file=out)
    for line in output.errors:
        print(line, file=err)
    out.flush()


def run_lines(session: ConfigSession, lines: Iterable[str], out: TextIO | None = None,
              err: TextIO | None = None, source: str = "input") -> int:
    """Run a script; the first failing line stops it (status 1) and is named with its number."""
    out = out or sys.stdout
    err = err or sys.stderr
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        result = session.execute(line)
        if not result.ok:
            for text in result.lines:
                print(text, file=out)
            print(f"{source} line {number}: {line.strip()}", file=err)
            for text in result.errors:
                print(f"  {text}", file=err)
            return 1
        _print(result, out, err)
        if result.exit:
            return 0
    if session.changed:
        print("WARNING: end of input with uncommitted changes; they are discarded "
              "(end the script with 'commit', or 'exit discard')", file=err)
    return 0


def spawn_watcher(paths: Paths) -> None:
    """A detached `vpnd configure --await-confirm` that rolls back if nobody confirms in time."""
    subprocess.Popen(  # our own interpreter and module, no shell
        [sys.executable, "-m", "vpnd.cli.main", "--config-dir", str(paths.config_dir),
         "--run-dir", str(paths.run_dir), "configure", "--await-confirm"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )


def await_confirm(paths: Paths, sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.time) -> int:
    """The watcher: wait for the deadline, then roll back unless someone confirmed meanwhile."""
    while True:
        session = ConfigSession(paths, planner=plan_commit, applier=control_applier(paths), clock=clock)
        if session.pending is None:
            return 0
        left = session.pending.deadline - clock()
        if left <= 0:
            for line in session.poll():
                print(line, file=sys.stderr)
            return 0
        sleep(min(left, 60.0))  # wake now and then: a confirm may have removed the pending file


def _finish(session: ConfigSession, paths: Paths, watcher: Callable[[Paths], None]) -> None:
    if session.pending is not None and session.pending.deadline > session.clock():
        watcher(paths)


def handle(args: argparse.Namespace, paths: Paths) -> int:
    if args.await_confirm:
        return await_confirm(paths)
    try:
        session = make_session(paths, args.archive_revisions)
    except (ConfigError, ValueError) as error:
        print(f"vpnd configure: {error}", file=sys.stderr)
        return 1
    try:
        for notice in session.notices:
            print(notice, file=sys.stderr)
        if args.commands:
            return run_lines(session, args.commands, source="-c")
        if args.file and args.file != "-":
            try:
                with open(args.file, encoding="utf-8") as script:
                    return run_lines(session, script.readlines(), source=args.file)
            except (OSError, UnicodeDecodeError) as error:
                print(f"vpnd configure: cannot read {args.file}: {error}", file=sys.stderr)
                return 1
        if args.file == "-" or not sys.stdin.isatty():
            return run_lines(session, sys.stdin, source="stdin")
        return interactive(session)
    finally:
        _finish(session, paths, spawn_watcher)


# --- the interactive shell ------------------------------------------------------------------------


def _setup_readline(session: ConfigSession) -> Any:
    try:
        import readline  # noqa: PLC0415 - only the interactive shell needs it
    except ImportError:
        return None

    matches: list[str] = []

    def complete(text: str, state: int) -> str | None:
        if state == 0:
            before = readline.get_line_buffer()[: readline.get_endidx()]
            matches[:] = [c.word + " " for c in session.complete(before) if c.literal]
        return matches[state] if state < len(matches) else None

    readline.set_completer(complete)
    readline.set_completer_delims(" \t")
    readline.parse_and_bind("tab: complete")
    # `?` types a literal ? and enters the line: the session answers with what may follow and
    # the shell gives the line back for editing (Ctrl-V ? types a plain question mark).
    readline.parse_and_bind(r'"?": "\C-v?\C-j"')
    return readline


def interactive(session: ConfigSession, stdin: Callable[[str], str] = input) -> int:
    readline = _setup_readline(session)
    prefill = ""

    def pre_input() -> None:
        if readline is not None and prefill:
            readline.insert_text(prefill)
            readline.redisplay()

    def on_alarm(_signum: int, _frame: FrameType | None) -> None:
        lines = session.poll()
        if lines:
            print("\n" + "\n".join(lines), flush=True)
            if readline is not None:
                readline.redisplay()
        _arm()

    def _arm() -> None:
        if session.pending is not None:
            signal.alarm(max(1, int(session.pending.deadline - session.clock()) + 1))
        else:
            signal.alarm(0)

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)  # `handle` starts the rollback watcher on the way out

    if readline is not None:
        readline.set_pre_input_hook(pre_input)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGHUP, on_hangup)
    print("vpnd configuration mode: 'help' lists the commands, '?' what may follow, Tab completes.")
    end_of_input = 0
    try:
        while True:
            _arm()
            try:
                line = stdin(PROMPT)
                end_of_input = 0
            except EOFError:
                # Ctrl-D is `exit`; a second one in a row (or a closed terminal) is `exit discard`.
                print()
                end_of_input += 1
                line = "exit" if end_of_input == 1 else "exit discard"
            except KeyboardInterrupt:
                print()
                prefill = ""
                continue
            prefill = ""
            result = session.execute(line)
            _print(result, sys.stdout, sys.stderr)
            if line.rstrip().endswith("?") and not result.errors:
                prefill = line.rstrip()[:-1]
                if readline is not None and readline.get_current_history_length():
                    readline.remove_history_item(readline.get_current_history_length() - 1)
            if result.exit and result.ok:
                return 0
    finally:
        signal.alarm(0)
