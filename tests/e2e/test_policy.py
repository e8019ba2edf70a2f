"""The chart's admission policy and RBAC against a stolen operator token, on the real API server.

Every request here is made with the token of the chart's ServiceAccount (the identity the
whole e2e suite runs its operator as, see operator_support.operator_kubeconfig). Each denial
has a positive control next to it (the operator's own write of the same kind gets through),
so a test passes only because the policy told the two apart.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client import ApiException

import pki as pkim
from cobrowse_tls.api import models, stamps
from cobrowse_tls.core import agent_manifest, render, restart_plan
from e2e import operator_support
from e2e.cluster_backends import E2ECluster
from e2e.operator_support import (
    AGENT_IMAGE,
    MSCAPI_LABEL,
    Api,
    cobrowse_tls,
    condition,
    operator_fixture,
    raw,
    secret,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    os.environ.get("E2E_OPERATOR") == "external",
    reason="needs the chart ServiceAccount's token, which the in-cluster install keeps",
)

operator_proc = operator_fixture("--resync", "1", "--restart-window", "0.2")

POLICY = "cobrowse-tls-operator admission policy"
OUTPUT_LABELS = {stamps.LABEL_MANAGED_BY: stamps.MANAGER, stamps.LABEL_OWNER: "cb"}


@pytest.fixture(scope="module")
def sa(operator_kubeconfig: Path) -> client.ApiClient:
    """An API client holding the operator's token: what an attacker who stole it holds."""
    api_client: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(operator_kubeconfig)
    )
    return api_client


@pytest.fixture
def allowed_ns(namespace: str, core: client.CoreV1Api) -> str:
    """A namespace a cluster admin opted in to MSCAPI."""
    core.patch_namespace(namespace, {"metadata": {"labels": dict([MSCAPI_LABEL])}})
    return namespace


@pytest.fixture
def other_ns(core: client.CoreV1Api) -> Iterator[str]:
    """A second namespace, not opted in to MSCAPI."""
    name = f"e2e-policy-other-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


def denied(call: Callable[[], Any], *expected: str) -> str:
    """Run call; it must be refused (403) by the admission policy; returns the message."""
    with pytest.raises(ApiException) as info:
        call()
    body = json.loads(info.value.body or "{}")
    message = str(body.get("message", ""))
    assert info.value.status == 403, message
    assert POLICY in message, f"refused, but not by the admission policy: {message}"
    for text in expected:
        assert text in message, message
    return message


def labelled_secret(ns: str, name: str, type_: str = "Opaque") -> dict[str, Any]:
    obj = secret(ns, name, {"a": b"b"})
    obj["metadata"]["labels"] = dict(OUTPUT_LABELS)
    obj["type"] = type_
    return obj


