"""The observe and act steps, and a whole reconcile, against the in-memory API server."""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import threading
import typing
from datetime import timedelta
from typing import Any

import pytest

import pki as pkim
from cobrowse_tls.api import models
from cobrowse_tls.core import agent_manifest, certs, decide, render
from cobrowse_tls.core import settings as settings_mod
from cobrowse_tls.engine import act, connections, kube, observe, reconciler
from unit import fake_cluster
from unit.builders import secret_doc, tls_doc

PKI = pkim.pki()
NOW = PKI.now
NS = "genesys"
# MSCAPI allowed where the tests put their CRs (a cluster admin's opt-in).
SETTINGS = settings_mod.Settings(restart_window=timedelta(0), mscapi_namespaces=frozenset({NS}))


def cr(provider: str = "PEM", **spec: Any) -> dict[str, Any]:
    return tls_doc(provider, **spec)


def cluster(body: dict[str, Any], *others: dict[str, Any]) -> fake_cluster.FakeCluster:
    ca = secret_doc("genesys-ca", {"ca.crt": pkim.pem(PKI.root)})
    ca["metadata"]["namespace"] = NS
    fake = fake_cluster.FakeCluster(ca, *others)
    fake.put(body)
    return fake


def current(fake: fake_cluster.FakeCluster) -> dict[str, Any]:
    found = fake.get("CobrowseTLS", NS, "cobrowse")
    assert found is not None
    return found


# -- observe -----------------------------------------------------------------------------------


def test_observe_reads_the_cr_inputs_outputs_and_workloads_and_writes_nothing() -> None:
    body = cr(workloads=[{"kind": "Deployment", "selector": {"matchLabels": {"app": "cb"}}}])
    web = {"kind": "Deployment", "metadata": {"name": "web", "namespace": NS,
           "labels": {"app": "cb"}}, "spec": {}}  # fmt: skip
    fake = cluster(body, web)
    snap = observe.observe(fake, current(fake), SETTINGS, NOW)
    assert fake.writes == []
    assert sorted(fake.requests) == [
        ("get", "ConfigMap", "cobrowse-security"),
        ("get", "Secret", "cobrowse-truststore"),
        ("get", "Secret", "genesys-ca"),
        ("list", "Deployment", "app=cb"),
    ]
    assert snap.sources.secrets == {"genesys-ca": {"ca.crt": pkim.pem(PKI.root)}}
    assert (snap.secret, snap.config_map, snap.agent) == (None, None, None)
    assert [(t.kind, t.name) for t in snap.workloads] == [("Deployment", "web")]
    assert snap.new_password is None  # only JKS may need one


def test_observe_draws_a_fresh_password_for_jks_only() -> None:
    fake = cluster(cr("JKS", truststore={}))
    first = observe.observe(fake, current(fake), SETTINGS, NOW)
    second = observe.observe(fake, current(fake), SETTINGS, NOW)
    assert first.new_password
    assert second.new_password
    assert first.new_password != second.new_password


def test_a_source_the_operator_may_not_read_is_bad_input_other_errors_are_raised() -> None:
    fake = cluster(cr())
    fake.fail("get", "Secret", "genesys-ca", kube.KubeError(403, "forbidden"))
    snap = observe.observe(fake, current(fake), SETTINGS, NOW)
    assert snap.source_error is not None
    assert snap.source_error.reason == decide.SOURCE_FORBIDDEN
    fake.fail("get", "Secret", "genesys-ca", kube.KubeError(500, "etcd timed out"))
    with pytest.raises(kube.KubeError):
        observe.observe(fake, current(fake), SETTINGS, NOW)


