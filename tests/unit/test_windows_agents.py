"""The MSCAPI cleanup on deletion: agents switched to cleanup, awaited, bounded by a timeout."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import pki as pki_module
from cobrowse_tls.api import models
from cobrowse_tls.core import agent_manifest, render
from cobrowse_tls.core import settings as settings_mod
from cobrowse_tls.engine import agent_step

DELETED_AT = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
FP = "sha256:" + "cd" * 32
SETTINGS = settings_mod.Settings(cleanup_timeout=timedelta(seconds=120), rollout_poll=1.0)


def body() -> dict[str, Any]:
    return {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "metadata": {
            "name": "cb",
            "namespace": "ns",
            "uid": "u1",
            "resourceVersion": "10",
            "deletionTimestamp": "2030-01-01T12:00:00Z",
            "finalizers": [agent_manifest.FINALIZER, "other/finalizer"],
        },
        "spec": {
            "provider": "MSCAPI",
            "application": {"type": "Server", "name": "CB", "version": "8.5.000"},
            "trustedCA": {"sources": [{"secret": {"name": "ca", "key": "ca.crt"}}]},
        },
    }


class FakeCluster:
    """Just the API calls of the cleanup, recorded."""

    def __init__(self, mode: str, pods_ready: bool) -> None:
        tls = models.parse(body())
        ds = render.agent_daemon_set(
            tls, fingerprint=FP, input_hash="h", agent=agent_manifest.AgentConfig(), mode=mode
        )
        ds["metadata"]["generation"] = 1
        ds["status"] = {"observedGeneration": 1, "desiredNumberScheduled": 2,
                        "updatedNumberScheduled": 2}  # fmt: skip
        self.ds: dict[str, Any] | None = ds
        self.pods = [
            {
                "metadata": {
                    "annotations": {
                        agent_manifest.ANNOTATION_FINGERPRINT: FP,
                        agent_manifest.ANNOTATION_MODE: mode,
                    }
                },
                "spec": {"nodeName": node},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True" if pods_ready else "False"}]
                },
            }
            for node in ("win-1", "win-2")
        ]
        self.events: list[tuple[str, str]] = []
        self.applied: list[dict[str, Any]] = []
        self.finalizers: list[str] | None = None

    def get_workload(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.ds)

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.pods

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(obj)
        return obj

    def create_event(self, involved: Any, *, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason))

    def delete_daemon_set(self, namespace: str, name: str) -> None:
        self.ds = None

    def set_finalizers(self, ns: str, name: str, finalizers: list[str], version: str) -> None:
        self.finalizers = finalizers


def finalize(fake: FakeCluster, after: float) -> tuple[int, float | None]:
    now = DELETED_AT + timedelta(seconds=after)
    return agent_step.finalize(fake, body(), SETTINGS, now)  # type: ignore[arg-type]


def test_first_the_agents_switch_to_cleanup() -> None:
    fake = FakeCluster(agent_manifest.SYNC, pods_ready=True)
    _, again = finalize(fake, after=1)
    assert again == 1.0
    [applied] = fake.applied
    assert applied["spec"]["template"]["metadata"]["annotations"][
        agent_manifest.ANNOTATION_MODE
    ] == (agent_manifest.CLEANUP)
    assert applied["metadata"]["annotations"][agent_manifest.ANNOTATION_CLEANUP_SINCE] == (
        "2030-01-01T12:00:00Z"
    )
    assert fake.events == [("Normal", "CleanupStarted")]
    assert fake.ds is not None
    assert fake.finalizers is None


def test_done_when_every_agent_reports_clean() -> None:
    fake = FakeCluster(agent_manifest.CLEANUP, pods_ready=True)
    _, again = finalize(fake, after=5)
    assert again is None
    assert fake.events == [("Normal", "CleanupComplete")]
    assert fake.ds is None
    assert fake.finalizers == ["other/finalizer"]  # only ours is released


@pytest.mark.parametrize(("after", "released"), [(60, False), (121, True)])
def test_a_stuck_cleanup_never_blocks_deletion_past_the_timeout(
    after: float, released: bool
) -> None:
    fake = FakeCluster(agent_manifest.CLEANUP, pods_ready=False)
    _, again = finalize(fake, after=after)
    if not released:
        assert again == 1.0
        assert fake.ds is not None
        assert fake.events == []
        return
    assert again is None
    assert fake.events == [("Warning", "CleanupTimedOut")]
    assert fake.ds is None
    assert fake.finalizers == ["other/finalizer"]


def test_someone_elses_daemon_set_is_never_touched() -> None:
    fake = FakeCluster(agent_manifest.SYNC, pods_ready=True)
    assert fake.ds is not None
    fake.ds["metadata"]["labels"] = {"app": "theirs"}
    _, again = finalize(fake, after=1)
    assert again is None
    assert fake.applied == []
    assert fake.ds is not None  # not deleted
    assert fake.finalizers == ["other/finalizer"]


def test_sync_reports_a_conflict_instead_of_adopting_a_foreign_daemon_set() -> None:
    fake = FakeCluster(agent_manifest.SYNC, pods_ready=True)
    assert fake.ds is not None
    fake.ds["metadata"]["labels"] = {"app": "theirs"}
    b = body()
    del b["metadata"]["deletionTimestamp"]
    b["metadata"]["finalizers"] = []
    tls = models.parse(b)
    source = render.SourceData("inline", pki_module.pem(pki_module.pki().root))
    rendered = render.render(tls, [source], password=None, now=pki_module.pki().now)
    writes, sync = agent_step.sync(fake, b, tls, rendered)  # type: ignore[arg-type]
    assert (writes, sync.synced, sync.reason) == (0, False, "OutputConflict")
    assert "not managed by this CobrowseTLS" in sync.message
    assert fake.applied == []
    assert fake.finalizers is None  # no finalizer for agents it cannot clean up
