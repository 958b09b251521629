"""The configure session: VyOS's configuration verbs over a working copy of the config tree.

`ConfigSession` holds the running configuration (what the last commit made active) and the
working copy that `set` and `delete` edit. `execute(line)` parses one command line the way
VyOS's shell does (quotes, backslashes, `| commands`) and never raises for bad input: it
returns an `Output` whose errors name what was wrong. The same object backs the interactive
shell, scripts on stdin and `-c` arguments (see `vpnd.cli.configure`).

Commit = migrate → model_from_tree → plan (verify and everything the daemon will build from
it: errors stop it, warnings are shown) → apply → archive and generate. The plan is made by an
injected `Planner`, the very step the daemon runs again on what it is sent (the CLI injects
`vpnd.server.plan.plan_commit`), so both accept and refuse alike. Apply goes through an
injected `Applier` (the CLI's talks to the daemon's control socket; this layer opens no
sockets); the daemon writes the running file, and the archive records a revision only once
the daemon applied it. The clock is injected too, so `commit-confirm` can be tested: an
unconfirmed commit is rolled back by `poll()`, which the shell calls before each command and
from its timer.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import getpass
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from vpnd.config.archive import DEFAULT_REVISIONS, Archive, RevisionInfo
from vpnd.config.definitions import Config
from vpnd.config.errors import ConfigError
from vpnd.config.generate import TEMPLATES_DIR, generate, running_text, write_files
from vpnd.config.migrate import migrate
from vpnd.config.model import model_from_tree
from vpnd.config.node import CONTROL_CHARACTERS, Node, natural_key, show_path
from vpnd.config.nodes import Kind, SchemaNode, schema_root
from vpnd.config.tree import ConfigTree
from vpnd.config.verify import Probe
from vpnd.paths import Paths, write_atomic

DEFAULT_CONFIRM_MINUTES = 10
PENDING_FILE = "commit-confirm.json"
LOCK_FILE = ".configure.lock"

VERBS: dict[str, str] = {
    "set": "Set a value or create a node",
    "delete": "Delete a node or a value",
    "show": "Show the working configuration (| commands for set lines)",
    "compare": "Compare working and running, or revisions: compare [N [M]] [commands]",
    "commit": "Make the working configuration active: commit [comment TEXT]",
    "commit-confirm": "Commit, and roll back unless confirmed within N minutes",
    "confirm": "Keep a commit made with commit-confirm",
    "rollback": "Make revision N of the archive active again",
    "save": "Save the running configuration (for the next start), or to a file",
    "load": "Replace the working configuration with a file's",
    "discard": "Drop uncommitted changes",
    "exit": "Leave the session (exit discard drops uncommitted changes)",
    "help": "List the commands",
}


# --- apply: the daemon side is injected -------------------------------------------------------


class DaemonNotRunningError(Exception):
    """Nobody answers on the control socket."""


class ApplyRefusedError(Exception):
    """The daemon answered and refused the configuration; the message is its reason."""


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    applied: list[str]
    ended: list[str]
    kept: int


class Applier(Protocol):
    def __call__(self, boot_text: str, *, force: bool = False) -> ApplyOutcome:
        """Make the running daemon run `boot_text` (`force`: the automatic rollback)."""


def no_daemon(boot_text: str, *, force: bool = False) -> ApplyOutcome:
    raise DaemonNotRunningError("vpnd is not running")


class Plan(Protocol):
    @property
    def warnings(self) -> Sequence[str]: ...


class Planner(Protocol):
    def __call__(self, old: Config | None, new: Config, *, probe: Probe | None, now: float,
                 force: bool) -> Plan:
        """Judge a commit from `old` to `new`; ConfigError with every reason when it cannot run."""


# --- results ------------------------------------------------------------------------------------


@dataclass
class Output:
    """What one command printed: `lines` for stdout, `errors` for stderr."""

    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    exit: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True, slots=True)
class Candidate:
    word: str  # what Tab inserts; a placeholder such as "<IPv4 address>" when not literal
    help: str
    literal: bool = True


@dataclass
class PendingConfirm:
    deadline: float
    minutes: int
    restore_text: str  # the running configuration before the unconfirmed commit


# --- command-line words, the VyOS shell way ------------------------------------------------------


class _Pipe:
    """An unquoted `|` (kept apart from a quoted "|" word)."""


PIPE = _Pipe()


def split_line(line: str) -> list[str | _Pipe]:
    """Words of a command line: '…' literal, "…" with \\ escapes, \\ outside quotes, # comments."""
    words: list[str | _Pipe] = []
    current: list[str] = []
    in_word = False
    index = 0
    length = len(line)
    while index < length:
        char = line[index]
        if char.isspace():
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
            index += 1
        elif char == "|":
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
            words.append(PIPE)
            index += 1
        elif char == "#" and not in_word:
            break
        elif char == "'":
            end = line.find("'", index + 1)
            if end < 0:
                raise ConfigError("missing closing single quote (')")
            current.append(line[index + 1:end])
            in_word = True
            index = end + 1
        elif char == '"':
            index += 1
            while True:
                if index >= length:
                    raise ConfigError('missing closing double quote (")')
                char = line[index]
                if char == '"':
                    index += 1
                    break
                if char == "\\" and index + 1 < length and line[index + 1] in '"\\$`':
                    current.append(line[index + 1])
                    index += 2
                else:
                    current.append(char)
                    index += 1
            in_word = True
        elif char == "\\":
            if index + 1 >= length:
                raise ConfigError("a backslash at the end of the line escapes nothing")
            current.append(line[index + 1])
            in_word = True
            index += 2
        else:
            current.append(char)
            in_word = True
            index += 1
    if in_word:
        words.append("".join(current))
    return words


