"""Layer 3: what one reconcile of one CobrowseTLS writes. Pure.

The reconcile runs in three steps. ``engine/observe.py`` reads, once, everything it needs into
a :class:`Snapshot`; :func:`decide` turns that snapshot, the settings and the clock into the
writes to make, in order, and the status they leave; ``engine/act.py`` makes the writes. So
this module reads no API, no clock and no random source (a fresh password, when one may be
needed, is drawn by observe): the same snapshot always gives the same decision.

Level-based: it looks only at what is there now (the CR, its sources, its outputs) and writes
only what differs, so with nothing changed the decision holds no write at all.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pydantic

from cobrowse_tls.api import models, stamps
from cobrowse_tls.core import agent_manifest, certs, conditions, render, restart_plan
from cobrowse_tls.core import settings as settings_mod

SOURCE_FORBIDDEN = "SourceForbidden"
WORKLOAD_FORBIDDEN = "WorkloadForbidden"
INVALID_SPEC = "InvalidSpec"
# An object with an output's name exists and is someone else's.
OUTPUT_CONFLICT = "OutputConflict"
OUTPUTS_WRITTEN = "OutputsWritten"
# Provider MSCAPI in a namespace no cluster admin allowed it in.
MSCAPI_NOT_ALLOWED = "MSCAPINotAllowed"

# The part of .status the operator owns (anything else there, it leaves alone).
STATUS_KEYS = ("observedGeneration", "conditions", "trustStore", "restart", "windows")

Obj = Mapping[str, Any]


# -- what observe saw ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Everything one reconcile reads, read once, before anything is written.

    Fields that may hold secrets (source data, the truststore Secret, passwords) stay out of
    its repr, so a log line or a test failure never prints them."""

    body: Obj  # the CobrowseTLS as the API gave it
    tls: models.CobrowseTLS | None  # its spec parsed; None when it does not parse
    spec_error: str | None = None  # why it does not parse ("spec.field: message")
    sources: render.ObjectData = dataclasses.field(
        default_factory=lambda: render.ObjectData(secrets={}, config_maps={}), repr=False
    )
    source_error: render.InvalidInput | None = None  # a source the operator may not read
    secret: Obj | None = dataclasses.field(default=None, repr=False)  # the outputs as they are now
    config_map: Obj | None = None
    workloads: tuple[restart_plan.Target, ...] = ()  # the targeted workloads as they are now
    workload_error: str | None = None  # a targeted workload the operator may not read (which)
    agent: Obj | None = None  # the MSCAPI agent DaemonSet
    agent_pods: tuple[Obj, ...] = ()
    agent_events: tuple[Obj, ...] = ()  # its FailedCreate events, while it lacks pods
    connections: tuple[bool, str, str] | None = None  # the handshakes, when they were made
    # A fresh JKS password, used when none is named or kept.
    new_password: str | None = dataclasses.field(default=None, repr=False)
    # A fresh key for the password's part of the published hashes, used when none is kept.
    new_hash_key: bytes | None = dataclasses.field(default=None, repr=False)
    # The namespace's labels, read only when MSCAPI may be allowed by namespace labels.
    namespace_labels: Mapping[str, str] | None = None


def parse(body: Obj) -> tuple[models.CobrowseTLS | None, str | None]:
    """The CR parsed, or None and the first validation error as ``spec.field: message``."""
    try:
        return models.parse(body), None
    except pydantic.ValidationError as exc:
        # The CRD schema normally stops this; objects from an older schema can still get here.
        err = exc.errors()[0]
        where = "spec." + ".".join(str(p) for p in err["loc"][1:])
        return None, f"{where}: {err['msg'].removeprefix('Value error, ')}"


# -- what act does ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Apply:
    """Server-side apply of an output, the agent DaemonSet or a workload's restart patch."""

    obj: Obj

    def __repr__(self) -> str:
        if self.obj.get("kind") == "Secret":
            # Its data (the store, its password) never reaches a log line.
            return f"Apply(obj=<Secret {self.obj['metadata'].get('name')}>)"
        return f"Apply(obj={self.obj!r})"


