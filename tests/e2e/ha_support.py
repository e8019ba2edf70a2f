"""Helpers of the fault and high-availability tests: operator replicas with users of their own,
a control plane of their own whose components the tests kill, and the invariants the chaos
trials check (outputs byte-identical to `cobrowse-tls render`, one restart per material change,
no write by a replica that did not hold the Lease)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from cobrowse_tls import render_cli
from cobrowse_tls.core import restart_plan
from cobrowse_tls.devcluster import LocalCluster, faults
from e2e.operator_support import Api, condition, deployment, wait_for

# Short but valid timings (the defaults are 15/10/2): fail-over within seconds.
LEASE_DURATION = 4.0
TIMING = ("--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "0.5")
LEASE_NAME = "cobrowse-tls-operator"


def raw(call: Any, *args: Any, **kw: Any) -> Any:
    """A client call's JSON, whatever the generated model classes say."""
    return json.loads(call(*args, _preload_content=False, **kw).data)


@dataclass
class FaultCluster:
    local: LocalCluster
    api: Api
    api_client: client.ApiClient

    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api_client)


def fault_cluster(directory: Path) -> Iterator[FaultCluster]:
    """A control plane of its own (killing the session's API server would disturb other
    tests), with flow control on and no watch cache (for 429 and 410)."""
    local = LocalCluster(directory)
    local.up(tie_to_parent=True, flow_control=True, watch_cache=False)
    try:
        api_client = config.new_client_from_config(config_file=str(local.kubeconfig))  # type: ignore[no-untyped-call]  # unannotated
        api = Api(api_client)
        api.install_crd()
        yield FaultCluster(local, api, api_client)
    finally:
        local.down()


class Replica:
    """One `cobrowse-tls run --leader-elect` process, logged in with its own certificate
    through --kubeconfig only ($KUBECONFIG unset, an empty $HOME): one login path for kopf and
    the client."""

    _started = 0

    def __init__(
        self, fc: FaultCluster, user: str, namespace: str, log_dir: Path, port: int | None = None
    ) -> None:
        self.user = user
        self.namespace = namespace
        self.kubeconfig = faults.user_kubeconfig(fc.local, user, port)
        self.log_dir = log_dir
        self.identity = ""
        self.log_path = log_dir / f"{user}.log"
        self.home = Path(tempfile.mkdtemp(prefix="home-", dir=log_dir))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> Replica:
        # A new identity per process, as a pod's container restart gets one (the default
        # identity has a random part): a restarted replica is a new candidate.
        Replica._started += 1
        self.identity = f"{self.user}-{Replica._started}"
        self.log_path = self.log_dir / f"{self.identity}.log"
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env.update(HOME=str(self.home), PYTHONUNBUFFERED="1")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cobrowse_tls.cli",
                    "run",
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--namespace",
                    self.namespace,
                    "--leader-elect",
                    "--lease-namespace",
                    self.namespace,
                    "--leader-identity",
                    self.identity,
                    *TIMING,
                    "--restart-window",
                    "0.5",
                    "--resync",
                    "5",
                    "--log-format",
                    "plain",
                    "--verbose",
                    *extra,
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()

    def log(self) -> str:
        """The logs of every process this replica ran."""
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob(f"{self.user}-*.log"))
        )


def holder(fc: FaultCluster, namespace: str) -> str | None:
    try:
        lease = raw(
            client.CoordinationV1Api(fc.api_client).read_namespaced_lease, LEASE_NAME, namespace
        )
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise
    who = (lease.get("spec") or {}).get("holderIdentity")
    return str(who) if who else None


# -- the workload and the CR ----------------------------------------------------------------


def create_deployment(fc: FaultCluster, namespace: str, name: str) -> None:
    raw(fc.apps().create_namespaced_deployment, namespace, deployment(namespace, name))


def pem_cr(namespace: str, name: str, source: str, workload: str) -> dict[str, Any]:
    return {
        "apiVersion": "tls.cobrowse.io/v1alpha1",
        "kind": "CobrowseTLS",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "provider": "PEM",
            "application": {"type": "Cluster", "name": "CB_Cluster"},
            "trustedCA": {"sources": [{"secret": {"name": source, "key": "ca.crt"}}]},
            "configServer": {"host": "confserv.genesys.svc", "port": 8889},
            "workloads": [{"kind": "Deployment", "name": workload}],
            "restart": {"maxConcurrent": 1},
        },
    }


