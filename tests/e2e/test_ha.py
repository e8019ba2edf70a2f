"""Two operator replicas with Lease leader election, and one short deterministic test per
fault kind of hack/chaos.py, on a control plane of their own whose parts the tests kill.

Every test ends with the chaos trials' invariants: outputs byte-identical to `cobrowse-tls
render`, exactly one restart per material change, no write by a replica that did not hold the
Lease (from the API server's audit log).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

import pki as pkim
from cobrowse_tls.devcluster import faults
from e2e.ha_support import (
    LEASE_DURATION,
    FaultCluster,
    Replica,
    converge,
    create_deployment,
    fault_cluster,
    holder,
    non_leader_writes,
    pem_cr,
    raw,
    restart_hashes,
)
from e2e.operator_support import secret, wait_for

USERS = ["op-a", "op-b"]


@pytest.fixture(scope="module")
def fc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultCluster]:
    yield from fault_cluster(tmp_path_factory.mktemp("faults"))


@pytest.fixture
def ns(fc: FaultCluster) -> Iterator[str]:
    name = f"ha-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(fc.api_client)
    raw(core.create_namespace, {"metadata": {"name": name}})
    wait_for(
        "the default ServiceAccount",
        lambda: raw(core.list_namespaced_service_account, name)["items"],
    )
    yield name
    core.delete_namespace(name)


class Scene:
    """A CR reading one source Secret and restarting one Deployment, with its replicas kept
    running (a replica that exits is started again, as the kubelet would)."""

    def __init__(self, fc: FaultCluster, ns: str, tmp: Path, proxy_port: int | None = None):
        self.fc, self.ns, self.tmp = fc, ns, tmp
        self.replicas = [Replica(fc, user, ns, tmp, proxy_port) for user in USERS]
        self._stop = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)

    def start(self, both: bool = True) -> Scene:
        a, b = self.replicas
        a.start()
        wait_for("a leader", lambda: holder(self.fc, self.ns) == a.identity, timeout=30)
        if both:
            b.start()
        self._supervisor.start()
        return self

    def _supervise(self) -> None:
        while not self._stop.wait(0.5):
            for r in self.replicas:
                if r.proc is not None and r.proc.poll() is not None:
                    r.start()

    def create(self, pem: bytes) -> str:
        create_deployment(self.fc, self.ns, "web")
        self.rotate(pem)
        self.fc.api.apply(pem_cr(self.ns, "cb", "ca", "web"))
        return converge(self.fc, self.ns, "cb", "web", self.tmp)

    def rotate(self, pem: bytes) -> None:
        self.fc.api.apply(secret(self.ns, "ca", {"ca.crt": pem}))

    def converge(self) -> str:
        return converge(self.fc, self.ns, "cb", "web", self.tmp)

    def leader(self) -> Replica | None:
        who = holder(self.fc, self.ns)
        return next((r for r in self.replicas if r.identity == who), None)

    def check(self, *hashes: str) -> None:
        """Each material state got exactly one restart, and no replica wrote without the Lease."""
        assert restart_hashes(self.fc, self.ns, "web") == sorted(hashes)
        assert non_leader_writes(self.fc, USERS, self.ns) == []

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor.is_alive():
            self._supervisor.join()
        for r in self.replicas:
            with contextlib.suppress(ProcessLookupError):
                r.signal(signal.SIGCONT)
            r.stop()


@pytest.fixture
def scene(fc: FaultCluster, ns: str, tmp_path: Path) -> Iterator[Scene]:
    s = Scene(fc, ns, tmp_path)
    try:
        yield s
    finally:
        s.stop()
        print(f"replica logs: {tmp_path}")


def test_standby_leads_after_the_leader_is_killed_mid_reconcile(
    scene: Scene, pki: pkim.PKI
) -> None:
    scene.start()
    first = scene.create(pkim.pem(pki.root))
    old = scene.leader()
    assert old is not None
    standby = next(r for r in scene.replicas if r is not old)

    scene.rotate(pkim.pem(pki.other_root))
    time.sleep(0.2)  # the leader has the change in hand
    killed = time.monotonic()
    old.signal(signal.SIGKILL)
    wait_for(
        "the standby to lead",
        lambda: holder(scene.fc, scene.ns) == standby.identity,
        # A functional bound, not a speed target: one lease duration plus a margin.
        timeout=LEASE_DURATION + 10,
    )
    assert time.monotonic() - killed < LEASE_DURATION + 10
    second = scene.converge()
    assert second != first
    scene.check(first, second)


def test_paused_leader_wakes_up_without_its_lease_and_writes_nothing(
    scene: Scene, pki: pkim.PKI
) -> None:
    scene.start()
    first = scene.create(pkim.pem(pki.root))
    paused = scene.leader()
    assert paused is not None
    assert paused.proc is not None
    standby = next(r for r in scene.replicas if r is not paused)

    paused.signal(signal.SIGSTOP)
    wait_for("the standby to lead", lambda: scene.leader() is standby, timeout=LEASE_DURATION + 10)
    # Work that the paused replica's watches also see, waiting for it when it wakes up.
    scene.rotate(pkim.pem(pki.other_root))
    second = scene.converge()
    proc = paused.proc
    paused.signal(signal.SIGCONT)
    wait_for("the woken replica to exit", lambda: proc.poll() is not None, timeout=30)
    assert proc.returncode == 1
    assert "lost the leader Lease" in paused.log()
    scene.check(first, second)


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_control_plane_component_killed_and_restarted(
    scene: Scene, pki: pkim.PKI, component: str
) -> None:
    scene.start()
    first = scene.create(pkim.pem(pki.root))
    scene.fc.local.kill(component)
    time.sleep(1)
    scene.fc.local.start(component)
    scene.fc.local.wait_ready()
    scene.rotate(pkim.pem(pki.other_root))
    second = scene.converge()
    scene.check(first, second)


@pytest.fixture
def proxied(
    fc: FaultCluster, ns: str, tmp_path: Path
) -> Iterator[tuple[Scene, faults.ResettingProxy]]:
    proxy = faults.ResettingProxy(faults.apiserver_port(fc.local))
    s = Scene(fc, ns, tmp_path, proxy.port)
    try:
        yield s, proxy
    finally:
        s.stop()
        proxy.close()


def test_watch_streams_cut(proxied: tuple[Scene, faults.ResettingProxy], pki: pkim.PKI) -> None:
    scene, proxy = proxied
    scene.start()
    first = scene.create(pkim.pem(pki.root))
    assert proxy.reset() > 0
    for _ in range(3):
        time.sleep(1)
        proxy.reset()
    scene.rotate(pkim.pem(pki.other_root))
    proxy.reset()
    second = scene.converge()
    scene.check(first, second)


def test_watch_expired_410_gone(
    proxied: tuple[Scene, faults.ResettingProxy], pki: pkim.PKI
) -> None:
    scene, proxy = proxied
    scene.start()
    first = scene.create(pkim.pem(pki.root))
    # Watches cut; the source changes and etcd forgets the history meanwhile; the operator's
    # watches resume from a resourceVersion that is gone. Shorter than the renew deadline.
    proxy.refuse(True)
    proxy.reset()
    scene.rotate(pkim.pem(pki.other_root))
    faults.compact_etcd(scene.fc.local)
    proxy.refuse(False)
    second = scene.converge()
    logs = "".join(r.log() for r in scene.replicas)
    assert "Restarting the watch-stream" in logs  # kopf's answer to 410 Gone
    scene.check(first, second)


def test_throttled_429_by_priority_and_fairness(scene: Scene, pki: pkim.PKI) -> None:
    scene.start()
    first = scene.create(pkim.pem(pki.root))
    hog_kubeconfig = faults.user_kubeconfig(scene.fc.local, "hog")
    hog = client.CoreV1Api(client.ApiClient(_configuration(hog_kubeconfig)))
    stop = threading.Event()

    def keep_the_seat_busy() -> None:
        while not stop.is_set():
            with contextlib.suppress(client.ApiException):
                hog.list_namespace(_preload_content=False)

    faults.throttle(scene.fc.local, [*USERS, "hog"])
    hogs = [threading.Thread(target=keep_the_seat_busy, daemon=True) for _ in range(4)]
    for h in hogs:
        h.start()
    try:
        scene.rotate(pkim.pem(pki.other_root))
        wait_for("a 429 for a replica", lambda: _throttled(scene), timeout=60)
    finally:
        stop.set()
        faults.unthrottle(scene.fc.local)
    second = scene.converge()
    scene.check(first, second)


def _configuration(kubeconfig: Path) -> client.Configuration:
    from kubernetes import config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]  # unannotated
    return configuration


def _throttled(scene: Scene) -> bool:
    return any(
        e.get("user", {}).get("username") in USERS
        and (e.get("responseStatus") or {}).get("code") == 429
        for e in faults.audit_events(scene.fc.local)
    )


def test_conflicting_writer_409(scene: Scene, pki: pkim.PKI) -> None:
    scene.start()
    first = scene.create(pkim.pem(pki.root))
    meddler = client.CoreV1Api(
        client.ApiClient(_configuration(faults.user_kubeconfig(scene.fc.local, "meddler")))
    )
    outcome = {"conflicts": 0, "writes": 0}

    def meddle() -> None:
        # Read-modify-write of the outputs' values with a gap, so that the operator's writes
        # land in between and the meddler's stale replaces fail with 409 Conflict.
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            for kind, name, key, junk in (
                ("secret", "cb-truststore", "ca.pem", "anVuaw=="),
                ("config_map", "cb-security", "setenv.sh", "echo pwned"),
            ):
                read = getattr(meddler, f"read_namespaced_{kind}")
                replace = getattr(meddler, f"replace_namespaced_{kind}")
                try:
                    obj = read(name, scene.ns)
                    obj.data = {**(obj.data or {}), key: junk}
                    time.sleep(0.05)
                    replace(name, scene.ns, obj)
                    outcome["writes"] += 1
                except client.ApiException as e:
                    if e.status != 409:
                        raise
                    outcome["conflicts"] += 1

    thread = threading.Thread(target=meddle)
    thread.start()
    scene.rotate(pkim.pem(pki.other_root))
    thread.join()
    assert outcome["writes"] > 0
    second = scene.converge()
    scene.check(first, second)


def test_a_component_restarted_from_a_passing_thread_keeps_running(fc: FaultCluster) -> None:
    """Found by hack/chaos.py: the parent-death signal that ties the components to the test
    process is per thread, so a component started again from a fault-injecting thread was
    killed when that thread ended (and the next start-up said "no output")."""
    restarter = threading.Thread(target=fc.local.restart, args=("kube-scheduler",))
    restarter.start()
    restarter.join()
    time.sleep(1.0)
    assert fc.local.status().components["kube-scheduler"][0]
