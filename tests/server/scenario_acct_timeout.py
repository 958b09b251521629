"""`radius acct-timeout` against a real FreeRADIUS (run inside a namespace by test_acct_timeout.py).

A session comes up with Acct-Interim-Interval 10 and its Start is answered; then FreeRADIUS is
stopped (by its PID), so the Interim-Update due 10 s after the start goes unanswered. With
acct-timeout 2 the daemon ends the session about 2 s later; the Interim and the Stop wait in the
spool, FreeRADIUS is started again and both arrive. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.server.scenario_radius_outage import daemon_config, dial, records_of, spool_records, wait_for
from tests.support.freeradius import FreeRadius, running_freeradius
from vpnd.config.definitions import Config
from vpnd.server.daemon import Daemon
from vpnd.server.tls import make_self_signed

PORT = 4446
NAS = "vpnd-acct-timeout"
INTERIM = 10  # the daemon's floor for Acct-Interim-Interval
ACCT_TIMEOUT = 2

USERS = """\
ticker  Cleartext-Password := "pw-ticker"
        Acct-Interim-Interval = 10
"""


async def scenario(work: Path, radius: FreeRadius) -> dict[str, Any]:
    cert, key = make_self_signed(work, "vpn.test")
    raw = daemon_config(radius, cert, key, port=PORT, nas=NAS, net=75)
    raw["vpn"]["sstp"]["authentication"]["radius"]["acct-timeout"] = ACCT_TIMEOUT
    daemon = Daemon(Config.model_validate(raw), listen_host="127.0.0.1", state_dir=work / "state")
    await daemon.start()
    result: dict[str, Any] = {}
    try:
        dialer = await dial(PORT, "ticker")
        up_at = time.monotonic()
        result["session_id"] = next(iter(daemon.connections.values())).info.session_id
        await wait_for(lambda: spool_records(daemon) == 0, 10, "Start delivered")
        await asyncio.to_thread(radius.stop)  # accounting goes unanswered from here on
        result["ping_while_silent"] = await dialer.ping(2)
        await asyncio.wait_for(dialer.ended.wait(), INTERIM + ACCT_TIMEOUT + 15)
        result["ended_after_start"] = round(time.monotonic() - up_at, 2)
        result["client_reason"] = dialer.close_reason
        await wait_for(lambda: not daemon.connections, 5, "session released")
        result["pending_while_silent"] = spool_records(daemon)
        await asyncio.to_thread(radius.start)
        result["drained_after"] = round(await wait_for(lambda: spool_records(daemon) == 0, 25,
                                                       "spool delivered"), 2)
    finally:
        await daemon.stop()
    result["statistics"] = daemon.statistics()
    result["detail"] = records_of(radius, NAS)
    return result


def main() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="vpnd-acct-timeout-"))
    with running_freeradius(USERS) as radius:
        return asyncio.run(scenario(work, radius))


if __name__ == "__main__":
    print(json.dumps(main(), default=str))
    sys.stdout.flush()