@pytest.mark.parametrize(
    ("workload", "request_"),
    [
        ({"kind": "Deployment", "name": "web"}, ("get", "Deployment", "web")),
        (
            {"kind": "StatefulSet", "selector": {"matchLabels": {"app": "cb"}}},
            ("list", "StatefulSet", "app=cb"),
        ),
    ],
    ids=["by-name", "by-selector"],
)
def test_a_workload_the_operator_may_not_read_is_reported_other_errors_are_raised(
    workload: dict[str, Any], request_: tuple[str, str, str]
) -> None:
    fake = cluster(cr(workloads=[workload]))
    fake.fail(*request_, kube.KubeError(403, "forbidden"))
    snap = observe.observe(fake, current(fake), SETTINGS, NOW)
    label = workload.get("name") or "selector app=cb"
    assert snap.workload_error == f"{workload['kind']} {label}: the operator may not read it"
    assert ("get", "ConfigMap", "cobrowse-security") in fake.requests  # the rest is read
    fake.fail(*request_, kube.KubeError(500, "etcd timed out"))
    with pytest.raises(kube.KubeError):
        observe.observe(fake, current(fake), SETTINGS, NOW)


def test_observe_reads_nothing_for_a_spec_that_does_not_parse() -> None:
    body = cr()
    body["spec"]["provider"] = "Bogus"
    fake = cluster(body)
    snap = observe.observe(fake, current(fake), SETTINGS, NOW)
    assert fake.requests == []
    assert snap.tls is None
    assert snap.spec_error is not None
    assert snap.spec_error.startswith("spec.provider: ")


def test_observe_of_a_deletion_reads_only_the_agents_it_must_clean_up() -> None:
    body = cr("MSCAPI")
    body["metadata"].update(
        deletionTimestamp="2030-01-01T00:00:00Z", finalizers=[agent_manifest.FINALIZER]
    )
    fake = cluster(body)
    observe.observe(fake, current(fake), SETTINGS, NOW)
    assert fake.requests == [("get", "DaemonSet", "cobrowse-mscapi-agent")]
    body["metadata"]["finalizers"] = []
    fake = cluster(body)
    observe.observe(fake, current(fake), SETTINGS, NOW)
    assert fake.requests == []


def test_observe_reads_why_agent_pods_are_missing_only_when_they_are() -> None:
    fake = cluster(cr("MSCAPI", windows={"store": "Root", "location": "LocalMachine"}))
    reconciler.reconcile(fake, current(fake), SETTINGS, NOW)
    ds = fake.get("DaemonSet", NS, "cobrowse-mscapi-agent")
    assert ds is not None
    event = {
        "kind": "Event",
        "metadata": {"name": "refused", "namespace": NS},
        "involvedObject": {"kind": "DaemonSet", "name": "cobrowse-mscapi-agent"},
        "reason": agent_manifest.FAILED_CREATE,
        "message": "violates PodSecurity",
    }
    fake.put(event)
    for scheduled, expected in ((2, ()), (0, (fake.get("Event", NS, "refused"),))):
        ds["status"] = {"desiredNumberScheduled": 2, "currentNumberScheduled": scheduled}
        fake.put(ds)
        snap = observe.observe(fake, current(fake), SETTINGS, NOW)
        assert snap.agent_events == expected