def apply_as(sa: client.ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply with force, as the operator writes (engine/kube.py)."""
    core, apps = client.CoreV1Api(sa), client.AppsV1Api(sa)
    calls = {
        "Secret": core.patch_namespaced_secret,
        "ConfigMap": core.patch_namespaced_config_map,
        "Deployment": apps.patch_namespaced_deployment,
        "DaemonSet": apps.patch_namespaced_daemon_set,
    }
    meta = obj["metadata"]
    return raw(
        calls[obj["kind"]],
        meta["name"],
        meta["namespace"],
        obj,
        field_manager=stamps.MANAGER,
        force=True,
        _content_type="application/apply-patch+yaml",
    )


def deployment(ns: str) -> dict[str, Any]:
    # A container named "web" with no node selector: the denied patches below name it.
    pod = {"containers": [{"name": "web", "image": "genesys/cobrowse:test"}]}
    return operator_support.deployment(ns, "web", pod)


def test_secrets_and_config_maps(
    sa: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    as_op = client.CoreV1Api(sa)
    # A ServiceAccount token Secret (the token controller would fill it with a token of a
    # privileged account), even with the operator's labels.
    token = labelled_secret(namespace, "steal", "kubernetes.io/service-account-token")
    token["metadata"]["annotations"] = {"kubernetes.io/service-account.name": "default"}
    denied(lambda: raw(as_op.create_namespaced_secret, namespace, token), "type Opaque")
    denied(lambda: apply_as(sa, token), "type Opaque")
    # A Secret without the output labels.
    denied(
        lambda: raw(as_op.create_namespaced_secret, namespace, secret(namespace, "x", {})), "label"
    )
    # Someone else's Secret: not even by adding the labels in the same write.
    raw(core.create_namespaced_secret, namespace, secret(namespace, "foreign", {"k": b"admin's"}))
    takeover = {"metadata": {"labels": OUTPUT_LABELS}, "data": {"k": "b3duZWQ="}}
    denied(lambda: as_op.patch_namespaced_secret("foreign", namespace, takeover), "label")
    denied(lambda: apply_as(sa, labelled_secret(namespace, "foreign")), "label")
    assert raw(core.read_namespaced_secret, "foreign", namespace)["data"] == {
        "k": base64.b64encode(b"admin's").decode()
    }
    # Positive control: the operator's own output, created and changed.
    apply_as(sa, labelled_secret(namespace, "cb-truststore"))
    as_op.patch_namespaced_secret("cb-truststore", namespace, {"data": {"a": "Yw=="}})
    # ...but its labels stay, and its owner too.
    unlabel = [{"op": "remove", "path": "/metadata/labels/tls.cobrowse.io~1owner"}]
    denied(
        lambda: as_op.patch_namespaced_secret(
            "cb-truststore", namespace, unlabel, _content_type="application/json-patch+json"
        ),
        "label",
    )
    retarget = {"metadata": {"labels": {stamps.LABEL_OWNER: "other"}}}
    denied(lambda: as_op.patch_namespaced_secret("cb-truststore", namespace, retarget))
    # ConfigMaps: the same labels.
    bare = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="bare"))
    denied(lambda: as_op.create_namespaced_config_map(namespace, bare), "label")
    mine = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="cb-security", labels=OUTPUT_LABELS)
    )
    as_op.create_namespaced_config_map(namespace, mine)


def test_workloads_only_restart(
    sa: client.ApiClient, apps: client.AppsV1Api, namespace: str
) -> None:
    raw(apps.create_namespaced_deployment, namespace, deployment(namespace))
    as_op = client.AppsV1Api(sa)
    image = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "evil"}]}}}}
    denied(lambda: as_op.patch_namespaced_deployment("web", namespace, image), "restarted-for")
    command = {
        "spec": {"template": {"spec": {"containers": [{"name": "web", "command": ["sh", "-c"]}]}}}
    }
    denied(lambda: as_op.patch_namespaced_deployment("web", namespace, command), "restarted-for")
    scale = {"spec": {"replicas": 0}}
    denied(lambda: as_op.patch_namespaced_deployment("web", namespace, scale))
    with pytest.raises(ApiException) as info:  # RBAC already says no
        as_op.delete_namespaced_deployment("web", namespace)
    assert info.value.status == 403
    target = restart_plan.Target("Deployment", "web", deployment(namespace))
    denied(lambda: apply_as(sa, restart_plan.restart_patch(target, "not a hash")), "sha256")
    # Positive control: the operator's restart itself (engine/restart_step.py).
    desired = "sha256:" + "0" * 64
    apply_as(sa, restart_plan.restart_patch(target, desired))
    live = raw(apps.read_namespaced_deployment, "web", namespace)
    assert restart_plan.template_hash(live) == desired
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "genesys/cobrowse:test"


def agent(ns: str, *, image: str = AGENT_IMAGE, command: tuple[str, ...] | None = None) -> Any:
    tls = models.parse(
        cobrowse_tls(
            ns,
            "cb",
            {
                "provider": "MSCAPI",
                "application": {"type": "Cluster", "name": "CB_Cluster"},
                "trustedCA": {"sources": [{"secret": {"name": "ca", "key": "ca.crt"}}]},
            },
        )
    )
    config_ = agent_manifest.AgentConfig(image=image)
    if command is not None:
        config_ = agent_manifest.AgentConfig(image=image, command=command)
    return render.agent_daemon_set(
        tls, fingerprint="sha256:" + "1" * 64, input_hash="sha256:x", agent=config_
    )


def test_daemon_sets_only_as_rendered_where_allowed(
    sa: client.ApiClient, apps: client.AppsV1Api, allowed_ns: str, other_ns: str
) -> None:
    # Another image, or the right image running another command: refused.
    denied(lambda: apply_as(sa, agent(allowed_ns, image="evil/agent:1")), "image")
    denied(lambda: apply_as(sa, agent(allowed_ns, command=("powershell.exe",))), "image")
    extra = agent(allowed_ns)
    extra["spec"]["template"]["spec"]["volumes"].append(
        {"name": "host", "hostPath": {"path": "C:\\"}}
    )
    denied(lambda: apply_as(sa, extra))
    # The rendered agent, but where no admin allowed MSCAPI.
    denied(lambda: apply_as(sa, agent(other_ns)), "MSCAPI is allowed")
    # Positive control: the agent as the operator renders it, where it is allowed.
    apply_as(sa, agent(allowed_ns))
    # It cannot be turned into something else afterwards either.
    denied(lambda: apply_as(sa, agent(allowed_ns, image="evil/agent:1")), "image")
    client.AppsV1Api(sa).delete_namespaced_daemon_set("cb-mscapi-agent", allowed_ns)
    # A DaemonSet of the namespace's own: a restart, nothing else, and no deletion.
    own = deployment(allowed_ns) | {"kind": "DaemonSet"}
    del own["spec"]["replicas"]
    raw(apps.create_namespaced_daemon_set, allowed_ns, own)
    target = restart_plan.Target("DaemonSet", "web", own)
    apply_as(sa, restart_plan.restart_patch(target, "sha256:" + "2" * 64))
    image = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "evil"}]}}}}
    denied(lambda: client.AppsV1Api(sa).patch_namespaced_daemon_set("web", allowed_ns, image))
    denied(lambda: client.AppsV1Api(sa).delete_namespaced_daemon_set("web", allowed_ns))


def test_custom_resources_and_events(
    sa: client.ApiClient, api: Api, namespace: str, pki: pkim.PKI
) -> None:
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    spec = {
        "provider": "PEM",
        "application": {"type": "Cluster", "name": "CB_Cluster"},
        "trustedCA": {"sources": [{"secret": {"name": "ca", "key": "ca.crt"}}]},
    }
    api.apply(cobrowse_tls(namespace, "cb", spec))
    custom = client.CustomObjectsApi(sa)
    patch = {"spec": {"trustedCA": {"sources": [{"inline": pkim.pem(pki.other_root).decode()}]}}}
    args = (models.GROUP, models.VERSION, namespace, models.PLURAL, "cb", patch)
    merge = "application/merge-patch+json"
    denied(lambda: custom.patch_namespaced_custom_object(*args, _content_type=merge), "finalizer")
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="fake"),
        involved_object=client.V1ObjectReference(kind="Secret", name="ca", namespace=namespace),
        reason="Fake",
        message="posted about something that is not a CobrowseTLS",
    )
    denied(lambda: client.CoreV1Api(sa).create_namespaced_event(namespace, event), "events")
    # Pods, exec, tokens: not writes the operator makes at all.
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="p"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="x")]),
    )
    with pytest.raises(ApiException) as info:
        client.CoreV1Api(sa).create_namespaced_pod(namespace, pod)
    assert info.value.status == 403


@pytest.mark.usefixtures("operator_proc")
def test_mscapi_refused_where_not_allowed_then_works_once_allowed(
    cluster: E2ECluster,
    api: Api,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    other_ns: str,
    pki: pkim.PKI,
) -> None:
    api.apply(secret(other_ns, "ca", {"ca.crt": pkim.pem(pki.root)}))
    spec = {
        "provider": "MSCAPI",
        "application": {"type": "Cluster", "name": "CB_Cluster"},
        "trustedCA": {"sources": [{"secret": {"name": "ca", "key": "ca.crt"}}]},
        "windows": {"store": "Root", "location": "LocalMachine"},
    }
    api.apply(cobrowse_tls(other_ns, "cb", spec))

    def refused() -> dict[str, Any] | None:
        cond = condition(api.get("CobrowseTLS", other_ns, "cb"), "TrustStoreReady")
        return cond if cond and cond["reason"] == "MSCAPINotAllowed" else None

    cond = wait_for("MSCAPINotAllowed", refused)
    assert cond["status"] == "False"
    assert "mscapi.namespaces" in cond["message"]
    wait_for(
        "the MSCAPINotAllowed event",
        lambda: [e for e in api.events(other_ns, "cb") if e["reason"] == "MSCAPINotAllowed"],
    )
    # Nothing was created: no outputs, no agent, no finalizer.
    assert api.get("Secret", other_ns, "cb-truststore") is None
    assert api.get("ConfigMap", other_ns, "cb-security") is None
    assert not raw(apps.list_namespaced_daemon_set, other_ns)["items"]
    assert agent_manifest.FINALIZER not in (
        (api.get("CobrowseTLS", other_ns, "cb") or {})["metadata"].get("finalizers") or []
    )

    # A cluster admin allows the namespace: from the next look on, it works as anywhere else.
    core.patch_namespace(other_ns, {"metadata": {"labels": dict([MSCAPI_LABEL])}})
    if not cluster.has_windows_nodes:
        # The agents are created; syncing and their cleanup need Windows nodes to run on.
        created = wait_for(
            "the agents once allowed",
            lambda: raw(apps.list_namespaced_daemon_set, other_ns)["items"],
        )
        assert created[0]["spec"]["template"]["spec"]["containers"][0]["image"] == AGENT_IMAGE
        pytest.skip(f"the {cluster.backend} cluster has no Windows nodes to sync on")
    wait_for(
        "WindowsTrustSynced once allowed",
        lambda: (
            (c := condition(api.get("CobrowseTLS", other_ns, "cb"), "WindowsTrustSynced"))
            and c["status"] == "True"
        ),
        timeout=60,
    )
    ds = raw(apps.read_namespaced_daemon_set, "cb-mscapi-agent", other_ns)
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == AGENT_IMAGE
    api.delete("CobrowseTLS", other_ns, "cb")
    wait_for("the cleanup done", lambda: api.get("CobrowseTLS", other_ns, "cb") is None, 60)


# -- the published hashes -------------------------------------------------------------------------


def old_pbkdf2(password: str, namespace: str, name: str) -> str:
    """The password digest the hashes used to carry: salted PBKDF2, computable by anyone."""
    salt = f"cobrowse-tls:{namespace}/{name}".encode()
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 50_000).hex()


def old_input_hash(obj: dict[str, Any], fingerprint: str, digest: str) -> str:
    spec = models.parse(obj).spec.wire()
    for key in ("workloads", "restart", "connections", "windows"):
        spec.pop(key, None)
    material = {
        "name": obj["metadata"]["name"],
        "spec": spec,
        "fingerprint": fingerprint,
        "password": digest,
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def old_material_hash(files: dict[str, bytes], aliases: list[str], digest: str) -> str:
    h = hashlib.sha256()
    for name in sorted(set(files) - {render.TRUSTSTORE_JKS, render.TRUSTSTORE_PASSWORD}):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest() + b"\0")
    h.update(b"jks\0" + "\0".join(aliases).encode() + b"\0")
    h.update(b"password\0" + digest.encode())
    return "sha256:" + h.hexdigest()


@pytest.mark.usefixtures("operator_proc")
def test_no_password_verifier_outside_the_secret(
    api: Api, apps: client.AppsV1Api, namespace: str, pki: pkim.PKI
) -> None:
    """Given the ConfigMap, the events and the status, a password guess cannot be checked."""
    raw(apps.create_namespaced_deployment, namespace, deployment(namespace))
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    spec = {
        "provider": "JKS",
        "application": {"type": "Cluster", "name": "CB_Cluster"},
        "trustedCA": {"sources": [{"secret": {"name": "ca", "key": "ca.crt"}}]},
        "workloads": [{"kind": "Deployment", "name": "web"}],
    }
    api.apply(cobrowse_tls(namespace, "cb", spec))

    def restarted() -> dict[str, Any] | None:
        obj = api.get("CobrowseTLS", namespace, "cb")
        cond = condition(obj, "WorkloadsRestarted")
        return obj if cond and cond["reason"] == "RolloutComplete" else None

    obj = wait_for("the restart done", restarted, timeout=60)
    config_map = api.get("ConfigMap", namespace, "cb-security")
    truststore = api.get("Secret", namespace, "cb-truststore")
    assert config_map is not None
    assert truststore is not None
    events = api.events(namespace, "cb")
    # The input hash is on the Secret and in the Ready event (outputs written); the ConfigMap's
    # covers its own data only (no password, no key).
    published_input = truststore["metadata"]["annotations"][stamps.ANNOTATION_INPUT_HASH]
    assert config_map["metadata"]["annotations"][stamps.ANNOTATION_INPUT_HASH] == (
        render.config_map_hash(config_map["data"])
    )
    published_restart = obj["status"]["restart"]["hash"]
    fingerprint = obj["status"]["trustStore"]["fingerprint"]
    aliases = [c["alias"] for c in obj["status"]["trustStore"]["certificates"]]
    files = {k: v.encode() for k, v in config_map["data"].items()}
    files[render.CA_PEM] = base64.b64decode(truststore["data"][render.CA_PEM])

    # The attacker's best case: the guess is right. The old construction confirmed it.
    password = base64.b64decode(truststore["data"][render.TRUSTSTORE_PASSWORD]).decode()
    digest = old_pbkdf2(password, namespace, "cb")
    assert old_input_hash(obj, fingerprint, digest) != published_input
    assert old_material_hash(files, aliases, digest) != published_restart
    # The key that would make the check possible is only in the Secret.
    key = base64.b64decode(truststore["data"][render.HASH_KEY])
    assert len(key) >= render.HASH_KEY_MIN_BYTES
    public = json.dumps([config_map, obj, events])
    for form in (key.hex(), base64.b64encode(key).decode(), password):
        assert form not in public
    # With the Secret (which holds the password anyway) the same recipe reproduces both.
    hmac_digest = render.password_digest(password, key)
    tls = models.parse(obj)
    assert render.input_hash(tls, fingerprint, password, key) == published_input
    assert old_material_hash(files, aliases, hmac_digest) == published_restart
    assert published_input in json.dumps(events)  # the Ready event names what it wrote
