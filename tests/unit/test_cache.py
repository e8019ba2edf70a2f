"""The watch-fed store that reconciles read (engine/cache.py) and the client's read path."""

from __future__ import annotations

import base64
import copy
import json
from datetime import timedelta
from typing import Any

import pytest

import pki as pkim
from cobrowse_tls.core import settings as settings_mod
from cobrowse_tls.engine import cache, controller, reconciler
from unit import fake_cluster
from unit.builders import secret_doc, tls_doc


def obj(
    name: str,
    version: int,
    ns: str = "ns",
    labels: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    meta = {"name": name, "namespace": ns, "resourceVersion": str(version), "labels": labels or {}}
    return {"metadata": meta, **extra}


def test_an_older_state_never_replaces_a_newer_one() -> None:
    store = cache.Store()
    store.put("Secret", obj("s", 7, data={"k": "new"}))
    store.put("Secret", obj("s", 5, data={"k": "old"}))  # a read that started before the event
    got = store.get("Secret", "ns", "s")
    assert got is not None
    assert got["data"] == {"k": "new"}
    store.put("Secret", obj("s", 9, data={"k": "newer"}))
    got = store.get("Secret", "ns", "s")
    assert got is not None
    assert got["data"] == {"k": "newer"}


def test_the_echo_of_a_kept_version_leaves_the_kept_object_as_it_is() -> None:
    store = cache.Store()
    store.put("Secret", obj("s", 7, data={"k": "applied"}))
    kept = store.get("Secret", "ns", "s")
    # The watch event of the same version (what our apply returned) is not compacted anew.
    store.put("Secret", obj("s", 7, data={"k": "applied"}))
    assert store.get("Secret", "ns", "s") is kept


def test_a_late_deletion_of_a_name_made_again_leaves_the_new_object() -> None:
    # kopf handles each object (by uid) in its own task: the new one's event may come first.
    store = cache.Store()
    store.put("Secret", obj("s", 12, data={"k": "new"}))
    store.delete("Secret", obj("s", 11))
    got = store.get("Secret", "ns", "s")
    assert got is not None
    assert got["data"] == {"k": "new"}
    assert [o["metadata"]["name"] for o in store.list("Secret", "ns", "")] == ["s"]


def test_a_deleted_object_does_not_come_back_from_an_older_read() -> None:
    store = cache.Store()
    store.put("ConfigMap", obj("m", 3))
    store.delete("ConfigMap", obj("m", 4))
    store.put("ConfigMap", obj("m", 3))  # e.g. what an apply returned before the deletion
    assert store.get("ConfigMap", "ns", "m") is None
    store.put("ConfigMap", obj("m", 8))  # created again
    assert store.get("ConfigMap", "ns", "m") is not None


def test_stored_objects_lose_managed_fields_and_foreign_pod_specs() -> None:
    store = cache.Store()
    template = {"metadata": {"annotations": {"a": "b"}}, "spec": {"containers": [{"name": "c"}]}}
    raw = obj("web", 1, spec={"replicas": 2, "template": template})
    raw["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    store.put("Deployment", raw)
    got = store.get("Deployment", "ns", "web")
    assert got is not None
    assert "managedFields" not in got["metadata"]
    assert got["spec"]["template"] == {"metadata": {"annotations": {"a": "b"}}}
    assert got["spec"]["replicas"] == 2
    assert got["kind"] == "Deployment"
    assert got["apiVersion"] == "apps/v1"
    assert raw["spec"]["template"]["spec"], "the event's own object is left as it was"
    ours = obj("agent", 1, labels={"app.kubernetes.io/managed-by": "cobrowse-tls-operator"})
    ours["spec"] = {"template": template}
    store.put("DaemonSet", ours)
    got = store.get("DaemonSet", "ns", "agent")
    assert got is not None
    assert got["spec"]["template"]["spec"] == template["spec"]  # our agent: kept whole


def test_kept_objects_share_their_keys_and_short_strings_but_not_their_content() -> None:
    # Each watch event is parsed on its own: equal strings are distinct objects until kept.
    text = json.dumps(
        {
            "kind": "CobrowseTLS",
            "metadata": {
                "name": "a",
                "namespace": "team-a",
                "labels": {"app": "web"},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            },
            "spec": {"sources": [{"secret": {"name": "ca", "key": "ca.crt"}}]},
            "status": {"conditions": [{"type": "Ready", "message": "x" * 200}]},
        }
    )
    first, second = json.loads(text), json.loads(text)
    kept_first, kept_second = cache.compact(first), cache.compact(second)
    assert kept_first == kept_second
    assert "managedFields" not in kept_first["metadata"]
    assert "managedFields" in first["metadata"], "the event's own object is left as it was"
    meta = {k: v for k, v in first["metadata"].items() if k != "managedFields"}
    assert kept_first == {**first, "metadata": meta}
    (key_1,) = (k for k in kept_first["metadata"] if k == "namespace")
    (key_2,) = (k for k in kept_second["metadata"] if k == "namespace")
    assert key_1 is key_2
    assert kept_first["metadata"]["namespace"] is kept_second["metadata"]["namespace"]
    cond_1, cond_2 = kept_first["status"]["conditions"][0], kept_second["status"]["conditions"][0]
    assert cond_1["type"] is cond_2["type"]
    assert cond_1["message"] == cond_2["message"]
    assert cond_1["message"] is not cond_2["message"]  # long strings are rarely shared
    store = cache.Store()
    for name in ("s", "t"):  # the data key of each parsed on its own, like a watch event
        store.put("Secret", json.loads(json.dumps(obj(name, 1, data={"ca.crt": "x"}))))
    got_s, got_t = store.get("Secret", "ns", "s"), store.get("Secret", "ns", "t")
    assert got_s is not None
    assert got_t is not None
    assert next(iter(got_s["data"])) is next(iter(got_t["data"]))


def test_a_long_value_held_by_many_objects_is_kept_once_and_forgotten_with_the_last() -> None:
    store = cache.Store()
    bundle = "-----BEGIN CERTIFICATE-----\n" + "A" * 1000  # long: not interned
    for ns in ("a", "b"):  # each parsed on its own, like a watch event
        store.put("Secret", json.loads(json.dumps(obj("ca", 1, ns, data={"ca.crt": bundle}))))
    in_a, in_b = store.get("Secret", "a", "ca"), store.get("Secret", "b", "ca")
    assert in_a is not None
    assert in_b is not None
    assert in_a["data"]["ca.crt"] == bundle
    assert in_a["data"]["ca.crt"] is in_b["data"]["ca.crt"]
    assert len(store._values) == 1
    # A newer state with another value releases the old one; deletions release theirs.
    store.put("Secret", obj("ca", 2, "a", data={"ca.crt": bundle + "B"}))
    assert len(store._values) == 2
    store.delete("Secret", obj("ca", 3, "b"))
    assert len(store._values) == 1
    got = store.get("Secret", "a", "ca")
    assert got is not None
    assert got["data"]["ca.crt"] == bundle + "B"
    store.delete("Secret", obj("ca", 4, "a"))
    assert store._values == {}
    # Refused states (older than kept, or than a deletion) hold nothing either.
    store.put("Secret", obj("ca", 1, "a", data={"ca.crt": bundle}))
    assert store._values == {}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["a", "b"]),
        ("app=web,tier=front", ["a"]),
        ("app in (web,api)", ["a", "b", "c"]),
        ("app notin (web)", ["c", "d"]),
        ("tier", ["a", "c"]),
        ("!tier", ["b", "d"]),
        ("app!=web", ["c", "d"]),
        ("app in (web, api),!tier", ["b"]),
    ],
)
def test_list_matches_label_selectors_like_the_api(selector: str, expected: list[str]) -> None:
    store = cache.Store()
    store.put("Deployment", obj("b", 1, labels={"app": "web"}))
    store.put("Deployment", obj("a", 1, labels={"app": "web", "tier": "front"}))
    store.put("Deployment", obj("c", 1, labels={"app": "api", "tier": "back"}))
    store.put("Deployment", obj("d", 1, labels={}))
    store.put("Deployment", obj("e", 1, ns="other", labels={"app": "web"}))
    store.put("StatefulSet", obj("f", 1, labels={"app": "web"}))
    names = [o["metadata"]["name"] for o in store.list("Deployment", "ns", selector)]
    assert names == expected