def restart_hashes(fc: FaultCluster, namespace: str, workload: str) -> list[str]:
    """The restarted-for hash of every ReplicaSet of the Deployment (one per restart)."""
    items = raw(fc.apps().list_namespaced_replica_set, namespace, label_selector=f"app={workload}")[
        "items"
    ]
    out = []
    for rs in items:
        value = restart_plan.template_hash({"spec": {"template": rs["spec"]["template"]}})
        if value is not None:
            out.append(value)
    return sorted(out)


def rendered(api: Api, namespace: str, name: str, tmp: Path) -> tuple[dict[str, Any], str]:
    """(the objects `cobrowse-tls render` gives for the CR and its sources as they are now,
    their material hash)."""
    cr = api.get("CobrowseTLS", namespace, name)
    assert cr is not None
    docs: list[dict[str, Any]] = [_clean(cr)]
    for source in cr["spec"]["trustedCA"]["sources"]:
        kind, ref = (
            ("Secret", source["secret"])
            if "secret" in source
            else (
                "ConfigMap",
                source["configMap"],
            )
        )
        obj = api.get(kind, namespace, ref["name"])
        if obj is not None:
            docs.append(_clean(obj))
    path = tmp / f"render-{namespace}-{name}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    out = render_cli.render_inputs([str(path)], datetime.now(UTC))
    objs = {o["kind"]: o for o in (out.secret, out.config_map) if o is not None}
    return objs, out.material_hash


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: obj["metadata"][k] for k in ("name", "namespace") if k in obj["metadata"]}
    return {**{k: v for k, v in obj.items() if k not in ("metadata", "status")}, "metadata": meta}


def outputs_match(api: Api, namespace: str, name: str, tmp: Path) -> bool:
    """Ready for the current generation, with Secret and ConfigMap data byte-identical to
    what `cobrowse-tls render` gives for the same inputs."""
    cr = api.get("CobrowseTLS", namespace, name)
    ready = condition(cr, "Ready")
    if cr is None or not ready or ready["status"] != "True":
        return False
    if cr["status"].get("observedGeneration") != cr["metadata"].get("generation"):
        return False
    want, _ = rendered(api, namespace, name, tmp)
    for kind, obj in want.items():
        live = api.get(kind, namespace, obj["metadata"]["name"])
        if live is None:
            return False
        if kind == "Secret":
            got = {k: base64.b64decode(v) for k, v in (live.get("data") or {}).items()}
            exp = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            exp |= {k: v.encode() for k, v in (obj.get("stringData") or {}).items()}
        else:
            got = {k: v.encode() for k, v in (live.get("data") or {}).items()}
            exp = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        if got != exp:
            return False
    return True


def converge(
    fc: FaultCluster, namespace: str, name: str, workload: str, tmp: Path, timeout: float = 90
) -> str:
    """Wait until the CR's outputs match render and the workload carries the material hash
    and has rolled out; returns that hash."""

    def done() -> str | None:
        if not outputs_match(fc.api, namespace, name, tmp):
            return None
        _, material = rendered(fc.api, namespace, name, tmp)
        dep = raw(fc.apps().read_namespaced_deployment, workload, namespace)
        if restart_plan.template_hash(dep) != material or not restart_plan.rollout_complete(dep):
            return None
        return material

    return wait_for(f"{namespace}/{name} converged", done, timeout=timeout, interval=0.3)


def non_leader_writes(fc: FaultCluster, users: list[str], namespace: str) -> list[str]:
    bad = faults.writes_without_lease(
        faults.audit_events(fc.local), users, namespace, LEASE_NAME, LEASE_DURATION
    )
    return [
        f"{e['requestReceivedTimestamp']} {e['user']['username']} {e['verb']} "
        f"{(e.get('objectRef') or {}).get('resource')}/{(e.get('objectRef') or {}).get('name')}"
        for e in bad
        if (e.get("objectRef") or {}).get("namespace") == namespace
    ]
