"""Layer 3: the MSCAPI agent DaemonSet and its sync status. Pure.

The agent has no API access: what it must do travels in its pod template (the fingerprint, the
store, the mode), and what it did comes back through its readiness probe, so the DaemonSet's
own rollout status says which Windows nodes hold the current CA set.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from cobrowse_tls.api import models

DEFAULT_IMAGE = "cobrowse-tls-agent:0.1.0"
ANNOTATION_FINGERPRINT = "tls.cobrowse.io/fingerprint"
ANNOTATION_MODE = "tls.cobrowse.io/agent-mode"
ANNOTATION_CLEANUP_SINCE = "tls.cobrowse.io/cleanup-since"
LABEL_COMPONENT = "app.kubernetes.io/component"
COMPONENT = "mscapi-agent"
FINALIZER = "tls.cobrowse.io/mscapi-cleanup"

MOUNT_DIR = "C:\\var\\run\\cobrowse-tls"
# Where the runtime puts the container's files on the host, substituted by hcsshim into the
# command line (and set in the environment, which the agent expands in its paths). containerd
# 1.6 mounts volumes only below it (the mount path without its drive letter); 1.7 also at the
# mount path itself. So only this form works on both.
SANDBOX = "%CONTAINER_SANDBOX_MOUNT_POINT%"
CA_FILE = f"{SANDBOX}{MOUNT_DIR.removeprefix('C:')}\\ca.pem"
STATE_DIR = "C:\\ProgramData\\cobrowse-tls\\agent"
READY_DIR = "C:\\ProgramData\\cobrowse-tls\\ready"

SYNC = "sync"
CLEANUP = "cleanup"

# Taints that clusters commonly put on Windows nodes.
WINDOWS_TOLERATIONS = [
    {"key": key, "operator": "Equal", "value": "windows", "effect": "NoSchedule"}
    for key in ("os", "kubernetes.io/os", "node.kubernetes.io/os")
]


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Operator-level settings of the agent (not per CobrowseTLS)."""

    image: str = DEFAULT_IMAGE
    # How the image runs `cobrowse-tls` (for the agent and its readiness probe):
    # images/agent/Dockerfile.windows puts an embeddable Python under agent\python. Not a
    # relative path: containerd 1.7 before 1.7.16 starts HostProcess containers in C:\ rather
    # than in the sandbox mount point (containerd PR 10069).
    command: tuple[str, ...] = (
        f"{SANDBOX}\\agent\\python\\python.exe",
        "-m",
        "cobrowse_tls.cli",
    )
    interval: int = 30  # seconds between two checks of the store


def selector_labels(name: str) -> dict[str, str]:
    """The labels of the agents of the CobrowseTLS ``name``."""
    return {
        "app.kubernetes.io/name": "cobrowse-tls-operator",
        LABEL_COMPONENT: COMPONENT,
        "tls.cobrowse.io/owner": name,
    }


def ready_file(tls: models.CobrowseTLS) -> str:
    # One file per CobrowseTLS: several may target the same node.
    return f"{READY_DIR}\\{tls.metadata.namespace or 'default'}_{tls.metadata.name}"


def expected_marker(fingerprint: str, mode: str) -> str:
    return fingerprint if mode == SYNC else f"cleaned:{fingerprint}"