def test_mscapi_where_not_allowed_is_refused_and_creates_nothing() -> None:
    body = cr("MSCAPI", windows={"store": "Root", "location": "LocalMachine"})
    fake = cluster(body)
    nowhere = settings_mod.Settings(restart_window=timedelta(0))
    reconciler.reconcile(fake, current(fake), nowhere, NOW)
    # Only the status and the event: no output, no agent, no finalizer.
    assert {w[1] for w in fake.writes} == {"CobrowseTLS", "Event"}
    assert ("get", "Namespace", NS) not in fake.requests  # no labels configured: not read
    assert not any(r[1] == "Pod" for r in fake.requests)
    status = current(fake)["status"]
    (cond,) = [c for c in status["conditions"] if c["type"] == "TrustStoreReady"]
    assert (cond["status"], cond["reason"]) == ("False", decide.MSCAPI_NOT_ALLOWED)
    assert [e[1] for e in fake.events] == [decide.MSCAPI_NOT_ALLOWED]
    assert fake.get("Secret", NS, "cobrowse-truststore") is None
    assert fake.get("DaemonSet", NS, "cobrowse-mscapi-agent") is None
    assert agent_manifest.FINALIZER not in (current(fake)["metadata"].get("finalizers") or [])

    # Allowed by namespace labels: the Namespace is read, and the agent comes.
    by_label = settings_mod.Settings(
        restart_window=timedelta(0), mscapi_namespace_labels=(("mscapi", "yes"),)
    )
    fake.put({"kind": "Namespace", "metadata": {"name": NS, "namespace": "", "labels": {}}})
    reconciler.reconcile(fake, current(fake), by_label, NOW)
    assert ("get", "Namespace", NS) in fake.requests
    assert fake.get("DaemonSet", NS, "cobrowse-mscapi-agent") is None
    fake.put(
        {
            "kind": "Namespace",
            "metadata": {"name": NS, "namespace": "", "labels": {"mscapi": "yes"}},
        }
    )
    reconciler.reconcile(fake, current(fake), by_label, NOW)
    assert fake.get("DaemonSet", NS, "cobrowse-mscapi-agent") is not None


def test_observe_reads_workloads_by_name_and_by_selector_once_each() -> None:
    body = cr(
        workloads=[
            {"kind": "Deployment", "name": "web"},
            {"kind": "StatefulSet", "name": "gone"},
            {"kind": "Deployment", "selector": {"matchLabels": {"app": "cb"}}},
        ]
    )
    web = {"kind": "Deployment", "metadata": {"name": "web", "namespace": NS,
           "labels": {"app": "cb"}}, "spec": {"replicas": 1}}  # fmt: skip
    fake = cluster(body, web)
    snap = observe.observe(fake, current(fake), SETTINGS, NOW)
    assert ("get", "Deployment", "web") in fake.requests
    assert ("get", "StatefulSet", "gone") in fake.requests
    assert [(t.kind, t.name, t.obj is not None) for t in snap.workloads] == [
        ("Deployment", "web", True),  # named, then selected: one target
        ("StatefulSet", "gone", False),  # missing: reported, looked for again
    ]
    web_target = snap.workloads[0].obj
    assert web_target is not None
    assert web_target["spec"] == {"replicas": 1}


Verify = tuple[models.CobrowseTLSSpec, bytes]


def _verifying(monkeypatch: pytest.MonkeyPatch) -> list[Verify]:
    """Handshakes recorded instead of made: (spec, the CAs trusted) of each verify_all call."""
    calls: list[Verify] = []

    def verify_all(spec: models.CobrowseTLSSpec, ca_pem: bytes) -> tuple[bool, str, str]:
        calls.append((spec, ca_pem))
        return False, connections.HANDSHAKE_FAILED, "configServer: certificate verify failed"

    monkeypatch.setattr(connections, "verify_all", verify_all)
    return calls


VERIFYING = dataclasses.replace(SETTINGS, verify_connections=True)


