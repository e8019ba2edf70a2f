"""Property test of the reconciler's input path, on the in-memory API server of the unit tests.

Whatever the Secrets and ConfigMaps hold (as the API server hands them over: any bytes, up to
its own size limit), whatever the spec names and whatever already sits where the outputs go,
one reconcile ends either with the outputs written and TrustStoreReady True, or with bad input
reported (TrustStoreReady False with a reason, one-line message, an event) and no output
written; it never raises, stays within a memory budget, and a second reconcile of the same
state writes nothing at all (no retry storm, no event storm).
"""

from __future__ import annotations

import base64
import copy
import os
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cobrowse_tls.api import models, stamps
from cobrowse_tls.core import certs, conditions, decide, limits, render
from cobrowse_tls.core import settings as settings_mod
from cobrowse_tls.engine import reconciler
from unit.fake_cluster import FakeCluster
from unit.strategies import PFX_PASSWORD, cert_bytes, known_material, mostly

EXAMPLES = int(os.environ.get("COBROWSE_HYPOTHESIS_EXAMPLES", "150"))
RANDOM = os.environ.get("COBROWSE_HYPOTHESIS_RANDOM") == "1"
MEMORY_BUDGET = 96 * 1024 * 1024
NOW = datetime.now(UTC)  # the test certificates are valid around the real clock
NAMESPACE = "genesys"


def _secret(name: str, data: dict[str, bytes], labels: dict[str, str] | None = None) -> Any:
    meta: dict[str, Any] = {"name": name, "namespace": NAMESPACE}
    if labels:
        meta["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def _config_map(name: str, data: dict[str, bytes]) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NAMESPACE},
    }
    for key, value in data.items():
        try:
            obj.setdefault("data", {})[key] = value.decode("utf-8")
        except UnicodeDecodeError:
            obj.setdefault("binaryData", {})[key] = base64.b64encode(value).decode()
    return obj


OWNED = {stamps.LABEL_MANAGED_BY: stamps.MANAGER, stamps.LABEL_OWNER: "cobrowse"}


@st.composite
def source_data(draw: st.DrawFn) -> bytes:
    kind = draw(mostly("cert", "big", "many"))
    if kind == "cert":
        return draw(cert_bytes())
    if kind == "many":
        # Past the certificates-per-source limit, within the API server's size limit.
        return known_material()["root.pem"] * (limits.CERTIFICATES_PER_SOURCE + 1)
    return b"A" * (limits.SOURCE_BYTES - 10) + draw(st.binary(max_size=20))