def _words(items: list[str | _Pipe], verb: str) -> list[str]:
    words = []
    for item in items:
        if isinstance(item, _Pipe):
            raise ConfigError(f'{verb}: "|" is only understood after show (show | commands)')
        words.append(item)
    return words


def _revision_number(text: str, verb: str) -> int:
    if not text.isdigit():
        raise ConfigError(f'{verb}: "{text}" is not a revision number (0 is the newest)')
    return int(text)


# --- the session ----------------------------------------------------------------------------------


class ConfigSession:
    def __init__(
        self,
        paths: Paths,
        *,
        planner: Planner,
        applier: Applier = no_daemon,
        probe: Probe | None = None,
        clock: Callable[[], float] = time.time,
        user: str | None = None,
        archive_revisions: int = DEFAULT_REVISIONS,
        templates_dir: Path = TEMPLATES_DIR,
    ) -> None:
        self.paths = paths
        self.planner = planner
        self.applier = applier
        self.probe = probe
        self.clock = clock
        self.user = user or _current_user()
        self.archive = Archive(paths.archive_dir, archive_revisions)
        self.templates_dir = templates_dir
        self.notices: list[str] = []  # said once when the session starts
        self._lock_fd: int | None = None
        self.running = self._load_running()
        self.working = self.running.copy()
        self.pending = self._load_pending()

    # --- state -----------------------------------------------------------------------------

    @property
    def changed(self) -> bool:
        """The working configuration differs from the running one."""
        return self.working != self.running

    @property
    def saved(self) -> bool:
        """The saved configuration holds what is running."""
        try:
            return ConfigTree.from_boot_text(self.paths.saved_config.read_text()) == self.running
        except (OSError, UnicodeDecodeError, ConfigError):
            return False

    def _load_running(self) -> ConfigTree:
        for path, what in ((self.paths.running_config, "running"), (self.paths.saved_config, "saved")):
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue
            except (OSError, UnicodeDecodeError) as exc:
                self.notices.append(f"WARNING: cannot read the {what} configuration {path}: {exc}")
                continue
            try:
                return ConfigTree.from_boot_text(text)
            except ConfigError as exc:
                self.notices.append(f"WARNING: the {what} configuration {path} does not parse:")
                self.notices.extend(f"  {message}" for message in exc.messages)
        return ConfigTree()

    @property
    def _pending_path(self) -> Path:
        return self.paths.config_dir / PENDING_FILE

    def _load_pending(self) -> PendingConfirm | None:
        try:
            data = json.loads(self._pending_path.read_text())
            return PendingConfirm(float(data["deadline"]), int(data["minutes"]), str(data["restore"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.notices.append(f"WARNING: ignoring {self._pending_path}: {exc}")
            return None

    def _store_pending(self, pending: PendingConfirm | None) -> None:
        self.pending = pending
        if pending is None:
            self._pending_path.unlink(missing_ok=True)
            return
        data = {"deadline": pending.deadline, "minutes": pending.minutes, "restore": pending.restore_text}
        write_atomic(self._pending_path, json.dumps(data), mode=0o600)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One commit at a time across processes (two shells, the commit-confirm watcher).

        Re-entrant within this session: the automatic rollback commits while holding it.
        """
        if self._lock_fd is not None:
            yield
            return
        self.paths.config_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.paths.config_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd = fd
            yield
        finally:
            self._lock_fd = None
            os.close(fd)

    # --- editing ---------------------------------------------------------------------------

    def set(self, words: list[str]) -> None:
        self.working.set(words)

    def delete(self, words: list[str]) -> None:
        self.working.delete(words)

    def discard(self) -> str:
        if not self.changed:
            return "No changes have been discarded"
        self.working = self.running.copy()
        return "Changes have been discarded"

    def load(self, file: str) -> str:
        path = self._resolve(file, must_exist=True)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"load: cannot read {path}: {exc}") from None
        first = next((line.strip() for line in text.splitlines()
                      if line.strip() and not line.lstrip().startswith(("#", "//", "/*"))), "")
        try:
            if first.startswith(("set ", "delete ")):
                tree = ConfigTree.from_commands(text)
            else:
                tree = ConfigTree.from_boot_text(text)
        except ConfigError as exc:
            raise ConfigError([f"load {path}: nothing loaded:", *exc.messages]) from None
        self.working = tree
        return f"Loaded {path}: use 'compare' to review and 'commit' to make it active"

    def _resolve(self, file: str, *, must_exist: bool) -> Path:
        if not file:
            raise ConfigError("a file name is required")
        if CONTROL_CHARACTERS.search(file):
            raise ConfigError(f"file name {file!r} holds control characters")
        path = Path(file)
        if path.is_absolute():
            return path
        # Relative names live in the config directory (VyOS: /config), then the current one.
        in_config = self.paths.config_dir / path
        if must_exist and not in_config.exists() and path.exists():
            return path.resolve()
        return in_config

    # --- showing ---------------------------------------------------------------------------

    def show(self, words: list[str], *, commands: bool = False, strip_private: bool = False) -> str:
        node, kind = _find(self.working, words)
        tree = ConfigTree()
        if kind is Kind.TAG or kind in (Kind.LEAF, Kind.MULTI, Kind.VALUELESS):
            tree.root.children[words[-1]] = node
        else:
            tree.root.children.update(node.children)
        if commands:
            prefix = words[:-1] if kind is not Kind.NODE or not words else words
            lines = [
                "set " + show_path(prefix) + line[3:] if prefix else line
                for line in tree.to_commands(secrets=not strip_private)
            ]
            return "\n".join(lines)
        text = tree.to_boot_text(secrets=not strip_private).rstrip("\n")
        if not text and not words:
            return "(the configuration is empty)"
        return text

    def show_commits(self) -> str:
        rows = [f"{info.number:>4}  {_when(info.timestamp)}  by {info.user}"
                + (f"  {info.comment}" if info.comment else "") for info in self.archive.list()]
        return "\n".join(rows) if rows else "(no commits yet)"

    def compare(self, old: int | None = None, new: int | None = None, *, commands: bool = False) -> str:
        if old is None:
            before, after, labels = self.running, self.working, ("running", "working")
        else:
            before = ConfigTree.from_boot_text(self.archive.get(old).boot_text)
            if new is None:
                after, labels = self.working, (f"revision {old}", "working")
            else:
                after = ConfigTree.from_boot_text(self.archive.get(new).boot_text)
                labels = (f"revision {old}", f"revision {new}")
        if before == after:
            return "No changes between " + " and ".join(labels)
        if commands:
            old_lines, new_lines = before.to_commands(secrets=True), after.to_commands(secrets=True)
            removed = [line for line in old_lines if line not in set(new_lines)]
            added = [line for line in new_lines if line not in set(old_lines)]
            return "\n".join(["delete" + line[3:] for line in removed] + added)
        diff = difflib.unified_diff(before.to_boot_text().splitlines(), after.to_boot_text().splitlines(),
                                    fromfile=labels[0], tofile=labels[1], lineterm="", n=3)
        return "\n".join(diff)

    # --- commit ----------------------------------------------------------------------------

    def commit(self, comment: str = "") -> list[str]:
        """Lines to print; raises ConfigError (with every reason) when nothing was committed."""
        out = self.poll()
        if not self.changed:
            return [*out, "No configuration changes to commit"]
        out += self._commit(self.working, comment)
        if self.pending is not None:
            out.append(f"commit-confirm is still pending: 'confirm' within {self._minutes_left()} "
                       "minute(s), or the configuration before it comes back")
        return out

    def commit_confirm(self, minutes: int = DEFAULT_CONFIRM_MINUTES, comment: str = "") -> list[str]:
        if not 1 <= minutes <= 1440:
            raise ConfigError(f"commit-confirm: {minutes} minutes is out of range 1-1440")
        out = self.poll()
        if not self.changed:
            return [*out, "No configuration changes to commit"]
        restore = (self.pending.restore_text if self.pending is not None
                   else running_text(self.running, templates_dir=self.templates_dir))
        out += self._commit(self.working, comment or f"commit-confirm {minutes}")
        deadline = self.clock() + minutes * 60
        self._store_pending(PendingConfirm(deadline, minutes, restore))
        out.append(f"commit-confirm: 'confirm' within {minutes} minute(s) (by {_when(deadline)}), "
                   "or the previous configuration comes back by itself")
        return out

    def confirm(self) -> list[str]:
        out = self.poll()
        if self.pending is None:
            raise ConfigError("confirm: no commit-confirm is pending")
        self._store_pending(None)
        return [*out, "Confirmed: the configuration stays"]

    def _minutes_left(self) -> int:
        assert self.pending is not None
        return max(0, int((self.pending.deadline - self.clock() + 59) // 60))

    def poll(self) -> list[str]:
        """Roll back an unconfirmed commit-confirm whose time is up; lines to print."""
        if self.pending is None:
            disk = self._load_pending()
            if disk is None:
                return []
            self.pending = disk
        if self.clock() < self.pending.deadline:
            return []
        with self._locked():
            return self._expire()

    def _expire(self) -> list[str]:
        pending = self._load_pending()  # again, under the lock: another process may have acted
        if pending is None:
            self.pending = None
            self.running = self._load_running_quietly() or self.running
            return ["commit-confirm was settled by another session"]
        try:
            restored = ConfigTree.from_boot_text(pending.restore_text)
        except ConfigError as exc:
            self._store_pending(None)
            return ["commit-confirm expired, but the configuration to restore does not parse:",
                    *exc.messages]
        lost = self.changed
        out = [f"commit-confirm was not confirmed within {pending.minutes} minute(s): "
               "restoring the previous configuration"]
        try:
            out += self._commit(restored, f"rollback: commit-confirm {pending.minutes} not confirmed",
                                force=True)
        except ConfigError as exc:
            out += ["the rollback failed:", *exc.messages]
        self._store_pending(None)
        self.working = self.running.copy()
        if lost:
            out.append("uncommitted changes of this session were discarded")
        return out

    def rollback(self, number: int) -> list[str]:
        out = self.poll()
        if self.changed:
            raise ConfigError("rollback: there are uncommitted changes: commit or discard them first")
        revision = self.archive.get(number)
        try:
            tree = ConfigTree.from_boot_text(revision.boot_text)
        except ConfigError as exc:
            raise ConfigError([f"rollback: revision {number} does not parse:", *exc.messages]) from None
        if tree == self.running:
            return [*out, f"revision {number} is what is running: nothing to do"]
        out += self._commit(tree, f"rollback {number}")
        self.working = self.running.copy()
        return out

    def _commit(self, tree: ConfigTree, comment: str, *, force: bool = False) -> list[str]:
        """The pipeline; `force` (the automatic rollback) turns verify errors into warnings."""
        out: list[str] = []
        candidate = tree.copy()
        notes = migrate(candidate.root)
        out += [f"migrated: {note}" for note in notes]
        try:
            config = model_from_tree(candidate)
            plan = self.planner(self._running_model(), config, probe=self.probe, now=self.clock(),
                                force=force)
        except ConfigError as exc:
            raise ConfigError(["Commit failed:", *exc.messages]) from None
        out += [f"WARNING: {message}" for message in plan.warnings]
        boot_text = running_text(candidate, templates_dir=self.templates_dir)
        info: RevisionInfo | None = None
        with self._locked():
            on_disk = self._load_running_quietly()
            if on_disk is not None and on_disk != self.running and not force:
                out.append("WARNING: another commit changed the running configuration since this "
                           "session started; this commit replaces it")
            try:
                outcome = self.applier(boot_text, force=force)
            except DaemonNotRunningError as exc:
                out += self._not_running_lines(candidate, str(exc))
            except ApplyRefusedError as exc:
                raise ConfigError(["Commit failed: the daemon refused the configuration:",
                                   *str(exc).splitlines(),
                                   "Nothing changed: the previous configuration is still running"]) from None
            else:
                out += [f"applied: {line}" for line in outcome.applied]
                out += [f"ended session: {line}" for line in outcome.ended]
                out.append(f"kept {outcome.kept} session(s)")
                info = self.archive.add(boot_text, user=self.user, comment=comment, timestamp=self.clock())
            write_files(generate(config, self.paths, templates_dir=self.templates_dir))
        self.running = candidate
        if tree is self.working:
            self.working = candidate.copy()
        if info is None:
            out.append("committed in this session; not archived, since no daemon applied it")
        else:
            out.append(f"committed as revision 0 (#{info.sequence}) by {info.user}")
        return out

    def _running_model(self) -> Config | None:
        """What runs now, for the plan's comparison (None: nothing, or it no longer parses)."""
        try:
            return model_from_tree(self.running)
        except ConfigError:
            return None

    def _not_running_lines(self, committed: ConfigTree, reason: str) -> list[str]:
        line = f"{reason}: the configuration applies when it starts"
        if self._saved_tree() == committed:
            return [line]
        return [line + ", which loads the saved configuration: run 'save' to start with this one"]

    def _saved_tree(self) -> ConfigTree | None:
        try:
            return ConfigTree.from_boot_text(self.paths.saved_config.read_text())
        except (OSError, UnicodeDecodeError, ConfigError):
            return None

    def _load_running_quietly(self) -> ConfigTree | None:
        text = _read_or_none(self.paths.running_config)
        if text is None:
            return None
        try:
            return ConfigTree.from_boot_text(text)
        except ConfigError:
            return None

    # --- saving ----------------------------------------------------------------------------

    def save(self, file: str | None = None) -> list[str]:
        path = self.paths.saved_config if file is None else self._resolve(file, must_exist=False)
        if path.is_dir():
            raise ConfigError(f"save: {path} is a directory")
        out = []
        if self.changed:
            out.append("WARNING: uncommitted changes are not saved (save writes the running configuration)")
        try:
            write_atomic(path, running_text(self.running, templates_dir=self.templates_dir), mode=0o600)
        except OSError as exc:
            raise ConfigError(f"save: cannot write {path}: {exc.strerror or exc}") from None
        out.append(f"Saved the running configuration to {path}")
        return out

    def exit(self, discard: bool = False) -> list[str]:
        if self.changed and not discard:
            raise ConfigError("Cannot exit: the configuration is modified. "
                              "Use 'commit', 'discard', or 'exit discard'")
        out = []
        if self.changed:
            self.working = self.running.copy()
            out.append("Uncommitted changes discarded")
        if self.pending is not None:
            out.append(f"commit-confirm pending: the previous configuration comes back at "
                       f"{_when(self.pending.deadline)} unless confirmed (vpnd configure -c confirm)")
        if not self.saved and not self.running.is_empty():
            out.append("WARNING: the running configuration is not saved ('save' keeps it across restarts)")
        return out

    # --- the command line ------------------------------------------------------------------

    def execute(self, line: str) -> Output:
        """Run one command line; bad input gives errors in the Output, never an exception."""
        output = Output()
        try:
            output.lines += self.poll()
            stripped = line.rstrip()
            if stripped.endswith("?") and not stripped.endswith("\\?"):
                with contextlib.suppress(ConfigError):
                    output.lines += self.help(stripped[:-1])
                    return output
            items = split_line(line)
            if not items:
                return output
            verb = items[0]
            if isinstance(verb, _Pipe):
                raise ConfigError('a command cannot start with "|"')
            output.exit = self._dispatch(verb, items[1:], output.lines)
        except ConfigError as exc:
            output.errors += exc.messages
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            output.errors.append(f"{where}{exc.strerror or exc}")
        return output

    def _dispatch(self, verb: str, items: list[str | _Pipe], out: list[str]) -> bool:
        if verb in ("set", "delete"):
            words = _words(items, verb)
            if not words:
                raise ConfigError(f"{verb}: a path is required (try '{verb} ?')")
            (self.set if verb == "set" else self.delete)(words)
        elif verb == "show":
            out += self._show(items).splitlines()
        elif verb == "compare":
            words = _words(items, verb)
            commands = bool(words) and words[-1] == "commands"
            numbers = [_revision_number(w, verb) for w in (words[:-1] if commands else words)]
            if len(numbers) > 2:
                raise ConfigError("compare: at most two revision numbers (compare N M)")
            out += self.compare(*numbers, commands=commands).splitlines()
        elif verb == "commit":
            out += self.commit(self._comment(_words(items, verb)))
        elif verb == "commit-confirm":
            words = _words(items, verb)
            minutes = DEFAULT_CONFIRM_MINUTES
            if words and words[0] != "comment":
                if not words[0].isdigit():
                    raise ConfigError(f'commit-confirm: "{words[0]}" is not a number of minutes')
                minutes = int(words[0])
                words = words[1:]
            out += self.commit_confirm(minutes, self._comment(words))
        elif verb == "confirm":
            self._no_arguments(verb, items)
            out += self.confirm()
        elif verb == "rollback":
            words = _words(items, verb)
            if len(words) != 1:
                raise ConfigError("rollback: one revision number is required (see 'show system commit')")
            out += self.rollback(_revision_number(words[0], verb))
        elif verb == "save":
            words = _words(items, verb)
            if len(words) > 1:
                raise ConfigError("save: at most one file name")
            out += self.save(words[0] if words else None)
        elif verb == "load":
            words = _words(items, verb)
            if len(words) != 1:
                raise ConfigError("load: one file name is required")
            out.append(self.load(words[0]))
        elif verb == "discard":
            self._no_arguments(verb, items)
            out.append(self.discard())
        elif verb in ("exit", "quit"):
            words = _words(items, verb)
            if words not in ([], ["discard"]):
                raise ConfigError(f"{verb}: only 'discard' may follow")
            out += self.exit(discard=bool(words))
            return True
        elif verb == "help":
            out += [f"  {name:<16}{text}" for name, text in VERBS.items()]
        else:
            raise ConfigError(f'unknown command "{verb}" (commands: {", ".join(VERBS)})')
        return False

    @staticmethod
    def _no_arguments(verb: str, items: list[str | _Pipe]) -> None:
        if items:
            raise ConfigError(f"{verb}: takes no arguments")

    @staticmethod
    def _comment(words: list[str]) -> str:
        if words and words[0] == "comment":
            words = words[1:]
            if not words:
                raise ConfigError("commit: 'comment' needs a text")
        comment = " ".join(words)
        if CONTROL_CHARACTERS.search(comment):
            raise ConfigError("commit: the comment holds control characters")
        if len(comment) > 1000:
            raise ConfigError("commit: the comment is longer than 1000 characters")
        return comment

    def _show(self, items: list[str | _Pipe]) -> str:
        path: list[str] = []
        filters: list[str] = []
        seen_pipe = False
        for item in items:
            if isinstance(item, _Pipe):
                seen_pipe = True
            elif seen_pipe:
                filters.append(item)
            else:
                path.append(item)
        for name in filters:
            if name not in ("commands", "strip-private"):
                raise ConfigError(f'show: unknown filter "| {name}" (filters: commands, strip-private)')
        if path == ["system", "commit"]:
            return self.show_commits()
        return self.show(path, commands="commands" in filters, strip_private="strip-private" in filters)

    # --- help and completion ---------------------------------------------------------------

    def help(self, line: str) -> list[str]:
        """What `?` prints for the text before it."""
        found = self.complete(line)
        if not found:
            raise ConfigError("nothing can follow here")
        width = max(len(c.word) for c in found) + 2
        return ["Possible completions:", *(f"  {c.word:<{width}}{c.help}" for c in found)]

    def complete(self, line: str) -> list[Candidate]:
        """Candidates for the word being typed at the end of `line` (Tab and `?`)."""
        try:
            items = split_line(line)
        except ConfigError:
            return []
        ends_word = bool(line) and not line[-1].isspace()
        words = [item for item in items if isinstance(item, str)]
        prefix = words.pop() if ends_word and words and not isinstance(items[-1], _Pipe) else ""
        if any(isinstance(item, _Pipe) for item in items):
            filters = (("commands", "Show as set commands"), ("strip-private", "Hide secrets"))
            return [Candidate(n, h) for n, h in filters if n.startswith(prefix)]
        if not words:
            return [Candidate(verb, text) for verb, text in VERBS.items() if verb.startswith(prefix)]
        verb, path = words[0], words[1:]
        if verb in ("set", "delete", "show"):
            candidates = self._path_candidates(path, existing_only=verb != "set")
        elif verb in ("rollback", "compare"):
            candidates = [Candidate(str(i.number), _revision_help(i)) for i in self.archive.list()]
        elif verb == "commit" and not path:
            candidates = [Candidate("comment", "Comment stored with the revision")]
        elif verb == "exit" and not path:
            candidates = [Candidate("discard", "Drop uncommitted changes and leave")]
        else:
            candidates = []
        return [c for c in candidates if not c.literal or c.word.startswith(prefix)]

    def _path_candidates(self, path: list[str], *, existing_only: bool) -> list[Candidate]:
        schema: SchemaNode = schema_root()
        node: Node | None = self.working.root
        expect = "children"
        for word in path:
            if expect == "children":
                child = schema.children.get(word)
                if child is None:
                    return []
                schema = child
                node = node.children.get(word) if node is not None else None
                expect = _EXPECT.get(child.kind, "value")
            elif expect == "tag":
                node = node.children.get(_canonical(schema, word)) if node is not None else None
                expect = "children"
            else:
                return []
        if expect == "children":
            names = schema.children if node is None or not existing_only else {
                n: schema.children[n] for n in node.children if n in schema.children}
            return [Candidate(name, child.help) for name, child in sorted(names.items())]
        existing = sorted(node.children, key=natural_key) if node is not None and expect == "tag" else []
        values = list(node.values) if node is not None and expect == "value" else []
        if expect == "none":
            return []
        out = [Candidate(name, f"existing {schema.name}") for name in existing]
        out += [Candidate(value, f"{schema.help} (current)") for value in values]
        if existing_only:
            return out
        value_type = schema.value
        if value_type is not None and value_type.enum:
            out += [Candidate(v, schema.help) for v in value_type.enum if v not in values]
        if schema.completion:
            out += [Candidate(name, f"from {schema.completion}")
                    for name in self.working.list_nodes(schema.completion.split())]
        if value_type is not None and not value_type.enum:
            out.append(Candidate(f"<{value_type.description}>", schema.help, literal=False))
        unique: dict[str, Candidate] = {}
        for candidate in out:
            unique.setdefault(candidate.word, candidate)
        return list(unique.values())


# --- helpers --------------------------------------------------------------------------------------

_EXPECT = {Kind.NODE: "children", Kind.TAG: "tag", Kind.VALUELESS: "none"}


def _canonical(schema: SchemaNode, word: str) -> str:
    if schema.value is None:
        return word
    try:
        return schema.value.check(word)
    except Exception:  # any value the check refuses is simply not an existing name
        return word


def _find(tree: ConfigTree, words: list[str]) -> tuple[Node, Kind]:
    """The node at `words` in `tree` (tag values canonicalised), or ConfigError naming the word.

    The whole path is checked against the schema first, so a typo is reported as a typo even
    where the part before it is not set.
    """
    node: Node | None = tree.root
    schema: SchemaNode = schema_root()
    kind = Kind.NODE
    missing: int | None = None
    for index, word in enumerate(words):
        shown = show_path(words[: index + 1])
        if kind is Kind.TAG:
            entry = node.children.get(_canonical(schema, word)) if node is not None else None
            kind = Kind.NODE
        else:
            if kind is not Kind.NODE:
                raise ConfigError(f'show {shown}: "{words[index - 1]}" has no children')
            child_schema = schema.children.get(word)
            if child_schema is None:
                expected = ", ".join(sorted(schema.children)) or "nothing"
                raise ConfigError(f'show {shown}: unknown node "{word}" (expected one of: {expected})')
            entry = node.children.get(word) if node is not None else None
            schema, kind = child_schema, child_schema.kind
        if entry is None and missing is None:
            missing = index
        node = entry
    if missing is not None or node is None:
        index = missing if missing is not None else len(words) - 1
        raise ConfigError(f"show {show_path(words[: index + 1])}: not set")
    return node, node.kind


def _read_or_none(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _revision_help(info: RevisionInfo) -> str:
    return f"{_when(info.timestamp)} by {info.user}" + (f": {info.comment}" if info.comment else "")


def _current_user() -> str:
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"