def daemon_set(
    tls: models.CobrowseTLS,
    *,
    fingerprint: str,
    secret_name: str,
    metadata: Mapping[str, Any],
    agent: AgentConfig,
    mode: str = SYNC,
    cleanup_since: str | None = None,
) -> dict[str, Any]:
    """The agent DaemonSet; ``metadata`` carries the labels/annotations/owner of all outputs."""
    windows = tls.spec.windows or models.Windows()
    owner = f"{tls.metadata.namespace or 'default'}/{tls.metadata.name}"
    args = [
        "--ca-file", CA_FILE,
        "--fingerprint", fingerprint,
        "--owner", owner,
        "--store", windows.store.value,
        "--location", windows.location.value,
        "--state-dir", STATE_DIR,
        "--ready-file", ready_file(tls),
        "--interval", str(agent.interval),
        "--mode", mode,
    ]  # fmt: skip
    if windows.account:
        args += ["--account", windows.account]
    labels = selector_labels(tls.metadata.name)
    meta = {
        **metadata,
        "name": tls.agent_daemonset_name,
        "labels": {**metadata.get("labels", {}), **labels},
        "annotations": dict(metadata.get("annotations", {})),
    }
    if cleanup_since is not None:
        meta["annotations"][ANNOTATION_CLEANUP_SINCE] = cleanup_since
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": dict(labels)},
            # Agents are independent and the store keeps its certificates while a pod is
            # replaced: roll every node at once, a CA rotation should not wait node by node.
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "100%"},
            },
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {ANNOTATION_FINGERPRINT: fingerprint, ANNOTATION_MODE: mode},
                },
                "spec": {
                    "nodeSelector": {**windows.node_selector, "kubernetes.io/os": "windows"},
                    "tolerations": WINDOWS_TOLERATIONS,
                    "automountServiceAccountToken": False,
                    "hostNetwork": True,
                    "securityContext": {
                        "windowsOptions": {
                            "hostProcess": True,
                            "runAsUserName": "NT AUTHORITY\\SYSTEM",
                        }
                    },
                    "containers": [
                        {
                            "name": "agent",
                            "image": agent.image,
                            "command": [*agent.command, "agent", "run"],
                            "args": args,
                            "readinessProbe": {
                                "exec": {
                                    "command": [
                                        *agent.command,
                                        "agent",
                                        "probe",
                                        "--ready-file",
                                        ready_file(tls),
                                        "--expect",
                                        expected_marker(fingerprint, mode),
                                    ]
                                },
                                # cmd /c and a Python start-up on a busy Windows
                                # node can take seconds: one slow probe is no verdict.
                                "periodSeconds": 10,
                                "timeoutSeconds": 20,
                                "failureThreshold": 3,
                            },
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "64Mi"},
                                "limits": {"memory": "256Mi"},
                            },
                            "volumeMounts": [
                                {"name": "truststore", "mountPath": MOUNT_DIR, "readOnly": True}
                            ],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "truststore",
                            "secret": {
                                "secretName": secret_name,
                                "items": [{"key": "ca.pem", "path": "ca.pem"}],
                            },
                        }
                    ],
                },
            },
        },
    }


_PREFIX = f"{models.GROUP}/"


def switch_to_cleanup(
    live: Mapping[str, Any], *, cleanup_since: str, agent: AgentConfig
) -> dict[str, Any]:
    """The live agent DaemonSet ``live`` in cleanup mode: what daemon_set(mode=CLEANUP) changes
    (the mode annotation and flag, the probe's marker, the cleanup-since annotation), made on
    the live object, for a CobrowseTLS whose spec no longer parses (the store the agents wrote
    to is then known only from their template). Returns an object to apply.

    The image and command become ``agent``'s, as in every DaemonSet the operator renders: the
    admission policy admits no other, and an upgrade may have changed them since ``live``."""
    meta = live["metadata"]
    # Only the annotations the operator writes: the DaemonSet registry keeps its own.
    ours = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(_PREFIX)}
    annotations = {**ours, ANNOTATION_CLEANUP_SINCE: cleanup_since}
    spec = copy.deepcopy(dict(live["spec"]))
    template = spec["template"]
    fingerprint = str(template["metadata"].get("annotations", {}).get(ANNOTATION_FINGERPRINT, ""))
    template["metadata"].setdefault("annotations", {})[ANNOTATION_MODE] = CLEANUP
    for container in template["spec"]["containers"]:
        container["image"] = agent.image
        container["command"] = [*agent.command, "agent", "run"]
        _set_flag(container.get("args") or [], "--mode", CLEANUP)
        probe = (container.get("readinessProbe") or {}).get("exec") or {}
        command = list(probe.get("command") or [])
        if "agent" in command:  # the probe's own arguments follow `agent probe`
            probe["command"] = command = [*agent.command, *command[command.index("agent") :]]
        _set_flag(command, "--expect", expected_marker(fingerprint, CLEANUP))
    kept = ("name", "namespace", "labels", "ownerReferences")
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {**{k: meta[k] for k in kept if k in meta}, "annotations": annotations},
        "spec": spec,
    }


def _set_flag(args: list[Any], flag: str, value: str) -> None:
    if flag in args[:-1]:
        args[args.index(flag) + 1] = value


@dataclasses.dataclass(frozen=True)
class Sync:
    """WindowsTrustSynced as observed from the DaemonSet and its pods."""

    synced: bool
    desired: int
    ready: int
    not_synced: tuple[str, ...]
    reason: str
    message: str

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"desired": self.desired, "ready": self.ready}
        if self.not_synced:
            out["notSynced"] = list(self.not_synced)
        return out


