"""The commit archive: the last N committed configurations, for `rollback N` and `compare N M`.

One file per commit in `Paths.archive_dir`, named by a sequence number that only grows
(`commit-000042.boot`), so a commit adds one file and never renames the others. Revision 0
is the newest commit (what is running), 1 the one before, as in VyOS's `show system commit`.
Each file is config.boot text (secrets included, hence mode 0600) after one header line
`// vpnd-commit {json}` holding the time, the user and the comment; config.boot readers skip it
as a comment, so an archived file can be loaded as it is.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from vpnd.config.errors import ConfigError
from vpnd.paths import write_atomic

DEFAULT_REVISIONS = 100
HEADER = "// vpnd-commit "
_NAME = re.compile(r"^commit-(\d{6,})\.boot$")


@dataclass(frozen=True, slots=True)
class RevisionInfo:
    number: int  # 0 = newest
    sequence: int  # grows by one per commit, never reused
    timestamp: float  # seconds since the epoch
    user: str
    comment: str


@dataclass(frozen=True, slots=True)
class Revision:
    info: RevisionInfo
    boot_text: str


class Archive:
    def __init__(self, directory: Path, keep: int = DEFAULT_REVISIONS) -> None:
        if keep < 1:
            raise ValueError("the archive keeps at least one revision")
        self.directory = directory
        self.keep = keep

    def _files(self) -> list[tuple[int, Path]]:
        """(sequence, file) newest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for entry in self.directory.iterdir():
            match = _NAME.match(entry.name)
            if match:
                found.append((int(match.group(1)), entry))
        return sorted(found, reverse=True)

    def add(self, boot_text: str, *, user: str, comment: str, timestamp: float) -> RevisionInfo:
        """Store a new newest revision and drop the ones beyond `keep`."""
        files = self._files()
        sequence = files[0][0] + 1 if files else 1
        header = json.dumps({"time": timestamp, "user": user, "comment": comment}, ensure_ascii=True)
        write_atomic(self.directory / f"commit-{sequence:06d}.boot", f"{HEADER}{header}\n{boot_text}",
                     mode=0o600)
        for _, old in files[self.keep - 1:]:
            old.unlink(missing_ok=True)
        return RevisionInfo(0, sequence, timestamp, user, comment)

    def __len__(self) -> int:
        return len(self._files())

    def list(self) -> list[RevisionInfo]:
        files = self._files()
        return [self._read(number, sequence, path)[0] for number, (sequence, path) in enumerate(files)]

    def get(self, number: int) -> Revision:
        files = self._files()
        if not 0 <= number < len(files):
            have = f"0-{len(files) - 1}" if files else "none yet"
            raise ConfigError(f"revision {number} does not exist (revisions: {have})")
        sequence, path = files[number]
        info, text = self._read(number, sequence, path)
        return Revision(info, text)

    @staticmethod
    def _read(number: int, sequence: int, path: Path) -> tuple[RevisionInfo, str]:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"archive {path.name}: cannot read: {exc}") from None
        meta: dict[str, object] = {}
        first, _, rest = text.partition("\n")
        if first.startswith(HEADER):
            try:
                loaded = json.loads(first[len(HEADER):])
            except json.JSONDecodeError:
                loaded = {}
            meta = loaded if isinstance(loaded, dict) else {}
            text = rest
        timestamp = meta.get("time")
        info = RevisionInfo(
            number, sequence,
            float(timestamp) if isinstance(timestamp, int | float) else path.stat().st_mtime,
            str(meta.get("user", "?")), str(meta.get("comment", "")),
        )
        return info, text
