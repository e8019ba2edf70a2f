#!/usr/bin/env python3
"""Operator speed and scale on the local control plane (a script that prints figures, not a test).

    .venv/bin/python hack/bench_operator.py [--latency 200] [--scale 1000] [--idle 300]
                                            [--rotations 50] [--kubeconfig FILE]

Figures (targets from the issues):
  * create a CR (sources present) -> Ready=True: p50 / p99 over N CRs   (p50 < 150 ms, p99 < 500 ms)
  * 1,000 CRs across 100 namespaces created at once: time until all Ready (< 60 s)
  * the operator's peak RSS with those CRs                                 (< 150 MB)
  * API writes by the operator during the idle minutes                      (0)
  * source Secret update -> first workload pod-template patch: p50 / p99 over 50 rotations
    (p50 < 300 ms, measured with --restart-window 0), and -> all 3 rollouts complete
The operator runs as a separate process (`cobrowse-tls run`), as in production.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client, config

from cobrowse_tls.api import crd, models

GROUP, VERSION, PLURAL = models.GROUP, models.VERSION, models.PLURAL
OPERATOR_USER = "cobrowse-tls-operator"


def ca_pem(cn: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Cluster:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.api = config.new_client_from_config(  # type: ignore[no-untyped-call]  # unannotated
            config_file=str(kubeconfig)
        )
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.ext = client.ApiextensionsV1Api(self.api)

    @staticmethod
    def j(call: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return json.loads(call(*args, _preload_content=False, **kw).data)

    def install_crd(self) -> None:
        self.j(
            self.ext.patch_custom_resource_definition,
            crd.CRD_NAME,
            crd.generate(),
            field_manager="bench",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        time.sleep(2)

    def namespace(self, name: str) -> None:
        try:
            self.j(self.core.create_namespace, {"metadata": {"name": name}})
        except client.ApiException as exc:
            if exc.status != 409:
                raise

    def put_secret(self, ns: str, name: str, data: dict[str, bytes]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": ns},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }
        self.j(
            self.core.patch_namespaced_secret,
            name,
            ns,
            body,
            field_manager="bench",
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    def create_cr(self, ns: str, name: str, spec: dict[str, Any]) -> None:
        body = {
            "apiVersion": models.API_VERSION,
            "kind": models.KIND,
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }
        self.j(self.custom.create_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, body)


class ReadyWatch:
    """Records when each CR first shows Ready=True (a cluster-wide watch, no polling)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.ready: dict[str, float] = {}
        self.cond = threading.Condition()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop = True

    def _run(self) -> None:
        while not self._stop:
            try:
                self._stream()
            except Exception:  # a watch that ends early (server closed it): watch again
                if not self._stop:
                    time.sleep(0.2)

    def _stream(self) -> None:
        if not self._stop:
            resp = self.cluster.custom.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, watch=True, _preload_content=False, timeout_seconds=60
            )
            # With _preload_content=False the client returns the urllib3 response (typed object).
            for line in resp:  # type: ignore[attr-defined]
                if self._stop:
                    return
                obj = json.loads(line)["object"]
                conds = (obj.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                    key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
                    with self.cond:
                        self.ready.setdefault(key, time.perf_counter())
                        self.cond.notify_all()

    def wait(self, keys: set[str], timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        with self.cond:
            while not keys <= self.ready.keys():
                left = deadline - time.perf_counter()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True


def spec(source: str = "ca", **extra: Any) -> dict[str, Any]:
    out = {
        "provider": "PEM",
        "application": {"name": "CB_Cluster"},
        "trustedCA": {"sources": [{"secret": {"name": source, "key": "ca.crt"}}]},
    }
    out.update(extra)
    return out


def free_port() -> int:
    """A port nobody listens on now: two benchmarks at once must not share a metrics port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Operator:
    def __init__(self, kubeconfig: Path, log: Path, *args: str) -> None:
        self.port = free_port()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cobrowse_tls.cli", "run", "--log-format", "plain",
             "--metrics-port", str(self.port), "--metrics-address", "127.0.0.1", *args],
            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else float("nan")

    def writes(self) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read()
        match = re.search(rb"^cobrowse_tls_api_writes_total (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


def bench_latency(c: Cluster, watch: ReadyWatch, n: int) -> None:
    ns = "bench-latency"
    c.namespace(ns)
    c.put_secret(ns, "ca", {"ca.crt": ca_pem("Bench Latency CA")})
    lat = []
    for i in range(n):
        key = f"{ns}/cr-{i}"
        t0 = time.perf_counter()
        c.create_cr(ns, f"cr-{i}", spec())
        if not watch.wait({key}, 30):
            print(f"  {key} not Ready after 30 s", flush=True)
            continue
        lat.append(watch.ready[key] - t0)
    ms = [v * 1000 for v in lat]
    print(
        f"create -> Ready over {len(ms)} CRs: p50 {pct(ms, 50):.0f} ms, p99 {pct(ms, 99):.0f}"
        f" ms, mean {statistics.mean(ms):.0f} ms   (targets: p50 < 150, p99 < 500)",
        flush=True,
    )


def bench_scale(c: Cluster, watch: ReadyWatch, op: Operator, total: int, namespaces: int) -> None:
    per = total // namespaces
    pem = ca_pem("Bench Scale CA")
    for i in range(namespaces):
        c.namespace(f"bench-scale-{i}")
        c.put_secret(f"bench-scale-{i}", "ca", {"ca.crt": pem})
    keys = {f"bench-scale-{i}/cr-{j}" for i in range(namespaces) for j in range(per)}
    t0 = time.perf_counter()

    def create(key: str) -> None:
        ns, name = key.split("/")
        c.create_cr(ns, name, spec())

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(create, sorted(keys)))
    created = time.perf_counter() - t0
    ok = watch.wait(keys, 600)
    took = max(watch.ready[k] for k in keys if k in watch.ready) - t0
    print(
        f"{len(keys)} CRs across {namespaces} namespaces: created in {created:.1f} s, all Ready"
        f" after {took:.1f} s{'' if ok else ' (NOT ALL READY)'}   (target < 60 s)",
        flush=True,
    )
    print(f"operator peak RSS: {op.peak_rss_mb():.0f} MB   (target < 150 MB)", flush=True)


def audit_stamp(text: str) -> float:
    """An audit log timestamp (RFC 3339, microseconds) as Unix time."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def audit_writes(audit_log: Path | None, user: str, since: float) -> int | None:
    """Write requests by `user` in the API server's audit log after `since` (Unix time)."""
    if audit_log is None or not audit_log.exists():
        return None
    count = 0
    for line in audit_log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("user", {}).get("username") != user:
            continue
        if audit_stamp(entry["requestReceivedTimestamp"]) >= since:
            count += 1
    return count


def bench_idle(op: Operator, seconds: float, audit_log: Path | None) -> None:
    time.sleep(5)  # the last status writes of the scale run settle
    before = op.writes()
    start = time.time()
    time.sleep(seconds)
    after = op.writes()
    audited = audit_writes(audit_log, OPERATOR_USER, start)
    print(
        f"operator API writes during {seconds / 60:.1f} idle minutes: {after - before:.0f} by"
        f" its own metric, {'n/a' if audited is None else audited} in the API server's audit"
        f" log (user {OPERATOR_USER})   (target 0)",
        flush=True,
    )


def deployment(ns: str, name: str) -> dict[str, Any]:
    """A one-replica Deployment on the Linux nodes: a restart target."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{"name": "c", "image": "cobrowse:bench"}],
                },
            },
        },
    }


def bench_restarts(c: Cluster, rotations: int) -> None:
    ns = "bench-restart"
    c.namespace(ns)
    c.put_secret(ns, "ca", {"ca.crt": ca_pem("Rotation 0")})
    names = ("web-1", "web-2", "web-3")
    for n in names:
        c.j(c.apps.create_namespaced_deployment, ns, deployment(ns, n))
    c.create_cr(
        ns,
        "cb",
        spec(
            workloads=[{"kind": "Deployment", "name": n} for n in names],
            restart={"maxConcurrent": 3},
        ),
    )

    def hashes() -> list[str | None]:
        items = c.j(c.apps.list_namespaced_deployment, ns)["items"]
        return [
            (
                (i["spec"]["template"]["metadata"].get("annotations") or {}).get(
                    "tls.cobrowse.io/restarted-for"
                )
            )
            for i in items
        ]

    def complete() -> bool:
        items = c.j(c.apps.list_namespaced_deployment, ns)["items"]
        return all(
            i["status"].get("observedGeneration", 0) >= i["metadata"]["generation"]
            and i["status"].get("updatedReplicas", 0) == i["spec"]["replicas"]
            and i["status"].get("availableReplicas", 0) == i["spec"]["replicas"]
            and i["status"].get("replicas", 0) == i["spec"]["replicas"]
            for i in items
        )

    deadline = time.time() + 60
    while (None in hashes() or not complete()) and time.time() < deadline:
        time.sleep(0.1)
    first, full = [], []
    pems = [ca_pem(f"Rotation {i + 1}") for i in range(rotations)]
    for i in range(rotations):
        before = hashes()
        t0 = time.perf_counter()
        c.put_secret(ns, "ca", {"ca.crt": pems[i]})
        while hashes() == before and time.perf_counter() - t0 < 30:
            time.sleep(0.005)
        first.append(time.perf_counter() - t0)
        while not (complete() and len(set(hashes())) == 1 and hashes() != before):
            if time.perf_counter() - t0 > 60:
                break
            time.sleep(0.02)
        full.append(time.perf_counter() - t0)
    f = [v * 1000 for v in first]
    a = [v * 1000 for v in full]
    print(
        f"Secret update -> first pod-template patch over {rotations} rotations: p50 "
        f"{pct(f, 50):.0f} ms, p99 {pct(f, 99):.0f} ms   (target p50 < 300 ms)",
        flush=True,
    )
    print(
        f"Secret update -> all 3 rollouts complete: p50 {pct(a, 50):.0f} ms, p99 "
        f"{pct(a, 99):.0f} ms",
        flush=True,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--latency", type=int, default=200, help="CRs for the latency figure (0: skip)")
    p.add_argument("--scale", type=int, default=1000, help="CRs created at once (0: skip)")
    p.add_argument("--namespaces", type=int, default=100)
    p.add_argument("--idle", type=float, default=300, help="idle seconds counted (0: skip)")
    p.add_argument("--rotations", type=int, default=50, help="CA rotations (0: skip)")
    p.add_argument("--kubeconfig", type=Path, help="use this cluster instead of a fresh local one")
    args = p.parse_args()

    from cobrowse_tls.devcluster import LocalCluster

    work = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    local = None
    audit_log = None
    if args.kubeconfig is None:
        local = LocalCluster(work / "cluster")
        t0 = time.perf_counter()
        local.up(tie_to_parent=True)
        print(f"local control plane up in {time.perf_counter() - t0:.1f} s", flush=True)
        kubeconfig = local.kubeconfig
        # The operator as a user of its own, so the audit log tells its writes apart.
        operator_kubeconfig = local.user_kubeconfig(OPERATOR_USER)
        audit_log = local.audit_log
    else:
        kubeconfig = operator_kubeconfig = args.kubeconfig
    c = Cluster(kubeconfig)
    c.install_crd()
    op = Operator(
        operator_kubeconfig, work / "operator.log", "--restart-window", "0", "--workers", "16"
    )
    watch = ReadyWatch(c)
    try:
        print(f"operator log: {work / 'operator.log'}", flush=True)
        time.sleep(3)
        if args.rotations:
            bench_restarts(c, args.rotations)
        if args.latency:
            bench_latency(c, watch, args.latency)
        if args.scale:
            bench_scale(c, watch, op, args.scale, args.namespaces)
        if args.idle:
            bench_idle(op, args.idle, audit_log)
    finally:
        watch.stop()
        op.stop()
        if local is not None:
            local.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
