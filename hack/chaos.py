#!/usr/bin/env python3
"""Faults under the operator, randomized (a script that prints figures, not a test).

    .venv/bin/python hack/chaos.py [--trials 32] [--seed 1] [--crs 3]
                                   [--lease-duration 15 --renew-deadline 10 --retry-period 2]

On the local control plane (flow control on, no watch cache), the operator runs as two
`cobrowse-tls run --leader-elect` processes, each with a client certificate of its own (the
audit log tells their writes apart) and reaching the API server through a TCP proxy that can
cut their connections; a replica that exits is started again after a second, as the kubelet
would. Each trial creates CRs (PEM and JKS) with source Secrets and Deployments, rotates the
sources, and injects one fault at a random moment:

  apiserver-kill   the API server SIGKILLed, started again 0.5-2 s later
  etcd-kill        etcd SIGKILLed, started again 0.5-2 s later
  leader-kill      the replica holding the Lease SIGKILLed
  leader-pause     the leader SIGSTOPped until the other replica holds the Lease, then SIGCONT
  watch-cut        every connection of both replicas reset, three times
  watch-expiry     connections reset and refused while the sources change and etcd is
                   compacted: watches resume from a resourceVersion that is gone (410)
  throttle         both replicas' requests rejected by flow control (429) for 2-5 s
  conflict         another writer read-modify-writes the outputs for 3 s (409s)

Invariants checked after each trial:
  * every CR converges: Ready, outputs byte-identical to `cobrowse-tls render` of its inputs;
  * restarts: each workload was restarted for real material states only, never twice for one,
    never back to older material, and for the last one (changes the operator could not see
    apart, e.g. two rotations during a fail-over, give one restart);
  * no write by a replica that did not hold the Lease at that moment (audit log);
  * no output deleted or emptied (a watch on the outputs, and the audit log).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import faulthandler
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_operator as bo
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client, config, watch

from cobrowse_tls import render_cli
from cobrowse_tls.api import crd
from cobrowse_tls.core import restart_plan
from cobrowse_tls.devcluster import LocalCluster, faults

FAULTS = (
    "apiserver-kill",
    "etcd-kill",
    "leader-kill",
    "leader-pause",
    "watch-cut",
    "watch-expiry",
    "throttle",
    "conflict",
)
USERS = ("op-a", "op-b")
LEASE_NS = "cobrowse-tls-system"
LEASE_NAME = "cobrowse-tls-operator"
CONVERGE_TIMEOUT = 180.0
UTC = dt.UTC


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


def raw(call: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    return json.loads(call(*args, _preload_content=False, **kw).data)


def retrying(what: str, action: Callable[[], Any], timeout: float = 90.0) -> Any:
    """The test's own writes ride out the faults too (the API server may be down)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: {exc}") from exc
            time.sleep(0.3)


