"""The generic configuration tree that `set` and `delete` edit, the VyOS way.

Nodes are plain strings (node, tag node, leaf, multi-value leaf, valueless leaf). Every edit
is checked against the command tree read from the model (`vpnd.config.nodes`), so an unknown
node or a value out of range is refused where it is typed, with a message naming it. Values
are stored in canonical form. Old syntax (see `vpnd.config.migrate`) is accepted and kept as
written until `migrate()` rewrites it; mixing old and new syntax in one edit migrates at once.
"""

import copy
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from vpnd.config.errors import ConfigError
from vpnd.config.migrate import merge_legacy
from vpnd.config.node import CONTROL_CHARACTERS, Node, natural_key, show_path
from vpnd.config.nodes import InvalidValueError, Kind, SchemaNode, schema_root

SECRET_MASK = "********"

_BOOT_SAFE = re.compile(r"^[A-Za-z0-9._:/@+,=%*-]+$")
_BOOT_INDENT = "    "


class _PathError(Exception):
    pass


# VyOS `vpn sstp` nodes vpnd does not offer, with what to use instead: a configuration written for
# VyOS that uses them is refused with this advice rather than half-applied.
NOT_OFFERED: dict[tuple[str, ...], str] = {
    ("vpn", "sstp", "snmp"): "vpnd has no SNMP agent; read its counters with `vpnd show statistics "
                             "--json` or scrape its Prometheus metrics instead",
    ("vpn", "sstp", "shaper"): "vpnd shapes a session's whole traffic, not traffic by firewall mark; "
                               "set rate limits per user (local-users username NAME rate-limit) or "
                               "from RADIUS (authentication radius rate-limit) instead",
    ("vpn", "sstp", "authentication", "radius", "preallocate-vif"):
        "not needed: vpnd names the session interface before the Access-Request, so NAS-Port-Id "
        "always carries it; delete this node",
}


def _not_offered(tokens: list[str]) -> str | None:
    for prefix, advice in NOT_OFFERED.items():
        if tuple(tokens[:len(prefix)]) == prefix:
            return f"not offered by vpnd: {advice}"
    return None


@dataclass
class _Step:
    name: str
    kind: Kind
    legacy: bool = False
    secret: bool = False


