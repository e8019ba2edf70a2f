"""One reconcile of one CobrowseTLS: fetch inputs, call the pure core, apply, report.

Level-based: it looks only at what is there now (the CR, its sources, its outputs) and writes
only what differs, so running it again with nothing changed performs no write at all.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pydantic

from cobrowse_tls import certs, conditions, connections, kube, mscapi, render, restarts
from cobrowse_tls.api import models

log = logging.getLogger("cobrowse_tls.reconciler")

SOURCE_FORBIDDEN = "SourceForbidden"
OUTPUT_CONFLICT = "OutputConflict"
INVALID_SPEC = "InvalidSpec"


@dataclasses.dataclass(frozen=True)
class Settings:
    expiry_window: timedelta = timedelta(days=30)
    # Changes arriving within this window give one restart, not one each.
    restart_window: timedelta = timedelta(seconds=1)
    # A rollout that completes no sooner than this is reported RolloutStalled.
    rollout_deadline: timedelta = timedelta(minutes=10)
    # How often a rollout in progress is looked at.
    rollout_poll: float = 1.0
    agent: mscapi.AgentConfig = dataclasses.field(default_factory=mscapi.AgentConfig)
    # Deleting an MSCAPI CobrowseTLS waits at most this long for the agents to clean up.
    cleanup_timeout: timedelta = timedelta(minutes=2)
    # Handshake with configServer and connections (the operator needs to reach them).
    verify_connections: bool = False


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened, for metrics and the work queue."""

    result: str  # "ok", "invalid" (bad input reported in status) or "error"
    writes: int = 0
    earliest_expiry: datetime | None = None
    rendered: render.Rendered | None = None
    status: dict[str, Any] | None = None  # the status now on the object
    requeue_after: float | None = None  # seconds: something is still to happen


def _key(body: Mapping[str, Any]) -> str:
    return f"{body['metadata'].get('namespace')}/{body['metadata']['name']}"


def fetch_sources(client: kube.Client, tls: models.CobrowseTLS) -> render.ObjectData:
    """The Secrets and ConfigMaps the spec reads, by name (absent ones left out)."""
    namespace = tls.metadata.namespace or "default"
    kinds = (
        ("secret", client.get_secret, render.referenced_secrets(tls)),
        ("configMap", client.get_config_map, render.referenced_config_maps(tls)),
    )
    found: dict[str, dict[str, dict[str, bytes]]] = {}
    for kind, get, names in kinds:
        found[kind] = {}
        for name in names:
            try:
                obj = get(namespace, name)
            except kube.KubeError as exc:
                if exc.status == 403:
                    raise render.InvalidInput(
                        SOURCE_FORBIDDEN, f"{kind} {name}", "the operator may not read it"
                    ) from None
                raise
            if obj is not None:
                found[kind][name] = kube.decode_data(obj)
    return render.ObjectData(secrets=found["secret"], config_maps=found["configMap"])


def _owned_by(obj: Mapping[str, Any], tls: models.CobrowseTLS) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return bool(
        labels.get(render.LABEL_MANAGED_BY) == render.MANAGER
        and labels.get(render.LABEL_OWNER) == tls.metadata.name
    )


def jks_password(
    tls: models.CobrowseTLS, found: render.ObjectData, existing: Mapping[str, Any] | None
) -> str | None:
    """The password named by the spec; else the one kept in our Secret; else a new one."""
    named = render.resolve_password(tls, found)
    if named is not None or tls.spec.provider is not models.Provider.JKS:
        return named
    if existing is not None and _owned_by(existing, tls):
        kept = kube.decode_data(existing).get(render.TRUSTSTORE_PASSWORD)
        if kept:
            try:
                return render.check_password(kept, "truststore Secret")
            except render.InvalidInput:
                log.warning(
                    "%s: kept truststore password unusable; generating a new one",
                    _key(
                        {
                            "metadata": {
                                "namespace": tls.metadata.namespace,
                                "name": tls.metadata.name,
                            }
                        }
                    ),
                )
    # Generated once: from now on it is read back from the Secret above.
    return secrets.token_urlsafe(32)


