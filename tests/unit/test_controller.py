"""The controller's routing (source index, drift, own status writes) and its work queue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cobrowse_tls.core import decide
from cobrowse_tls.core import settings as settings_mod
from cobrowse_tls.engine import controller, kube, reconciler
from unit import fake_cluster


def cr(
    name: str, *secrets: str, generation: int = 1, ns: str = "ns", **meta: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "generation": generation, **meta},
        "spec": {
            "provider": "PEM",
            "trustedCA": {"sources": [{"secret": {"name": s, "key": "k"}} for s in secrets]},
        },
    }


def source(name: str, ns: str = "ns", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "labels": labels or {}}}


class Recorder(controller.Controller):
    def __init__(self) -> None:
        self.fake = fake_cluster.FakeCluster()
        super().__init__(self.fake, settings_mod.Settings())
        self.added: list[str] = []
        self.queue.add = self.added.append  # type: ignore[method-assign,assignment]


def test_source_change_reaches_exactly_the_crs_that_read_it() -> None:
    c = Recorder()
    c.on_cobrowse_tls(None, cr("a", "s1", "s2"))
    c.on_cobrowse_tls(None, cr("b", "s2"))
    c.on_cobrowse_tls(None, cr("c", "s1", ns="other"))
    c.added.clear()
    c.on_source("Secret", "MODIFIED", source("s2"))
    assert sorted(c.added) == ["ns/a", "ns/b"]
    c.added.clear()
    c.on_source("Secret", "MODIFIED", source("s1"))
    assert c.added == ["ns/a"]
    c.added.clear()
    c.on_source("ConfigMap", "MODIFIED", source("s1"))  # same name, other kind
    c.on_source("Secret", "MODIFIED", source("unrelated"))
    assert c.added == []


def test_index_follows_spec_changes_and_deletion() -> None:
    c = Recorder()
    c.on_cobrowse_tls(None, cr("a", "s1"))
    c.on_cobrowse_tls("MODIFIED", cr("a", "s2", generation=2))
    c.added.clear()
    c.on_source("Secret", "MODIFIED", source("s1"))
    assert c.added == []
    c.on_source("Secret", "MODIFIED", source("s2"))
    assert c.added == ["ns/a"]
    c.on_cobrowse_tls("DELETED", cr("a", "s2", generation=2))
    c.added.clear()
    c.on_source("Secret", "DELETED", source("s2"))
    assert c.added == []
    assert "ns/a" not in c.bodies


def test_output_drift_reaches_its_owner() -> None:
    c = Recorder()
    c.on_cobrowse_tls(None, cr("a", "s1"))
    c.added.clear()
    labels = {"app.kubernetes.io/managed-by": "cobrowse-tls-operator", "tls.cobrowse.io/owner": "a"}
    c.on_source("Secret", "DELETED", source("a-truststore", labels=labels))
    assert c.added == ["ns/a"]
    c.added.clear()
    # Someone else's label, or an owner we do not know: nothing.
    c.on_source("Secret", "MODIFIED", source("x", labels={**labels, "tls.cobrowse.io/owner": "zz"}))
    c.on_source("Secret", "MODIFIED", source("x", labels={"tls.cobrowse.io/owner": "a"}))
    assert c.added == []


def test_status_only_updates_do_not_requeue() -> None:
    c = Recorder()
    c.on_cobrowse_tls(None, cr("a", "s1"))
    assert c.added == ["ns/a"]
    with_status = {**cr("a", "s1"), "status": {"observedGeneration": 1}}
    c.on_cobrowse_tls("MODIFIED", with_status)
    assert c.added == ["ns/a"]
    assert c.bodies["ns/a"]["status"] == {"observedGeneration": 1}
    c.on_cobrowse_tls("MODIFIED", cr("a", "s1", annotations={"tls.cobrowse.io/approve": "x"}))
    assert c.added == ["ns/a", "ns/a"]


def test_work_queue_runs_a_key_once_at_a_time_and_again_when_dirty() -> None:
    async def scenario() -> list[str]:
        runs: list[str] = []
        gate = asyncio.Event()

        async def process(key: str) -> float | None:
            runs.append(key)
            if len(runs) == 1:
                await gate.wait()
            return None

        q = controller.WorkQueue(process, workers=3)
        q.start()
        q.add("a")
        q.add("a")  # queued twice before it runs: once
        await asyncio.sleep(0.01)
        q.add("a")  # while it runs: once more, after
        q.add("a")
        q.add("b")
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.sleep(0.05)
        await q.stop()
        return runs

    assert sorted(asyncio.run(scenario())) == ["a", "a", "b"]


def test_work_queue_retries_after_the_delay_returned() -> None:
    async def scenario() -> int:
        calls = 0

        async def process(key: str) -> float | None:
            nonlocal calls
            calls += 1
            return 0.01 if calls < 3 else None

        q = controller.WorkQueue(process, workers=1)
        q.start()
        q.add("a")
        await asyncio.sleep(0.2)
        await q.stop()
        return calls

    assert asyncio.run(scenario()) == 3


@pytest.mark.parametrize(
    ("existing", "changed"),
    [
        (None, True),
        (
            {"metadata": {"labels": {"l": "v"}, "annotations": {"a": "h"}}, "data": {"k": "v"}},
            False,
        ),
        (
            {"metadata": {"labels": {"l": "v"}, "annotations": {"a": "old"}}, "data": {"k": "v"}},
            True,
        ),
        ({"metadata": {"labels": {}, "annotations": {"a": "h"}}, "data": {"k": "v"}}, True),
        ({"metadata": {"labels": {"l": "v"}, "annotations": {"a": "h"}}, "data": {"k": "x"}}, True),
        (
            {
                "metadata": {"labels": {"l": "v"}, "annotations": {"a": "h"}},
                "data": {"k": "v", "z": "1"},
            },
            True,
        ),
    ],
    ids=["absent", "same", "hash-changed", "label-removed", "data-edited", "key-added"],
)
def test_needs_apply(existing: dict[str, Any] | None, changed: bool) -> None:
    desired = {"metadata": {"labels": {"l": "v"}, "annotations": {"a": "h"}}, "data": {"k": "v"}}
    assert decide.needs_apply(existing, desired) is changed


def test_the_echo_of_our_own_write_needs_no_reconcile() -> None:
    c = Recorder()
    c.on_cobrowse_tls(None, cr("a", "s1"))
    c.added.clear()
    labels = {"app.kubernetes.io/managed-by": "cobrowse-tls-operator", "tls.cobrowse.io/owner": "a"}
    ours = c.fake.apply({"kind": "Secret", **source("a-truststore", labels=labels)})
    c.on_source("Secret", "MODIFIED", ours)
    assert c.added == []
    edited = c.fake.put({**ours, "data": {"k": "edited"}})
    c.on_source("Secret", "MODIFIED", edited)  # someone else's edit: repair it
    assert c.added == ["ns/a"]


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (
            kube.KubeError(
                403,
                'events "x" is forbidden: unable to create new content in namespace ns'
                " because it is being terminated",
            ),
            False,
        ),
        (kube.KubeError(403, 'secrets "x" is forbidden: User "op" cannot get'), True),
        (kube.KubeError(500, "etcdserver: request timed out"), True),
    ],
    ids=["namespace-terminating", "forbidden", "server-error"],
)
def test_api_errors_are_retried_unless_the_namespace_is_going_away(
    monkeypatch: pytest.MonkeyPatch, error: kube.KubeError, retry: bool
) -> None:
    def failing(*_: Any) -> decide.Decision:
        raise error

    monkeypatch.setattr(reconciler, "reconcile", failing)
    c = Recorder()
    c.on_cobrowse_tls(None, cr("a", "s1"))

    async def process() -> float | None:
        return await c._process("ns/a")

    delay = asyncio.run(process())
    assert (delay is not None) is retry


def test_cached_bodies_drop_managed_fields() -> None:
    c = Recorder()
    c.on_cobrowse_tls(None, cr("a", "s1", managedFields=[{"manager": "kubectl"}]))
    assert "managedFields" not in c.bodies["ns/a"]["metadata"]
    assert c.bodies["ns/a"]["metadata"]["name"] == "a"
