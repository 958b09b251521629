"""The daemon's end of a commit: plan it (the same step `vpnd configure` runs), apply the plan,
then record what runs. This is the only writer of the running state (`running.boot`), and it
records a configuration only once the daemon runs it."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from vpnd.config.errors import ConfigError
from vpnd.config.model import model_from_tree
from vpnd.config.tree import ConfigTree
from vpnd.config.verify import SystemProbe
from vpnd.paths import write_atomic
from vpnd.server.daemon import ApplyReport, Daemon
from vpnd.server.plan import ApplyPlan, plan_commit

log = logging.getLogger("vpnd")


class DaemonProbe(SystemProbe):
    """verify's view of the machine from inside the daemon: the port it listens on is its own."""

    def __init__(self, daemon: Daemon | None = None) -> None:
        super().__init__()
        self.daemon = daemon

    def port_in_use(self, port: int) -> str | None:
        if self.daemon is not None and self.daemon.service.port == port:
            return None
        return super().port_in_use(port)


def plan_text(boot_text: str, old: Daemon | None = None, *, port: int | None = None,
              force: bool = False) -> ApplyPlan:
    """Parse config.boot text and plan it against what `old` runs (`port`: `vpnd run --port`,
    which outlasts reloads); ConfigError says why not."""
    config = model_from_tree(ConfigTree.from_boot_text(boot_text))
    if port is not None and config.vpn.sstp is not None:
        config.vpn.sstp.port = port
    return plan_commit(old.config if old is not None else None, config, probe=DaemonProbe(old),
                       now=time.time(), force=force)


class RunningConfig:
    def __init__(self, daemon: Daemon, path: Path | None, *, port: int | None = None) -> None:
        self.daemon = daemon
        self.path = path
        self.port = port

    def apply(self, boot_text: str, *, force: bool = False) -> ApplyReport:
        """Plan, apply, record; raises ConfigError with every reason and changes nothing then."""
        report = self.daemon.apply(plan_text(boot_text, self.daemon, port=self.port, force=force))
        self.record(boot_text)
        return report

    def record(self, boot_text: str) -> None:
        if self.path is not None:
            write_atomic(self.path, boot_text, mode=0o600)

    def clear(self) -> None:
        """The daemon stops: nothing runs, and `vpnd configure` starts from the saved file."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def reload(self, saved: Path) -> None:
        """SIGHUP: apply the saved configuration, or keep running the current one and say why."""
        try:
            report = self.apply(saved.read_text())
        except ConfigError as error:
            log.error("reload refused, still running the previous configuration:\n  %s",
                      "\n  ".join(error.messages))
        except (OSError, UnicodeDecodeError) as error:
            log.error("reload refused, still running the previous configuration: cannot read %s: %s",
                      saved, error)
        else:
            log.info("reload: %s", report)
