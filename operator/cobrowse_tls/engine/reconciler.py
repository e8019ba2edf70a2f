"""One reconcile of one CobrowseTLS: fetch inputs, call the pure core, apply, report.

Level-based: it looks only at what is there now (the CR, its sources, its outputs) and writes
only what differs, so running it again with nothing changed performs no write at all.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pydantic

from cobrowse_tls import passwords
from cobrowse_tls.api import models, stamps
from cobrowse_tls.core import certs, conditions, render, restart_plan
from cobrowse_tls.core import settings as settings_mod
from cobrowse_tls.engine import agent_step, connections, kube, outputs, restart_step

log = logging.getLogger("cobrowse_tls.engine.reconciler")

SOURCE_FORBIDDEN = "SourceForbidden"
INVALID_SPEC = "InvalidSpec"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened, for metrics and the work queue."""

    result: str  # "ok", "invalid" (bad input reported in status) or "error"
    writes: int = 0
    earliest_expiry: datetime | None = None
    rendered: render.Rendered | None = None
    status: dict[str, Any] | None = None  # the status now on the object
    requeue_after: float | None = None  # seconds: something is still to happen


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


def jks_password(
    tls: models.CobrowseTLS, found: render.ObjectData, existing: Mapping[str, Any] | None
) -> str | None:
    """The password named by the spec; else the one kept in our Secret; else a new one."""
    named = render.resolve_password(tls, found)
    if named is not None or tls.spec.provider is not models.Provider.JKS:
        return named
    if existing is not None and outputs.owned_by(existing, tls.metadata.name):
        kept = kube.decode_data(existing).get(render.TRUSTSTORE_PASSWORD)
        if kept:
            try:
                return render.check_password(kept, "truststore Secret")
            except render.InvalidInput:
                log.warning(
                    "%s: kept truststore password unusable; generating a new one",
                    outputs.key(
                        {
                            "metadata": {
                                "namespace": tls.metadata.namespace,
                                "name": tls.metadata.name,
                            }
                        }
                    ),
                )
    # Generated once: from now on it is read back from the Secret above.
    return passwords.generate()


# The part of .status the operator owns (anything else there, it leaves alone).
STATUS_KEYS = ("observedGeneration", "conditions", "trustStore", "restart", "windows")


def _status_part(status: Mapping[str, Any] | None) -> dict[str, Any]:
    status = status or {}
    return {k: status[k] for k in STATUS_KEYS if k in status}


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
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


def _outputs_conflict(
    tls: models.CobrowseTLS, existing: list[Mapping[str, Any] | None]
) -> render.InvalidInput | None:
    for obj in existing:
        if obj is not None and not outputs.owned_by(obj, tls.metadata.name):
            kind, name = obj.get("kind", "object"), obj["metadata"]["name"]
            return render.InvalidInput(
                outputs.OUTPUT_CONFLICT,
                f"{kind} {name}",
                "exists and is not managed by this CobrowseTLS; delete or rename it,"
                " or set spec.truststore.secretName",
            )
    return None


def reconcile(
    client: kube.Client, body: Mapping[str, Any], settings: settings_mod.Settings, now: datetime
) -> Outcome:
    """Reconcile one CobrowseTLS given as the API's dict. Raises kube.KubeError to retry."""
    meta = body["metadata"]
    generation = meta.get("generation")
    previous = body.get("status") or {}
    namespace = meta.get("namespace") or "default"
    if meta.get("deletionTimestamp"):
        finalized, again = agent_step.finalize(client, body, settings, now)
        return Outcome("ok", writes=finalized, requeue_after=again)
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
        return _report_invalid(client, body, observations, now)

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
            conditions.CONNECTIONS_VERIFIED,
            conditions.CERTIFICATES_VALID,
        ):
            old = conditions.find(previous.get("conditions"), kept_type)
            if old is not None:
                kept.append(_observation(old))
        return _report_invalid(client, body, kept, now)

    to_write = []
    if rendered.secret is not None and outputs.needs_apply(existing_secret, rendered.secret):
        to_write.append(rendered.secret)
    if outputs.needs_apply(existing_map, rendered.config_map):
        to_write.append(rendered.config_map)
    for obj in to_write:
        client.apply(obj)
        writes += 1
    if to_write:
        names = ", ".join(f"{o['kind']} {o['metadata']['name']}" for o in to_write)
        outputs.event(
            client, body, "Normal", "OutputsWritten", f"wrote {names} ({rendered.input_hash})"
        )
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
        written, sync = agent_step.sync(client, body, tls, rendered)
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
        written, retiring = agent_step.retire(client, body, tls, settings, now)
        writes += written
        if retiring:
            requeue = settings.rollout_poll
    restart_status: dict[str, Any] | None = None
    if tls.spec.workloads:
        plan, restart_status = restart_step.plan(
            client, tls, rendered, previous, settings, now, blocked_by
        )
        for target in plan.restart:
            client.apply(restart_plan.restart_patch(target, restart_status["hash"]))
            writes += 1
            outputs.event(
                client,
                body,
                "Normal",
                "RestartStarted",
                f"restarting {target.kind} {target.name} for {restart_status['hash']}",
            )
            writes += 1
        for done in restart_step.newly_done(previous.get("restart"), plan):
            outputs.event(
                client, body, "Normal", "RolloutDone", f"{done} runs the current material"
            )
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


def _observation(cond: Mapping[str, Any]) -> conditions.Observation:
    status = {"True": True, "False": False}.get(str(cond.get("status")))
    return conditions.Observation(
        str(cond["type"]), status, str(cond.get("reason", "")), str(cond.get("message", ""))
    )


def _report_invalid(
    client: kube.Client,
    body: Mapping[str, Any],
    observations: list[conditions.Observation],
    now: datetime,
) -> Outcome:
    """Report bad input; everything else in the status stays as the last good reconcile left it."""
    previous = body.get("status") or {}
    _, status = _report(
        client,
        body,
        previous,
        observations,
        previous.get("trustStore"),
        now,
        body["metadata"].get("generation"),
        restart=previous.get("restart"),
        windows=previous.get("windows"),
    )
    return Outcome("invalid", status=status)


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
    patch = merge_patch(_status_part(previous), status)
    if patch:
        client.patch_status(body["metadata"]["namespace"], body["metadata"]["name"], patch)
        writes += 1
    for t in transitions:
        if t.type == conditions.READY and t.status != "True":
            continue  # the failing condition's own event says it already
        outputs.event(client, body, t.event_type, t.reason, f"{t.type} {t.status}: {t.message}")
        writes += 1
    return writes, status