def sync_state(
    ds: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]], *, fingerprint: str, mode: str
) -> Sync:
    """True only when every targeted node runs a Ready agent pod of the current template."""
    if ds is None:
        return Sync(False, 0, 0, (), "AgentPending", "the agent DaemonSet is not created yet")
    status = ds.get("status") or {}
    desired = int(status.get("desiredNumberScheduled", 0))
    observed = status.get("observedGeneration", 0) >= ds["metadata"].get("generation", 0)
    current = [
        p
        for p in pods
        if (p.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_FINGERPRINT)
        == fingerprint
        and (p.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_MODE) == mode
        and not p.get("metadata", {}).get("deletionTimestamp")
    ]
    ready_nodes = sorted({str(p.get("spec", {}).get("nodeName")) for p in current if _pod_ready(p)})
    all_nodes = sorted({str(p.get("spec", {}).get("nodeName")) for p in pods if p.get("spec")})
    not_synced = tuple(n for n in all_nodes if n not in ready_nodes and n != "None")
    ready = len(ready_nodes)
    if observed and desired == 0:
        return Sync(
            False, 0, 0, (), "NoWindowsNodes",
            "no Windows node matches the agent's node selector",
        )  # fmt: skip
    synced = (
        observed and ready >= desired and int(status.get("updatedNumberScheduled", 0)) >= desired
    )
    if synced:
        return Sync(True, desired, ready, (), "Synced", f"{ready}/{desired} Windows nodes in sync")
    waiting = f"; not yet: {', '.join(not_synced)}" if not_synced else ""
    return Sync(
        False, desired, ready, not_synced, "SyncInProgress",
        f"{ready}/{desired} Windows nodes in sync{waiting}",
    )  # fmt: skip


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


POD_SECURITY_FORBIDDEN = "PodSecurityForbidden"
PODS_NOT_CREATED = "AgentPodsNotCreated"
FAILED_CREATE = "FailedCreate"  # the DaemonSet controller's event when a pod is refused


def creation_failure(
    ds: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
) -> Sync | None:
    """WindowsTrustSynced when the DaemonSet controller cannot create the agent pods.

    ``events``: the DaemonSet's FailedCreate events. Only while nodes lack an agent pod, and
    only a refusal newer than the newest agent pod counts (an old one was overcome since).
    HostProcess pods are refused by the baseline and restricted Pod Security levels, and the
    agents run in the CobrowseTLS's namespace: that case gets its own reason.
    """
    if ds is None:
        return None
    status = ds.get("status") or {}
    desired = int(status.get("desiredNumberScheduled", 0))
    scheduled = int(status.get("currentNumberScheduled", 0))
    if desired == 0 or scheduled >= desired:
        return None
    newest_pod = max(
        (_stamp(p.get("metadata", {}).get("creationTimestamp")) for p in pods), default=""
    )
    refusals = sorted(
        (_event_time(e), str(e.get("message", "")))
        for e in events
        if e.get("reason") == FAILED_CREATE and _event_time(e) >= newest_pod
    )
    if not refusals:
        return None
    detail = refusals[-1][1][:400]
    namespace = ds.get("metadata", {}).get("namespace", "")
    ready = int(status.get("numberReady", 0))
    if "violates PodSecurity" in detail:
        message = (
            f"Pod Security admission refuses the agent pods in namespace {namespace}:"
            " HostProcess pods need the privileged level (label the namespace"
            " pod-security.kubernetes.io/enforce=privileged, or create the CobrowseTLS in a"
            f" namespace that allows it): {detail}"
        )
        return Sync(False, desired, ready, (), POD_SECURITY_FORBIDDEN, message)
    return Sync(
        False, desired, ready, (), PODS_NOT_CREATED,
        f"the DaemonSet cannot create agent pods: {detail}",
    )  # fmt: skip


def _stamp(value: Any) -> str:
    # RFC 3339 to the second: comparable as text whatever the fractional part.
    return str(value or "")[:19]


def _event_time(event: Mapping[str, Any]) -> str:
    series = event.get("series") or {}
    return max(
        _stamp(series.get("lastObservedTime")),
        _stamp(event.get("lastTimestamp")),
        _stamp(event.get("eventTime")),
    )
