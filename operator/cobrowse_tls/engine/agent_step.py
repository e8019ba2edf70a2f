"""The MSCAPI agents' lifecycle: apply the DaemonSet, read its sync, clean up before it goes.

A finalizer on the CobrowseTLS holds its deletion (and a switch away from MSCAPI) until the
agents removed the certificates they added, or a bounded time passed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pydantic

from cobrowse_tls.api import models, stamps
from cobrowse_tls.core import agent_manifest, render
from cobrowse_tls.core import settings as settings_mod
from cobrowse_tls.engine import kube, outputs


def _agent_pods(client: kube.Client, tls: models.CobrowseTLS) -> list[dict[str, Any]]:
    selector = ",".join(f"{k}={v}" for k, v in agent_manifest.selector_labels(tls).items())
    return client.list_pods(tls.metadata.namespace or "default", selector)


def _ensure_finalizer(client: kube.Client, body: Mapping[str, Any]) -> int:
    meta = body["metadata"]
    finalizers = list(meta.get("finalizers") or [])
    if agent_manifest.FINALIZER in finalizers:
        return 0
    client.set_finalizers(
        meta["namespace"],
        meta["name"],
        [*finalizers, agent_manifest.FINALIZER],
        meta["resourceVersion"],
    )
    return 1


def _drop_finalizer(client: kube.Client, body: Mapping[str, Any]) -> int:
    meta = body["metadata"]
    finalizers = list(meta.get("finalizers") or [])
    if agent_manifest.FINALIZER not in finalizers:
        return 0
    finalizers.remove(agent_manifest.FINALIZER)
    client.set_finalizers(meta["namespace"], meta["name"], finalizers, meta["resourceVersion"])
    return 1


def sync(
    client: kube.Client,
    body: Mapping[str, Any],
    tls: models.CobrowseTLS,
    rendered: render.Rendered,
) -> tuple[int, agent_manifest.Sync]:
    """Apply the agent DaemonSet (first the finalizer that lets it clean up) and read its sync."""
    assert rendered.daemon_set is not None
    namespace = tls.metadata.namespace or "default"
    existing = client.get_workload("DaemonSet", namespace, tls.agent_daemonset_name)
    if existing is not None and not outputs.owned_by(existing, tls.metadata.name):
        # Someone else's DaemonSet by that name: never touch it, not even to clean up.
        message = f"DaemonSet {tls.agent_daemonset_name} exists and is not managed by this"
        message += " CobrowseTLS; delete or rename it"
        return 0, agent_manifest.Sync(False, 0, 0, (), outputs.OUTPUT_CONFLICT, message)
    writes = _ensure_finalizer(client, body)
    if outputs.needs_apply(existing, rendered.daemon_set):
        existing = client.apply(rendered.daemon_set)
        writes += 1
    pods = _agent_pods(client, tls)
    sync = agent_manifest.sync_state(
        existing, pods, fingerprint=rendered.fingerprint, mode=agent_manifest.SYNC
    )
    if not sync.synced and existing is not None:
        # Pods the controller cannot create (Pod Security) would otherwise look like a slow sync.
        events = client.list_events(
            namespace, "DaemonSet", tls.agent_daemonset_name, agent_manifest.FAILED_CREATE
        )
        sync = agent_manifest.creation_failure(existing, pods, events) or sync
    return writes, sync


def cleanup_step(
    client: kube.Client,
    body: Mapping[str, Any],
    tls: models.CobrowseTLS | None,
    ds: Mapping[str, Any],
    settings: settings_mod.Settings,
    now: datetime,
    since: datetime,
) -> tuple[bool, int]:
    """Drive the agents to remove what they added; True once done (or timed out)."""
    namespace = ds["metadata"]["namespace"]
    template = ds["spec"]["template"]["metadata"].get("annotations") or {}
    fingerprint = str(template.get(agent_manifest.ANNOTATION_FINGERPRINT, ""))
    writes = 0
    if tls is None:
        outputs.event(
            client, body, "Warning", "CleanupSkipped", "spec unreadable; agents not cleaned"
        )
        return True, 1
    if template.get(agent_manifest.ANNOTATION_MODE) != agent_manifest.CLEANUP:
        client.apply(
            render.agent_daemon_set(
                tls,
                fingerprint=fingerprint,
                input_hash="cleanup",
                agent=settings.agent,
                mode=agent_manifest.CLEANUP,
                cleanup_since=stamps.rfc3339(since),
            )
        )
        outputs.event(client, body, "Normal", "CleanupStarted", "agents remove the CAs they added")
        return False, 2
    current = client.get_workload("DaemonSet", namespace, ds["metadata"]["name"])
    sync = agent_manifest.sync_state(
        current, _agent_pods(client, tls), fingerprint=fingerprint, mode=agent_manifest.CLEANUP
    )
    if sync.synced or sync.reason == "NoWindowsNodes":
        outputs.event(
            client, body, "Normal", "CleanupComplete", f"agents cleaned up: {sync.message}"
        )
        return True, writes + 1
    if now - since > settings.cleanup_timeout:
        outputs.event(
            client,
            body,
            "Warning",
            "CleanupTimedOut",
            f"gave up after {int(settings.cleanup_timeout.total_seconds())}s: {sync.message}",
        )
        return True, writes + 1
    return False, writes


def finalize(
    client: kube.Client, body: Mapping[str, Any], settings: settings_mod.Settings, now: datetime
) -> tuple[int, float | None]:
    """Deletion of a CobrowseTLS: the writes made and when to look again (None: done)."""
    meta = body["metadata"]
    if agent_manifest.FINALIZER not in (meta.get("finalizers") or ()):
        return 0, None  # the garbage collector removes the outputs
    namespace = meta["namespace"]
    try:
        tls: models.CobrowseTLS | None = models.parse(body)
    except pydantic.ValidationError:
        tls = None
    ds_name = models.agent_daemonset_name(meta["name"])
    ds = client.get_workload("DaemonSet", namespace, ds_name)
    writes = 0
    if ds is not None and outputs.owned_by(ds, meta["name"]):
        since = stamps.parse_rfc3339(str(meta["deletionTimestamp"]))
        done, writes = cleanup_step(client, body, tls, ds, settings, now, since)
        if not done:
            return writes, settings.rollout_poll
        client.delete_daemon_set(namespace, ds_name)
        writes += 1
    writes += _drop_finalizer(client, body)
    return writes, None


def retire(
    client: kube.Client,
    body: Mapping[str, Any],
    tls: models.CobrowseTLS,
    settings: settings_mod.Settings,
    now: datetime,
) -> tuple[int, bool]:
    """Provider no longer MSCAPI: clean the stores up, then remove the agents and finalizer.

    Returns the writes made and whether the cleanup is still under way.
    """
    if agent_manifest.FINALIZER not in (body["metadata"].get("finalizers") or ()):
        return 0, False
    namespace = tls.metadata.namespace or "default"
    ds = client.get_workload("DaemonSet", namespace, tls.agent_daemonset_name)
    writes = 0
    if ds is not None and outputs.owned_by(ds, tls.metadata.name):
        stamp = (ds["metadata"].get("annotations") or {}).get(
            agent_manifest.ANNOTATION_CLEANUP_SINCE
        )
        since = stamps.parse_rfc3339(stamp) if stamp else now
        done, writes = cleanup_step(client, body, tls, ds, settings, now, since)
        if not done:
            return writes, True
        client.delete_daemon_set(namespace, tls.agent_daemonset_name)
        writes += 1
    return writes + _drop_finalizer(client, body), False