@dataclasses.dataclass(frozen=True)
class Event:
    """An event on the CobrowseTLS. A ``fallback`` one is posted only when a later write of
    the same reconcile fails: what it says is otherwise part of a later event."""

    type: str
    reason: str
    message: str
    fallback: bool = False


@dataclasses.dataclass(frozen=True)
class PatchStatus:
    """A JSON merge patch of the CobrowseTLS status."""

    patch: Obj


@dataclasses.dataclass(frozen=True)
class SetFinalizers:
    """The CobrowseTLS's new finalizers, if it is still as observed."""

    finalizers: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class DeleteDaemonSet:
    name: str


Write = Apply | Event | PatchStatus | SetFinalizers | DeleteDaemonSet


@dataclasses.dataclass(frozen=True)
class Decision:
    """The writes to make, in order, and what they leave, for metrics and the work queue."""

    result: str  # "ok", or "invalid": bad input reported in status
    writes: tuple[Write, ...] = ()
    status: Obj | None = None  # the operator's part of the status once written
    requeue_after: float | None = None  # seconds: something is still to happen
    earliest_expiry: datetime | None = None
    rendered: render.Rendered | None = dataclasses.field(default=None, repr=False)  # secrets
    notes: tuple[str, ...] = ()  # for the log


# -- outputs ---------------------------------------------------------------------------------


def decode_data(obj: Obj | None) -> dict[str, bytes]:
    """The data of a Secret (base64) or a ConfigMap (data + binaryData), as bytes."""
    if obj is None:
        return {}
    out: dict[str, bytes] = {}
    if obj.get("kind") == "Secret":
        for key, value in (obj.get("data") or {}).items():
            out[key] = base64.b64decode(value)
        return out
    for key, value in (obj.get("data") or {}).items():
        out[key] = str(value).encode()
    for key, value in (obj.get("binaryData") or {}).items():
        out[key] = base64.b64decode(value)
    return out


def owned_by(obj: Obj, owner: str) -> bool:
    """Whether ``obj`` is an output of the CobrowseTLS named ``owner`` (same namespace)."""
    labels = obj.get("metadata", {}).get("labels") or {}
    return bool(
        labels.get(stamps.LABEL_MANAGED_BY) == stamps.MANAGER
        and labels.get(stamps.LABEL_OWNER) == owner
    )


def needs_apply(existing: Obj | None, desired: Obj) -> bool:
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


def _outputs_conflict(tls: models.CobrowseTLS, existing: Sequence[Obj | None]) -> None:
    for obj in existing:
        if obj is not None and not owned_by(obj, tls.metadata.name):
            kind, name = obj.get("kind", "object"), obj["metadata"]["name"]
            raise render.InvalidInput(
                OUTPUT_CONFLICT,
                f"{kind} {name}",
                "exists and is not managed by this CobrowseTLS; delete or rename it,"
                " or set spec.truststore.secretName",
            )


def _jks_password(snap: Snapshot, tls: models.CobrowseTLS, notes: list[str]) -> str | None:
    """The password named by the spec; else the one kept in our Secret; else a new one."""
    named = render.resolve_password(tls, snap.sources)
    if named is not None or tls.spec.provider is not models.Provider.JKS:
        return named
    existing = snap.secret
    if existing is not None and owned_by(existing, tls.metadata.name):
        kept = decode_data(existing).get(render.TRUSTSTORE_PASSWORD)
        if kept:
            try:
                return render.check_password(kept, "truststore Secret")
            except render.InvalidInput:
                notes.append("kept truststore password unusable; generating a new one")
    # Generated once: from now on it is read back from the Secret above.
    return snap.new_password


def _hash_key(snap: Snapshot, tls: models.CobrowseTLS, password: str | None) -> bytes | None:
    """The key kept in our Secret; else the fresh one (then kept, like a generated password)."""
    if password is None:
        return None
    existing = snap.secret
    if existing is not None and owned_by(existing, tls.metadata.name):
        kept = render.kept_hash_key(decode_data(existing))
        if kept is not None:
            return kept
    return snap.new_hash_key