def _quote_command_value(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _quote_boot(value: str) -> str:
    if _BOOT_SAFE.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _walk(children: dict[str, SchemaNode], tokens: list[str]) -> tuple[list[_Step], str | None]:
    """Steps (tree nodes) and final value that `tokens` mean below a node with `children`."""
    if not tokens:
        return [], None
    name, rest = tokens[0], tokens[1:]
    child = children.get(name)
    if child is None:
        expected = ", ".join(sorted(children)) or "nothing"
        raise _PathError(f'unknown node "{name}" (expected one of: {expected})')
    if child.kind is Kind.NODE:
        steps, value = _walk(child.children, rest)
        return [_Step(name, Kind.NODE), *steps], value
    if child.kind is Kind.TAG:
        if child.legacy is not None and _legacy_fits(child, rest):
            steps, value = _walk(child.legacy.children, rest)
            return [_Step(name, Kind.NODE, legacy=True), *steps], value
        steps, value = _walk_tag(child, rest)
        return [_Step(name, Kind.TAG), *steps], value
    if child.kind is Kind.VALUELESS:
        if rest:
            raise _PathError(f'"{name}" takes no value')
        return [_Step(name, Kind.VALUELESS)], None
    assert child.value is not None
    if not rest:
        raise _PathError(f'"{name}" needs a value ({child.value.description})')
    if len(rest) > 1:
        raise _PathError(f'"{name}" takes one value, not {len(rest)}')
    try:
        value = child.value.check(rest[0])
    except InvalidValueError as exc:
        raise _PathError(str(exc)) from None
    return [_Step(name, child.kind, secret=child.secret)], value


def _walk_tag(tag: SchemaNode, tokens: list[str]) -> tuple[list[_Step], str | None]:
    assert tag.value is not None
    if not tokens:
        raise _PathError(f'"{tag.name}" needs a name ({tag.value.description})')
    try:
        key = tag.value.check(tokens[0])
    except InvalidValueError as exc:
        raise _PathError(str(exc)) from None
    steps, value = _walk(tag.children, tokens[1:])
    return [_Step(key, Kind.NODE), *steps], value


def _legacy_fits(tag: SchemaNode, tokens: list[str]) -> bool:
    """Old syntax only where the current syntax cannot mean the same words."""
    assert tag.legacy is not None
    if not tokens:
        return False
    try:
        _walk_tag(tag, tokens)
        return False
    except _PathError:
        pass
    try:
        _walk(tag.legacy.children, tokens)
    except _PathError:
        return False
    return True


class ConfigTree:
    """Ordered nested nodes of strings; renders to `set` lines and to config.boot text."""

    def __init__(self) -> None:
        self._root = Node(Kind.NODE)

    # --- editing ---------------------------------------------------------------------------

    def set(self, path: list[str]) -> None:
        tokens = self._tokens("set", path)
        try:
            steps, value = _walk(schema_root().children, tokens)
        except _PathError as exc:
            raise ConfigError(f"set {show_path(tokens)}: {_not_offered(tokens) or exc}") from None
        if not steps:
            raise ConfigError("set: a path is required")
        self._apply(self._root, steps, value)

    def _apply(self, start: Node, steps: list[_Step], value: str | None) -> None:
        node = start
        for index, step in enumerate(steps):
            existing = node.children.get(step.name)
            if existing is not None and (existing.kind, existing.legacy) != (step.kind, step.legacy):
                if existing.legacy:
                    # New syntax next to old: migrate the old part first, then edit.
                    merge_legacy(node, step.name)
                    existing = node.children.get(step.name)
                elif step.legacy:
                    # Old syntax next to new: build the old part apart, then merge it in.
                    current = node.children.pop(step.name)
                    node.children[step.name] = Node(Kind.NODE, legacy=True)
                    self._apply(node.children[step.name], steps[index + 1:], value)
                    merge_legacy(node, step.name, current)
                    return
                else:  # pragma: no cover - kinds come from the schema
                    raise ConfigError(f"set: node {step.name!r} has an unexpected kind")
            if existing is None:
                existing = Node(step.kind, legacy=step.legacy, secret=step.secret)
                node.children[step.name] = existing
            node = existing
        if value is not None:
            if node.kind is Kind.LEAF:
                node.values = [value]
            elif value not in node.values:
                node.values.append(value)

    def delete(self, path: list[str]) -> None:
        tokens = self._tokens("delete", path)
        if not tokens:
            raise ConfigError("delete: a path is required (the whole configuration cannot be deleted)")
        try:
            chain, value = self._locate(tokens)
        except _PathError as exc:
            raise ConfigError(f"delete {show_path(tokens)}: {exc}") from None
        parent, name, node = chain[-1]
        if value is not None and node.kind is Kind.MULTI and len(node.values) > 1:
            node.values.remove(value)
            return
        del parent.children[name]
        # A tag node without entries does not exist.
        for grand_parent, tag_name, tag_node in reversed(chain[:-1]):
            if tag_node.kind is Kind.TAG and not tag_node.children:
                del grand_parent.children[tag_name]
            else:
                break

    def exists(self, path: list[str]) -> bool:
        try:
            tokens = self._tokens("exists", path)
            self._locate(tokens)
        except (_PathError, ConfigError):
            return False
        return True

    def values(self, path: list[str]) -> list[str]:
        """Values of a leaf (one) or multi-value leaf; [] when not set."""
        try:
            chain, _ = self._locate(self._tokens("values", path))
        except (_PathError, ConfigError):
            return []
        return list(chain[-1][2].values) if chain else []

    def value(self, path: list[str]) -> str | None:
        found = self.values(path)
        return found[0] if found else None

    def list_nodes(self, path: list[str]) -> list[str]:
        """Child names (or tag values) present under `path`, sorted."""
        try:
            chain, _ = self._locate(self._tokens("list", path))
        except (_PathError, ConfigError):
            return []
        node = chain[-1][2] if chain else self._root
        return sorted(node.children, key=natural_key)

    def _locate(self, tokens: list[str]) -> tuple[list[tuple[Node, str, Node]], str | None]:
        """(parent, name, node) for each step of an existing path, and the value if one was named."""
        chain: list[tuple[Node, str, Node]] = []
        node = self._root
        schema: SchemaNode | None = schema_root()
        for index, token in enumerate(tokens):
            if node.kind in (Kind.LEAF, Kind.MULTI):
                if index != len(tokens) - 1:
                    raise _PathError("too many values")
                value = self._canonical(schema, token)
                if value not in node.values:
                    raise _PathError(f'value "{token}" is not set')
                return chain, value
            if node.kind is Kind.VALUELESS:
                raise _PathError(f'"{chain[-1][1]}" takes no value')
            name = self._canonical(schema, token) if node.kind is Kind.TAG else token
            child = node.children.get(name)
            if child is None:
                raise _PathError(f'"{token}" is not set')
            if node.kind is Kind.TAG:
                pass  # an entry is governed by its tag node's schema
            elif schema is not None:
                schema = schema.children.get(name)
                if schema is not None and child.legacy:
                    schema = schema.legacy
            chain.append((node, name, child))
            node = child
        return chain, None

    @staticmethod
    def _canonical(schema: SchemaNode | None, token: str) -> str:
        if schema is None or schema.value is None:
            return token
        try:
            return schema.value.check(token)
        except InvalidValueError:
            return token

    @staticmethod
    def _tokens(verb: str, path: Iterable[str]) -> list[str]:
        if isinstance(path, str):
            raise ConfigError(f"{verb}: the path must be a list of words, not a string")
        tokens = list(path)
        for token in tokens:
            if not isinstance(token, str):
                raise ConfigError(f"{verb}: path elements must be strings, not {type(token).__name__}")
            if CONTROL_CHARACTERS.search(token):
                raise ConfigError(f"{verb} {show_path(tokens)}: control characters are not allowed "
                                  f"in {token!r}")
        return tokens

    # --- whole-tree helpers ------------------------------------------------------------------

    @property
    def root(self) -> Node:
        return self._root

    def copy(self) -> "ConfigTree":
        clone = ConfigTree()
        clone._root = copy.deepcopy(self._root)
        return clone

    def is_empty(self) -> bool:
        return not self._root.children

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfigTree) and self._root == other._root

    def __hash__(self) -> int:  # mutable; hash by identity like any editable object
        return id(self)

    def __repr__(self) -> str:
        return f"ConfigTree({len(self.to_commands())} lines)"

    # --- rendering ---------------------------------------------------------------------------

    def to_commands(self, secrets: bool = False) -> list[str]:
        """`show | commands`: one `set` line per leaf value or childless node."""
        lines: list[str] = []
        self._commands(self._root, [], secrets, lines)
        return lines

    def _commands(self, node: Node, path: list[str], secrets: bool, out: list[str]) -> None:
        if path and not node.children and node.kind is Kind.NODE:
            out.append("set " + show_path(path))
        for name in sorted(node.children, key=natural_key):
            child = node.children[name]
            if child.kind is Kind.TAG:
                for key in sorted(child.children, key=natural_key):
                    self._commands(child.children[key], [*path, name, key], secrets, out)
            elif child.kind is Kind.NODE:
                self._commands(child, [*path, name], secrets, out)
            elif child.kind is Kind.VALUELESS:
                out.append("set " + show_path([*path, name]))
            else:
                for value in child.values:
                    shown = value if secrets or not child.secret else SECRET_MASK
                    out.append(f"set {show_path([*path, name])} {_quote_command_value(shown)}")

    def to_boot_text(self, secrets: bool = True) -> str:
        """VyOS curly-brace config.boot text."""
        lines: list[str] = []
        self._boot(self._root, 0, secrets, lines)
        return "\n".join(lines) + ("\n" if lines else "")

    def _boot(self, node: Node, depth: int, secrets: bool, out: list[str]) -> None:
        indent = _BOOT_INDENT * depth
        for name in sorted(node.children, key=natural_key):
            child = node.children[name]
            if child.kind is Kind.TAG:
                for key in sorted(child.children, key=natural_key):
                    out.append(f"{indent}{name} {_quote_boot(key)} {{")
                    self._boot(child.children[key], depth + 1, secrets, out)
                    out.append(f"{indent}}}")
            elif child.kind is Kind.NODE:
                out.append(f"{indent}{name} {{")
                self._boot(child, depth + 1, secrets, out)
                out.append(f"{indent}}}")
            elif child.kind is Kind.VALUELESS:
                out.append(f"{indent}{name}")
            else:
                for value in child.values:
                    shown = value if secrets or not child.secret else SECRET_MASK
                    out.append(f"{indent}{name} {_quote_boot(shown)}")

    # --- parsing -------------------------------------------------------------------------------

    @classmethod
    def from_commands(cls, lines: str | Iterable[str]) -> "ConfigTree":
        """Replay `set` (and `delete`) lines; all problems are reported together."""
        if isinstance(lines, str):
            lines = lines.splitlines()
        tree = cls()
        errors: list[str] = []
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                words = shlex.split(text)
            except ValueError as exc:
                errors.append(f"line {number}: {exc}")
                continue
            verb, path = words[0], words[1:]
            try:
                if verb == "set":
                    tree.set(path)
                elif verb == "delete":
                    tree.delete(path)
                else:
                    errors.append(f'line {number}: unknown command "{verb}" (expected set or delete)')
            except ConfigError as exc:
                errors.extend(f"line {number}: {message}" for message in exc.messages)
        if errors:
            raise ConfigError(errors)
        return tree

    @classmethod
    def from_boot_text(cls, text: str) -> "ConfigTree":
        """Parse config.boot text; all problems are reported together."""
        tree = cls()
        errors: list[str] = []
        for number, path in _boot_paths(text):
            try:
                tree.set(path)
            except ConfigError as exc:
                errors.extend(f"line {number}: {message}" for message in exc.messages)
        if errors:
            raise ConfigError(errors)
        return tree


