"""kopf's registrations (engine/handlers.py): one function per watch event, in the order the
store needs, and no diff base that kopf would build, keep or write."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, cast

import kopf

from cobrowse_tls.api import stamps
from cobrowse_tls.core import settings as settings_mod
from cobrowse_tls.engine import cache, controller, handlers
from unit import fake_cluster


def cr(name: str, *secrets: str, ns: str = "ns") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "generation": 1},
        "spec": {
            "provider": "PEM",
            "trustedCA": {"sources": [{"secret": {"name": s, "key": "k"}} for s in secrets]},
        },
    }


def source(
    name: str, version: int, ns: str = "ns", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    meta = {"name": name, "namespace": ns, "resourceVersion": str(version)}
    return {"metadata": {**meta, "labels": labels or {}}, "data": {"k": str(version)}}


class Recorder(controller.Controller):
    def __init__(self) -> None:
        super().__init__(fake_cluster.FakeCluster(), settings_mod.Settings())
        self.added: list[str] = []
        self.queue.add = self.added.append  # type: ignore[method-assign,assignment]


def memo_for(rec: Recorder) -> handlers.Memo:
    memo = handlers.Memo()
    memo.controller = rec
    return memo


def call(handler: object, **kwargs: Any) -> None:
    """Run a registered handler as kopf would (kopf's decorators retype it to its protocols)."""
    asyncio.run(cast(Callable[..., Coroutine[Any, Any, None]], handler)(**kwargs))


def body(raw: dict[str, Any]) -> kopf.Body:
    return kopf.Body(cast(kopf.RawBody, raw))


def index_secret(memo: handlers.Memo, raw: dict[str, Any]) -> None:
    call(handlers.secret_store, body=body(raw), memo=memo)


def test_while_the_watches_list_an_indexed_source_is_stored_and_routes_nothing() -> None:
    rec = Recorder()
    memo = memo_for(rec)
    index_secret(memo, source("ca", 1))
    call(handlers.config_map_store, body=body(source("m", 2)), memo=memo)
    assert rec.store.get(cache.SECRET, "ns", "ca") is not None
    assert rec.store.get(cache.CONFIG_MAP, "ns", "m") is not None
    # Only a handler, run once every indexed resource is listed, may mark the store complete.
    assert not rec.store.ready
    assert rec.added == []


def test_an_indexed_source_change_is_stored_before_it_queues_its_crs() -> None:
    rec = Recorder()
    memo = memo_for(rec)
    index_secret(memo, source("ca", 1))
    rec.on_cobrowse_tls(None, cr("a", "ca"))
    rec.on_cobrowse_tls(None, cr("b", "other"))
    rec.added.clear()
    seen: list[str | None] = []

    def add(key: str, delay: float = 0.0) -> None:
        got = rec.store.get(cache.SECRET, "ns", "ca")
        seen.append(got["data"]["k"] if got else None)
        rec.added.append(key)

    rec.queue.add = add  # type: ignore[method-assign]
    index_secret(memo, source("ca", 2))
    assert rec.added == ["ns/a"]
    assert seen == ["2"]


def test_an_edited_output_queues_its_owner_but_the_echo_of_our_apply_does_not() -> None:
    rec = Recorder()
    memo = memo_for(rec)
    rec.on_cobrowse_tls(None, cr("a", "ca"))
    rec.added.clear()
    labels = {stamps.LABEL_MANAGED_BY: stamps.MANAGER, stamps.LABEL_OWNER: "a"}
    ours = rec.client.apply({"kind": "Secret", **source("a-truststore", 1, labels=labels)})
    index_secret(memo, ours)
    assert rec.added == []
    edited = {**ours, "metadata": {**ours["metadata"], "resourceVersion": "999"}}
    index_secret(memo, edited)
    assert rec.added == ["ns/a"]


def test_workload_indexing_stores_and_queues_nothing() -> None:
    rec = Recorder()
    memo = memo_for(rec)
    rec.on_cobrowse_tls(None, cr("a", "ca"))
    rec.added.clear()
    raw = {"metadata": {"name": "web", "namespace": "ns", "resourceVersion": "3"}, "spec": {}}
    call(handlers.deployment_store, body=body(raw), memo=memo)
    assert rec.store.get("Deployment", "ns", "web") is not None
    assert rec.added == []


def test_only_deletions_reach_the_event_handlers_of_indexed_kinds() -> None:
    for type_ in (None, "ADDED", "MODIFIED"):
        assert not handlers._deleted(event={"type": type_, "object": {}})
    assert handlers._deleted(event={"type": "DELETED", "object": {}})
    registry = kopf.get_default_registry()
    watching = {h.id: h for h in registry._watching.get_all_handlers()}
    for name in ("secret", "config_map", "deployment", "stateful_set", "daemon_set"):
        assert watching[kopf.HandlerId(f"{name}_deleted")].when is handlers._deleted
    assert watching[kopf.HandlerId("cobrowse_tls_event")].when is None


def test_a_deleted_source_leaves_the_store_before_its_crs_are_queued() -> None:
    rec = Recorder()
    memo = memo_for(rec)
    index_secret(memo, source("ca", 1))
    rec.on_cobrowse_tls(None, cr("a", "ca"))
    found: list[bool] = []

    def add(key: str, delay: float = 0.0) -> None:
        found.append(rec.store.get(cache.SECRET, "ns", "ca") is not None)

    rec.queue.add = add  # type: ignore[method-assign]
    call(handlers.secret_deleted, event={"type": "DELETED", "object": source("ca", 2)}, memo=memo)
    assert found == [False]


def test_kopf_keeps_no_diff_base_and_nothing_would_read_one() -> None:
    storage = handlers.NoDiffBase()
    obj = body({"metadata": {"name": "a", "annotations": {"x": "y"}}, "spec": {"a": [1]}})
    assert storage.build(body=obj) == {}
    assert storage.fetch(body=obj) is None
    patch = kopf.Patch()
    storage.store(body=obj, patch=patch, essence=storage.build(body=obj))
    assert not patch  # nothing is written to the object
    # Only change-detecting handlers and daemons read old/new/diff: there are none.
    registry = kopf.get_default_registry()
    assert list(registry._changing.get_all_handlers()) == []
    assert list(registry._spawning.get_all_handlers()) == []
