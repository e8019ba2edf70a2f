"""The real promtool and prometheus (hack/build-prometheus.sh); the chart's alerts and dashboard."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart.helm_support import CHART, REPO, one, template

RELEASE = "cbtls"
RELEASE_NAMESPACE = "cbtls-system"
JOB = f"{RELEASE}-cobrowse-tls-operator-metrics"  # the metrics Service's name: the job label
DASHBOARD = CHART / "dashboards" / "cobrowse-tls-operator.json"
RUNBOOK = REPO / "docs" / "runbook.md"


def bin_dir() -> Path:
    """Where promtool and prometheus are: COBROWSE_TLS_PROMETHEUS_DIR, else the build cache
    (hack/build-prometheus.sh builds them when missing). Fails, never skips, without them."""
    env = os.environ.get("COBROWSE_TLS_PROMETHEUS_DIR")
    if env and all(os.access(Path(env) / b, os.X_OK) for b in ("promtool", "prometheus")):
        return Path(env)
    result = subprocess.run(
        [str(REPO / "hack" / "build-prometheus.sh"), "--bin-dir"],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if result.returncode != 0:
        pytest.fail(f"hack/build-prometheus.sh failed:\n{result.stderr}", pytrace=False)
    return Path(result.stdout.strip())


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir() / "promtool"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def prometheus_rule(
    helm: str, tmp: Path, values: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The chart's PrometheusRule, rendered by the real helm (enabled, plus ``values``)."""
    merged: dict[str, Any] = {"prometheusRule": {"enabled": True}}
    for key, value in (values or {}).items():
        if key == "prometheusRule":
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    objs = template(helm, values=merged, tmp=tmp, release=RELEASE, namespace=RELEASE_NAMESPACE)
    return one(objs, "PrometheusRule")


def write_rules(rule: Mapping[str, Any], path: Path) -> Path:
    """A PrometheusRule's groups as a Prometheus rule file (what prometheus-operator loads)."""
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def alerts_of(rule: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]


def runbook_anchors() -> set[str]:
    """GitHub's anchors of the runbook's headings."""
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_targets(dash: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of every panel."""
    return [(p["title"], t) for p in dash["panels"] for t in p.get("targets", ())]


class Prometheus:
    """A real prometheus on 127.0.0.1 with a tmp dir of its own, stopped by `stop`."""

    def __init__(self, workdir: Path, config: Mapping[str, Any], port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                str(bin_dir() / "prometheus"),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r,  # noqa: S310
            ):
                if r.status == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready after 60s:\n{self.log()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def api(self, path: str, **params: str | list[str]) -> Any:
        """GET /api/v1/<path>; the `data` of a success, an AssertionError with the error else."""
        query = urllib.parse.urlencode(params, doseq=True)
        url = f"{self.url}/api/v1/{path}?{query}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - our 127.0.0.1 server
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def alerts(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return found


@contextlib.contextmanager
def running(workdir: Path, config: Mapping[str, Any], port: int) -> Iterator[Prometheus]:
    prom = Prometheus(workdir, config, port)
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()
