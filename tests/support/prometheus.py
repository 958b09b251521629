"""A real Prometheus (Debian's package) run by a test inside one of its namespaces.

It gets a temporary config (one job, scrape and evaluation interval 1 s) and a temporary storage
directory, listens on the namespace's loopback, and is started and stopped by PID through the
test's `Lab`. Queries go to its HTTP API from inside the namespace with curl.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.netns import Lab, Namespace
from tests.support.peers import require_program

LISTEN = "127.0.0.1:9090"


@dataclass
class Prometheus:
    lab: Lab
    namespace: Namespace
    workdir: Path

    @classmethod
    def start(cls, lab: Lab, namespace: Namespace, workdir: Path, targets: list[str]) -> Prometheus:
        """Prometheus scraping ``targets`` (host:port in ``namespace``) every second."""
        program = require_program("prometheus")
        require_program("curl")
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "vpnd", "static_configs": [{"targets": targets}]}],
        }))
        lab.start(namespace, program, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                  f"--web.listen-address={LISTEN}", log=workdir / "prometheus.log")
        prometheus = cls(lab, namespace, workdir)
        prometheus.wait_ready()
        return prometheus

    def log(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text() if path.exists() else ""

    def _get(self, path: str) -> tuple[int, str]:
        done = self.namespace.run("curl", "-s", "-o", "-", "-w", "\n%{http_code}", f"http://{LISTEN}{path}",
                                  timeout=20)
        body, _, code = done.stdout.rpartition("\n")
        return int(code or 0), body

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self._get("/-/ready")[0] != 200:
            assert time.monotonic() < deadline, \
                f"Prometheus not ready after {timeout} s:\n{self.log()[-3000:]}"
            time.sleep(0.2)

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector of ``expression``: [{"metric": {labels}, "value": [time, "text"]}]."""
        code, body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expression}))
        assert code == 200, f"query {expression!r}: HTTP {code}: {body[:500]}"
        answer: dict[str, Any] = json.loads(body)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def label_values(self, label: str) -> list[str]:
        """Every value ``label`` has in the stored series (``__name__``: every metric name)."""
        code, body = self._get(f"/api/v1/label/{label}/values")
        assert code == 200, f"label values of {label}: HTTP {code}: {body[:500]}"
        values: list[str] = json.loads(body)["data"]
        return values

    def value(self, expression: str) -> float | None:
        """The single value of ``expression``, or None when it has no sample (yet)."""
        result = self.query(expression)
        assert len(result) <= 1, f"{expression!r} has {len(result)} series: {result}"
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, expression: str, wanted: float, timeout: float = 30) -> None:
        """Until ``expression`` evaluates to ``wanted`` (scrapes come every second)."""
        deadline = time.monotonic() + timeout
        while (seen := self.value(expression)) != wanted:
            assert time.monotonic() < deadline, f"{expression} is {seen}, not {wanted}, after {timeout} s"
            time.sleep(0.5)
