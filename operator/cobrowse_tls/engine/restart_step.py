"""The restart step of a reconcile: observe the targeted workloads, plan, annotate."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cobrowse_tls.api import models
from cobrowse_tls.core import render, restart_plan
from cobrowse_tls.core import settings as settings_mod
from cobrowse_tls.engine import kube


def _targets(client: kube.Client, tls: models.CobrowseTLS) -> list[restart_plan.Target]:
    namespace = tls.metadata.namespace or "default"
    out: list[restart_plan.Target] = []
    seen: set[tuple[str, str]] = set()
    for w in tls.spec.workloads:
        kind = w.kind.value
        found: list[dict[str, Any] | None]
        if w.name is not None:
            found = [client.get_workload(kind, namespace, w.name)]
            label = w.name
        else:
            assert w.selector is not None
            selector = restart_plan.label_selector(w.selector)
            found = [*client.list_workloads(kind, namespace, selector)] or [None]
            label = f"selector {selector}"
        for obj in found:
            name = obj["metadata"]["name"] if obj is not None else label
            if (kind, name) not in seen:
                seen.add((kind, name))
                out.append(restart_plan.Target(kind, name, obj))
    return out


def plan(
    client: kube.Client,
    tls: models.CobrowseTLS,
    rendered: render.Rendered,
    previous: Mapping[str, Any],
    settings: settings_mod.Settings,
    now: datetime,
    blocked_by: str | None,
) -> tuple[restart_plan.Plan, dict[str, Any]]:
    approved = (tls.metadata.annotations or {}).get(restart_plan.ANNOTATION_APPROVE)
    return restart_plan.plan(
        _targets(client, tls),
        desired=rendered.material_hash,
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


def newly_done(previous: Mapping[str, Any] | None, plan: restart_plan.Plan) -> list[str]:
    before = {
        (w.get("kind"), w.get("name")): w.get("state")
        for w in (previous or {}).get("workloads") or ()
    }
    return [
        f"{w.kind} {w.name}"
        for w in plan.workloads
        if w.state == restart_plan.DONE and before.get((w.kind, w.name)) == restart_plan.ROLLING_OUT
    ]