def test_list_forgets_deleted_objects() -> None:
    store = cache.Store()
    store.put("Deployment", obj("a", 1, labels={"app": "web"}))
    store.delete("Deployment", obj("a", 2, labels={"app": "web"}))
    assert store.list("Deployment", "ns", "app=web") == []


def test_a_ready_store_answers_every_read_it_holds_without_the_api() -> None:
    store = cache.Store()
    fake = fake_cluster.FakeCluster()
    client = cache.Cached(fake, store)
    store.put("Secret", obj("ca", 1, data={"ca.crt": "eA=="}))
    store.put("Deployment", obj("web", 1, labels={"app": "web"}))
    store.mark_ready()
    got = client.get_secret("ns", "ca")
    assert got is not None
    assert got["data"] == {"ca.crt": "eA=="}
    assert client.get_config_map("ns", "absent") is None  # the store knows every object
    assert client.get_workload("Deployment", "ns", "web") is not None
    listed = client.list_workloads("Deployment", "ns", "app")
    assert [o["metadata"]["name"] for o in listed] == ["web"]
    assert fake.requests == []


def test_before_the_watches_are_listed_reads_go_to_the_api() -> None:
    fake = fake_cluster.FakeCluster()
    client = cache.Cached(fake, cache.Store())
    assert client.get_secret("ns", "ca") is None
    assert fake.requests == [("get", "Secret", "ca")]