def test_observe_verifies_connections_trusting_only_the_cas_it_would_render(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _verifying(monkeypatch)
    fake = cluster(cr())
    assert observe.observe(fake, current(fake), SETTINGS, NOW).connections is None
    assert calls == []  # off unless --verify-connections
    snap = observe.observe(fake, current(fake), VERIFYING, NOW)
    assert snap.connections == (
        False,
        connections.HANDSHAKE_FAILED,
        "configServer: certificate verify failed",
    )
    assert snap.tls is not None
    [(spec, ca_pem)] = calls
    assert spec == snap.tls.spec
    assert [c.der for c in certs.parse_source(ca_pem, source="ca.pem")] == [PKI.root.der]
    assert fake.writes == []


@pytest.mark.parametrize(
    "body",
    [
        cr(trustedCA={"sources": [{"secret": {"name": "absent", "key": "ca.crt"}}]}),
        cr("Disabled"),  # renders no CA to trust
    ],
    ids=["source-not-found", "no-ca"],
)
def test_observe_makes_no_handshake_when_there_are_no_cas_to_trust(
    monkeypatch: pytest.MonkeyPatch, body: dict[str, Any]
) -> None:
    calls = _verifying(monkeypatch)
    fake = cluster(body)
    snap = observe.observe(fake, current(fake), VERIFYING, NOW)
    assert calls == []
    assert snap.connections is None


# -- act ---------------------------------------------------------------------------------------


def test_act_writes_in_order_and_stops_at_the_first_failure() -> None:
    fake = cluster(cr())
    writes: list[decide.Write] = [
        decide.Apply({"kind": "Secret", "metadata": {"name": "a", "namespace": NS}}),
        decide.Apply({"kind": "ConfigMap", "metadata": {"name": "b", "namespace": NS}}),
        decide.Event("Normal", "OutputsWritten", "wrote a, b"),
        decide.PatchStatus({"observedGeneration": 1}),
    ]
    fake.fail("apply", "ConfigMap", "b", kube.KubeError(500, "etcd timed out"))
    with pytest.raises(kube.KubeError):
        act.act(fake, current(fake), writes)
    assert fake.writes == [("apply", "Secret", "a"), ("apply", "ConfigMap", "b")]
    assert "status" not in current(fake)


class Together(fake_cluster.FakeCluster):
    """Applies of outputs wait until the other one is in flight too: made one after the other,
    they would time out."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        super().__init__(*objects)
        self.barrier = threading.Barrier(2, timeout=10)

    def apply(self, obj: typing.Mapping[str, Any]) -> dict[str, Any]:
        if obj["kind"] in ("Secret", "ConfigMap"):
            self.barrier.wait()
        return super().apply(obj)


OUTPUTS_THEN_STATUS: list[decide.Write] = [
    decide.Apply({"kind": "Secret", "metadata": {"name": "a", "namespace": NS}}),
    decide.Apply({"kind": "ConfigMap", "metadata": {"name": "b", "namespace": NS}}),
    decide.Event("Normal", "OutputsWritten", "wrote a, b"),
    decide.PatchStatus({"observedGeneration": 1}),
    decide.Event("Normal", "Ready", "Ready True"),
]


def test_act_writes_the_outputs_at_once_in_a_pool_then_the_rest_in_order() -> None:
    ca = secret_doc("genesys-ca", {"ca.crt": pkim.pem(PKI.root)})
    ca["metadata"]["namespace"] = NS
    fake = Together(ca, cr())
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        act.act(fake, current(fake), OUTPUTS_THEN_STATUS, pool)
    assert sorted(fake.writes[:2]) == [("apply", "ConfigMap", "b"), ("apply", "Secret", "a")]
    assert fake.writes[2:] == [
        ("status", "CobrowseTLS", "cobrowse"),
        ("event", "Event", "OutputsWritten"),
        ("event", "Event", "Ready"),
    ]


@pytest.mark.parametrize("failing", [("Secret", "a"), ("ConfigMap", "b")])
def test_act_in_a_pool_waits_for_both_outputs_and_stops_when_one_failed(
    failing: tuple[str, str],
) -> None:
    fake = cluster(cr())
    fake.fail("apply", *failing, kube.KubeError(500, "etcd timed out"))
    with concurrent.futures.ThreadPoolExecutor(2) as pool, pytest.raises(kube.KubeError):
        act.act(fake, current(fake), OUTPUTS_THEN_STATUS, pool)
    # Both were tried; nothing after them was made, not even their event.
    assert sorted(fake.writes) == [("apply", "ConfigMap", "b"), ("apply", "Secret", "a")]
    assert "status" not in current(fake)


@dataclasses.dataclass(frozen=True)
class Stray:
    """Not one of decide's writes, though it has a name like DeleteDaemonSet."""

    name: str


def test_act_refuses_a_write_it_does_not_know() -> None:
    fake = cluster(cr())
    with pytest.raises(AssertionError):
        act.act(fake, current(fake), [typing.cast(decide.Write, Stray("cobrowse-mscapi-agent"))])
    assert fake.writes == []


def test_act_posts_events_after_the_other_writes_and_those_before_a_failure() -> None:
    fake = cluster(cr())
    writes: list[decide.Write] = [
        decide.Apply({"kind": "Secret", "metadata": {"name": "a", "namespace": NS}}),
        decide.Event("Normal", "OutputsWritten", "wrote a"),
        decide.Apply({"kind": "Deployment", "metadata": {"name": "web", "namespace": NS}}),
        decide.Event("Normal", "RestartStarted", "restarting web"),
        decide.PatchStatus({"observedGeneration": 1}),
        decide.Event("Normal", "Ready", "Ready True"),
    ]
    act.act(fake, current(fake), writes)
    # No output, restart or status waits on an event: they come last, in their order.
    assert [(verb, name) for verb, _, name in fake.writes] == [
        ("apply", "a"),
        ("apply", "web"),
        ("status", "cobrowse"),
        ("event", "OutputsWritten"),
        ("event", "RestartStarted"),
        ("event", "Ready"),
    ]
    fake = cluster(cr())
    fake.fail("apply", "Deployment", "web", kube.KubeError(500, "etcd timed out"))
    with pytest.raises(kube.KubeError):
        act.act(fake, current(fake), writes)
    # The events of what was written are posted; the others are not.
    assert [r for r in fake.writes if r[0] == "event"] == [("event", "Event", "OutputsWritten")]


def test_act_posts_a_fallback_event_only_when_a_later_write_fails() -> None:
    # A new CR: Ready says what was written; OutputsWritten only if the status write fails
    # (then Ready is not posted, and the retry's Ready cannot know what this one wrote).
    writes: list[decide.Write] = [
        decide.Apply({"kind": "Secret", "metadata": {"name": "a", "namespace": NS}}),
        decide.Event("Normal", "OutputsWritten", "wrote a", fallback=True),
        decide.PatchStatus({"observedGeneration": 1}),
        decide.Event("Normal", "Ready", "Ready True; wrote a"),
    ]
    fake = cluster(cr())
    act.act(fake, current(fake), writes)
    assert [r for r in fake.writes if r[0] == "event"] == [("event", "Event", "Ready")]
    fake = cluster(cr())
    fake.fail("status", "CobrowseTLS", "cobrowse", kube.KubeError(500, "etcd timed out"))
    with pytest.raises(kube.KubeError):
        act.act(fake, current(fake), writes)
    assert [r for r in fake.writes if r[0] == "event"] == [("event", "Event", "OutputsWritten")]
    fake = cluster(cr())
    fake.fail("apply", "Secret", "a", kube.KubeError(500, "etcd timed out"))
    with pytest.raises(kube.KubeError):
        act.act(fake, current(fake), writes)
    assert [r for r in fake.writes if r[0] == "event"] == []  # nothing was written


def test_act_posts_events_on_a_best_effort_basis() -> None:
    fake = cluster(cr())
    fake.fail("event", "Event", "OutputsWritten", kube.KubeError(500, "etcd timed out"))
    writes: list[decide.Write] = [
        decide.Event("Normal", "OutputsWritten", "x"),
        decide.PatchStatus({"a": 1}),
    ]
    act.act(fake, current(fake), writes)
    assert current(fake)["status"] == {"a": 1}


def test_act_changes_finalizers_only_on_the_cr_as_observed() -> None:
    fake = cluster(cr())
    seen = current(fake)
    fake.patch_status(NS, "cobrowse", {"changed": True})  # someone else's write in between
    with pytest.raises(kube.KubeError) as err:
        act.act(fake, seen, [decide.SetFinalizers((agent_manifest.FINALIZER,))])
    assert err.value.status == 409
    act.act(fake, current(fake), [decide.SetFinalizers((agent_manifest.FINALIZER,))])
    assert current(fake)["metadata"]["finalizers"] == [agent_manifest.FINALIZER]


# -- a whole reconcile -------------------------------------------------------------------------


def test_reconcile_writes_once_then_nothing_while_nothing_changes() -> None:
    fake = cluster(cr())
    first = reconciler.reconcile(fake, current(fake), SETTINGS, NOW)
    assert first.result == "ok"
    assert current(fake)["status"] == first.status
    secret = fake.get("Secret", NS, "cobrowse-truststore")
    assert secret is not None
    assert first.rendered is not None
    assert decide.decode_data(secret)[render.CA_PEM] == first.rendered.files[render.CA_PEM]
    made = len(fake.writes)
    assert made > 0
    reconciler.reconcile(fake, current(fake), SETTINGS, NOW)
    assert len(fake.writes) == made

    # Drift: an output edited by hand is written back, and only that.
    edited = fake.get("ConfigMap", NS, "cobrowse-security")
    assert edited is not None
    edited["data"]["security.cfg"] = "edited"
    fake.put(edited)
    reconciler.reconcile(fake, current(fake), SETTINGS, NOW)
    assert fake.writes[made:] == [
        ("apply", "ConfigMap", "cobrowse-security"),
        ("event", "Event", "OutputsWritten"),
    ]


@pytest.mark.parametrize("parses", [True, False], ids=["spec", "spec-that-no-longer-parses"])
def test_an_mscapi_cr_is_deleted_only_after_its_agents_cleaned_up(parses: bool) -> None:
    windows = {"store": "CA", "location": "User", "account": "S-1-5-21-1-2-3-1001"}
    fake = cluster(cr("MSCAPI", windows=windows))
    reconciler.reconcile(fake, current(fake), SETTINGS, NOW)
    assert current(fake)["metadata"]["finalizers"] == [agent_manifest.FINALIZER]
    assert fake.get("DaemonSet", NS, "cobrowse-mscapi-agent") is not None

    deleting = current(fake)
    deleting["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    if not parses:
        # Stored under an older schema, which let location User take store Root.
        deleting["spec"]["windows"]["store"] = "Root"
    fake.put(deleting)
    again = reconciler.reconcile(fake, current(fake), SETTINGS, NOW)
    assert again.requeue_after == SETTINGS.rollout_poll
    ds = fake.get("DaemonSet", NS, "cobrowse-mscapi-agent")
    assert ds is not None
    template = ds["spec"]["template"]["metadata"]["annotations"]
    assert template[agent_manifest.ANNOTATION_MODE] == agent_manifest.CLEANUP

    # The DaemonSet controller and the agents report every node clean.
    ds["status"] = {"observedGeneration": ds["metadata"]["generation"],
                    "desiredNumberScheduled": 1, "updatedNumberScheduled": 1}  # fmt: skip
    fake.put(ds)
    pod = {
        "kind": "Pod",
        "metadata": {
            "name": "agent-1",
            "namespace": NS,
            "labels": copy.deepcopy(ds["spec"]["template"]["metadata"]["labels"]),
            "annotations": dict(template),
        },
        "spec": {"nodeName": "win-1"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    fake.put(pod)
    done = reconciler.reconcile(fake, current(fake), SETTINGS, NOW)
    assert done.requeue_after is None
    assert fake.get("DaemonSet", NS, "cobrowse-mscapi-agent") is None
    assert fake.get("CobrowseTLS", NS, "cobrowse") is None  # its last finalizer gone
    assert [e[1] for e in fake.events][-2:] == ["CleanupStarted", "CleanupComplete"]
