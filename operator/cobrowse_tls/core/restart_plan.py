"""Layer 3: restart planning. Pure: the workloads' observed state in, the restarts to make out.

The hash of the material a workload consumes lives on the workload itself (pod-template
annotation ``tls.cobrowse.io/restarted-for``), so whatever happened to the operator in between,
a workload that carries the current hash is never restarted again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from cobrowse_tls.api import models, stamps

ANNOTATION_RESTARTED_FOR = "tls.cobrowse.io/restarted-for"
ANNOTATION_APPROVE = "tls.cobrowse.io/approve-restart"

PENDING = "Pending"
ROLLING_OUT = "RollingOut"
DONE = "Done"
STALLED = "Stalled"
NOT_FOUND = "NotFound"
WAITING = "Waiting"  # for a dependency (the Windows agents) or the batching window

# WorkloadsRestarted reasons
ROLLOUT_COMPLETE = "RolloutComplete"
ROLLOUT_IN_PROGRESS = "RolloutInProgress"
RESTART_PENDING = "RestartPending"
WORKLOAD_NOT_FOUND = "WorkloadNotFound"
ROLLOUT_STALLED = "RolloutStalled"


def label_selector(selector: models.LabelSelector) -> str:
    """The selector in the API's string form (for a list request)."""
    parts = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for req in selector.match_expressions or ():
        values = ",".join(req.values or ())
        parts.append(
            {
                "In": f"{req.key} in ({values})",
                "NotIn": f"{req.key} notin ({values})",
                "Exists": req.key,
                "DoesNotExist": f"!{req.key}",
            }[req.operator]
        )
    return ",".join(parts)


def template_hash(obj: Mapping[str, Any]) -> str | None:
    template = obj.get("spec", {}).get("template", {})
    value = (template.get("metadata") or {}).get("annotations", {}).get(ANNOTATION_RESTARTED_FOR)
    return str(value) if value is not None else None


def rollout_complete(obj: Mapping[str, Any]) -> bool:
    """The same test as `kubectl rollout status`, per kind."""
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status") or {}
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return False
    kind = obj.get("kind")
    if kind == "DaemonSet":
        desired = status.get("desiredNumberScheduled", 0)
        return bool(
            status.get("updatedNumberScheduled", 0) >= desired
            and status.get("numberAvailable", 0) >= desired
        )
    replicas = spec.get("replicas", 1)
    if kind == "StatefulSet":
        if status.get("updateRevision") != status.get("currentRevision") and replicas:
            return False
        return bool(
            status.get("readyReplicas", 0) >= replicas
            and status.get("updatedReplicas", 0) >= replicas
        )
    return bool(
        status.get("updatedReplicas", 0) >= replicas
        and status.get("replicas", 0) <= status.get("updatedReplicas", 0)
        and status.get("availableReplicas", 0) >= status.get("updatedReplicas", 0)
    )


@dataclasses.dataclass(frozen=True)
class Target:
    """One targeted workload as observed now (``obj`` None: it does not exist)."""

    kind: str
    name: str
    obj: Mapping[str, Any] | None


@dataclasses.dataclass(frozen=True)
class WorkloadState:
    kind: str
    name: str
    state: str
    started_at: str | None = None  # when the operator restarted it for the current hash

    def status(self) -> dict[str, str]:
        out = {"kind": self.kind, "name": self.name, "state": self.state}
        if self.started_at:
            out["startedAt"] = self.started_at
        return out


@dataclasses.dataclass(frozen=True)
class Plan:
    restart: tuple[Target, ...]  # annotate these now
    workloads: tuple[WorkloadState, ...]
    ready: bool | None  # WorkloadsRestarted
    reason: str
    message: str
    requeue_after: float | None  # seconds, while something is still to happen


def _parse(stamp: str | None) -> datetime | None:
    return stamps.parse_rfc3339(stamp) if stamp else None