# -- whole reconciles over the store, against the in-memory API server --------------------------

PKI = pkim.pki()
NS = "genesys"
SETTINGS = settings_mod.Settings(restart_window=timedelta(0))


def watched(*objects: dict[str, Any]) -> tuple[fake_cluster.FakeCluster, cache.Store]:
    """The fake API server, and a store fed with what its watches would have listed."""
    fake = fake_cluster.FakeCluster(*objects)
    store = cache.Store()
    sync(fake, store)
    store.mark_ready()
    return fake, store


def sync(fake: fake_cluster.FakeCluster, store: cache.Store) -> None:
    """Deliver the watch events of every object the fake holds now."""
    for (kind, _, _), o in fake.objects.items():
        if kind in cache.KINDS:
            store.put(kind, copy.deepcopy(o))


def ca_secret(*cas: pkim.CertKey) -> dict[str, Any]:
    doc = secret_doc("genesys-ca", {"ca.crt": pkim.pem(*cas)})
    doc["metadata"]["namespace"] = NS
    return doc


def web() -> dict[str, Any]:
    template = {"metadata": {"labels": {"app": "cb"}}, "spec": {"containers": []}}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS, "labels": {"app": "cb"}},
            "spec": {"replicas": 1, "template": template}}  # fmt: skip


def reconcile(fake: fake_cluster.FakeCluster, store: cache.Store) -> None:
    body = fake.get("CobrowseTLS", NS, "cobrowse")
    assert body is not None
    reconciler.reconcile(cache.Cached(fake, store), body, SETTINGS, PKI.now)


@pytest.mark.parametrize("provider", ["PEM", "JKS"])
def test_reconciles_read_nothing_from_the_api_and_steady_state_writes_nothing(
    provider: str,
) -> None:
    workloads = [{"kind": "Deployment", "selector": {"matchLabels": {"app": "cb"}}}]
    fake, store = watched(ca_secret(PKI.root), web())
    fake.put(tls_doc(provider, workloads=workloads))
    reconcile(fake, store)  # a new CR: outputs written, workload annotated, status
    assert [r for r in fake.requests if r[0] in ("get", "list")] == []
    assert fake.writes
    sync(fake, store)  # the watch events of those writes arrive
    fake.requests.clear()
    reconcile(fake, store)
    assert fake.requests == [], "a steady-state reconcile neither reads nor writes"


def test_a_reconcile_acts_on_the_event_that_triggered_it() -> None:
    fake, store = watched(ca_secret(PKI.root))
    fake.put(tls_doc("PEM"))
    reconcile(fake, store)
    sync(fake, store)
    # The source changes; its watch event reaches the store before the reconcile runs.
    store.put("Secret", fake.put(ca_secret(PKI.other_root)))
    fake.requests.clear()
    reconcile(fake, store)
    out = fake.get("Secret", NS, "cobrowse-truststore")
    assert out is not None
    bundle = base64.b64decode(out["data"]["ca.pem"])
    assert bundle.count(b"BEGIN CERTIFICATE") == 1
    assert pkim.pem(PKI.other_root).splitlines()[1] in bundle
    # Only the Secret (the CAs changed), not the ConfigMap (its files did not).
    assert [w for w in fake.writes if w[0] == "apply"] == [
        ("apply", "Secret", "cobrowse-truststore")
    ]


def test_our_own_write_is_seen_before_its_watch_event() -> None:
    fake, store = watched(ca_secret(PKI.root))
    fake.put(tls_doc("PEM"))
    reconcile(fake, store)  # writes the outputs; their watch events are not delivered
    fake.requests.clear()
    reconcile(fake, store)
    assert [w for w in fake.writes if w[0] == "apply"] == []


def test_the_controller_applies_a_deletion_before_it_queues_the_reconcile() -> None:
    class Client:
        def is_own_write(self, kind: str, o: dict[str, Any]) -> bool:
            return False

        def forget(self, kind: str, namespace: str, name: str) -> None:
            pass

    store = cache.Store()
    c = controller.Controller(Client(), settings_mod.Settings(), store=store)  # type: ignore[arg-type]
    seen: list[dict[str, Any] | None] = []
    c.queue.add = lambda key, delay=0.0: seen.append(store.get("Secret", "ns", "ca"))  # type: ignore[method-assign]
    sources = [{"secret": {"name": "ca"}}]
    meta = {"name": "cb", "namespace": "ns", "generation": 1}
    c.on_cobrowse_tls(None, {"metadata": meta, "spec": {"trustedCA": {"sources": sources}}})
    store.put("Secret", obj("ca", 1))
    seen.clear()
    c.on_source("Secret", "DELETED", obj("ca", 2))
    assert seen == [None]
    assert store.ready
