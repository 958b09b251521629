"""How the `vpnd` command and the CI entry point are called: global options on either side of
the verb, no library warnings on the operator's terminal, `.ci/run` forcing CI=true.

Runs in about 3 s (two `python -m vpnd.cli.main` processes, one bash)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vpnd.cli.main import build_parser
from vpnd.server.tls import make_self_signed

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [
    ["--config-dir", "/x/etc", "--run-dir", "/x/run", "configure", "-c", "show"],
    ["configure", "--config-dir", "/x/etc", "--run-dir", "/x/run", "-c", "show"],
    ["--run-dir", "/x/run", "configure", "-c", "show", "--config-dir", "/x/etc"],
    ["show", "sessions", "--config-dir", "/x/etc", "--run-dir", "/x/run"],
    ["show", "--run-dir", "/x/run", "sessions", "--config-dir", "/x/etc"],
    ["reset", "user", "alice", "--config-dir", "/x/etc", "--run-dir", "/x/run"],
])
def test_global_options_work_before_or_after_the_verb(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.config_dir, args.run_dir) == ("/x/etc", "/x/run")


def test_global_options_default_when_not_given() -> None:
    args = build_parser().parse_args(["configure", "-c", "show"])
    assert (args.config_dir, args.run_dir) == (None, None)


def test_configure_after_the_verb_uses_that_directory(tmp_path: Path) -> None:
    """The real command, options after the verb, committing a config with a certificate: the
    saved config lands in that directory, and no library warning (cryptography's DSA deprecation
    among them) reaches the terminal, even with Python told to show every warning."""
    config_dir = tmp_path / "etc"
    cert, key = make_self_signed(tmp_path, "vpn.example.net")
    lines = [
        "set vpn sstp authentication local-users username alice password s3cret",
        "set vpn sstp client-ip-pool P range 10.70.0.0/24",
        "set vpn sstp default-pool P",
        "set vpn sstp gateway-address 10.70.255.1",
        "set vpn sstp port 18443",
        f"set vpn sstp ssl cert-file {cert}",
        f"set vpn sstp ssl key-file {key}",
        f"set vpn sstp ssl ca-cert-file {cert}",
        "set vpn sstp description from-after-the-verb",
        "commit",
        "save",
    ]
    argv = [sys.executable, "-m", "vpnd.cli.main", "configure", "--config-dir", str(config_dir),
            "--run-dir", str(tmp_path / "run")]
    for line in lines:
        argv += ["-c", line]
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONWARNINGS": "default"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "from-after-the-verb" in (config_dir / "config.boot").read_text()
    assert "Warning" not in done.stderr and "Warning" not in done.stdout, done.stdout + done.stderr


def test_ci_entry_point_sets_ci_true_itself(tmp_path: Path) -> None:
    """`.ci/run` runs exactly `./tests/run.sh`, with CI=true even when the runner's environment
    has none or says otherwise. The real script runs against a stand-in tests/run.sh that
    reports what it was given (running the whole suite here would take minutes)."""
    (tmp_path / ".ci").mkdir()
    (tmp_path / "tests").mkdir()
    shutil.copy2(REPO / ".ci" / "run", tmp_path / ".ci" / "run")
    report = tmp_path / "report"
    stand_in = tmp_path / "tests" / "run.sh"
    stand_in.write_text(f'#!/bin/sh\necho "CI=$CI args=$#" > {report}\n')
    stand_in.chmod(0o755)
    for runner_ci in (None, "false"):
        env = {k: v for k, v in os.environ.items() if k != "CI"}
        if runner_ci is not None:
            env["CI"] = runner_ci
        done = subprocess.run([str(tmp_path / ".ci" / "run")], check=False, env=env,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert report.read_text().strip() == "CI=true args=0"
    readme = (REPO / "README.md").read_text()
    assert "./tests/run.sh" in readme and "exec ./tests/run.sh" in (REPO / ".ci" / "run").read_text()
