"""Where one vpnd instance keeps its files; every path derives from two directories.

``config_dir`` (default /etc/vpnd, or $VPND_CONFIG_DIR) holds configuration and durable state;
``run_dir`` (default /run/vpnd, or $VPND_RUN_DIR) holds the control socket and the pid file.
Several instances run side by side (tests, benchmarks) by giving each its own pair.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CONFIG_DIR = Path("/etc/vpnd")
DEFAULT_RUN_DIR = Path("/run/vpnd")


@dataclass(frozen=True, slots=True)
class Paths:
    config_dir: Path
    run_dir: Path

    @classmethod
    def from_env(cls, config_dir: str | Path | None = None, run_dir: str | Path | None = None) -> Paths:
        config = config_dir or os.environ.get("VPND_CONFIG_DIR") or DEFAULT_CONFIG_DIR
        run = run_dir or os.environ.get("VPND_RUN_DIR") or DEFAULT_RUN_DIR
        return cls(Path(config), Path(run))

    @property
    def saved_config(self) -> Path:
        """The saved configuration (VyOS `config.boot` form), loaded at start."""
        return self.config_dir / "config.boot"

    @property
    def archive_dir(self) -> Path:
        """Commit archive: one file per revision, for rollback and compare."""
        return self.config_dir / "archive"

    @property
    def tls_dir(self) -> Path:
        """Generated TLS material (the embedded default's self-signed certificate)."""
        return self.config_dir / "tls"

    @property
    def state_dir(self) -> Path:
        """Durable runtime state (accounting spool, session records)."""
        return self.config_dir / "state"

    @property
    def running_config(self) -> Path:
        """What the running daemon runs: written by the daemon alone, at start and after each
        apply, and removed when it stops."""
        return self.run_dir / "running.boot"

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "vpnd.sock"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "vpnd.pid"


def write_atomic(path: Path, data: bytes | str, *, mode: int = 0o644) -> None:
    """Write, fsync and rename, so a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, raw)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
