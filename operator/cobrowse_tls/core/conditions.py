"""Layer 3: status conditions in the metav1.Condition shape. Pure.

A condition keeps its lastTransitionTime while its status stays the same, so recomputing the
status of an unchanged object yields the same dict and the operator writes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from cobrowse_tls.api import stamps
from cobrowse_tls.core import certs

READY = "Ready"
TRUST_STORE_READY = "TrustStoreReady"
WORKLOADS_RESTARTED = "WorkloadsRestarted"
WINDOWS_TRUST_SYNCED = "WindowsTrustSynced"
CONNECTIONS_VERIFIED = "ConnectionsVerified"
CERTIFICATES_VALID = "CertificatesValid"

# Ready first, then the rest in the order DESIGN.md lists them.
ORDER = (
    READY,
    TRUST_STORE_READY,
    WORKLOADS_RESTARTED,
    WINDOWS_TRUST_SYNCED,
    CONNECTIONS_VERIFIED,
    CERTIFICATES_VALID,
)


# False, but on the way to True by itself: worth a Normal event, not a Warning.
PROGRESS_REASONS = frozenset({"RolloutInProgress", "SyncInProgress", "AgentPending"})


@dataclasses.dataclass(frozen=True)
class Observation:
    """What one reconcile found for one condition type."""

    type: str
    status: bool | None  # None: Unknown
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Transition:
    """A condition whose status or reason changed: the operator posts an event for it."""

    type: str
    status: str
    reason: str
    message: str

    @property
    def event_type(self) -> str:
        if self.status == "True" or self.reason in PROGRESS_REASONS:
            return "Normal"
        return "Warning"


def _status(value: bool | None) -> str:
    return "Unknown" if value is None else ("True" if value else "False")


def certificate_validity(
    selection: certs.Selection, *, now: datetime, window: timedelta
) -> Observation:
    """CertificatesValid: Expired when a CA was left out as expired, ExpiringSoon within window."""
    if selection.expired:
        names = ", ".join(sorted({c.subject for c in selection.expired}))
        return Observation(
            CERTIFICATES_VALID,
            False,
            "Expired",
            f"{len(selection.expired)} CA certificate(s) expired, left out of the stores: {names}",
        )
    if not selection.certificates:
        return Observation(CERTIFICATES_VALID, True, "Valid", "no certificates (TLS disabled)")
    soonest = min(selection.certificates, key=lambda c: c.not_after)
    if soonest.not_after - now <= window:
        return Observation(
            CERTIFICATES_VALID,
            False,
            "ExpiringSoon",
            f"{soonest.subject} expires {stamps.rfc3339(soonest.not_after)}",
        )
    return Observation(
        CERTIFICATES_VALID,
        True,
        "Valid",
        f"all {len(selection.certificates)} CA certificate(s) valid;"
        f" earliest expiry {stamps.rfc3339(soonest.not_after)}",
    )


def _rank(obs: Observation) -> int:
    return ORDER.index(obs.type) if obs.type in ORDER else len(ORDER)


def ready(observations: Sequence[Observation]) -> Observation:
    """Ready: True when every other condition is; else the reason of the first failing one in
    ORDER, whatever order the observations come in (the store before the restarts it causes)."""
    failing = sorted((o for o in observations if o.status is not True), key=_rank)
    if not failing:
        return Observation(READY, True, "Ready", "every condition is True")
    first = failing[0]
    return Observation(READY, False if first.status is False else None, first.reason, first.message)


def merge(
    previous: Iterable[Mapping[str, Any]] | None,
    observations: Sequence[Observation],
    *,
    now: datetime,
    generation: int | None,
) -> tuple[list[dict[str, Any]], list[Transition]]:
    """New condition list (Ready computed from the others) and the transitions to announce.

    Conditions not observed this time (their feature does not apply) are dropped.
    """
    old = {c.get("type"): c for c in previous or ()}
    all_obs = [ready(observations), *observations]
    stamp = stamps.rfc3339(now)
    out: list[dict[str, Any]] = []
    transitions: list[Transition] = []
    for obs in sorted(all_obs, key=_rank):
        status = _status(obs.status)
        before = old.get(obs.type) or {}
        changed = before.get("status") != status
        cond = {
            "type": obs.type,
            "status": status,
            "reason": obs.reason,
            "message": obs.message,
            "lastTransitionTime": stamp if changed else before.get("lastTransitionTime") or stamp,
        }
        if generation is not None:
            cond["observedGeneration"] = generation
        out.append(cond)
        # A condition born True is no news: the Ready event announces a healthy start. Every
        # later change, and any condition born False or Unknown, is announced.
        born_true = not before and status == "True" and obs.type != READY
        if (changed or before.get("reason") != obs.reason) and not born_true:
            transitions.append(Transition(obs.type, status, obs.reason, obs.message))
    return out, transitions


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in conditions or ():
        if cond.get("type") == type_:
            return cond
    return None
