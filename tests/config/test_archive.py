"""The commit archive: numbering, metadata, rotation, file modes, damaged files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from vpnd.config.archive import HEADER, Archive
from vpnd.config.errors import ConfigError
from vpnd.config.tree import ConfigTree


def boot(port: int) -> str:
    return f"vpn {{\n    sstp {{\n        port {port}\n    }}\n}}\n"


def test_revision_zero_is_the_newest(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "archive")
    assert archive.list() == [] and len(archive) == 0
    archive.add(boot(1001), user="alice", comment="first", timestamp=100.0)
    archive.add(boot(1002), user="bob", comment="second", timestamp=200.0)
    infos = archive.list()
    assert [(i.number, i.sequence, i.user, i.comment, i.timestamp) for i in infos] == [
        (0, 2, "bob", "second", 200.0), (1, 1, "alice", "first", 100.0)]
    assert archive.get(0).boot_text == boot(1002)
    assert archive.get(1).boot_text == boot(1001)


def test_rotation_keeps_n_and_sequence_keeps_growing(tmp_path: Path) -> None:
    archive = Archive(tmp_path, keep=3)
    for port in range(1, 6):
        archive.add(boot(port), user="u", comment=f"c{port}", timestamp=float(port))
    assert [i.comment for i in archive.list()] == ["c5", "c4", "c3"]
    assert [i.sequence for i in archive.list()] == [5, 4, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "commit-000003.boot", "commit-000004.boot", "commit-000005.boot"]


def test_default_keeps_one_hundred(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    for index in range(105):
        archive.add(boot(index + 1), user="u", comment="", timestamp=float(index))
    assert len(archive) == 100
    assert archive.list()[-1].sequence == 6


def test_files_are_private_and_loadable_as_config_boot(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    archive.add(boot(8443), user="alice", comment='quote " and newline\nin comment', timestamp=1.0)
    (path,) = tmp_path.iterdir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert text.startswith(HEADER) and text.count("\n") == boot(8443).count("\n") + 1
    assert ConfigTree.from_boot_text(text).value(["vpn", "sstp", "port"]) == "8443"
    assert archive.get(0).info.comment == 'quote " and newline\nin comment'


def test_missing_revision_and_damaged_header(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    with pytest.raises(ConfigError, match=r"revision 0 does not exist \(revisions: none yet\)"):
        archive.get(0)
    archive.add(boot(1), user="u", comment="c", timestamp=5.0)
    with pytest.raises(ConfigError, match=r"revision 3 does not exist \(revisions: 0-0\)"):
        archive.get(3)
    (tmp_path / "commit-000002.boot").write_text(HEADER + "{not json\n" + boot(2))
    (tmp_path / "unrelated.txt").write_text("ignored")
    info = archive.get(0).info
    assert info.sequence == 2 and info.user == "?" and info.comment == ""
    assert archive.get(0).boot_text == boot(2)


def test_keep_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        Archive(tmp_path, keep=0)
