"""Command lines of the control-plane components: what each is told and why."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cobrowse_tls.devcluster.pki import Pki

SERVICE_CIDR = "10.0.0.0/24"
POD_CIDR = "10.244.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass(frozen=True)
class Layout:
    """Everything under one cluster directory: data, logs, keys, kubeconfig."""

    root: Path
    bins: Path
    pki: Pki

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def audit_policy(self) -> Path:
        return self.root / "audit-policy.yaml"

    @property
    def audit_log(self) -> Path:
        return self.logs / "audit.log"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def etcd(lay: Layout, client_port: int, peer_port: int) -> list[str]:
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        str(lay.bins / "etcd"),
        "--name=default",
        f"--data-dir={lay.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        # Throw-away data: skipping fsync makes writes, and so every API call, much faster.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def kube_apiserver(
    lay: Layout, port: int, etcd_port: int, *, flow_control: bool = False, watch_cache: bool = True
) -> list[str]:
    """``flow_control`` turns API Priority and Fairness on (429s for a throttled user);
    without ``watch_cache`` watches are served by etcd, so a compaction makes an old
    resourceVersion expire (410 Gone) as it would on a busy cluster."""
    p = lay.pki
    argv = [
        str(lay.bins / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        f"--secure-port={port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--cert-dir={lay.root / 'apiserver-certs'}",
        f"--tls-cert-file={p.serving_cert}",
        f"--tls-private-key-file={p.serving_key}",
        f"--client-ca-file={p.ca_cert}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=RBAC",
        "--allow-privileged=true",
        f"--service-account-issuer={ISSUER}",
        f"--service-account-key-file={p.sa_pub}",
        f"--service-account-signing-key-file={p.sa_key}",
        # Nothing answers on a node port here; the apiserver must not try to reach kubelets.
        "--kubelet-preferred-address-types=InternalIP",
        "--profiling=false",
        # Write requests only (the audit policy), so benchmarks can count what one user wrote.
        f"--audit-policy-file={lay.audit_policy}",
        f"--audit-log-path={lay.audit_log}",
        "--audit-log-format=json",
        # One client to be fair to; skipping flow control's bootstrap shortens start-up.
        f"--enable-priority-and-fairness={str(flow_control).lower()}",
        "--v=1",
    ]
    if not watch_cache:
        argv.append("--watch-cache=false")
    return argv


def _common(lay: Layout) -> list[str]:
    return [
        f"--kubeconfig={lay.kubeconfig}",
        # A single instance: leader election would only add seconds to every start.
        "--leader-elect=false",
        # No HTTPS endpoint of their own: health is read from the API server instead, and a
        # fixed default port (10257/10259) would clash between clusters.
        "--secure-port=0",
        "--v=1",
    ]


def kube_controller_manager(lay: Layout) -> list[str]:
    p = lay.pki
    return [
        str(lay.bins / "kube-controller-manager"),
        *_common(lay),
        # Signs and verifies ServiceAccount tokens and publishes kube-root-ca.crt.
        f"--service-account-private-key-file={p.sa_key}",
        f"--root-ca-file={p.ca_cert}",
        # Controllers act with the admin identity rather than one ServiceAccount each:
        # minting those tokens one controller after the other costs ~3 s of every start.
        "--use-service-account-credentials=false",
        # Lets CertificateSigningRequests be approved and signed like on a real cluster.
        f"--cluster-signing-cert-file={p.ca_cert}",
        f"--cluster-signing-key-file={p.ca_key}",
    ]


def kube_scheduler(lay: Layout) -> list[str]:
    return [str(lay.bins / "kube-scheduler"), *_common(lay)]


def kwok(lay: Layout, stages: list[Path], server_port: int) -> list[str]:
    return [
        str(lay.bins / "kwok"),
        f"--kubeconfig={lay.kubeconfig}",
        # Only the fake nodes this package creates, never a real node of some other cluster.
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        f"--cidr={POD_CIDR}",
        "--node-ip=127.0.0.1",
        f"--server-address=127.0.0.1:{server_port}",
        *[f"--config={s}" for s in stages],
    ]


# Metadata of every write; reads are not logged (they are most requests and say nothing about
# what changed).
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
"""
