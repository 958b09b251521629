"""What is generated from the model into config-schema/: JSON Schema and the command tree.

    python -m vpnd.config.schema --write   # regenerate
    python -m vpnd.config.schema --check   # exit 1 when the files are out of date
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vpnd.config.definitions import Config
from vpnd.config.nodes import Kind, SchemaNode, schema_root

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "config-schema"
JSON_SCHEMA_FILE = "vpnd-config.schema.json"
COMMAND_TREE_FILE = "command-tree.json"


def _describe(node: SchemaNode) -> dict[str, Any]:
    entry: dict[str, Any] = {"kind": str(node.kind), "help": node.help}
    if node.kind is Kind.TAG:
        assert node.value is not None
        entry["key"] = node.value.describe()
    elif node.kind in (Kind.LEAF, Kind.MULTI):
        assert node.value is not None
        entry.update(node.value.describe())
        if node.default is not None:
            entry["default"] = node.default
    if node.completion:
        entry["completion"] = node.completion
    if node.children:
        entry["children"] = {name: _describe(child) for name, child in sorted(node.children.items())}
    if node.legacy is not None:
        entry["old-syntax"] = {name: _describe(child) for name, child in sorted(node.legacy.children.items())}
    return entry


def command_tree() -> dict[str, Any]:
    """Every path with its kind, help, value format (values, range, pattern), default, completion.

    Kinds: node, tag (children under a named entry, see "key"), leaf, multi (repeatable leaf),
    valueless. "completion" names a path whose tag values complete the leaf.
    """
    return _describe(schema_root())


def json_schema() -> dict[str, Any]:
    return Config.model_json_schema(by_alias=True)


def _render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False, default=str) + "\n"


def generated_files() -> dict[str, str]:
    return {JSON_SCHEMA_FILE: _render(json_schema()), COMMAND_TREE_FILE: _render(command_tree())}


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of generated files that are missing or differ from what the model gives."""
    stale = []
    for name, text in generated_files().items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in generated_files().items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vpnd.config.schema", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="regenerate the files")
    action.add_argument("--check", action="store_true", help="exit 1 when the files are out of date")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="output directory")
    args = parser.parse_args(argv)
    if args.write:
        for name in write(args.dir):
            print(f"wrote {args.dir / name}")
        return 0
    stale = stale_files(args.dir)
    for name in stale:
        print(f"{args.dir / name} is out of date; run: python -m vpnd.config.schema --write", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
