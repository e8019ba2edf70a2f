"""Restart planning: only on change, batched, paced, never twice, manual approval, stalls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cobrowse_tls.api import models
from cobrowse_tls.core import restart_plan

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
H1, H2 = "sha256:one", "sha256:two"


def deploy(
    name: str, hash_: str | None = None, *, complete: bool = True, gen: int = 2
) -> dict[str, Any]:
    annotations = {restart_plan.ANNOTATION_RESTARTED_FOR: hash_} if hash_ else {}
    replicas = 2
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ns", "generation": gen},
        "spec": {"replicas": replicas, "template": {"metadata": {"annotations": annotations}}},
        "status": {
            "observedGeneration": gen,
            "replicas": replicas if complete else replicas + 1,
            "updatedReplicas": replicas if complete else 1,
            "availableReplicas": replicas if complete else 1,
        },
    }


def targets(*objs: dict[str, Any] | None, names: tuple[str, ...] = ()) -> list[restart_plan.Target]:
    out = []
    for i, o in enumerate(objs):
        name = o["metadata"]["name"] if o else names[i]
        out.append(restart_plan.Target("Deployment", name, o))
    return out


def run(
    ts: list[restart_plan.Target],
    *,
    previous: dict[str, Any] | None = None,
    desired: str = H1,
    policy: models.RestartPolicy = models.RestartPolicy.ROLLING,
    max_concurrent: int = 1,
    approved: str | None = None,
    now: datetime = NOW,
    window: float = 0.0,
    deadline: float = 600.0,
    blocked_by: str | None = None,
) -> tuple[restart_plan.Plan, dict[str, Any]]:
    return restart_plan.plan(
        ts,
        desired=desired,
        previous=previous,
        policy=policy,
        max_concurrent=max_concurrent,
        approved=approved,
        now=now,
        window=timedelta(seconds=window),
        deadline=timedelta(seconds=deadline),
        blocked_by=blocked_by,
    )


def test_restarts_one_at_a_time_in_spec_order() -> None:
    plan, status = run(targets(deploy("a"), deploy("b"), deploy("c")))
    assert [t.name for t in plan.restart] == ["a"]
    assert [w["state"] for w in status["workloads"]] == ["RollingOut", "Pending", "Pending"]
    assert status["workloads"][0]["startedAt"] == "2030-01-01T12:00:00Z"
    assert (plan.ready, plan.reason) == (False, "RolloutInProgress")
    assert plan.requeue_after == 1.0


def test_next_waits_for_the_rollout_to_complete_then_proceeds() -> None:
    _, status = run(targets(deploy("a"), deploy("b")))
    plan, status = run(targets(deploy("a", H1, complete=False), deploy("b")), previous=status)
    assert plan.restart == ()
    plan, status = run(targets(deploy("a", H1), deploy("b")), previous=status)
    assert [t.name for t in plan.restart] == ["b"]
    assert [w["state"] for w in status["workloads"]] == ["Done", "RollingOut"]
    plan, status = run(targets(deploy("a", H1), deploy("b", H1)), previous=status)
    assert plan.restart == ()
    assert (plan.ready, plan.reason) == (True, "RolloutComplete")
    assert plan.requeue_after is None


def test_max_concurrent() -> None:
    plan, _ = run(targets(deploy("a"), deploy("b"), deploy("c")), max_concurrent=2)
    assert [t.name for t in plan.restart] == ["a", "b"]


def test_a_workload_with_the_current_hash_is_never_restarted() -> None:
    # As after an operator restart with no status at all: the hash on the workload decides.
    plan, status = run(targets(deploy("a", H1), deploy("b", H1, complete=False)))
    assert plan.restart == ()
    assert [w["state"] for w in status["workloads"]] == ["Done", "RollingOut"]


def test_incomplete_rollout_of_a_stale_generation_is_not_complete() -> None:
    obj = deploy("a", H1)
    obj["status"]["observedGeneration"] = 1
    assert not restart_plan.rollout_complete(obj)


def test_window_batches_changes() -> None:
    plan, status = run(targets(deploy("a", H1)), desired=H2, window=5)
    assert plan.restart == ()
    assert plan.requeue_after == pytest.approx(5.0)
    # Another change inside the window: the window starts again, still nothing restarts.
    later = NOW + timedelta(seconds=3)
    plan, status = run(
        targets(deploy("a", H1)), desired="sha256:three", window=5, previous=status, now=later
    )
    assert plan.restart == ()
    assert status["since"] == "2030-01-01T12:00:03Z"
    plan, _ = run(
        targets(deploy("a", H1)),
        desired="sha256:three",
        window=5,
        previous=status,
        now=later + timedelta(seconds=5),
    )
    assert [t.name for t in plan.restart] == ["a"]


def test_manual_policy_waits_for_approval_of_this_hash() -> None:
    manual = models.RestartPolicy.MANUAL
    plan, _ = run(targets(deploy("a")), policy=manual)
    assert plan.restart == ()
    assert (plan.ready, plan.reason) == (False, "RestartPending")
    assert restart_plan.ANNOTATION_APPROVE in plan.message
    assert H1 in plan.message
    plan, _ = run(targets(deploy("a")), policy=manual, approved=H2)  # an older approval
    assert plan.restart == ()
    plan, _ = run(targets(deploy("a")), policy=manual, approved=H1)
    assert [t.name for t in plan.restart] == ["a"]


def test_stalled_rollout_stops_further_restarts() -> None:
    _, status = run(targets(deploy("a"), deploy("b")))
    later = NOW + timedelta(seconds=601)
    plan, status = run(
        targets(deploy("a", H1, complete=False), deploy("b")), previous=status, now=later
    )
    assert plan.restart == ()
    assert (plan.ready, plan.reason) == (False, "RolloutStalled")
    assert "Deployment a" in plan.message
    assert [w["state"] for w in status["workloads"]] == ["Stalled", "Pending"]


def test_missing_workload_is_reported_and_the_rest_proceed() -> None:
    plan, status = run(targets(None, deploy("b"), names=("gone", "b")))
    assert [t.name for t in plan.restart] == ["b"]
    assert (plan.ready, plan.reason) == (False, "WorkloadNotFound")
    assert "Deployment gone" in plan.message
    assert status["workloads"][0] == {"kind": "Deployment", "name": "gone", "state": "NotFound"}
    assert plan.requeue_after is not None


def test_blocked_by_a_dependency() -> None:
    plan, _ = run(targets(deploy("a")), blocked_by="the Windows agents")
    assert plan.restart == ()
    assert "the Windows agents" in plan.message


def test_restart_patch_sets_only_the_annotation() -> None:
    h = "sha256:" + "ab" * 32
    patch = restart_plan.restart_patch(restart_plan.Target("Deployment", "a", deploy("a")), h)
    assert patch == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "a", "namespace": "ns"},
        "spec": {
            "template": {"metadata": {"annotations": {restart_plan.ANNOTATION_RESTARTED_FOR: h}}}
        },
    }


def test_label_selector_string() -> None:
    sel = models.LabelSelector.model_validate(
        {
            "matchLabels": {"app": "cobrowse", "tier": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "stage"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }
    )
    assert restart_plan.label_selector(sel) == "app=cobrowse,tier=web,env in (prod,stage),!canary"


@pytest.mark.parametrize(
    ("obj", "complete"),
    [
        (
            {
                "kind": "DaemonSet",
                "metadata": {"generation": 1},
                "status": {
                    "observedGeneration": 1,
                    "desiredNumberScheduled": 2,
                    "updatedNumberScheduled": 2,
                    "numberAvailable": 2,
                },
            },
            True,
        ),
        (
            {
                "kind": "DaemonSet",
                "metadata": {"generation": 1},
                "status": {
                    "observedGeneration": 1,
                    "desiredNumberScheduled": 2,
                    "updatedNumberScheduled": 1,
                    "numberAvailable": 2,
                },
            },
            False,
        ),
        (
            {
                "kind": "StatefulSet",
                "metadata": {"generation": 1},
                "spec": {"replicas": 2},
                "status": {
                    "observedGeneration": 1,
                    "readyReplicas": 2,
                    "updatedReplicas": 2,
                    "currentRevision": "r2",
                    "updateRevision": "r2",
                },
            },
            True,
        ),
        (
            {
                "kind": "StatefulSet",
                "metadata": {"generation": 1},
                "spec": {"replicas": 2},
                "status": {
                    "observedGeneration": 1,
                    "readyReplicas": 2,
                    "updatedReplicas": 1,
                    "currentRevision": "r1",
                    "updateRevision": "r2",
                },
            },
            False,
        ),
    ],
    ids=["ds-done", "ds-rolling", "sts-done", "sts-rolling"],
)
def test_rollout_complete_per_kind(obj: dict[str, Any], complete: bool) -> None:
    assert restart_plan.rollout_complete(obj) is complete
