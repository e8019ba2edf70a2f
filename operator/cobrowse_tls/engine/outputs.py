"""Writing outputs and events: what the reconcile steps share. Talks to the API through kube."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from cobrowse_tls.api import stamps
from cobrowse_tls.engine import kube

log = logging.getLogger("cobrowse_tls.engine.outputs")

# TrustStoreReady reason: an object with an output's name exists and is someone else's.
OUTPUT_CONFLICT = "OutputConflict"


def key(body: Mapping[str, Any]) -> str:
    return f"{body['metadata'].get('namespace')}/{body['metadata']['name']}"


def owned_by(obj: Mapping[str, Any], owner: str) -> bool:
    """Whether ``obj`` is an output of the CobrowseTLS named ``owner`` (same namespace)."""
    labels = obj.get("metadata", {}).get("labels") or {}
    return bool(
        labels.get(stamps.LABEL_MANAGED_BY) == stamps.MANAGER
        and labels.get(stamps.LABEL_OWNER) == owner
    )


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


def event(client: kube.Client, body: Mapping[str, Any], type_: str, reason: str, msg: str) -> None:
    try:
        client.create_event(body, type_=type_, reason=reason, message=msg)
    except kube.KubeError as exc:
        if exc.namespace_terminating:
            log.debug("%s: namespace being deleted; event %s dropped", key(body), reason)
            return
        # An event lost is not worth a retry of the whole reconcile.
        log.warning("%s: event %s not posted: %s", key(body), reason, exc)