def render_outputs(
    snap: Snapshot, settings: settings_mod.Settings, now: datetime, notes: list[str] | None = None
) -> render.Rendered:
    """Every output of a parsed CR. Raises render.InvalidInput or certs.CertificateError."""
    tls = snap.tls
    assert tls is not None
    _outputs_conflict(tls, [snap.secret, snap.config_map])
    if snap.source_error is not None:
        raise snap.source_error
    sources = render.resolve_sources(tls, snap.sources)
    password = _jks_password(snap, tls, notes if notes is not None else [])
    return render.render(
        tls,
        sources,
        password=password,
        now=now,
        agent=settings.agent,
        hash_key=_hash_key(snap, tls, password),
    )


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
        out["expires"] = stamps.rfc3339(min(c.not_after for c in chosen))
    return out


# -- status ----------------------------------------------------------------------------------


def merge_patch(old: Obj, new: Obj) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``: what changed, and None
    for what is gone (a merge patch leaves every key it does not name as it was)."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            inner = merge_patch(before, value)
            if inner:
                patch[key] = inner
        elif value != before or key not in old:
            patch[key] = value
    return patch


def _status_part(status: Obj | None) -> dict[str, Any]:
    status = status or {}
    return {k: status[k] for k in STATUS_KEYS if k in status}


def report(
    body: Obj,
    observations: Sequence[conditions.Observation],
    trust_store: Obj | None,
    now: datetime,
    *,
    restart: Obj | None = None,
    windows: Obj | None = None,
) -> tuple[dict[str, Any], list[Write]]:
    """The new status, and its writes: the patch (only if it changed) and an event per
    condition transition."""
    previous = body.get("status") or {}
    generation = body["metadata"].get("generation")
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
    writes: list[Write] = []
    patch = merge_patch(_status_part(previous), status)
    if patch:
        writes.append(PatchStatus(patch))
    for t in transitions:
        if t.type == conditions.READY and t.status != "True":
            continue  # the failing condition's own event says it already
        writes.append(Event(t.event_type, t.reason, f"{t.type} {t.status}: {t.message}"))
    return status, writes


def _one_event_for_ready(writes: Sequence[Write], reported: Sequence[Write]) -> tuple[Write, ...]:
    """``writes`` then ``reported``, except that when the CR turns Ready as its outputs are
    written (a new CR, or one recovering), the `Ready` event also says what was written and
    the `OutputsWritten` event is a fallback, posted only if a write after the outputs (the
    status) fails: then `Ready` is not posted, and the retry's `Ready` cannot say what this
    reconcile wrote. One event, one write less, nothing lost."""
    wrote = next((w for w in writes if isinstance(w, Event) and w.reason == OUTPUTS_WRITTEN), None)
    ready = next(
        (w for w in reported if isinstance(w, Event) and w.reason == conditions.READY), None
    )
    if wrote is None or ready is None or ready.type != "Normal":
        return (*writes, *reported)
    merged = Event(ready.type, ready.reason, f"{ready.message}; {wrote.message}")
    return (
        *(dataclasses.replace(w, fallback=True) if w is wrote else w for w in writes),
        *(merged if w is ready else w for w in reported),
    )


def _observation(cond: Obj) -> conditions.Observation:
    status = {"True": True, "False": False}.get(str(cond.get("status")))
    return conditions.Observation(
        str(cond["type"]), status, str(cond.get("reason", "")), str(cond.get("message", ""))
    )


def _invalid(
    snap: Snapshot,
    error: conditions.Observation,
    now: datetime,
    notes: Sequence[str] = (),
    *,
    keep_conditions: bool = True,
) -> Decision:
    """Bad input: the last good outputs stay exactly as they are, nothing restarts; the status
    reports the error and keeps everything else as the last good reconcile left it (but the
    other conditions, without ``keep_conditions``)."""
    previous = snap.body.get("status") or {}
    kept = [error]
    for kept_type in conditions.ORDER if keep_conditions else ():
        old = conditions.find(previous.get("conditions"), kept_type)
        if old is not None and kept_type not in (conditions.READY, error.type):
            kept.append(_observation(old))
    status, writes = report(
        snap.body,
        kept,
        previous.get("trustStore"),
        now,
        restart=previous.get("restart"),
        windows=previous.get("windows"),
    )
    return Decision("invalid", tuple(writes), status=status, notes=tuple(notes))


