"""The MSCAPI agent DaemonSet (rendered) and WindowsTrustSynced (from DaemonSet + pods)."""

from __future__ import annotations

from typing import Any

import pytest

from cobrowse_tls.api import models
from cobrowse_tls.core import agent_manifest, render
from cobrowse_tls.core import settings as settings_mod

FP = "sha256:" + "ab" * 32


def tls(**windows: Any) -> models.CobrowseTLS:
    return models.parse(
        {
            "apiVersion": "tls.cobrowse.io/v1alpha1",
            "kind": "CobrowseTLS",
            "metadata": {"name": "cb", "namespace": "genesys", "uid": "u-1"},
            "spec": {
                "provider": "MSCAPI",
                "application": {"type": "Server", "name": "CB_Server", "version": "8.5.000"},
                "trustedCA": {"sources": [{"secret": {"name": "ca", "key": "ca.crt"}}]},
                "windows": windows,
            },
        }
    )


def ds(t: models.CobrowseTLS, **kw: Any) -> dict[str, Any]:
    return render.agent_daemon_set(
        t,
        fingerprint=FP,
        input_hash="sha256:x",
        agent=agent_manifest.AgentConfig(image="agent:1"),
        **kw,
    )


def test_daemon_set_is_a_host_process_agent_on_windows_nodes_only() -> None:
    obj = ds(tls(nodeSelector={"pool": "cobrowse"}))
    assert obj["metadata"]["name"] == "cb-mscapi-agent"
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    pod = obj["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "cobrowse", "kubernetes.io/os": "windows"}
    assert {"key": "os", "operator": "Equal", "value": "windows", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["hostNetwork"] is True
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["windowsOptions"] == {
        "hostProcess": True,
        "runAsUserName": "NT AUTHORITY\\SYSTEM",
    }
    container = pod["containers"][0]
    assert container["image"] == "agent:1"
    args = container["args"]
    assert container["command"][-2:] == ["agent", "run"]
    assert args[args.index("--fingerprint") + 1] == FP
    assert args[args.index("--owner") + 1] == "genesys/cb"
    assert args[args.index("--mode") + 1] == "sync"
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe[-2:] == ["--expect", FP]
    # hcsshim substitutes %CONTAINER_SANDBOX_MOUNT_POINT% into the command line; a relative
    # path breaks where containerd starts the container in C:\ (1.7 before 1.7.16), and an
    # absolute volume path where volumes are only below the sandbox (containerd 1.6).
    sandbox_python = "%CONTAINER_SANDBOX_MOUNT_POINT%\\agent\\python\\python.exe"
    assert container["command"] == [sandbox_python, "-m", "cobrowse_tls.cli", "agent", "run"]
    assert probe[:5] == [sandbox_python, "-m", "cobrowse_tls.cli", "agent", "probe"]
    mount = container["volumeMounts"][0]["mountPath"]
    assert mount == "C:\\var\\run\\cobrowse-tls"
    ca_file = args[args.index("--ca-file") + 1]
    assert ca_file == "%CONTAINER_SANDBOX_MOUNT_POINT%\\var\\run\\cobrowse-tls\\ca.pem"
    # One slow start (cmd /c, Python) on a busy node is no verdict.
    readiness = container["readinessProbe"]
    assert readiness["timeoutSeconds"] >= 10
    assert readiness["failureThreshold"] >= 3
    assert readiness["timeoutSeconds"] * readiness["failureThreshold"] >= 30
    assert pod["volumes"][0]["secret"]["secretName"] == "cb-truststore"
    assert (
        obj["spec"]["template"]["metadata"]["annotations"][agent_manifest.ANNOTATION_FINGERPRINT]
        == FP
    )


@pytest.mark.parametrize(
    ("windows", "expected"),
    [
        ({}, ["--store", "Root", "--location", "LocalMachine"]),
        ({"store": "CA", "location": "Service", "account": "CoBrowse"},
         ["--store", "CA", "--location", "Service", "--account", "CoBrowse"]),
        ({"location": "User", "account": "S-1-5-21-1-2-3-1001", "store": "CA"},
         ["--store", "CA", "--location", "User", "--account", "S-1-5-21-1-2-3-1001"]),
    ],
)  # fmt: skip
def test_store_and_account_reach_the_agent(windows: dict[str, str], expected: list[str]) -> None:
    args = ds(tls(**windows))["spec"]["template"]["spec"]["containers"][0]["args"]
    for flag, value in zip(expected[::2], expected[1::2], strict=True):
        assert args[args.index(flag) + 1] == value


def test_cleanup_mode_changes_the_template_and_the_expected_marker() -> None:
    sync, cleanup = (
        ds(tls()),
        ds(tls(), mode=agent_manifest.CLEANUP, cleanup_since="2030-01-01T00:00:00Z"),
    )
    assert sync["spec"]["template"] != cleanup["spec"]["template"]
    probe = cleanup["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]
    assert probe["command"][-1] == f"cleaned:{FP}"
    assert cleanup["metadata"]["annotations"][agent_manifest.ANNOTATION_CLEANUP_SINCE]
    assert (
        sync["metadata"]["annotations"]["tls.cobrowse.io/input-hash"]
        != cleanup["metadata"]["annotations"]["tls.cobrowse.io/input-hash"]
    )


def test_a_live_daemon_set_switched_to_cleanup_is_what_cleanup_mode_renders() -> None:
    t = tls(location="Service", account="CoBrowse", store="CA")
    live = ds(t)
    # What the API server adds to the object it returns.
    live["metadata"].update(uid="d-1", resourceVersion="42", generation=3, managedFields=[{}])
    live["metadata"]["annotations"]["deprecated.daemonset.template.generation"] = "3"
    live["status"] = {"desiredNumberScheduled": 2}
    since = "2030-01-01T00:00:00Z"
    switched = agent_manifest.switch_to_cleanup(
        live, cleanup_since=since, agent=agent_manifest.AgentConfig(image="agent:1")
    )
    rendered = ds(t, mode=agent_manifest.CLEANUP, cleanup_since=since)
    assert switched["spec"] == rendered["spec"]
    assert set(switched) == {"apiVersion", "kind", "metadata", "spec"}
    meta = switched["metadata"]
    assert set(meta) == {"name", "namespace", "labels", "ownerReferences", "annotations"}
    assert meta["annotations"] == {
        "tls.cobrowse.io/input-hash": live["metadata"]["annotations"]["tls.cobrowse.io/input-hash"],
        agent_manifest.ANNOTATION_CLEANUP_SINCE: since,
    }
    assert live["spec"] == ds(t)["spec"]  # the live object is left as it was


def test_a_switched_daemon_set_takes_the_current_agent_image_and_command() -> None:
    # Written by an older operator with another agent image: the admission policy admits only
    # the image and command the operator runs with now.
    old = agent_manifest.AgentConfig(image="agent:old", command=("C:\\old\\python.exe", "-m", "x"))
    live = render.agent_daemon_set(tls(), fingerprint=FP, input_hash="sha256:x", agent=old)
    since = "2030-01-01T00:00:00Z"
    switched = agent_manifest.switch_to_cleanup(
        live, cleanup_since=since, agent=agent_manifest.AgentConfig(image="agent:1")
    )
    assert switched["spec"] == ds(tls(), mode=agent_manifest.CLEANUP, cleanup_since=since)["spec"]


def test_agent_settings_change_the_input_hash() -> None:
    a = ds(tls())
    b = render.agent_daemon_set(
        tls(),
        fingerprint=FP,
        input_hash="sha256:x",
        agent=agent_manifest.AgentConfig(image="agent:2"),
    )
    assert a["metadata"]["annotations"] != b["metadata"]["annotations"]


def daemon(desired: int, updated: int, gen: int = 2, observed: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"generation": gen},
        "status": {
            "observedGeneration": observed,
            "desiredNumberScheduled": desired,
            "updatedNumberScheduled": updated,
        },
    }


def pod(node: str, ready: bool, fp: str = FP, mode: str = "sync") -> dict[str, Any]:
    return {
        "metadata": {
            "annotations": {
                agent_manifest.ANNOTATION_FINGERPRINT: fp,
                agent_manifest.ANNOTATION_MODE: mode,
            }
        },
        "spec": {"nodeName": node},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_synced_only_when_every_node_runs_a_ready_current_pod() -> None:
    ok = agent_manifest.sync_state(daemon(2, 2), [pod("w1", True), pod("w2", True)], fingerprint=FP,
                           mode="sync")  # fmt: skip
    assert (ok.synced, ok.desired, ok.ready, ok.reason) == (True, 2, 2, "Synced")
    old = agent_manifest.sync_state(
        daemon(2, 1), [pod("w1", True), pod("w2", True, fp="sha256:old")], fingerprint=FP,
        mode="sync",
    )  # fmt: skip
    assert (old.synced, old.ready, old.not_synced) == (False, 1, ("w2",))
    assert "w2" in old.message
    unready = agent_manifest.sync_state(daemon(2, 2), [pod("w1", True), pod("w2", False)],
                                fingerprint=FP, mode="sync")  # fmt: skip
    assert (unready.synced, unready.not_synced) == (False, ("w2",))
    stale = agent_manifest.sync_state(daemon(2, 2, gen=3), [pod("w1", True), pod("w2", True)],
                              fingerprint=FP, mode="sync")  # fmt: skip
    assert stale.synced is False


def test_no_windows_nodes_and_no_daemon_set() -> None:
    none = agent_manifest.sync_state(daemon(0, 0), [], fingerprint=FP, mode="sync")
    assert (none.synced, none.reason) == (False, "NoWindowsNodes")
    missing = agent_manifest.sync_state(None, [], fingerprint=FP, mode="sync")
    assert (missing.synced, missing.reason) == (False, "AgentPending")


def test_status_shape() -> None:
    s = agent_manifest.sync_state(daemon(2, 1), [pod("w1", True), pod("w2", False)], fingerprint=FP,
                          mode="sync")  # fmt: skip
    assert s.status() == {"desired": 2, "ready": 1, "notSynced": ["w2"]}


POD_SECURITY_REFUSAL = (
    'Error creating: pods "cb-mscapi-agent-x7k2p" is forbidden: violates PodSecurity'
    ' "baseline:latest": host namespaces (hostNetwork=true), hostProcess (pod and container'
    ' "agent" must not set securityContext.windowsOptions.hostProcess=true)'
)


def _failed_create(message: str, at: str) -> dict[str, Any]:
    return {"reason": "FailedCreate", "message": message, "lastTimestamp": at, "count": 3}


def _ds_status(desired: int, scheduled: int) -> dict[str, Any]:
    obj = ds(tls())
    obj["metadata"]["generation"] = 1
    obj["status"] = {
        "observedGeneration": 1,
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": scheduled,
        "numberReady": scheduled,
    }
    return obj


def test_pod_security_refusing_the_agent_pods_is_its_own_reason() -> None:
    obj = _ds_status(desired=2, scheduled=0)
    sync = agent_manifest.creation_failure(
        obj, [], [_failed_create(POD_SECURITY_REFUSAL, "2030-01-01T00:00:05Z")]
    )
    assert sync is not None
    assert (sync.synced, sync.reason, sync.desired, sync.ready) == (
        False,
        "PodSecurityForbidden",
        2,
        0,
    )
    assert "namespace genesys" in sync.message
    assert "pod-security.kubernetes.io/enforce=privileged" in sync.message
    assert 'violates PodSecurity "baseline:latest"' in sync.message


def test_other_creation_failures_and_when_they_do_not_count() -> None:
    quota = 'Error creating: pods "cb-mscapi-agent-1" is forbidden: exceeded quota: pods'
    obj = _ds_status(desired=2, scheduled=1)
    pod = {"metadata": {"creationTimestamp": "2030-01-01T00:01:00Z"}}
    newer = [_failed_create(quota, "2030-01-01T00:02:00.123456Z")]
    sync = agent_manifest.creation_failure(obj, [pod], newer)
    assert sync is not None
    assert sync.reason == "AgentPodsNotCreated"
    assert "exceeded quota" in sync.message
    # A refusal older than the newest pod was overcome since.
    older = [_failed_create(POD_SECURITY_REFUSAL, "2030-01-01T00:00:30Z")]
    assert agent_manifest.creation_failure(obj, [pod], older) is None
    # Every node has its pod: nothing missing, whatever old events say.
    assert agent_manifest.creation_failure(_ds_status(2, 2), [pod], newer) is None
    assert agent_manifest.creation_failure(_ds_status(0, 0), [], newer) is None
    assert agent_manifest.creation_failure(obj, [pod], []) is None
    assert agent_manifest.creation_failure(None, [], newer) is None


@pytest.mark.parametrize(
    ("names", "labels", "namespace", "ns_labels", "allowed"),
    [
        ((), (), "genesys", {"a": "b"}, False),  # the default: nowhere
        (("genesys",), (), "genesys", None, True),
        (("genesys",), (), "other", {"a": "b"}, False),
        ((), (("tls.cobrowse.io/mscapi", "allowed"),), "x", {"tls.cobrowse.io/mscapi": "allowed"},
         True),
        ((), (("tls.cobrowse.io/mscapi", "allowed"),), "x", {"tls.cobrowse.io/mscapi": "yes"},
         False),
        ((), (("a", "1"), ("b", "2")), "x", {"a": "1"}, False),  # every label must match
        ((), (("a", "1"), ("b", "2")), "x", {"a": "1", "b": "2", "c": "3"}, True),
        ((), (("a", "1"),), "x", None, False),  # labels unknown: not allowed
    ],
)  # fmt: skip
def test_mscapi_is_opt_in_per_namespace(
    names: tuple[str, ...],
    labels: tuple[tuple[str, str], ...],
    namespace: str,
    ns_labels: dict[str, str] | None,
    allowed: bool,
) -> None:
    settings = settings_mod.Settings(
        mscapi_namespaces=frozenset(names), mscapi_namespace_labels=labels
    )
    assert settings.mscapi_allowed(namespace, ns_labels) is allowed