def plan(
    targets: Sequence[Target],
    *,
    desired: str,
    previous: Mapping[str, Any] | None,
    policy: models.RestartPolicy,
    max_concurrent: int,
    approved: str | None,
    now: datetime,
    window: timedelta,
    deadline: timedelta,
    blocked_by: str | None = None,
    poll: float = 1.0,
) -> tuple[Plan, dict[str, Any]]:
    """Decide which targets to restart now; returns the plan and the new ``status.restart``.

    ``previous`` is the last ``status.restart`` (hash, since, workloads with startedAt);
    ``blocked_by`` names a dependency that must complete first (the Windows agents).
    """
    stamp = stamps.rfc3339(now)
    previous = previous or {}
    same_hash = previous.get("hash") == desired
    since = previous.get("since") if same_hash else stamp
    started = {
        (w.get("kind"), w.get("name")): w.get("startedAt")
        for w in (previous.get("workloads") or ())
        if same_hash
    }

    states: list[WorkloadState] = []
    pending: list[Target] = []
    rolling = stalled = 0
    missing: list[str] = []
    for t in targets:
        if t.obj is None:
            states.append(WorkloadState(t.kind, t.name, NOT_FOUND))
            missing.append(f"{t.kind} {t.name}")
            continue
        began = started.get((t.kind, t.name))
        if template_hash(t.obj) == desired:
            if rollout_complete(t.obj):
                states.append(WorkloadState(t.kind, t.name, DONE, began))
                continue
            began_at = _parse(began)
            if began_at is not None and now - began_at > deadline:
                states.append(WorkloadState(t.kind, t.name, STALLED, began))
                stalled += 1
            else:
                states.append(WorkloadState(t.kind, t.name, ROLLING_OUT, began))
                rolling += 1
            continue
        pending.append(t)

    waited = now - (_parse(since) or now)
    to_restart: list[Target] = []
    reason, message, ready = ROLLOUT_COMPLETE, "every workload runs the current material", True
    requeue: float | None = None
    hold = ""
    if pending:
        if stalled:
            hold = "a rollout stalled; no further restarts for this material"
        elif policy is models.RestartPolicy.MANUAL and approved != desired:
            hold = (
                f"restart pending approval: annotate the CobrowseTLS with"
                f" {ANNOTATION_APPROVE}={desired}"
            )
        elif blocked_by:
            hold = f"waiting for {blocked_by}"
            requeue = poll
        elif waited < window:
            hold = "waiting for more changes to arrive together"
            requeue = (window - waited).total_seconds()
        else:
            slots = max(0, max_concurrent - rolling)
            to_restart = pending[:slots]
    restarting = {(t.kind, t.name) for t in to_restart}
    for t in pending:
        if (t.kind, t.name) in restarting:
            states.append(WorkloadState(t.kind, t.name, ROLLING_OUT, stamp))
            rolling += 1
        else:
            states.append(WorkloadState(t.kind, t.name, PENDING))

    order = {(t.kind, t.name): i for i, t in enumerate(targets)}
    states.sort(key=lambda s: order[(s.kind, s.name)])
    if stalled:
        names = [f"{s.kind} {s.name}" for s in states if s.state == STALLED]
        ready, reason = False, ROLLOUT_STALLED
        message = f"no rollout progress within {int(deadline.total_seconds())}s: {', '.join(names)}"
    elif policy is models.RestartPolicy.MANUAL and pending and approved != desired:
        ready, reason, message = False, RESTART_PENDING, hold
    elif rolling or pending:
        ready, reason = False, ROLLOUT_IN_PROGRESS
        message = f"{rolling} rolling out, {len(pending) - len(to_restart)} pending"
        if hold:
            message += f" ({hold})"
        requeue = requeue if requeue is not None else poll
    if missing and not stalled and reason != RESTART_PENDING:
        rest = f"; {message}" if reason != ROLLOUT_COMPLETE else ""
        ready, reason = False, WORKLOAD_NOT_FOUND
        message = f"not found: {', '.join(missing)}{rest}"
        # A missing workload may be created any time; look again soon.
        requeue = min(requeue or 10.0, 10.0)
    restart_status: dict[str, Any] = {
        "hash": desired,
        "since": since,
        "workloads": [s.status() for s in states],
    }
    return (
        Plan(tuple(to_restart), tuple(states), ready, reason, message, requeue),
        restart_status,
    )


def restart_patch(target: Target, desired: str) -> dict[str, Any]:
    """The server-side apply body that sets only the restart annotation of the pod template."""
    assert target.obj is not None
    api_version = target.obj.get("apiVersion", "apps/v1")
    meta = target.obj["metadata"]
    return {
        "apiVersion": api_version,
        "kind": target.kind,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"template": {"metadata": {"annotations": {ANNOTATION_RESTARTED_FOR: desired}}}},
    }