def needs_apply(existing: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """True when the live object differs from what we would write (also repairs drift)."""
    if existing is None:
        return True
    meta, want = existing.get("metadata", {}), desired["metadata"]
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if any(labels.get(k) != v for k, v in want.get("labels", {}).items()):
        return True
    if any(annotations.get(k) != v for k, v in want.get("annotations", {}).items()):
        return True
    owners = {ref.get("uid") for ref in meta.get("ownerReferences") or ()}
    if any(ref["uid"] not in owners for ref in want.get("ownerReferences", ())):
        return True
    if (existing.get("data") or {}) != desired.get("data", {}):
        return True
    return bool(existing.get("binaryData"))


def _status_part(status: Mapping[str, Any] | None) -> dict[str, Any]:
    status = status or {}
    keys = ("observedGeneration", "conditions", "trustStore", "restart", "windows")
    return {k: status[k] for k in keys if k in status}


def trust_store_status(tls: models.CobrowseTLS, rendered: render.Rendered) -> dict[str, Any]:
    chosen = rendered.selection.certificates
    out: dict[str, Any] = {
        "configMapName": tls.security_config_map_name,
        "fingerprint": rendered.fingerprint,
        "count": len(chosen),
        "certificates": rendered.certificate_status(),
    }
    if rendered.secret is not None:
        out["secretName"] = tls.truststore_secret_name
    if chosen:
        out["expires"] = render.rfc3339(min(c.not_after for c in chosen))
    return out


def _outputs_conflict(
    tls: models.CobrowseTLS, existing: list[Mapping[str, Any] | None]
) -> render.InvalidInput | None:
    for obj in existing:
        if obj is not None and not _owned_by(obj, tls):
            kind, name = obj.get("kind", "object"), obj["metadata"]["name"]
            return render.InvalidInput(
                OUTPUT_CONFLICT,
                f"{kind} {name}",
                "exists and is not managed by this CobrowseTLS; delete or rename it,"
                " or set spec.truststore.secretName",
            )
    return None


def reconcile(
    client: kube.Client, body: Mapping[str, Any], settings: Settings, now: datetime
) -> Outcome:
    """Reconcile one CobrowseTLS given as the API's dict. Raises kube.KubeError to retry."""
    meta = body["metadata"]
    generation = meta.get("generation")
    previous = body.get("status") or {}
    namespace = meta.get("namespace") or "default"
    if meta.get("deletionTimestamp"):
        return _finalize(client, body, settings, now)
    try:
        tls = models.parse(body)
    except pydantic.ValidationError as exc:
        # The CRD schema normally stops this; objects from an older schema can still get here.
        err = exc.errors()[0]
        where = "spec." + ".".join(str(p) for p in err["loc"][1:])
        msg = err["msg"].removeprefix("Value error, ")
        observations = [
            conditions.Observation(
                conditions.TRUST_STORE_READY, False, INVALID_SPEC, f"{where}: {msg}"
            )
        ]
        _, status = _report(client, body, previous, observations, None, now, generation)
        return Outcome("invalid", status=status)

    writes = 0
    existing_secret = client.get_secret(namespace, tls.truststore_secret_name)
    existing_map = client.get_config_map(namespace, tls.security_config_map_name)
    rendered: render.Rendered | None = None
    try:
        conflict = _outputs_conflict(tls, [existing_secret, existing_map])
        if conflict is not None:
            raise conflict
        found = fetch_sources(client, tls)
        sources = render.resolve_sources(tls, found)
        password = jks_password(tls, found, existing_secret)
        rendered = render.render(tls, sources, password=password, now=now, agent=settings.agent)
    except render.InvalidInput as exc:
        error = conditions.Observation(
            conditions.TRUST_STORE_READY, False, exc.reason, f"{exc.where}: {exc.detail}"
        )
    except certs.CertificateError as exc:
        error = conditions.Observation(
            conditions.TRUST_STORE_READY, False, exc.reason, f"{exc.source}: {exc.detail}"
        )
    if rendered is None:
        # Bad input: the last good outputs stay exactly as they are, nothing restarts.
        kept = [error]
        for kept_type in (
            conditions.WORKLOADS_RESTARTED,
            conditions.WINDOWS_TRUST_SYNCED,
            conditions.CERTIFICATES_VALID,
        ):
            old = conditions.find(previous.get("conditions"), kept_type)
            if old is not None:
                kept.append(_observation(old))
        _, status = _report(
            client,
            body,
            previous,
            kept,
            previous.get("trustStore"),
            now,
            generation,
            restart=previous.get("restart"),
            windows=previous.get("windows"),
        )
        return Outcome("invalid", status=status)

    to_write = []
    if rendered.secret is not None and needs_apply(existing_secret, rendered.secret):
        to_write.append(rendered.secret)
    if needs_apply(existing_map, rendered.config_map):
        to_write.append(rendered.config_map)
    for obj in to_write:
        client.apply(obj)
        writes += 1
    if to_write:
        names = ", ".join(f"{o['kind']} {o['metadata']['name']}" for o in to_write)
        _event(client, body, "Normal", "OutputsWritten", f"wrote {names} ({rendered.input_hash})")
        writes += 1

    observations = [
        conditions.Observation(
            conditions.TRUST_STORE_READY,
            True,
            "Rendered",
            f"{len(rendered.selection.certificates)} CA certificate(s), {rendered.fingerprint}",
        )
        if tls.spec.provider is not models.Provider.DISABLED
        else conditions.Observation(
            conditions.TRUST_STORE_READY, True, "Rendered", "provider Disabled: TLS off"
        ),
        conditions.certificate_validity(rendered.selection, now=now, window=settings.expiry_window),
    ]
    ca_pem = rendered.files.get(render.CA_PEM)
    if settings.verify_connections and ca_pem and connections.endpoints(tls.spec):
        ok, reason, message = connections.verify_all(tls.spec, ca_pem)
        observations.insert(
            1, conditions.Observation(conditions.CONNECTIONS_VERIFIED, ok, reason, message)
        )
    requeue: float | None = None
    windows_status: dict[str, Any] | None = None
    blocked_by: str | None = None
    if tls.spec.provider is models.Provider.MSCAPI and rendered.daemon_set is not None:
        written, sync = _sync_agents(client, body, tls, rendered)
        writes += written
        observations.insert(
            1,
            conditions.Observation(
                conditions.WINDOWS_TRUST_SYNCED, sync.synced, sync.reason, sync.message
            ),
        )
        windows_status = sync.status()
        if not sync.synced:
            # MSCAPI workloads read the host's store: restart them only once it holds the CAs.
            blocked_by = "the Windows agents to sync"
            requeue = settings.rollout_poll
    else:
        written, retiring = _retire_agents(client, body, tls, settings, now)
        writes += written
        if retiring:
            requeue = settings.rollout_poll
    restart_status: dict[str, Any] | None = None
    if tls.spec.workloads:
        plan, restart_status = _plan_restarts(
            client, tls, rendered, previous, settings, now, blocked_by
        )
        for target in plan.restart:
            client.apply(restarts.restart_patch(target, restart_status["hash"]))
            writes += 1
            _event(
                client,
                body,
                "Normal",
                "RestartStarted",
                f"restarting {target.kind} {target.name} for {restart_status['hash']}",
            )
            writes += 1
        for done in _newly_done(previous.get("restart"), plan):
            _event(client, body, "Normal", "RolloutDone", f"{done} runs the current material")
            writes += 1
        observations.insert(
            1,
            conditions.Observation(
                conditions.WORKLOADS_RESTARTED, plan.ready, plan.reason, plan.message
            ),
        )
        if plan.requeue_after is not None:
            requeue = min(requeue or plan.requeue_after, plan.requeue_after)
    reported, status = _report(
        client,
        body,
        previous,
        observations,
        trust_store_status(tls, rendered),
        now,
        generation,
        restart=restart_status,
        windows=windows_status,
    )
    writes += reported
    chosen = rendered.selection.certificates
    earliest = min((c.not_after for c in chosen), default=None)
    return Outcome(
        "ok",
        writes=writes,
        earliest_expiry=earliest,
        rendered=rendered,
        status=status,
        requeue_after=requeue,
    )


def _targets(client: kube.Client, tls: models.CobrowseTLS) -> list[restarts.Target]:
    namespace = tls.metadata.namespace or "default"
    out: list[restarts.Target] = []
    seen: set[tuple[str, str]] = set()
    for w in tls.spec.workloads:
        kind = w.kind.value
        found: list[dict[str, Any] | None]
        if w.name is not None:
            found = [client.get_workload(kind, namespace, w.name)]
            label = w.name
        else:
            assert w.selector is not None
            selector = restarts.label_selector(w.selector)
            found = [*client.list_workloads(kind, namespace, selector)] or [None]
            label = f"selector {selector}"
        for obj in found:
            name = obj["metadata"]["name"] if obj is not None else label
            if (kind, name) not in seen:
                seen.add((kind, name))
                out.append(restarts.Target(kind, name, obj))
    return out


def _plan_restarts(
    client: kube.Client,
    tls: models.CobrowseTLS,
    rendered: render.Rendered,
    previous: Mapping[str, Any],
    settings: Settings,
    now: datetime,
    blocked_by: str | None,
) -> tuple[restarts.Plan, dict[str, Any]]:
    approved = (tls.metadata.annotations or {}).get(restarts.ANNOTATION_APPROVE)
    return restarts.plan(
        _targets(client, tls),
        desired=restarts.material_hash(rendered.files),
        previous=previous.get("restart"),
        policy=tls.spec.restart.policy,
        max_concurrent=tls.spec.restart.max_concurrent,
        approved=approved,
        now=now,
        window=settings.restart_window,
        deadline=settings.rollout_deadline,
        poll=settings.rollout_poll,
        blocked_by=blocked_by,
    )


def _newly_done(previous: Mapping[str, Any] | None, plan: restarts.Plan) -> list[str]:
    before = {
        (w.get("kind"), w.get("name")): w.get("state")
        for w in (previous or {}).get("workloads") or ()
    }
    return [
        f"{w.kind} {w.name}"
        for w in plan.workloads
        if w.state == restarts.DONE and before.get((w.kind, w.name)) == restarts.ROLLING_OUT
    ]


def _observation(cond: Mapping[str, Any]) -> conditions.Observation:
    status = {"True": True, "False": False}.get(str(cond.get("status")))
    return conditions.Observation(
        str(cond["type"]), status, str(cond.get("reason", "")), str(cond.get("message", ""))
    )


def _event(client: kube.Client, body: Mapping[str, Any], type_: str, reason: str, msg: str) -> None:
    try:
        client.create_event(body, type_=type_, reason=reason, message=msg)
    except kube.KubeError as exc:
        if exc.namespace_terminating:
            log.debug("%s: namespace being deleted; event %s dropped", _key(body), reason)
            return
        # An event lost is not worth a retry of the whole reconcile.
        log.warning("%s: event %s not posted: %s", _key(body), reason, exc)


def _report(
    client: kube.Client,
    body: Mapping[str, Any],
    previous: Mapping[str, Any],
    observations: list[conditions.Observation],
    trust_store: Mapping[str, Any] | None,
    now: datetime,
    generation: int | None,
    restart: Mapping[str, Any] | None = None,
    windows: Mapping[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Write status (only if it changed) and an event per condition transition."""
    conds, transitions = conditions.merge(
        previous.get("conditions"), observations, now=now, generation=generation
    )
    status: dict[str, Any] = {"conditions": conds}
    if generation is not None:
        status["observedGeneration"] = generation
    if trust_store is not None:
        status["trustStore"] = dict(trust_store)
    if restart is not None:
        status["restart"] = dict(restart)
    if windows is not None:
        status["windows"] = dict(windows)
    writes = 0
    if status != _status_part(previous):
        client.patch_status(body["metadata"]["namespace"], body["metadata"]["name"], status)
        writes += 1
    for t in transitions:
        if t.type == conditions.READY and t.status != "True":
            continue  # the failing condition's own event says it already
        _event(client, body, t.event_type, t.reason, f"{t.type} {t.status}: {t.message}")
        writes += 1
    return writes, status


# ---- the MSCAPI agents -------------------------------------------------------------------


def _agent_pods(client: kube.Client, tls: models.CobrowseTLS) -> list[dict[str, Any]]:
    selector = ",".join(f"{k}={v}" for k, v in mscapi.selector_labels(tls).items())
    return client.list_pods(tls.metadata.namespace or "default", selector)


def _ensure_finalizer(client: kube.Client, body: Mapping[str, Any]) -> int:
    meta = body["metadata"]
    finalizers = list(meta.get("finalizers") or [])
    if mscapi.FINALIZER in finalizers:
        return 0
    client.set_finalizers(
        meta["namespace"], meta["name"], [*finalizers, mscapi.FINALIZER], meta["resourceVersion"]
    )
    return 1


def _drop_finalizer(client: kube.Client, body: Mapping[str, Any]) -> int:
    meta = body["metadata"]
    finalizers = list(meta.get("finalizers") or [])
    if mscapi.FINALIZER not in finalizers:
        return 0
    finalizers.remove(mscapi.FINALIZER)
    client.set_finalizers(meta["namespace"], meta["name"], finalizers, meta["resourceVersion"])
    return 1


def _sync_agents(
    client: kube.Client,
    body: Mapping[str, Any],
    tls: models.CobrowseTLS,
    rendered: render.Rendered,
) -> tuple[int, mscapi.Sync]:
    """Apply the agent DaemonSet (first the finalizer that lets it clean up) and read its sync."""
    assert rendered.daemon_set is not None
    namespace = tls.metadata.namespace or "default"
    writes = _ensure_finalizer(client, body)
    existing = client.get_workload("DaemonSet", namespace, tls.agent_daemonset_name)
    if existing is not None and not _owned_by(existing, tls):
        raise render.InvalidInput(
            OUTPUT_CONFLICT,
            f"DaemonSet {tls.agent_daemonset_name}",
            "exists and is not managed by this CobrowseTLS",
        )
    if needs_apply(existing, rendered.daemon_set):
        existing = client.apply(rendered.daemon_set)
        writes += 1
    sync = mscapi.sync_state(
        existing, _agent_pods(client, tls), fingerprint=rendered.fingerprint, mode=mscapi.SYNC
    )
    return writes, sync


def _cleanup_step(
    client: kube.Client,
    body: Mapping[str, Any],
    tls: models.CobrowseTLS | None,
    ds: Mapping[str, Any],
    settings: Settings,
    now: datetime,
    since: datetime,
) -> tuple[bool, int]:
    """Drive the agents to remove what they added; True once done (or timed out)."""
    namespace = ds["metadata"]["namespace"]
    template = ds["spec"]["template"]["metadata"].get("annotations") or {}
    fingerprint = str(template.get(mscapi.ANNOTATION_FINGERPRINT, ""))
    writes = 0
    if tls is None:
        _event(client, body, "Warning", "CleanupSkipped", "spec unreadable; agents not cleaned")
        return True, 1
    if template.get(mscapi.ANNOTATION_MODE) != mscapi.CLEANUP:
        client.apply(
            render.agent_daemon_set(
                tls,
                fingerprint=fingerprint,
                input_hash="cleanup",
                agent=settings.agent,
                mode=mscapi.CLEANUP,
                cleanup_since=render.rfc3339(since),
            )
        )
        _event(client, body, "Normal", "CleanupStarted", "agents remove the CAs they added")
        return False, 2
    current = client.get_workload("DaemonSet", namespace, ds["metadata"]["name"])
    sync = mscapi.sync_state(
        current, _agent_pods(client, tls), fingerprint=fingerprint, mode=mscapi.CLEANUP
    )
    if sync.synced or sync.reason == "NoWindowsNodes":
        _event(client, body, "Normal", "CleanupComplete", f"agents cleaned up: {sync.message}")
        return True, writes + 1
    if now - since > settings.cleanup_timeout:
        _event(
            client,
            body,
            "Warning",
            "CleanupTimedOut",
            f"gave up after {int(settings.cleanup_timeout.total_seconds())}s: {sync.message}",
        )
        return True, writes + 1
    return False, writes


def _finalize(
    client: kube.Client, body: Mapping[str, Any], settings: Settings, now: datetime
) -> Outcome:
    meta = body["metadata"]
    if mscapi.FINALIZER not in (meta.get("finalizers") or ()):
        return Outcome("ok")  # the garbage collector removes the outputs
    namespace = meta["namespace"]
    try:
        tls: models.CobrowseTLS | None = models.parse(body)
    except pydantic.ValidationError:
        tls = None
    ds_name = f"{meta['name']}-mscapi-agent"
    ds = client.get_workload("DaemonSet", namespace, ds_name)
    writes = 0
    if ds is not None:
        since = datetime.fromisoformat(str(meta["deletionTimestamp"]).replace("Z", "+00:00"))
        done, writes = _cleanup_step(client, body, tls, ds, settings, now, since)
        if not done:
            return Outcome("ok", writes=writes, requeue_after=settings.rollout_poll)
        client.delete_daemon_set(namespace, ds_name)
        writes += 1
    writes += _drop_finalizer(client, body)
    return Outcome("ok", writes=writes)


def _retire_agents(
    client: kube.Client,
    body: Mapping[str, Any],
    tls: models.CobrowseTLS,
    settings: Settings,
    now: datetime,
) -> tuple[int, bool]:
    """Provider no longer MSCAPI: clean the stores up, then remove the agents and finalizer.

    Returns the writes made and whether the cleanup is still under way.
    """
    if mscapi.FINALIZER not in (body["metadata"].get("finalizers") or ()):
        return 0, False
    namespace = tls.metadata.namespace or "default"
    ds = client.get_workload("DaemonSet", namespace, tls.agent_daemonset_name)
    writes = 0
    if ds is not None and _owned_by(ds, tls):
        stamp = (ds["metadata"].get("annotations") or {}).get(mscapi.ANNOTATION_CLEANUP_SINCE)
        since = datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else now
        done, writes = _cleanup_step(client, body, tls, ds, settings, now, since)
        if not done:
            return writes, True
        client.delete_daemon_set(namespace, tls.agent_daemonset_name)
        writes += 1
    return writes + _drop_finalizer(client, body), False