def make_ca(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = dt.datetime(2025, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


# -- the operator replicas ------------------------------------------------------------------


class Replica:
    def __init__(self, user: str, kubeconfig: Path, logs: Path, timing: list[str]) -> None:
        self.user = user
        self.kubeconfig = kubeconfig
        self.logs = logs
        self.timing = timing
        self.identity = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.home = Path(tempfile.mkdtemp(prefix="home-", dir=logs))

    def start(self) -> None:
        self.starts += 1
        self.identity = f"{self.user}-{self.starts}"
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env.update(HOME=str(self.home), PYTHONUNBUFFERED="1")
        with (self.logs / f"{self.identity}.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cobrowse_tls.cli",
                    "run",
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--leader-elect",
                    "--lease-namespace",
                    LEASE_NS,
                    "--leader-identity",
                    self.identity,
                    *self.timing,
                    "--restart-window",
                    "0.5",
                    "--log-format",
                    "plain",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()


class Supervisor:
    """Starts a replica again a second after it exited, as the kubelet would."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        exited: dict[str, float] = {}
        while not self._stop.wait(0.2):
            for r in self.replicas:
                if r.proc is not None and r.proc.poll() is not None:
                    since = exited.setdefault(r.user, time.monotonic())
                    if time.monotonic() - since >= 1.0:
                        exited.pop(r.user)
                        r.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# -- one trial ------------------------------------------------------------------------------


class Trial:
    def __init__(self, run: Chaos, index: int, kind: str, rng: random.Random) -> None:
        self.run = run
        self.kind = kind
        self.rng = rng
        self.fault_rng = random.Random(rng.random())  # the fault thread's own
        self.ns = f"chaos-{index}"
        self.names = [f"cb-{j}" for j in range(run.args.crs)]
        # Every source state each CR went through, in order (its material hashes, later).
        self.states: dict[str, list[bytes]] = defaultdict(list)
        self.violations: list[str] = []
        self.emptied: list[str] = []
        self.fault_end: float = 0.0
        self.killed_at: dt.datetime | None = None
        self.killed_user: str | None = None
        self._stop_watch = threading.Event()
        self.created = threading.Event()
        self.harness_errors: list[str] = []

    # -- load -------------------------------------------------------------------------------

    def spec(self, j: int) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "provider": "JKS" if j % 2 else "PEM",
            "application": {"type": "Cluster", "name": "CB_Cluster"},
            "trustedCA": {"sources": [{"secret": {"name": f"ca-{j}", "key": "ca.crt"}}]},
            "configServer": {"host": "confserv.genesys.svc", "port": 8889},
            "workloads": [{"kind": "Deployment", "name": f"web-{j}"}],
        }
        if j % 2:
            spec["truststore"] = {"passwordSecretRef": {"name": f"jks-{j}", "key": "password"}}
        return spec

    def set_source(self, j: int, pem: bytes) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"ca-{j}", "namespace": self.ns},
            "data": {"ca.crt": base64.b64encode(pem).decode()},
        }
        self.run.apply(body)
        self.states[self.names[j]].append(pem)

    def create(self) -> None:
        core, apps = self.run.core, self.run.apps
        retrying("namespace", lambda: raw(core.create_namespace, {"metadata": {"name": self.ns}}))
        retrying(
            "default ServiceAccount",
            lambda: raw(core.read_namespaced_service_account, "default", self.ns),
        )
        for j, name in enumerate(self.names):
            dep = bo.deployment(self.ns, f"web-{j}")
            retrying("deployment", lambda: raw(apps.create_namespaced_deployment, self.ns, dep))  # noqa: B023 - called at once
            if j % 2:
                self.run.apply(
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": f"jks-{j}", "namespace": self.ns},
                        "data": {
                            "password": base64.b64encode(b"changeit-" + bytes([48 + j])).decode()
                        },
                    }
                )
            self.set_source(j, self.rng.choice(self.run.cas))
            self.run.apply(
                {
                    "apiVersion": "tls.cobrowse.io/v1alpha1",
                    "kind": "CobrowseTLS",
                    "metadata": {"name": name, "namespace": self.ns},
                    "spec": self.spec(j),
                }
            )

    def rotate(self) -> None:
        j = self.rng.randrange(len(self.names))
        current = self.states[self.names[j]][-1]
        self.set_source(j, self.rng.choice([c for c in self.run.cas if c != current]))

    # -- faults -----------------------------------------------------------------------------

    def inject(self) -> None:
        try:
            self._inject()
        except Exception as exc:  # reported, never silently leaving a fault in place
            self.harness_errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.run.proxy.refuse(False)
            with contextlib.suppress(Exception):
                faults.unthrottle(self.run.local)
            self.fault_end = time.monotonic()

    def _inject(self) -> None:
        run, local = self.run, self.run.local
        if self.kind in ("apiserver-kill", "etcd-kill"):
            component = "kube-apiserver" if self.kind == "apiserver-kill" else "etcd"
            local.kill(component)
            time.sleep(self.fault_rng.uniform(0.5, 2.0))
            local.start(component)
            local.wait_ready(timeout=120)
        elif self.kind in ("leader-kill", "leader-pause"):
            leader = run.leader()
            if leader is None:
                self.violations.append("no leader when the fault was due")
                return
            other = next(r for r in run.replicas if r is not leader)
            self.killed_at, self.killed_user = now(), leader.user
            if self.kind == "leader-kill":
                leader.signal(signal.SIGKILL)
            else:
                paused = leader.identity
                leader.signal(signal.SIGSTOP)
                deadline = time.monotonic() + 120
                while run.holder() in (paused, None) and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(1.0)
                leader.signal(signal.SIGCONT)
            del other
        elif self.kind == "watch-cut":
            for _ in range(3):
                run.proxy.reset()
                time.sleep(0.5)
        elif self.kind == "watch-expiry":
            self.created.wait()
            run.proxy.refuse(True)
            run.proxy.reset()
            self.rotate()
            time.sleep(0.3)
            faults.compact_etcd(local)
            run.proxy.refuse(False)
        elif self.kind == "throttle":
            self._throttle(self.fault_rng.uniform(2.0, 5.0))
        elif self.kind == "conflict":
            self.created.wait()
            self._meddle(3.0)

    def _throttle(self, seconds: float) -> None:
        hog = client.CoreV1Api(self.run.user_client("hog"))
        stop = threading.Event()

        def busy() -> None:
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    hog.list_namespace(_preload_content=False)

        faults.throttle(self.run.local, [*USERS, "hog"])
        threads = [threading.Thread(target=busy, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        faults.unthrottle(self.run.local)
        for t in threads:
            t.join()

    def _meddle(self, seconds: float) -> None:
        core = client.CoreV1Api(self.run.user_client("meddler"))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            name = self.fault_rng.choice(self.names)
            kind, obj_name, key, junk = self.fault_rng.choice(
                [
                    ("secret", f"{name}-truststore", "ca.pem", "anVuaw=="),
                    ("config_map", f"{name}-security", "setenv.sh", "echo pwned"),
                ]
            )
            try:
                obj = getattr(core, f"read_namespaced_{kind}")(obj_name, self.ns)
                obj.data = {**(obj.data or {}), key: junk}
                time.sleep(0.05)
                getattr(core, f"replace_namespaced_{kind}")(obj_name, self.ns, obj)
            except client.ApiException:
                self.run.conflicts += 1

    # -- the outputs never go empty ---------------------------------------------------------

    def watch_outputs(self) -> None:
        selector = "app.kubernetes.io/managed-by=cobrowse-tls-operator"
        required = {"Secret": "ca.pem", "ConfigMap": "security.cfg"}
        while not self._stop_watch.is_set():
            for kind, lister in (
                ("Secret", self.run.watch_core.list_namespaced_secret),
                ("ConfigMap", self.run.watch_core.list_namespaced_config_map),
            ):
                try:
                    for event in watch.Watch().stream(  # type: ignore[no-untyped-call]
                        lister, self.ns, label_selector=selector, timeout_seconds=1
                    ):
                        obj = event["object"]
                        data = obj.data or {}
                        if event["type"] == "DELETED" or not data.get(required[kind]):
                            self.emptied.append(f"{kind} {obj.metadata.name} {event['type']}")
                except Exception:  # the API server may be down: look again
                    time.sleep(0.2)

    # -- run and check ----------------------------------------------------------------------

    def execute(self) -> tuple[float, dt.datetime]:
        started = now()
        watcher = threading.Thread(target=self.watch_outputs, daemon=True)
        t0 = time.monotonic()
        fault_at = self.rng.uniform(0.0, 5.0)
        rotations = sorted(self.rng.uniform(1.0, 6.0) for _ in range(2))

        def fault_later() -> None:
            time.sleep(fault_at)
            self.inject()

        fault = threading.Thread(target=fault_later)
        fault.start()
        self.create()
        self.created.set()
        watcher.start()
        for at in rotations:
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            self.rotate()
        fault.join()
        if self.kind in ("leader-kill", "leader-pause"):
            self.rotate()  # work for the new leader: its first reconcile is the fail-over end
        converged = self.converge()
        self._stop_watch.set()
        watcher.join()
        return converged, started

    def converge(self) -> float:
        deadline = time.monotonic() + CONVERGE_TIMEOUT
        pending = set(self.names)
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                with contextlib.suppress(Exception):
                    if self.run.converged(self.ns, name):
                        pending.discard(name)
            time.sleep(0.3)
        if pending:
            self.violations.append(
                f"not converged within {CONVERGE_TIMEOUT:.0f}s: {sorted(pending)}"
            )
        return time.monotonic() - self.fault_end

    def check(self, started: dt.datetime) -> None:
        for j, name in enumerate(self.names):
            hashes = [
                self.run.material_hash(self.ns, j, self.spec(j), pem) for pem in self.states[name]
            ]
            got = self.run.restarts(self.ns, f"web-{j}")  # oldest first
            if len(got) != len(set(got)):
                self.violations.append(f"{name}: restarted twice for one material state")
            if any(h not in hashes for h in got):
                self.violations.append(f"{name}: restarted for material it never had")
            order = [max(i for i, h in enumerate(hashes) if h == g) for g in got if g in hashes]
            if order != sorted(order):
                self.violations.append(f"{name}: restarted back to older material")
            if not got or got[-1] != hashes[-1]:
                self.violations.append(f"{name}: last material change not restarted")
        audit = self.run.audit()
        events = [e for e in audit if faults.audit_time(e) >= started]
        for e in faults.writes_without_lease(
            audit,
            USERS,
            LEASE_NS,
            LEASE_NAME,
            self.run.lease_duration,
        ):
            if faults.audit_time(e) >= started:
                ref = e.get("objectRef") or {}
                self.violations.append(
                    f"write without the Lease: {e['user']['username']} {e['verb']}"
                    f" {ref.get('resource')}/{ref.get('name')} at {e['requestReceivedTimestamp']}"
                )
        for e in events:
            ref = e.get("objectRef") or {}
            if (
                e.get("user", {}).get("username") in USERS
                and e.get("verb") == "delete"
                and ref.get("resource") in ("secrets", "configmaps")
                and ref.get("namespace") == self.ns
            ):
                self.violations.append(f"output deleted: {ref.get('name')}")
        self.violations += [f"output emptied or deleted: {x}" for x in self.emptied]

    def failover(self) -> float | None:
        """Leader killed -> first write (not the Lease) by the new leader, in seconds."""
        if self.killed_at is None:
            return None
        for e in sorted(self.run.audit(), key=faults.audit_time):
            ref = e.get("objectRef") or {}
            if (
                faults.audit_time(e) > self.killed_at
                and e.get("user", {}).get("username") in USERS
                and e["user"]["username"] != self.killed_user
                and ref.get("resource") != "leases"
            ):
                return (faults.audit_time(e) - self.killed_at).total_seconds()
        return None


# -- the whole run --------------------------------------------------------------------------


class Chaos:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.lease_duration = args.lease_duration
        self.local = LocalCluster(workdir / "cluster")
        self.conflicts = 0
        self.cas = [make_ca(f"Chaos Root {i}") for i in range(6)]
        self.replicas: list[Replica] = []
        self._audit: list[dict[str, Any]] = []
        self._audit_offset = 0
        self._rendered: dict[str, Any] = {}

    def setup(self) -> None:
        self.local.up(tie_to_parent=True, flow_control=True, watch_cache=False)
        api_client = config.new_client_from_config(config_file=str(self.local.kubeconfig))  # type: ignore[no-untyped-call]  # unannotated
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.watch_core = client.CoreV1Api(
            config.new_client_from_config(config_file=str(self.local.kubeconfig))  # type: ignore[no-untyped-call]  # unannotated
        )
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.leases = client.CoordinationV1Api(api_client)
        ext = client.ApiextensionsV1Api(api_client)
        raw(
            ext.patch_custom_resource_definition,
            crd.CRD_NAME,
            crd.generate(),
            field_manager="chaos",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        raw(self.core.create_namespace, {"metadata": {"name": LEASE_NS}})
        time.sleep(1.0)  # the CRD established
        self.proxy = faults.ResettingProxy(faults.apiserver_port(self.local))
        timing = [
            "--lease-duration",
            str(self.args.lease_duration),
            "--renew-deadline",
            str(self.args.renew_deadline),
            "--retry-period",
            str(self.args.retry_period),
        ]
        logs = self.workdir / "logs"
        logs.mkdir()
        for user in USERS:
            kubeconfig = faults.user_kubeconfig(self.local, user, self.proxy.port)
            self.replicas.append(Replica(user, kubeconfig, logs, timing))
        for r in self.replicas:
            r.start()
        self.supervisor = Supervisor(self.replicas)
        self.supervisor.start()
        deadline = time.monotonic() + 60
        while self.leader() is None and time.monotonic() < deadline:
            time.sleep(0.3)

    def teardown(self) -> None:
        with contextlib.suppress(AttributeError):
            self.supervisor.stop()
        for r in self.replicas:
            r.stop()
        with contextlib.suppress(AttributeError):
            self.proxy.close()
        self.local.down()

    def audit(self) -> list[dict[str, Any]]:
        """The replicas' audited writes so far (the log is read on from where it was left)."""
        with contextlib.suppress(FileNotFoundError), self.local.audit_log.open("rb") as f:
            f.seek(self._audit_offset)
            chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            self._audit_offset += end
            for line in chunk[:end].splitlines():
                if b'"op-a"' not in line and b'"op-b"' not in line:
                    continue
                with contextlib.suppress(ValueError):
                    e = json.loads(line)
                    if e.get("user", {}).get("username") in USERS:
                        self._audit.append(e)
        return self._audit

    def user_client(self, user: str) -> client.ApiClient:
        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]  # unannotated
            config_file=str(faults.user_kubeconfig(self.local, user)),
            client_configuration=configuration,
        )
        return client.ApiClient(configuration)

    def apply(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        kw: dict[str, Any] = {
            "field_manager": "chaos-user",
            "force": True,
            "_content_type": "application/apply-patch+yaml",
        }

        def call() -> Any:
            if obj["kind"] == "Secret":
                return raw(
                    self.core.patch_namespaced_secret, meta["name"], meta["namespace"], obj, **kw
                )
            return raw(
                self.custom.patch_namespaced_custom_object,
                "tls.cobrowse.io",
                "v1alpha1",
                meta["namespace"],
                "cobrowsetlses",
                meta["name"],
                obj,
                **kw,
            )

        retrying(f"apply {obj['kind']} {meta['name']}", call)

    def holder(self) -> str | None:
        try:
            lease = raw(self.leases.read_namespaced_lease, LEASE_NAME, LEASE_NS)
        except Exception:
            return None
        who = (lease.get("spec") or {}).get("holderIdentity")
        return str(who) if who else None

    def leader(self) -> Replica | None:
        who = self.holder()
        return next((r for r in self.replicas if r.identity == who), None)

    def _inputs(self, ns: str, spec: dict[str, Any], j: int, pem: bytes) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = [
            {
                "apiVersion": "tls.cobrowse.io/v1alpha1",
                "kind": "CobrowseTLS",
                "metadata": {"name": f"cb-{j}", "namespace": ns},
                "spec": spec,
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"ca-{j}", "namespace": ns},
                "data": {"ca.crt": base64.b64encode(pem).decode()},
            },
        ]
        if j % 2:
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": f"jks-{j}", "namespace": ns},
                    "data": {"password": base64.b64encode(b"changeit-" + bytes([48 + j])).decode()},
                }
            )
        return docs

    def _render(self, docs: list[dict[str, Any]]) -> Any:
        # Rendering a JKS derives the published password hash slowly on purpose: once per input.
        text = yaml.safe_dump_all(docs)
        if text not in self._rendered:
            path = self.workdir / "render.yaml"
            path.write_text(text)
            self._rendered[text] = render_cli.render_inputs([str(path)], now())
        return self._rendered[text]

    def material_hash(self, ns: str, j: int, spec: dict[str, Any], pem: bytes) -> str:
        return str(self._render(self._inputs(ns, spec, j, pem)).material_hash)

    def converged(self, ns: str, name: str) -> bool:
        cr = raw(
            self.custom.get_namespaced_custom_object,
            "tls.cobrowse.io",
            "v1alpha1",
            ns,
            "cobrowsetlses",
            name,
        )
        status = cr.get("status") or {}
        ready = next((c for c in status.get("conditions") or () if c["type"] == "Ready"), None)
        if not ready or ready["status"] != "True":
            return False
        if status.get("observedGeneration") != cr["metadata"].get("generation"):
            return False
        j = int(name.split("-")[1])
        source = raw(self.core.read_namespaced_secret, f"ca-{j}", ns)
        pem = base64.b64decode(source["data"]["ca.crt"])
        out = self._render(self._inputs(ns, cr["spec"], j, pem))
        live_secret = raw(self.core.read_namespaced_secret, f"{name}-truststore", ns)
        live_map = raw(self.core.read_namespaced_config_map, f"{name}-security", ns)
        want_secret = {
            k: base64.b64decode(v) for k, v in (out.secret or {}).get("data", {}).items()
        }
        got_secret = {k: base64.b64decode(v) for k, v in (live_secret.get("data") or {}).items()}
        if want_secret != got_secret or live_map.get("data") != out.config_map.get("data"):
            return False
        dep = raw(self.apps.read_namespaced_deployment, f"web-{j}", ns)
        return bool(
            restart_plan.template_hash(dep) == out.material_hash
            and restart_plan.rollout_complete(dep)
        )

    def restarts(self, ns: str, workload: str) -> list[str]:
        items = raw(self.apps.list_namespaced_replica_set, ns, label_selector=f"app={workload}")[
            "items"
        ]
        items.sort(
            key=lambda rs: int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
        )
        out = []
        for rs in items:
            value = restart_plan.template_hash({"spec": {"template": rs["spec"]["template"]}})
            if value is not None:
                out.append(value)
        return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--crs", type=int, default=3, help="CRs per trial")
    parser.add_argument("--lease-duration", type=float, default=15.0)
    parser.add_argument("--renew-deadline", type=float, default=10.0)
    parser.add_argument("--retry-period", type=float, default=2.0)
    parser.add_argument("--only", choices=FAULTS, action="append", help="only these fault kinds")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1` prints where a stuck run is
    rng = random.Random(args.seed)
    kinds = list(args.only or FAULTS)
    # Every kind equally often, in a random order.
    plan = [kinds[i % len(kinds)] for i in range(args.trials)]
    rng.shuffle(plan)

    workdir = Path(tempfile.mkdtemp(prefix="cobrowse-tls-chaos-"))
    run = Chaos(args, workdir)
    converge: dict[str, list[float]] = defaultdict(list)
    failovers: dict[str, list[float]] = defaultdict(list)
    violations: Counter[str] = Counter()
    details: list[str] = []
    started = time.monotonic()
    try:
        run.setup()
        for i, kind in enumerate(plan):
            trial = Trial(run, i, kind, random.Random(rng.random()))
            took, trial_start = trial.execute()
            trial.check(trial_start)
            converge[kind].append(took)
            if (f := trial.failover()) is not None:
                failovers[kind].append(f)
            for err in trial.harness_errors:
                print(f"# trial {i}: harness error: {err}", file=sys.stderr, flush=True)
            for v in trial.violations:
                violations[v.split(":")[0]] += 1
                details.append(f"trial {i} ({kind}): {v}")
            print(
                f"# trial {i:3d} {kind:<15} converged {took:6.1f}s after the fault"
                f"{'' if not trial.violations else f'  VIOLATIONS: {trial.violations}'}",
                file=sys.stderr,
                flush=True,
            )
            with contextlib.suppress(Exception):
                raw(run.core.delete_namespace, trial.ns)
    finally:
        run.teardown()
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"# work directory: {workdir}", file=sys.stderr)

    print(
        f"trials: {len(plan)} (seed {args.seed}, {args.crs} CRs per trial, lease"
        f" {args.lease_duration:g}/{args.renew_deadline:g}/{args.retry_period:g} s,"
        f" {time.monotonic() - started:.0f} s in all)"
    )
    print("faults by kind: " + ", ".join(f"{k} {plan.count(k)}" for k in kinds))
    print("time to converge after the fault ended (component ready again, proxy open, ...) (s):")
    print(f"  {'kind':<15} {'n':>3} {'p50':>7} {'p99':>7}")
    for k in kinds:
        times = converge[k]
        if times:
            print(
                f"  {k:<15} {len(times):>3} {percentile(times, 50):7.1f}"
                f" {percentile(times, 99):7.1f}"
            )
    for kind, what in (("leader-kill", "killed"), ("leader-pause", "paused")):
        if fo := failovers.get(kind):
            print(
                f"fail-over (leader {what} -> first write by the new leader): p50"
                f" {percentile(fo, 50):.1f} s, p99 {percentile(fo, 99):.1f} s"
                f" (n={len(fo)})"
            )
    print(f"write conflicts met by the other writer: {run.conflicts}")
    for d in details:
        print(f"  {d}")
    for name, n in sorted(violations.items()):
        print(f"  {name}: {n}")
    print(f"invariant violations: {sum(violations.values())}")
    return 0 if not violations else 1


if __name__ == "__main__":
    sys.exit(main())
