"""The decide step over snapshots: every branch of a reconcile, with no API at all.

A snapshot is what observe would have read; ``settle`` plays the decided writes back into the
next snapshot (the status patch, the outputs applied), so a test can follow a CR over several
reconciles without any fake of the API.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
from datetime import datetime, timedelta
from typing import Any

import pytest

import pki as pkim
from cobrowse_tls.api import models
from cobrowse_tls.core import agent_manifest, certs, conditions, decide, render, restart_plan
from cobrowse_tls.core import settings as settings_mod
from unit import fake_cluster
from unit.builders import tls_doc

PKI = pkim.pki()
NOW = PKI.now
# MSCAPI allowed where the tests put their CRs (a cluster admin's opt-in).
SETTINGS = settings_mod.Settings(
    restart_window=timedelta(0), rollout_poll=1.0, mscapi_namespaces=frozenset({"genesys"})
)
NS = "genesys"
FP_OTHER = "sha256:" + "cd" * 32


def cr(provider: str = "PEM", *, meta: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body = tls_doc(provider, **spec)
    body["metadata"].update(uid="u1", resourceVersion="7", generation=1, **(meta or {}))
    return body


def snapshot(
    body: dict[str, Any],
    *,
    secrets: dict[str, dict[str, bytes]] | None = None,
    config_maps: dict[str, dict[str, bytes]] | None = None,
    **observed: Any,
) -> decide.Snapshot:
    tls, error = decide.parse(body)
    if secrets is None:
        secrets = {"genesys-ca": {"ca.crt": pkim.pem(PKI.root)}}
    found = render.ObjectData(secrets=secrets, config_maps=config_maps or {})
    return decide.Snapshot(body=body, tls=tls, spec_error=error, sources=found, **observed)


def run(
    snap: decide.Snapshot, settings: settings_mod.Settings = SETTINGS, now: datetime = NOW
) -> decide.Decision:
    return decide.decide(snap, settings, now)


def summary(decision: decide.Decision) -> list[tuple[str, ...]]:
    """The writes, one short tuple each, in order."""
    out: list[tuple[str, ...]] = []
    for w in decision.writes:
        if isinstance(w, decide.Apply):
            out.append(("apply", w.obj["kind"], w.obj["metadata"]["name"]))
        elif isinstance(w, decide.Event):
            out.append(("fallback event" if w.fallback else "event", w.reason))
        elif isinstance(w, decide.PatchStatus):
            out.append(("status",))
        elif isinstance(w, decide.SetFinalizers):
            out.append(("finalizers", *w.finalizers))
        else:
            out.append(("delete", w.name))
    return out


def applied(decision: decide.Decision, kind: str) -> list[dict[str, Any]]:
    return [
        dict(w.obj)
        for w in decision.writes
        if isinstance(w, decide.Apply) and w.obj["kind"] == kind
    ]


def condition(decision: decide.Decision, type_: str) -> tuple[str, str] | None:
    assert decision.status is not None
    found = conditions.find(decision.status["conditions"], type_)
    return (str(found["status"]), str(found["reason"])) if found is not None else None


def settle(snap: decide.Snapshot, decision: decide.Decision) -> decide.Snapshot:
    """The next snapshot: the status patched and the outputs applied as decided."""
    body = copy.deepcopy(dict(snap.body))
    for w in decision.writes:
        if isinstance(w, decide.PatchStatus):
            body["status"] = fake_cluster.merge_patched(body.get("status") or {}, w.patch)
        elif isinstance(w, decide.SetFinalizers):
            body["metadata"]["finalizers"] = list(w.finalizers)
    secret = [*applied(decision, "Secret"), snap.secret][0]
    config_map = [*applied(decision, "ConfigMap"), snap.config_map][0]
    return dataclasses.replace(snap, body=body, secret=secret, config_map=config_map)


def good(body: dict[str, Any] | None = None, **observed: Any) -> decide.Snapshot:
    """A CR after its first good reconcile: outputs in place, status written."""
    first = snapshot(body or cr(), **observed)
    return settle(first, run(first))


# -- the happy path ----------------------------------------------------------------------------


def test_first_reconcile_writes_outputs_then_status_and_the_next_writes_nothing() -> None:
    snap = snapshot(cr())
    decision = run(snap)
    assert decision.result == "ok"
    assert summary(decision) == [
        ("apply", "Secret", "cobrowse-truststore"),
        ("apply", "ConfigMap", "cobrowse-security"),
        ("fallback event", "OutputsWritten"),  # only if the status write fails
        ("status",),
        # Conditions born True are announced by Ready alone, which also says what was written.
        ("event", "Ready"),
    ]
    ready = next(w for w in decision.writes if isinstance(w, decide.Event) and not w.fallback)
    assert ready.message.startswith("Ready True: ")
    assert "; wrote Secret cobrowse-truststore, ConfigMap cobrowse-security (" in ready.message
    assert condition(decision, "Ready") == ("True", "Ready")
    assert condition(decision, "TrustStoreReady") == ("True", "Rendered")
    assert condition(decision, "CertificatesValid") == ("True", "Valid")
    assert decision.status is not None
    assert decision.status["trustStore"]["count"] == 1
    assert decision.earliest_expiry == PKI.root.cert.not_valid_after_utc
    assert decision.requeue_after is None

    again = run(settle(snap, decision))
    assert again.writes == ()
    assert again.status == decision.status


def test_disabled_writes_only_the_config_map() -> None:
    decision = run(snapshot(cr("Disabled"), secrets={}))
    assert [s for s in summary(decision) if s[0] == "apply"] == [
        ("apply", "ConfigMap", "cobrowse-security")
    ]
    assert decision.earliest_expiry is None


# -- bad input: status and event, the last good outputs stay, nothing restarts -----------------


def _bad_source(data: bytes, **source: Any) -> decide.Snapshot:
    ref = {"name": "genesys-ca", "key": "ca.crt", **source}
    body = cr(trustedCA={"sources": [{"secret": ref}]})
    last = good(body)
    secrets = {"genesys-ca": {"ca.crt": data, "pw": b"not-the-password"}}
    return dataclasses.replace(last, sources=render.ObjectData(secrets=secrets, config_maps={}))


def _missing_source() -> decide.Snapshot:
    return dataclasses.replace(good(), sources=render.ObjectData(secrets={}, config_maps={}))


def _conflict() -> decide.Snapshot:
    theirs = {"kind": "Secret", "metadata": {"name": "cobrowse-truststore", "labels": {}}}
    return snapshot(cr(), secret=theirs)


def _invalid_spec() -> decide.Snapshot:
    last = good()
    body = copy.deepcopy(dict(last.body))
    body["spec"]["provider"] = "Bogus"
    return snapshot(body, secret=last.secret, config_map=last.config_map)


def _forbidden() -> decide.Snapshot:
    error = render.InvalidInput(decide.SOURCE_FORBIDDEN, "secret genesys-ca", "may not read it")
    return dataclasses.replace(good(), source_error=error)


BAD_INPUTS = {
    "missing-source": (_missing_source, render.SOURCE_NOT_FOUND),
    "bad-certificate": (
        lambda: _bad_source(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        certs.INVALID_CERTIFICATE,
    ),
    "wrong-password": (
        lambda: _bad_source(pkim.pkcs12_modern(PKI.root), passwordKey="pw"),
        certs.WRONG_PASSWORD,
    ),
    "not-a-ca": (lambda: _bad_source(pkim.pem(PKI.server)), certs.NOT_A_CA),
    "no-certificates": (lambda: _bad_source(b"\n"), certs.NO_CERTIFICATES),
    "output-conflict": (_conflict, decide.OUTPUT_CONFLICT),
    "invalid-spec": (_invalid_spec, decide.INVALID_SPEC),
    "source-forbidden": (_forbidden, decide.SOURCE_FORBIDDEN),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_reported_and_changes_nothing_else(case: str) -> None:
    build, reason = BAD_INPUTS[case]
    snap = build()
    decision = run(snap)
    assert decision.result == "invalid"
    assert not [w for w in decision.writes if not isinstance(w, decide.PatchStatus | decide.Event)]
    assert condition(decision, "TrustStoreReady") == ("False", reason)
    assert condition(decision, "Ready") == ("False", reason)
    assert ("event", reason) in summary(decision)
    assert [w.type for w in decision.writes if isinstance(w, decide.Event)] == ["Warning"]
    previous = snap.body.get("status") or {}
    assert decision.status is not None
    assert decision.status.get("trustStore") == previous.get("trustStore")
    types = [c["type"] for c in decision.status["conditions"]]
    if case == "invalid-spec":
        # A spec that does not parse reports only its error, the others go.
        assert types == ["Ready", "TrustStoreReady"]
    elif conditions.find(previous.get("conditions"), "CertificatesValid") is not None:
        assert "CertificatesValid" in types
    # Reported once: the same bad input again writes nothing.
    assert run(settle(snap, decision)).writes == ()


def test_bad_input_keeps_the_other_conditions_of_the_last_good_reconcile() -> None:
    workloads = [{"kind": "Deployment", "name": "web"}]
    last = good(
        cr(workloads=workloads), workloads=(restart_plan.Target("Deployment", "web", None),)
    )
    decision = run(dataclasses.replace(last, sources=render.ObjectData(secrets={}, config_maps={})))
    assert condition(decision, "WorkloadsRestarted") == ("False", "WorkloadNotFound")
    assert condition(decision, "CertificatesValid") == ("True", "Valid")
    assert decision.status is not None
    assert decision.status["restart"] == last.body["status"]["restart"]


# -- drift and the JKS password ----------------------------------------------------------------


def test_an_edited_output_is_written_back_and_nothing_else() -> None:
    last = good()
    assert last.config_map is not None
    edited = copy.deepcopy(dict(last.config_map))
    edited["data"]["security.cfg"] = "edited by hand"
    decision = run(dataclasses.replace(last, config_map=edited))
    assert summary(decision) == [
        ("apply", "ConfigMap", "cobrowse-security"),
        ("event", "OutputsWritten"),
    ]
    assert applied(decision, "ConfigMap") == [last.config_map]


def test_jks_password_is_generated_once_then_read_back_from_the_secret() -> None:
    body = cr("JKS", truststore={})
    first = snapshot(body, new_password="first-generated")
    decision = run(first)
    assert decision.rendered is not None
    assert decision.rendered.files[render.TRUSTSTORE_PASSWORD] == b"first-generated"
    later = dataclasses.replace(settle(first, decision), new_password="second-generated")
    assert run(later).writes == ()


def test_hash_key_is_drawn_once_then_kept_and_changes_only_with_the_password() -> None:
    """No restart while nothing consumed changes; one when the password changes."""
    body = cr("JKS", truststore={})
    first = snapshot(body, new_password="pw-1", new_hash_key=b"k" * 32)
    decision = run(first)
    assert decision.rendered is not None
    (secret,) = applied(decision, "Secret")
    assert base64.b64decode(secret["data"][render.HASH_KEY]) == b"k" * 32
    material = decision.rendered.material_hash
    # Later reconciles draw other fresh values: the kept key (and password) win, nothing moves.
    later = dataclasses.replace(
        settle(first, decision), new_password="pw-2", new_hash_key=b"x" * 32
    )
    assert run(later).writes == ()
    # The kept password is edited: the key stays, the published hashes change once.
    assert later.secret is not None
    edited = copy.deepcopy(dict(later.secret))
    edited["data"][render.TRUSTSTORE_PASSWORD] = base64.b64encode(b"pw-new").decode()
    changed = run(dataclasses.replace(later, secret=edited))
    assert changed.rendered is not None
    assert changed.rendered.material_hash != material
    (rewritten,) = applied(changed, "Secret")
    assert base64.b64decode(rewritten["data"][render.HASH_KEY]) == b"k" * 32


def test_no_password_reaches_the_repr_of_a_snapshot_or_a_decision() -> None:
    password, pkcs12_password, hash_key = "first-generated", "pkcs12-s3cret", b"hash-key" * 4
    secrets = {"genesys-ca": {"ca.crt": pkim.pem(PKI.root), "pw": pkcs12_password.encode()}}
    first = snapshot(
        cr("JKS", truststore={}), secrets=secrets, new_password=password, new_hash_key=hash_key
    )
    decision = run(first)
    assert decision.rendered is not None
    assert decision.rendered.files[render.TRUSTSTORE_PASSWORD] == password.encode()
    later = settle(first, decision)
    assert later.secret is not None
    texts = [repr(first), repr(later), repr(decision), *map(repr, decision.writes)]
    encoded = [base64.b64encode(v).decode() for v in (password.encode(), hash_key)]
    for text in texts:
        for secret in (password, *encoded, pkcs12_password, "hash-key"):
            assert secret not in text
    assert "Apply(obj=<Secret cobrowse-truststore>)" in repr(decision.writes)


def test_an_unusable_kept_password_is_replaced_with_a_note() -> None:
    last = good(cr("JKS", truststore={}), new_password="first-generated")
    assert last.secret is not None
    broken = copy.deepcopy(dict(last.secret))
    # A control character: not a password the operator would have written.
    broken["data"][render.TRUSTSTORE_PASSWORD] = base64.b64encode(b"bad\x01pw").decode()
    decision = run(dataclasses.replace(last, secret=broken, new_password="fresh"))
    assert decision.notes == ("kept truststore password unusable; generating a new one",)
    assert decision.rendered is not None
    assert decision.rendered.files[render.TRUSTSTORE_PASSWORD] == b"fresh"


# -- restarts ----------------------------------------------------------------------------------


def deploy(name: str, hash_: str | None = None, *, complete: bool = True) -> dict[str, Any]:
    annotations = {restart_plan.ANNOTATION_RESTARTED_FOR: hash_} if hash_ else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "generation": 2},
        "spec": {"replicas": 1, "template": {"metadata": {"annotations": annotations}}},
        "status": {
            "observedGeneration": 2,
            "replicas": 1 if complete else 2,
            "updatedReplicas": 1,
            "availableReplicas": 1 if complete else 0,
        },
    }


def targets(*objs: dict[str, Any]) -> tuple[restart_plan.Target, ...]:
    return tuple(restart_plan.Target("Deployment", o["metadata"]["name"], o) for o in objs)


def material() -> str:
    decision = run(snapshot(cr()))
    assert decision.rendered is not None
    return decision.rendered.material_hash


def restarted(decision: decide.Decision) -> list[str]:
    return [o["metadata"]["name"] for o in applied(decision, "Deployment")]


def test_restart_waits_for_the_batching_window() -> None:
    snap = snapshot(
        cr(workloads=[{"kind": "Deployment", "name": "web"}]), workloads=targets(deploy("web"))
    )
    decision = run(snap, dataclasses.replace(SETTINGS, restart_window=timedelta(seconds=5)))
    assert restarted(decision) == []
    assert condition(decision, "WorkloadsRestarted") == ("False", "RolloutInProgress")
    assert decision.requeue_after == 5.0
    assert decision.status is not None
    assert decision.status["restart"]["workloads"][0]["state"] == restart_plan.PENDING


def test_restart_starts_then_is_in_progress_then_done() -> None:
    body = cr(workloads=[{"kind": "Deployment", "name": "web"}])
    first = snapshot(body, workloads=targets(deploy("web")))
    decision = run(first)
    assert restarted(decision) == ["web"]
    assert ("event", "RestartStarted") in summary(decision)
    [patch] = applied(decision, "Deployment")
    assert patch["spec"] == {
        "template": {
            "metadata": {"annotations": {restart_plan.ANNOTATION_RESTARTED_FOR: material()}}
        }
    }
    assert condition(decision, "WorkloadsRestarted") == ("False", "RolloutInProgress")
    assert decision.requeue_after == SETTINGS.rollout_poll

    rolling = dataclasses.replace(
        settle(first, decision), workloads=targets(deploy("web", material(), complete=False))
    )
    in_progress = run(rolling)
    assert restarted(in_progress) == []
    assert condition(in_progress, "WorkloadsRestarted") == ("False", "RolloutInProgress")

    done = dataclasses.replace(
        settle(rolling, in_progress), workloads=targets(deploy("web", material()))
    )
    complete = run(done)
    assert ("event", "RolloutDone") in summary(complete)
    assert condition(complete, "WorkloadsRestarted") == ("True", "RolloutComplete")
    assert condition(complete, "Ready") == ("True", "Ready")
    assert run(settle(done, complete)).writes == ()


def test_restarts_are_paced_by_max_concurrent() -> None:
    body = cr(
        workloads=[{"kind": "Deployment", "name": n} for n in ("a", "b", "c")],
        restart={"maxConcurrent": 2},
    )
    decision = run(snapshot(body, workloads=targets(deploy("a"), deploy("b"), deploy("c"))))
    assert restarted(decision) == ["a", "b"]
    assert decision.status is not None
    states = [w["state"] for w in decision.status["restart"]["workloads"]]
    assert states == [restart_plan.ROLLING_OUT, restart_plan.ROLLING_OUT, restart_plan.PENDING]


def test_manual_restarts_wait_for_approval_of_this_material() -> None:
    workloads = [{"kind": "Deployment", "name": "web"}]
    body = cr(workloads=workloads, restart={"policy": "Manual"})
    decision = run(snapshot(body, workloads=targets(deploy("web"))))
    assert restarted(decision) == []
    assert condition(decision, "WorkloadsRestarted") == ("False", "RestartPending")
    assert condition(decision, "Ready") == ("False", "RestartPending")
    approved = cr(
        workloads=workloads,
        restart={"policy": "Manual"},
        meta={"annotations": {restart_plan.ANNOTATION_APPROVE: material()}},
    )
    assert restarted(run(snapshot(approved, workloads=targets(deploy("web"))))) == ["web"]


def test_a_stalled_rollout_is_reported_and_holds_further_restarts() -> None:
    body = cr(workloads=[{"kind": "Deployment", "name": n} for n in ("web", "api")])
    long_ago = NOW - SETTINGS.rollout_deadline - timedelta(seconds=1)
    status = {
        "restart": {
            "hash": material(),
            "since": "2000-01-01T00:00:00Z",
            "workloads": [{"kind": "Deployment", "name": "web", "state": "RollingOut",
                           "startedAt": long_ago.strftime("%Y-%m-%dT%H:%M:%SZ")}],
        }
    }  # fmt: skip
    body["status"] = status
    stuck = targets(deploy("web", material(), complete=False), deploy("api"))
    decision = run(snapshot(body, workloads=stuck))
    assert restarted(decision) == []
    assert condition(decision, "WorkloadsRestarted") == ("False", "RolloutStalled")


def test_a_workload_the_operator_may_not_read_is_reported_and_nothing_restarts() -> None:
    body = cr(workloads=[{"kind": "Deployment", "name": "web"}])
    last = good(body, workloads=targets(deploy("web")))
    assert last.body["status"]["restart"]["workloads"][0]["state"] == restart_plan.ROLLING_OUT
    edited = copy.deepcopy(dict(last.body))
    edited["spec"]["trustedCA"]["sources"].append({"inline": pkim.pem(PKI.intermediate).decode()})
    forbidden = dataclasses.replace(
        last,
        body=edited,
        tls=models.parse(edited),
        workloads=(),
        workload_error="Deployment web: the operator may not read it",
    )
    decision = run(forbidden)
    assert decision.result == "ok"
    # The outputs are still written (the Secret: a new CA leaves the ConfigMap's files as they
    # were); no restart starts without the workloads' state.
    assert [s for s in summary(decision) if s[0] == "apply"] == [
        ("apply", "Secret", "cobrowse-truststore"),
    ]
    assert condition(decision, "WorkloadsRestarted") == ("False", decide.WORKLOAD_FORBIDDEN)
    assert condition(decision, "Ready") == ("False", decide.WORKLOAD_FORBIDDEN)
    [event] = [w for w in decision.writes if isinstance(w, decide.Event) and w.type == "Warning"]
    assert event.reason == decide.WORKLOAD_FORBIDDEN
    assert "Deployment web: the operator may not read it" in event.message
    assert decision.status is not None
    assert decision.status["restart"] == last.body["status"]["restart"]
    assert run(settle(forbidden, decision)).writes == ()


def test_a_missing_workload_is_reported_and_looked_for_again() -> None:
    body = cr(workloads=[{"kind": "Deployment", "name": "gone"}])
    decision = run(snapshot(body, workloads=(restart_plan.Target("Deployment", "gone", None),)))
    assert condition(decision, "WorkloadsRestarted") == ("False", "WorkloadNotFound")
    assert decision.requeue_after == 10.0


# -- MSCAPI ------------------------------------------------------------------------------------


def mscapi(**meta: Any) -> dict[str, Any]:
    return cr(
        "MSCAPI",
        windows={"store": "Root", "location": "LocalMachine"},
        workloads=[{"kind": "Deployment", "name": "web"}],
        meta=meta,
    )


def agent_pod(node: str, fingerprint: str, mode: str = agent_manifest.SYNC) -> dict[str, Any]:
    return {
        "metadata": {
            "annotations": {
                agent_manifest.ANNOTATION_FINGERPRINT: fingerprint,
                agent_manifest.ANNOTATION_MODE: mode,
            }
        },
        "spec": {"nodeName": node},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def rolled_out(ds: dict[str, Any], desired: int = 2) -> dict[str, Any]:
    out = copy.deepcopy(ds)
    out["metadata"]["generation"] = 1
    out["status"] = {
        "observedGeneration": 1,
        "desiredNumberScheduled": desired,
        "updatedNumberScheduled": desired,
    }
    return out


def test_mscapi_first_adds_the_finalizer_and_the_agents_and_holds_restarts() -> None:
    decision = run(snapshot(mscapi(), workloads=targets(deploy("web"))))
    assert summary(decision)[:5] == [
        ("apply", "Secret", "cobrowse-truststore"),
        ("apply", "ConfigMap", "cobrowse-security"),
        ("event", "OutputsWritten"),
        ("finalizers", agent_manifest.FINALIZER),
        ("apply", "DaemonSet", "cobrowse-mscapi-agent"),
    ]
    # Just created: no agent has reported yet.
    assert condition(decision, "WindowsTrustSynced") == ("False", "SyncInProgress")
    assert restarted(decision) == []
    assert decision.status is not None
    assert "waiting for the Windows agents to sync" in str(decision.status["conditions"])
    assert decision.requeue_after == SETTINGS.rollout_poll


def test_mscapi_synced_agents_release_the_restarts() -> None:
    first = snapshot(mscapi(), workloads=targets(deploy("web")))
    decision = run(first)
    assert decision.rendered is not None
    assert decision.rendered.daemon_set is not None
    fingerprint = decision.rendered.fingerprint
    pods = (agent_pod("win-1", fingerprint), agent_pod("win-2", fingerprint))
    synced = dataclasses.replace(
        settle(first, decision),
        agent=rolled_out(decision.rendered.daemon_set),
        agent_pods=pods,
    )
    after = run(synced)
    assert condition(after, "WindowsTrustSynced") == ("True", "Synced")
    assert after.status is not None
    assert after.status["windows"] == {"desired": 2, "ready": 2}
    assert restarted(after) == ["web"]
    assert not [s for s in summary(after) if s[0] == "finalizers" or s[1:2] == ("DaemonSet",)]


def test_mscapi_agents_syncing_report_the_nodes_not_yet_in_sync() -> None:
    first = snapshot(mscapi(), workloads=targets(deploy("web")))
    decision = run(first)
    assert decision.rendered is not None
    assert decision.rendered.daemon_set is not None
    pods = (agent_pod("win-1", decision.rendered.fingerprint), agent_pod("win-2", FP_OTHER))
    syncing = dataclasses.replace(
        settle(first, decision), agent=rolled_out(decision.rendered.daemon_set), agent_pods=pods
    )
    after = run(syncing)
    assert condition(after, "WindowsTrustSynced") == ("False", "SyncInProgress")
    assert after.status is not None
    assert after.status["windows"] == {"desired": 2, "ready": 1, "notSynced": ["win-2"]}


def test_mscapi_rewriting_the_agents_judges_their_sync_by_what_the_write_changes() -> None:
    first = snapshot(mscapi(), workloads=targets(deploy("web")))
    decision = run(first)
    assert decision.rendered is not None
    assert decision.rendered.daemon_set is not None
    fingerprint = decision.rendered.fingerprint
    pods = (agent_pod("win-1", fingerprint), agent_pod("win-2", fingerprint))
    live = rolled_out(decision.rendered.daemon_set)
    # Only an annotation differs: same generation, the agents stay in sync.
    relabelled = copy.deepcopy(live)
    relabelled["metadata"]["annotations"] = {}
    settled = settle(first, decision)
    after = run(dataclasses.replace(settled, agent=relabelled, agent_pods=pods))
    assert ("apply", "DaemonSet", "cobrowse-mscapi-agent") in summary(after)
    assert condition(after, "WindowsTrustSynced") == ("True", "Synced")
    # The pod template differs: a new generation the DaemonSet controller has yet to roll out.
    older = copy.deepcopy(relabelled)
    older["spec"]["template"]["metadata"]["annotations"][agent_manifest.ANNOTATION_FINGERPRINT] = (
        FP_OTHER
    )
    after = run(dataclasses.replace(settled, agent=older, agent_pods=pods))
    assert ("apply", "DaemonSet", "cobrowse-mscapi-agent") in summary(after)
    assert condition(after, "WindowsTrustSynced") == ("False", "SyncInProgress")
    assert restarted(after) == []


def test_mscapi_agents_refused_by_pod_security_are_reported_as_such() -> None:
    first = snapshot(mscapi(), workloads=targets(deploy("web")))
    decision = run(first)
    assert decision.rendered is not None
    assert decision.rendered.daemon_set is not None
    lacking = rolled_out(decision.rendered.daemon_set)
    lacking["metadata"]["namespace"] = NS
    lacking["status"]["currentNumberScheduled"] = 0
    refusal = {
        "reason": agent_manifest.FAILED_CREATE,
        "message": 'Error creating: pods "x" is forbidden: violates PodSecurity "baseline"',
        "lastTimestamp": "2030-01-01T00:00:05Z",
    }
    refused = dataclasses.replace(settle(first, decision), agent=lacking, agent_events=(refusal,))
    after = run(refused)
    assert condition(after, "WindowsTrustSynced") == ("False", "PodSecurityForbidden")
    assert restarted(after) == []
    # Without the event, the same DaemonSet is only syncing.
    syncing = run(dataclasses.replace(refused, agent_events=()))
    assert condition(syncing, "WindowsTrustSynced") == ("False", "SyncInProgress")


def test_mscapi_never_adopts_someone_elses_daemon_set() -> None:
    theirs = {"kind": "DaemonSet", "metadata": {"name": "cobrowse-mscapi-agent", "labels": {}}}
    decision = run(snapshot(mscapi(), agent=theirs))
    assert condition(decision, "WindowsTrustSynced") == ("False", "OutputConflict")
    assert not [s for s in summary(decision) if s[0] == "finalizers" or s[1:2] == ("DaemonSet",)]


def our_agents(
    mode: str, *, since: str | None = None, windows: dict[str, str] | None = None
) -> dict[str, Any]:
    tls = models.parse(cr("MSCAPI", windows=windows) if windows else mscapi())
    ds = render.agent_daemon_set(
        tls,
        fingerprint=FP_OTHER,
        input_hash="h",
        agent=agent_manifest.AgentConfig(),
        mode=mode,
        cleanup_since=since,
    )
    return rolled_out(ds)


def cleanup_pods(clean: bool) -> tuple[dict[str, Any], ...]:
    pods = [agent_pod(n, FP_OTHER, agent_manifest.CLEANUP) for n in ("win-1", "win-2")]
    if not clean:
        pods[1]["status"]["conditions"][0]["status"] = "False"
    return tuple(pods)


DELETED_AT = NOW - timedelta(seconds=1)
DELETING = {
    "deletionTimestamp": DELETED_AT.strftime("%Y-%m-%dT%H:%M:%SZ"),
    "finalizers": [agent_manifest.FINALIZER, "other/finalizer"],
}


def test_deletion_first_switches_the_agents_to_cleanup() -> None:
    decision = run(snapshot(mscapi(**DELETING), agent=our_agents(agent_manifest.SYNC)))
    assert summary(decision) == [
        ("apply", "DaemonSet", "cobrowse-mscapi-agent"),
        ("event", "CleanupStarted"),
    ]
    [ds] = applied(decision, "DaemonSet")
    template = ds["spec"]["template"]["metadata"]["annotations"]
    assert template[agent_manifest.ANNOTATION_MODE] == agent_manifest.CLEANUP
    assert template[agent_manifest.ANNOTATION_FINGERPRINT] == FP_OTHER
    assert (
        ds["metadata"]["annotations"][agent_manifest.ANNOTATION_CLEANUP_SINCE]
        == (DELETING["deletionTimestamp"])
    )
    assert decision.requeue_after == SETTINGS.rollout_poll


def test_deletion_completes_when_every_agent_reports_clean() -> None:
    snap = snapshot(
        mscapi(**DELETING), agent=our_agents(agent_manifest.CLEANUP), agent_pods=cleanup_pods(True)
    )
    decision = run(snap)
    assert summary(decision) == [
        ("event", "CleanupComplete"),
        ("delete", "cobrowse-mscapi-agent"),
        ("finalizers", "other/finalizer"),  # only ours is released
    ]
    assert decision.requeue_after is None


@pytest.mark.parametrize(("after", "released"), [(60, False), (121, True)])
def test_a_stuck_cleanup_never_blocks_deletion_past_the_timeout(after: int, released: bool) -> None:
    snap = snapshot(
        mscapi(**DELETING), agent=our_agents(agent_manifest.CLEANUP), agent_pods=cleanup_pods(False)
    )
    settings = dataclasses.replace(SETTINGS, cleanup_timeout=timedelta(seconds=120))
    decision = run(snap, settings, DELETED_AT + timedelta(seconds=after))
    if not released:
        assert decision.writes == ()
        assert decision.requeue_after == SETTINGS.rollout_poll
        return
    assert summary(decision) == [
        ("event", "CleanupTimedOut"),
        ("delete", "cobrowse-mscapi-agent"),
        ("finalizers", "other/finalizer"),
    ]


@pytest.mark.parametrize(("after", "released"), [(60, False), (121, True)])
def test_a_stuck_cleanup_after_leaving_mscapi_gives_up_at_the_same_timeout(
    after: int, released: bool
) -> None:
    # The same steps as on deletion, timed from when the agents were switched to cleanup.
    since = DELETED_AT.strftime("%Y-%m-%dT%H:%M:%SZ")
    snap = snapshot(
        cr(meta={"finalizers": [agent_manifest.FINALIZER, "other/finalizer"]}),
        agent=our_agents(agent_manifest.CLEANUP, since=since),
        agent_pods=cleanup_pods(False),
    )
    settings = dataclasses.replace(SETTINGS, cleanup_timeout=timedelta(seconds=120))
    decision = run(snap, settings, DELETED_AT + timedelta(seconds=after))
    steps = summary(decision)
    agents = [s for s in steps if s[0] in ("delete", "finalizers") or "Cleanup" in s[-1]]
    if not released:
        assert agents == []
        assert decision.requeue_after == SETTINGS.rollout_poll
        return
    assert agents == [
        ("event", "CleanupTimedOut"),
        ("delete", "cobrowse-mscapi-agent"),
        ("finalizers", "other/finalizer"),
    ]


def test_deletion_never_touches_someone_elses_daemon_set() -> None:
    theirs = {"kind": "DaemonSet", "metadata": {"name": "cobrowse-mscapi-agent", "labels": {}}}
    decision = run(snapshot(mscapi(**DELETING), agent=theirs))
    assert summary(decision) == [("finalizers", "other/finalizer")]


SID = "S-1-5-21-3623811015-3361044348-30300820-1013"


def test_deletion_of_a_spec_that_no_longer_parses_still_cleans_up() -> None:
    # Written before location User took store CA only: its agents wrote to the user's store.
    was = {"location": "User", "account": SID, "store": "CA"}
    old_shape = cr("MSCAPI", windows={**was, "store": "Root"}, meta=DELETING)
    written = cr("MSCAPI", windows=was)
    live = rolled_out(
        render.agent_daemon_set(
            models.parse(written),
            fingerprint=FP_OTHER,
            input_hash="h",
            agent=agent_manifest.AgentConfig(),
        )
    )
    snap = snapshot(old_shape, agent=live)
    assert snap.tls is None
    decision = run(snap)
    assert summary(decision) == [
        ("apply", "DaemonSet", "cobrowse-mscapi-agent"),
        ("event", "CleanupStarted"),
    ]
    assert decision.requeue_after == SETTINGS.rollout_poll
    # The same change as for a spec that parses, made on the live template.
    [ds] = applied(decision, "DaemonSet")
    assert ds["spec"] == our_agents(agent_manifest.CLEANUP, windows=was)["spec"]
    args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--mode") + 1] == agent_manifest.CLEANUP
    assert args[args.index("--account") + 1] == SID
    annotations = ds["metadata"]["annotations"]
    assert annotations[agent_manifest.ANNOTATION_CLEANUP_SINCE] == DELETING["deletionTimestamp"]

    cleaned = dataclasses.replace(snap, agent=rolled_out(ds), agent_pods=cleanup_pods(True))
    assert summary(run(cleaned)) == [
        ("event", "CleanupComplete"),
        ("delete", "cobrowse-mscapi-agent"),
        ("finalizers", "other/finalizer"),
    ]


def test_deletion_without_our_finalizer_writes_nothing() -> None:
    meta = {**DELETING, "finalizers": ["other/finalizer"]}
    assert run(snapshot(mscapi(**meta))) == decide.Decision("ok")


def test_leaving_mscapi_cleans_up_then_removes_the_agents_and_the_finalizer() -> None:
    body = cr(meta={"finalizers": [agent_manifest.FINALIZER]})
    switching = run(snapshot(body, agent=our_agents(agent_manifest.SYNC)))
    writes = summary(switching)
    at = writes.index(("apply", "DaemonSet", "cobrowse-mscapi-agent"))
    assert writes[at : at + 2] == [
        ("apply", "DaemonSet", "cobrowse-mscapi-agent"),
        ("event", "CleanupStarted"),
    ]
    assert switching.requeue_after == SETTINGS.rollout_poll
    since = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    cleaned = snapshot(
        body, agent=our_agents(agent_manifest.CLEANUP, since=since), agent_pods=cleanup_pods(True)
    )
    done = run(cleaned)
    writes = summary(done)
    at = writes.index(("event", "CleanupComplete"))
    assert writes[at : at + 3] == [
        ("event", "CleanupComplete"),
        ("delete", "cobrowse-mscapi-agent"),
        ("finalizers",),
    ]
    assert done.requeue_after is None


# -- connections and the status ----------------------------------------------------------------


def test_connection_handshakes_become_a_condition_and_ready_reports_them() -> None:
    decision = run(snapshot(cr(), connections=(False, "HandshakeFailed", "configServer: bad")))
    assert condition(decision, "ConnectionsVerified") == ("False", "HandshakeFailed")
    assert condition(decision, "Ready") == ("False", "HandshakeFailed")


def test_merge_patch_names_changes_and_removals() -> None:
    old = {"a": 1, "b": {"x": 1, "y": [1, 2]}, "gone": True}
    new = {"a": 1, "b": {"x": 2, "y": [1, 2]}, "added": "z"}
    assert decide.merge_patch(old, new) == {"gone": None, "b": {"x": 2}, "added": "z"}
    assert decide.merge_patch(new, new) == {}


def test_a_status_key_that_is_gone_is_removed_and_then_nothing_is_written() -> None:
    body: dict[str, Any] = {"metadata": {"name": "cb", "namespace": "ns", "generation": 1}}
    obs = [conditions.Observation("TrustStoreReady", True, "Rendered", "ok")]
    patches = []
    for windows in (
        {"desired": 2, "ready": 1, "notSynced": ["win-2"]},
        {"desired": 2, "ready": 2},
        {"desired": 2, "ready": 2},
    ):
        _, writes = decide.report(body, obs, {"count": 1}, NOW, windows=windows)
        for w in writes:
            if isinstance(w, decide.PatchStatus):
                patches.append(w.patch)
                body["status"] = fake_cluster.merge_patched(body.get("status") or {}, w.patch)
    assert body["status"]["windows"] == {"desired": 2, "ready": 2}
    assert len(patches) == 2
    assert patches[-1]["windows"] == {"ready": 2, "notSynced": None}
