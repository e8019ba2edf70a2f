"""The observe step of a reconcile: every read it makes, in one place, into one snapshot.

Nothing here writes and nothing here decides: what to read follows from the CR alone (its
sources, its outputs, its workloads, its agents), and core/decide.py makes of it what it will.
Raises kube.KubeError when a read fails (the reconcile is retried), except a source or a
workload the operator may not read: that is reported in the status.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cobrowse_tls import passwords
from cobrowse_tls.api import models
from cobrowse_tls.core import agent_manifest, certs, decide, render, restart_plan
from cobrowse_tls.core import settings as settings_mod
from cobrowse_tls.engine import connections, kube


def observe(
    client: kube.Reader, body: Mapping[str, Any], settings: settings_mod.Settings, now: datetime
) -> decide.Snapshot:
    """Read what the reconcile of ``body`` needs; ``now`` only picks the CAs to verify against."""
    tls, spec_error = decide.parse(body)
    snap = decide.Snapshot(body=body, tls=tls, spec_error=spec_error)
    finalizers = body["metadata"].get("finalizers") or ()
    if body["metadata"].get("deletionTimestamp"):
        if agent_manifest.FINALIZER in finalizers:
            snap = dataclasses.replace(snap, **_agents(client, body, syncing=False))
        return snap
    if tls is None:
        return snap
    namespace = tls.metadata.namespace or "default"
    jks = tls.spec.provider is models.Provider.JKS
    sources, source_error = _sources(client, tls)
    workloads, workload_error = _targets(client, tls)
    snap = dataclasses.replace(
        snap,
        sources=sources,
        source_error=source_error,
        secret=client.get_secret(namespace, tls.truststore_secret_name),
        config_map=client.get_config_map(namespace, tls.security_config_map_name),
        workloads=workloads,
        workload_error=workload_error,
        new_password=passwords.generate() if jks else None,
        new_hash_key=passwords.generate_hash_key() if jks else None,
    )
    mscapi = tls.spec.provider is models.Provider.MSCAPI
    if mscapi and not settings.mscapi_allowed(namespace, None):
        labels = None
        if settings.mscapi_namespace_labels:
            ns = client.get_namespace(namespace)
            labels = dict(((ns or {}).get("metadata") or {}).get("labels") or {})
        snap = dataclasses.replace(snap, namespace_labels=labels)
        # Refused unless the labels allow it; then not even the agents' pods are read (the
        # chart grants that only where MSCAPI is allowed).
        mscapi = settings.mscapi_allowed(namespace, labels)
        if not mscapi:
            return snap
    if mscapi or agent_manifest.FINALIZER in finalizers:
        snap = dataclasses.replace(snap, **_agents(client, body, syncing=mscapi))
    if settings.verify_connections and connections.endpoints(tls.spec):
        snap = dataclasses.replace(snap, connections=_handshakes(snap, tls, settings, now))
    return snap


def _sources(
    client: kube.Reader, tls: models.CobrowseTLS
) -> tuple[render.ObjectData, render.InvalidInput | None]:
    """The Secrets and ConfigMaps the spec reads, by name (absent ones left out)."""
    namespace = tls.metadata.namespace or "default"
    kinds = (
        ("secret", client.get_secret, render.referenced_secrets(tls)),
        ("configMap", client.get_config_map, render.referenced_config_maps(tls)),
    )
    found: dict[str, dict[str, dict[str, bytes]]] = {"secret": {}, "configMap": {}}
    error: render.InvalidInput | None = None
    for kind, get, names in kinds:
        for name in names:
            try:
                obj = get(namespace, name)
            except kube.KubeError as exc:
                if exc.status != 403:
                    raise
                error = render.InvalidInput(
                    decide.SOURCE_FORBIDDEN, f"{kind} {name}", "the operator may not read it"
                )
                break
            if obj is not None:
                found[kind][name] = decide.decode_data(obj)
        if error is not None:
            break
    data = render.ObjectData(secrets=found["secret"], config_maps=found["configMap"])
    return data, error


def _targets(
    client: kube.Reader, tls: models.CobrowseTLS
) -> tuple[tuple[restart_plan.Target, ...], str | None]:
    """The workloads the spec targets, as they are now (a missing one with obj None), and
    which one the operator may not read, if any."""
    namespace = tls.metadata.namespace or "default"
    out: list[restart_plan.Target] = []
    seen: set[tuple[str, str]] = set()
    for w in tls.spec.workloads:
        kind = w.kind.value
        found: list[dict[str, Any] | None]
        try:
            if w.name is not None:
                label = w.name
                found = [client.get_workload(kind, namespace, w.name)]
            else:
                assert w.selector is not None
                selector = restart_plan.label_selector(w.selector)
                label = f"selector {selector}"
                found = [*client.list_workloads(kind, namespace, selector)] or [None]
        except kube.KubeError as exc:
            if exc.status != 403:
                raise
            return tuple(out), f"{kind} {label}: the operator may not read it"
        for obj in found:
            name = obj["metadata"]["name"] if obj is not None else label
            if (kind, name) not in seen:
                seen.add((kind, name))
                out.append(restart_plan.Target(kind, name, obj))
    return tuple(out), None


def _agents(client: kube.Reader, body: Mapping[str, Any], *, syncing: bool) -> dict[str, Any]:
    """The agent DaemonSet and, when there are agents of ours to follow (or about to be, when
    ``syncing`` the CAs to them), their pods."""
    meta = body["metadata"]
    namespace = meta.get("namespace") or "default"
    ds = client.get_workload("DaemonSet", namespace, models.agent_daemonset_name(meta["name"]))
    ours = ds is not None and decide.owned_by(ds, meta["name"])
    pods: tuple[Mapping[str, Any], ...] = ()
    if ours or (ds is None and syncing):
        # By name: a CR whose spec no longer parses still has agents to clean up.
        labels = agent_manifest.selector_labels(meta["name"])
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        pods = tuple(client.list_pods(namespace, selector))
    events: tuple[Mapping[str, Any], ...] = ()
    if ds is not None and ours and syncing and _lacks_pods(ds):
        # Why the DaemonSet controller could not create them (Pod Security, quota).
        name = ds["metadata"]["name"]
        found = client.list_events(namespace, "DaemonSet", name, agent_manifest.FAILED_CREATE)
        events = tuple(found)
    return {"agent": ds, "agent_pods": pods, "agent_events": events}


def _lacks_pods(ds: Mapping[str, Any]) -> bool:
    status = ds.get("status") or {}
    return int(status.get("currentNumberScheduled", 0)) < int(
        status.get("desiredNumberScheduled", 0)
    )


def _handshakes(
    snap: decide.Snapshot,
    tls: models.CobrowseTLS,
    settings: settings_mod.Settings,
    now: datetime,
) -> tuple[bool, str, str] | None:
    """ConnectionsVerified: handshakes trusting only the CAs this snapshot renders (none when
    it renders nothing: the bad input is what the status reports then)."""
    try:
        rendered = decide.render_outputs(snap, settings, now)
    except (render.InvalidInput, certs.CertificateError):
        return None
    ca_pem = rendered.files.get(render.CA_PEM)
    if not ca_pem:
        return None
    return connections.verify_all(tls.spec, ca_pem)