# -- the MSCAPI agents -----------------------------------------------------------------------


def _with_finalizer(body: Obj) -> list[Write]:
    finalizers = list(body["metadata"].get("finalizers") or [])
    if agent_manifest.FINALIZER in finalizers:
        return []
    return [SetFinalizers((*finalizers, agent_manifest.FINALIZER))]


def _without_finalizer(body: Obj) -> SetFinalizers:
    """The finalizers but ours (only called when ours is there)."""
    finalizers = list(body["metadata"]["finalizers"])
    finalizers.remove(agent_manifest.FINALIZER)
    return SetFinalizers(tuple(finalizers))


def _contains(live: Any, wanted: Any) -> bool:
    """Whether ``live`` holds every field of ``wanted`` (the server adds defaults of its own)."""
    if isinstance(wanted, Mapping):
        return isinstance(live, Mapping) and all(
            k in live and _contains(live[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(live, list)
            and len(live) == len(wanted)
            and all(_contains(a, b) for a, b in zip(live, wanted, strict=True))
        )
    return bool(live == wanted)


def _after_apply(existing: Obj | None, desired: Obj) -> Obj:
    """The agent DaemonSet as the API server holds it right after our apply: a spec change is a
    new generation that the DaemonSet controller has not observed yet."""
    if existing is None:
        return {**desired, "metadata": {**desired["metadata"], "generation": 1}}
    if _contains(existing.get("spec"), desired["spec"]):
        return existing  # labels or annotations only: same generation
    meta = existing["metadata"]
    return {**existing, "metadata": {**meta, "generation": int(meta.get("generation", 0)) + 1}}


def _agent_sync(
    snap: Snapshot, tls: models.CobrowseTLS, rendered: render.Rendered, writes: list[Write]
) -> agent_manifest.Sync:
    """Apply the agent DaemonSet (first the finalizer that lets it clean up); its sync."""
    assert rendered.daemon_set is not None
    existing = snap.agent
    if existing is not None and not owned_by(existing, tls.metadata.name):
        # Someone else's DaemonSet by that name: never touch it, not even to clean up.
        message = f"DaemonSet {tls.agent_daemonset_name} exists and is not managed by this"
        message += " CobrowseTLS; delete or rename it"
        return agent_manifest.Sync(False, 0, 0, (), OUTPUT_CONFLICT, message)
    writes += _with_finalizer(snap.body)
    ds = existing
    if needs_apply(existing, rendered.daemon_set):
        writes.append(Apply(rendered.daemon_set))
        ds = _after_apply(existing, rendered.daemon_set)
    sync = agent_manifest.sync_state(
        ds, snap.agent_pods, fingerprint=rendered.fingerprint, mode=agent_manifest.SYNC
    )
    if not sync.synced and ds is not None:
        # Pods the controller cannot create (Pod Security) would otherwise look like a slow sync.
        failure = agent_manifest.creation_failure(ds, snap.agent_pods, snap.agent_events)
        sync = failure or sync
    return sync


def _cleanup(
    snap: Snapshot,
    ds: Obj,
    settings: settings_mod.Settings,
    now: datetime,
    since: datetime,
    writes: list[Write],
) -> bool:
    """Drive the agents to remove what they added; True once done (or timed out)."""
    template = ds["spec"]["template"]["metadata"].get("annotations") or {}
    fingerprint = str(template.get(agent_manifest.ANNOTATION_FINGERPRINT, ""))
    if template.get(agent_manifest.ANNOTATION_MODE) != agent_manifest.CLEANUP:
        if snap.tls is not None:
            cleanup = render.agent_daemon_set(
                snap.tls,
                fingerprint=fingerprint,
                input_hash="cleanup",
                agent=settings.agent,
                mode=agent_manifest.CLEANUP,
                cleanup_since=stamps.rfc3339(since),
            )
        else:
            # The spec no longer parses: the live template still names the store to clean.
            cleanup = agent_manifest.switch_to_cleanup(
                ds, cleanup_since=stamps.rfc3339(since), agent=settings.agent
            )
        writes.append(Apply(cleanup))
        writes.append(Event("Normal", "CleanupStarted", "agents remove the CAs they added"))
        return False
    sync = agent_manifest.sync_state(
        ds, snap.agent_pods, fingerprint=fingerprint, mode=agent_manifest.CLEANUP
    )
    if sync.synced or sync.reason == "NoWindowsNodes":
        writes.append(Event("Normal", "CleanupComplete", f"agents cleaned up: {sync.message}"))
        return True
    if now - since > settings.cleanup_timeout:
        timeout = int(settings.cleanup_timeout.total_seconds())
        writes.append(
            Event("Warning", "CleanupTimedOut", f"gave up after {timeout}s: {sync.message}")
        )
        return True
    return False


def _release_agents(
    snap: Snapshot, settings: settings_mod.Settings, now: datetime, writes: list[Write]
) -> bool:
    """On deletion, or once the provider is no longer MSCAPI: the agents clean the stores up,
    then they go, then our finalizer. Returns whether the cleanup is still under way."""
    meta = snap.body["metadata"]
    if agent_manifest.FINALIZER not in (meta.get("finalizers") or ()):
        return False  # never had agents (the garbage collector removes the outputs)
    ds = snap.agent
    if ds is not None and owned_by(ds, meta["name"]):
        annotations = ds["metadata"].get("annotations") or {}
        stamp = meta.get("deletionTimestamp") or annotations.get(
            agent_manifest.ANNOTATION_CLEANUP_SINCE
        )
        since = stamps.parse_rfc3339(str(stamp)) if stamp else now
        if not _cleanup(snap, ds, settings, now, since, writes):
            return True
        writes.append(DeleteDaemonSet(models.agent_daemonset_name(meta["name"])))
    writes.append(_without_finalizer(snap.body))
    return False


def _finalize(snap: Snapshot, settings: settings_mod.Settings, now: datetime) -> Decision:
    """Deletion of a CobrowseTLS: the agents clean up, then our finalizer goes."""
    writes: list[Write] = []
    if _release_agents(snap, settings, now, writes):
        return Decision("ok", tuple(writes), requeue_after=settings.rollout_poll)
    return Decision("ok", tuple(writes))


# -- restarts --------------------------------------------------------------------------------


def newly_done(previous: Obj | None, plan: restart_plan.Plan) -> list[str]:
    before = {
        (w.get("kind"), w.get("name")): w.get("state")
        for w in (previous or {}).get("workloads") or ()
    }
    return [
        f"{w.kind} {w.name}"
        for w in plan.workloads
        if w.state == restart_plan.DONE and before.get((w.kind, w.name)) == restart_plan.ROLLING_OUT
    ]


# -- the decision ----------------------------------------------------------------------------


def decide(snap: Snapshot, settings: settings_mod.Settings, now: datetime) -> Decision:
    """The writes one reconcile makes, in order, and the status they leave."""
    if snap.body["metadata"].get("deletionTimestamp"):
        return _finalize(snap, settings, now)
    tls = snap.tls
    if tls is None:
        error = conditions.Observation(
            conditions.TRUST_STORE_READY, False, INVALID_SPEC, snap.spec_error or "invalid"
        )
        # A spec that does not parse says nothing of its workloads, agents or connections.
        return _invalid(snap, error, now, keep_conditions=False)
    namespace = tls.metadata.namespace or "default"
    if tls.spec.provider is models.Provider.MSCAPI and not settings.mscapi_allowed(
        namespace, snap.namespace_labels
    ):
        # Refused before anything is rendered: no Secret, no ConfigMap, no agent, no finalizer.
        error = conditions.Observation(
            conditions.TRUST_STORE_READY,
            False,
            MSCAPI_NOT_ALLOWED,
            f"provider MSCAPI is not allowed in namespace {namespace}: its Windows agent runs as"
            " SYSTEM on the nodes, so a cluster admin must allow the namespace (operator option"
            " --mscapi-namespace, chart value mscapi.namespaces); nothing was written",
        )
        return _invalid(snap, error, now)
    notes: list[str] = []
    try:
        rendered = render_outputs(snap, settings, now, notes)
    except render.InvalidInput as exc:
        error = conditions.Observation(
            conditions.TRUST_STORE_READY, False, exc.reason, f"{exc.where}: {exc.detail}"
        )
        return _invalid(snap, error, now, notes)
    except certs.CertificateError as exc:
        error = conditions.Observation(
            conditions.TRUST_STORE_READY, False, exc.reason, f"{exc.source}: {exc.detail}"
        )
        return _invalid(snap, error, now, notes)

    writes: list[Write] = []
    changed = [
        desired
        for existing, desired in (
            (snap.secret, rendered.secret),
            (snap.config_map, rendered.config_map),
        )
        if desired is not None and needs_apply(existing, desired)
    ]
    writes += [Apply(obj) for obj in changed]
    if changed:
        names = ", ".join(f"{o['kind']} {o['metadata']['name']}" for o in changed)
        writes.append(Event("Normal", OUTPUTS_WRITTEN, f"wrote {names} ({rendered.input_hash})"))

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
    if snap.connections is not None:
        observations.append(
            conditions.Observation(conditions.CONNECTIONS_VERIFIED, *snap.connections)
        )

    requeue: float | None = None
    windows_status: dict[str, Any] | None = None
    blocked_by: str | None = None
    if tls.spec.provider is models.Provider.MSCAPI and rendered.daemon_set is not None:
        sync = _agent_sync(snap, tls, rendered, writes)
        observations.append(
            conditions.Observation(
                conditions.WINDOWS_TRUST_SYNCED, sync.synced, sync.reason, sync.message
            )
        )
        windows_status = sync.status()
        if not sync.synced:
            # MSCAPI workloads read the host's store: restart them only once it holds the CAs.
            blocked_by = "the Windows agents to sync"
            requeue = settings.rollout_poll
    elif _release_agents(snap, settings, now, writes):
        requeue = settings.rollout_poll

    previous = snap.body.get("status") or {}
    restart_status: dict[str, Any] | None = None
    if tls.spec.workloads and snap.workload_error is not None:
        # Without the workloads' state no restart can be planned: none starts, progress stays.
        restart_status = previous.get("restart")
        observations.append(
            conditions.Observation(
                conditions.WORKLOADS_RESTARTED, False, WORKLOAD_FORBIDDEN, snap.workload_error
            )
        )
    elif tls.spec.workloads:
        plan, restart_status = restart_plan.plan(
            snap.workloads,
            desired=rendered.material_hash,
            previous=previous.get("restart"),
            policy=tls.spec.restart.policy,
            max_concurrent=tls.spec.restart.max_concurrent,
            approved=(tls.metadata.annotations or {}).get(restart_plan.ANNOTATION_APPROVE),
            now=now,
            window=settings.restart_window,
            deadline=settings.rollout_deadline,
            poll=settings.rollout_poll,
            blocked_by=blocked_by,
        )
        material = restart_status["hash"]
        for target in plan.restart:
            writes.append(Apply(restart_plan.restart_patch(target, material)))
            writes.append(
                Event(
                    "Normal",
                    "RestartStarted",
                    f"restarting {target.kind} {target.name} for {material}",
                )
            )
        for done in newly_done(previous.get("restart"), plan):
            writes.append(Event("Normal", "RolloutDone", f"{done} runs the current material"))
        observations.append(
            conditions.Observation(
                conditions.WORKLOADS_RESTARTED, plan.ready, plan.reason, plan.message
            )
        )
        if plan.requeue_after is not None:
            requeue = min(requeue or plan.requeue_after, plan.requeue_after)

    status, reported = report(
        snap.body,
        observations,
        trust_store_status(tls, rendered),
        now,
        restart=restart_status,
        windows=windows_status,
    )
    chosen = rendered.selection.certificates
    return Decision(
        "ok",
        _one_event_for_ready(writes, reported),
        status=status,
        requeue_after=requeue,
        earliest_expiry=min((c.not_after for c in chosen), default=None),
        rendered=rendered,
        notes=tuple(notes),
    )