# --- config.boot reader ------------------------------------------------------------------------

_WORD, _OPEN, _CLOSE, _NEWLINE = "word", "{", "}", "newline"


def _boot_tokens(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    line = 1
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char == "\n":
            tokens.append((_NEWLINE, "", line))
            line += 1
            index += 1
        elif char.isspace():
            index += 1
        elif text.startswith("/*", index):
            end = text.find("*/", index + 2)
            if end < 0:
                raise ConfigError(f"line {line}: comment not closed")
            line += text.count("\n", index, end)
            index = end + 2
        elif text.startswith("//", index) or char == "#":
            end = text.find("\n", index)
            index = length if end < 0 else end
        elif char in "{}":
            tokens.append((_OPEN if char == "{" else _CLOSE, char, line))
            index += 1
        elif char in "\"'":
            index += 1
            chars: list[str] = []
            while True:
                if index >= length or text[index] == "\n":
                    raise ConfigError(f"line {line}: string not closed")
                current = text[index]
                if current == "\\" and index + 1 < length and text[index + 1] in "\\\"'":
                    chars.append(text[index + 1])
                    index += 2
                elif current == char:
                    index += 1
                    break
                else:
                    chars.append(current)
                    index += 1
            tokens.append((_WORD, "".join(chars), line))
        else:
            start = index
            while index < length and not text[index].isspace() and text[index] not in "{}":
                index += 1
            tokens.append((_WORD, text[start:index], line))
    return tokens


def _boot_paths(text: str) -> list[tuple[int, list[str]]]:
    """(line, set path) for each leaf, valueless leaf and empty node of config.boot text."""
    paths: list[tuple[int, list[str]]] = []
    stack: list[tuple[list[str], int, bool]] = []  # enclosing paths: (path, line, has children)
    current: list[str] = []
    words: list[str] = []
    words_line = 0

    def flush() -> None:
        nonlocal words
        if not words:
            return
        if len(words) > 2:
            raise ConfigError(f"line {words_line}: expected \"name\" or \"name value\", "
                              f"got {len(words)} words")
        paths.append((words_line, current + words))
        words = []
        if stack:
            stack[-1] = (stack[-1][0], stack[-1][1], True)

    for kind, word, line in _boot_tokens(text):
        if kind == _WORD:
            if not words:
                words_line = line
            words.append(word)
        elif kind == _NEWLINE:
            flush()
        elif kind == _OPEN:
            if len(words) not in (1, 2):
                raise ConfigError(f'line {line}: expected "name {{" or "name value {{"')
            if stack:
                stack[-1] = (stack[-1][0], stack[-1][1], True)
            stack.append((current, line, False))
            current = current + words
            words = []
        else:
            flush()
            if not stack:
                raise ConfigError(f'line {line}: "}}" without a matching "{{"')
            parent, opened, has_children = stack.pop()
            if not has_children:
                paths.append((opened, current))
            current = parent
    flush()
    if stack:
        raise ConfigError(f'line {stack[-1][1]}: "{{" not closed')
    return paths