@st.composite
def state(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A CobrowseTLS as the API server hands it over and the objects of its namespace."""
    provider = draw(st.sampled_from(["PEM", "JKS", "MSCAPI", "Disabled"]))
    spec: dict[str, Any] = {
        "provider": provider,
        "application": {"type": "Node", "name": "CB_Node_1"},
    }
    objects: list[dict[str, Any]] = []
    if provider != "Disabled":
        sources: list[dict[str, Any]] = []
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["secret", "configMap", "inline", "pfx", "repeat"]))
            name = draw(mostly("genesys-ca", "cobrowse-truststore", "cobrowse-security"))
            if kind == "inline":
                sources.append({"inline": draw(cert_bytes()).decode("utf-8", "replace")})
            elif kind == "pfx":
                pfx = known_material()[draw(st.sampled_from(["modern.pfx", "3des.pfx"]))]
                password = draw(mostly(PFX_PASSWORD, b"\xff\xfe", b"wrong", b""))
                objects.append(_secret(name, {"ca.pfx": pfx, "pass": password}))
                sources.append({"secret": {"name": name, "key": "ca.pfx", "passwordKey": "pass"}})
            elif kind == "repeat":
                # One key named many times: parsed once per source, bounded by all-sources.
                data = b"A" * (limits.SOURCE_BYTES - 1)
                objects.append(_secret(name, {"ca.crt": data}))
                sources += [{"secret": {"name": name, "key": "ca.crt"}}] * 9
            else:
                data = draw(source_data())
                if draw(mostly(True, False)):
                    build = _secret if kind == "secret" else _config_map
                    objects.append(build(name, {"ca.crt": data}))
                sources.append({kind: {"name": name, "key": "ca.crt"}})
        spec["trustedCA"] = {"sources": sources}
    if provider == "JKS" and draw(st.booleans()):
        name = draw(mostly("jks-password", "cobrowse-truststore"))
        spec["truststore"] = {"passwordSecretRef": {"name": name, "key": "password"}}
        password = draw(mostly(b"s3cret-Password", b"", b"\xff", b"a\nb", b"x" * 2000))
        objects.append(_secret(name, {"password": password}))
    # What already sits where the outputs go: nothing, ours, or someone else's.
    existing = draw(mostly("none", "ours", "theirs"))
    if existing != "none":
        labels = OWNED if existing == "ours" else None
        objects.append(_secret("cobrowse-truststore", {"truststore-password": b"kept"}, labels))
    body = {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "metadata": {
            "name": "cobrowse",
            "namespace": NAMESPACE,
            "uid": "u1",
        },
        "spec": spec,
    }
    # The last object of a name wins, as in a namespace.
    return body, list({(o["kind"], o["metadata"]["name"]): o for o in objects}.values())


def _reconcile(fake: FakeCluster) -> decide.Decision:
    body = fake.get(models.KIND, NAMESPACE, "cobrowse")
    assert body is not None
    return reconciler.reconcile(fake, body, settings_mod.Settings(), NOW)


def _others(fake: FakeCluster) -> dict[Any, Any]:
    """Everything in the fake but the CobrowseTLS itself (whose status the reconcile writes)."""
    return {k: v for k, v in fake.objects.items() if k[0] != models.KIND}


def _applied(fake: FakeCluster) -> list[tuple[str, str, str]]:
    return [r for r in fake.requests if r[0] == "apply"]


@settings(
    max_examples=EXAMPLES,
    derandomize=not RANDOM,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(state())
def test_reconcile_input_contract(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    body, objects = case
    fake = FakeCluster(*objects, body)
    before = copy.deepcopy(_others(fake))
    tracemalloc.start()
    try:
        decision = _reconcile(fake)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BUDGET, f"{peak} bytes at peak"
    assert decision.result in ("ok", "invalid"), decision
    event(f"result {decision.result}")
    assert decision.status is not None
    ready = conditions.find(decision.status["conditions"], conditions.TRUST_STORE_READY)
    assert ready is not None
    assert "\n" not in ready["message"]
    if decision.result == "invalid":
        event(str(ready["reason"]))
        assert ready["status"] == "False"
        assert ready["reason"].isalpha()
        assert ready["reason"][0].isupper()
        assert _applied(fake) == []
        assert _others(fake) == before  # the last good outputs stay as they were
        assert [e[:2] for e in fake.events] == [("Warning", ready["reason"])]
        assert decision.requeue_after is None
    else:
        assert ready["status"] == "True"
        if body["spec"]["provider"] != "Disabled":
            secret = fake.get("Secret", NAMESPACE, "cobrowse-truststore")
            assert secret is not None
            assert secret["metadata"]["labels"] == {**secret["metadata"]["labels"], **OWNED}
            bundle = base64.b64decode(secret["data"][render.CA_PEM])
            assert certs.parse_source(bundle, source="ca.pem")
    # Level-based and quiet: the same state again is not one more write or event.
    fake.requests.clear()
    fake.events.clear()
    again = _reconcile(fake)
    assert again.result == decision.result
    assert (fake.writes, fake.events) == ([], [])


def _cr(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "metadata": {"name": "cobrowse", "namespace": NAMESPACE, "uid": "u1"},
        "spec": {"application": {"type": "Node", "name": "CB"}, **spec},
    }


def _pem_source(name: str, key: str = "ca.crt", **extra: str) -> dict[str, Any]:
    return {"provider": "PEM", "trustedCA": {"sources": [{"secret": {"name": name, "key": key,
                                                                     **extra}}]}}  # fmt: skip


# The inputs of issue 13 that reach the operator: each one a condition and one event, no
# output written, no exception (which would mean retries forever).
OPERATOR_CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]], str, str]] = [
    (
        "PKCS#12 password that is not UTF-8",
        _pem_source("pfx", "ca.pfx", passwordKey="pass"),
        [_secret("pfx", {"ca.pfx": known_material()["modern.pfx"], "pass": b"\xff\xfe"})],
        "InvalidPassword",
        "secret pfx key ca.pfx: the PKCS#12 password is not UTF-8 text",
    ),
    (
        "a source that is the operator's own truststore Secret",
        _pem_source("cobrowse-truststore"),
        [_secret("cobrowse-truststore", {"ca.crt": b"x"}, OWNED)],
        "OutputConflict",
        "spec.trustedCA.sources[0]: secret 'cobrowse-truststore' is this CobrowseTLS's"
        " truststore Secret: it would be overwritten; rename the source or set"
        " spec.truststore.secretName",
    ),
    (
        "more certificates than the limit",
        _pem_source("ca"),
        [_secret("ca", {"ca.crt": b"-----BEGIN CERTIFICATE-----\n" * 1001})],
        "InputTooLarge",
        "secret ca key ca.crt: more than 1000 PEM blocks in one source",
    ),
    (
        "a source larger than the limit",
        _pem_source("ca"),
        [_secret("ca", {"ca.crt": b"A" * (limits.SOURCE_BYTES + 1)})],
        "InputTooLarge",
        "secret ca key ca.crt: 1048577 bytes, more than the limit of 1048576",
    ),
]


@pytest.mark.parametrize(
    ("name", "spec", "objects", "reason", "message"),
    OPERATOR_CASES,
    ids=[c[0] for c in OPERATOR_CASES],
)
def test_bad_input_is_a_condition_and_an_event(
    name: str, spec: dict[str, Any], objects: list[dict[str, Any]], reason: str, message: str
) -> None:
    fake = FakeCluster(*objects, _cr(spec))
    before = copy.deepcopy(_others(fake))
    decision = _reconcile(fake)
    assert decision.result == "invalid"
    assert decision.status is not None
    ready = conditions.find(decision.status["conditions"], conditions.TRUST_STORE_READY)
    assert ready is not None
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", reason, message)
    assert [e[:2] for e in fake.events] == [("Warning", reason)]
    assert _applied(fake) == []
    assert _others(fake) == before
