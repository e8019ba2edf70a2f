"""The operator against the real control plane: reconcile, status, events, watches, drift."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

import pki as pkim
import tls_servers
from cobrowse_tls.api import stamps
from e2e.cluster_backends import E2ECluster
from e2e.operator_support import (
    IDENTITY_ARGS,
    Api,
    OperatorProcess,
    cobrowse_tls,
    condition,
    config_map,
    dump,
    operator_fixture,
    require_condition,
    secret,
    secret_bytes,
    wait_for,
)

RESYNC = 2.0  # seconds: short, so that "several resync periods" fit in a test


operator_proc = operator_fixture("--resync", str(RESYNC))


def ready(api: Api, ns: str, name: str, status: str = "True") -> dict[str, Any] | None:
    obj = api.get("CobrowseTLS", ns, name)
    cond = condition(obj, "Ready")
    gen = (obj or {}).get("metadata", {}).get("generation")
    if (
        cond
        and cond["status"] == status
        and obj is not None
        and obj["status"].get("observedGeneration") == gen
    ):
        return obj
    return None


def trust_reason(api: Api, ns: str, name: str, reason: str) -> dict[str, Any] | None:
    obj = api.get("CobrowseTLS", ns, name)
    cond = condition(obj, "TrustStoreReady")
    return obj if cond and cond["reason"] == reason else None


def pem_spec(*sources: dict[str, Any], provider: str = "PEM", **extra: Any) -> dict[str, Any]:
    spec = {
        "provider": provider,
        "application": {"type": "Cluster", "name": "CB_Cluster"},
        "trustedCA": {"sources": list(sources)},
        "configServer": {"host": "confserv.genesys.svc", "port": 8889},
    }
    spec.update(extra)
    return spec


def src(name: str, key: str = "ca.crt", **kw: str) -> dict[str, Any]:
    return {"secret": {"name": name, "key": key, **kw}}


def render_offline(tmp_path: Path, *objs: dict[str, Any]) -> dict[str, bytes]:
    """The files `cobrowse-tls render` writes for the same input."""
    (tmp_path / "in.yaml").write_text(dump(*objs))
    out = tmp_path / "out"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cobrowse_tls.cli",
            "render",
            "-f",
            str(tmp_path / "in.yaml"),
            "--output-dir",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return {p.name: p.read_bytes() for p in out.iterdir()}


def fingerprint(obj: dict[str, Any]) -> str:
    return str(obj["status"]["trustStore"]["fingerprint"])


pytestmark = pytest.mark.usefixtures("operator_proc")


def test_pem_happy_path_matches_offline_render(
    api: Api, namespace: str, pki: pkim.PKI, tmp_path: Path
) -> None:
    source = secret(namespace, "genesys-ca", {"ca.crt": pkim.pem(pki.root, pki.intermediate)})
    cr = cobrowse_tls(namespace, "cobrowse", pem_spec(src("genesys-ca")))
    api.apply(source)
    api.apply(cr)
    obj = wait_for("Ready", lambda: ready(api, namespace, "cobrowse"))

    ts = obj["status"]["trustStore"]
    assert ts["secretName"] == "cobrowse-truststore"
    assert ts["configMapName"] == "cobrowse-security"
    assert ts["count"] == 2
    assert [c["sha256"] for c in ts["certificates"]] == [pki.root.sha256, pki.intermediate.sha256]
    assert require_condition(obj, "TrustStoreReady")["reason"] == "Rendered"
    assert require_condition(obj, "CertificatesValid")["reason"] == "Valid"

    out_secret = api.get("Secret", namespace, "cobrowse-truststore")
    out_map = api.get("ConfigMap", namespace, "cobrowse-security")
    assert out_secret is not None
    assert out_map is not None
    assert set(out_secret["data"]) == {"ca.pem"}
    offline = render_offline(tmp_path, source, cr)
    assert secret_bytes(out_secret, "ca.pem") == offline["ca.pem"]
    for key in ("security.cfg", "setenv.sh", "setenv.bat"):
        assert out_map["data"][key].encode() == offline[key], key
    for out in (out_secret, out_map):
        labels = out["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "cobrowse-tls-operator"
        assert labels["tls.cobrowse.io/owner"] == "cobrowse"
        assert out["metadata"]["annotations"]["tls.cobrowse.io/input-hash"].startswith("sha256:")
        owner = out["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == (
            "CobrowseTLS",
            "cobrowse",
            True,
        )
        managers = {m["manager"] for m in out["metadata"]["managedFields"]}
        assert "cobrowse-tls-operator" in managers

    # A healthy new CR posts one event, Ready, which also names the outputs written. Its
    # conditions born True (TrustStoreReady, CertificatesValid) get none of their own, nor
    # does the first write of its outputs (docs/operator.md).
    def ready_events() -> list[dict[str, Any]] | None:
        found = api.events(namespace, "cobrowse")
        return found if found else None

    # Events are posted in the order decided, Ready last: any other would be there already.
    events = wait_for("the new CR's events", ready_events)
    assert [e["reason"] for e in events] == ["Ready"]
    assert (
        "wrote Secret cobrowse-truststore, ConfigMap cobrowse-security (" in (events[0]["message"])
    )


def test_jks_happy_path_opens_with_keytool(
    api: Api, namespace: str, pki: pkim.PKI, tmp_path: Path
) -> None:
    password = "s3cret-jks-Password"
    objs = [
        secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}),
        config_map(namespace, "corp", {"bundle.pem": pkim.pem(pki.other_root).decode()}),
        secret(namespace, "jks-password", {"password": password.encode()}),
        cobrowse_tls(
            namespace,
            "cb",
            pem_spec(
                src("ca"),
                {"configMap": {"name": "corp", "key": "bundle.pem"}},
                provider="JKS",
                truststore={"passwordSecretRef": {"name": "jks-password", "key": "password"}},
                connections=[{"name": "MessageServer", "host": "msgserver", "port": 9021}],
            ),
        ),
    ]
    for o in objs:
        api.apply(o)
    obj = wait_for("Ready", lambda: ready(api, namespace, "cb"))
    out = api.get("Secret", namespace, "cb-truststore")
    assert out is not None
    assert set(out["data"]) == {
        "ca.pem",
        "truststore.jks",
        "truststore-password",
        "security-options.cfg",
        "hash-key",
    }
    assert secret_bytes(out, "truststore-password") == password.encode()
    # The whole [security] section for Genesys Administrator, password included: in the Secret.
    assert secret_bytes(out, "security-options.cfg") == (
        b"[security]\nprovider=JKS\ntrusted-ca=/opt/genesys/cobrowse/security/truststore.jks\n"
        b"truststore-password=" + password.encode() + b"\n"
    )
    jks = tmp_path / "t.jks"
    jks.write_bytes(secret_bytes(out, "truststore.jks"))
    listing = subprocess.run(
        ["keytool", "-list", "-keystore", str(jks), "-storepass", password],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert listing.count("trustedCertEntry") == 2
    assert "root," in listing
    assert "root-2," in listing
    offline = render_offline(tmp_path, *objs)
    assert secret_bytes(out, "truststore.jks") == offline["truststore.jks"]
    assert secret_bytes(out, "security-options.cfg") == offline["security-options.cfg"]
    cm = api.get("ConfigMap", namespace, "cb-security")
    assert cm is not None
    assert "trusted-ca=/opt/genesys/cobrowse/security/truststore.jks" in cm["data"]["security.cfg"]
    assert set(cm["data"]) == {"security.cfg", "setenv.sh", "setenv.bat", "connections.yaml"}
    assert cm["data"]["connections.yaml"].encode() == offline["connections.yaml"]
    # Status, events and the ConfigMap (as the API server stores it) never carry the password.
    assert password not in str(obj["status"])
    assert password not in json.dumps(cm)
    assert "truststore-password=" not in json.dumps(cm)
    assert all(password not in e["message"] for e in api.events(namespace, "cb"))


def test_generated_jks_password_survives_reconciles_and_restart(
    api: Api, namespace: str, pki: pkim.PKI, operator_proc: OperatorProcess | None
) -> None:
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(cobrowse_tls(namespace, "cb", pem_spec(src("ca"), provider="JKS")))
    wait_for("Ready", lambda: ready(api, namespace, "cb"))
    first = api.get("Secret", namespace, "cb-truststore")
    assert first is not None
    password = secret_bytes(first, "truststore-password")
    assert len(password) >= 32
    # A spec change re-renders the JKS; the password stays.
    api.merge_patch("CobrowseTLS", namespace, "cb", {"spec": {"truststore": {"alias": "genesys"}}})
    wait_for("Ready after the spec change", lambda: ready(api, namespace, "cb"))
    if operator_proc is not None:
        operator_proc.restart()
    api.merge_patch("CobrowseTLS", namespace, "cb", {"spec": {"truststore": {"alias": "other"}}})
    wait_for("Ready after restart", lambda: ready(api, namespace, "cb"))
    later = api.get("Secret", namespace, "cb-truststore")
    assert later is not None
    assert secret_bytes(later, "truststore-password") == password
    assert secret_bytes(later, "truststore.jks") != secret_bytes(first, "truststore.jks")
    # The key of the published hashes is kept the same way (a new one would restart workloads).
    assert secret_bytes(later, "hash-key") == secret_bytes(first, "hash-key")


def test_rotation_and_sources_added_and_removed(api: Api, namespace: str, pki: pkim.PKI) -> None:
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(secret(namespace, "ca2", {"ca.crt": pkim.pem(pki.intermediate)}))
    api.apply(cobrowse_tls(namespace, "cb", pem_spec(src("ca"))))
    obj = wait_for("Ready", lambda: ready(api, namespace, "cb"))
    assert obj["status"]["trustStore"]["count"] == 1
    security = api.get("ConfigMap", namespace, "cb-security")
    assert security is not None

    # Rotation: the source Secret now holds another CA.
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.other_root)}))

    def rotated() -> bool:
        out = api.get("Secret", namespace, "cb-truststore")
        return (
            out is not None
            and secret_bytes(out, "ca.pem").count(b"BEGIN CERT") == 1
            and (
                pki.other_root.pem.decode().splitlines()[1] in secret_bytes(out, "ca.pem").decode()
            )
        )

    wait_for("the rotated CA in the Secret", rotated)
    obj = wait_for(
        "status of the rotation",
        lambda: (
            o
            if (o := api.get("CobrowseTLS", namespace, "cb"))
            and o["status"]["trustStore"]["certificates"][0]["sha256"] == pki.other_root.sha256
            else None
        ),
    )
    # The option files do not depend on the CAs: the rotation left the ConfigMap unwritten.
    after = api.get("ConfigMap", namespace, "cb-security")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == security["metadata"]["resourceVersion"]

    # A second source added, then the first removed.
    api.apply(cobrowse_tls(namespace, "cb", pem_spec(src("ca"), src("ca2"))))
    obj = wait_for(
        "two CAs",
        lambda: (
            (o := ready(api, namespace, "cb")) and o["status"]["trustStore"]["count"] == 2 and o
        ),
    )
    api.apply(cobrowse_tls(namespace, "cb", pem_spec(src("ca2"))))
    obj = wait_for(
        "one CA",
        lambda: (
            (o := ready(api, namespace, "cb")) and o["status"]["trustStore"]["count"] == 1 and o
        ),
    )
    assert obj["status"]["trustStore"]["certificates"][0]["sha256"] == pki.intermediate.sha256
    out = api.get("Secret", namespace, "cb-truststore")
    assert out is not None
    assert secret_bytes(out, "ca.pem").count(b"BEGIN CERTIFICATE") == 1


def test_drift_is_repaired(api: Api, namespace: str, pki: pkim.PKI) -> None:
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(cobrowse_tls(namespace, "cb", pem_spec(src("ca"))))
    wait_for("Ready", lambda: ready(api, namespace, "cb"))
    good_secret = api.get("Secret", namespace, "cb-truststore")
    good_map = api.get("ConfigMap", namespace, "cb-security")
    assert good_secret is not None
    assert good_map is not None

    api.merge_patch(
        "Secret",
        namespace,
        "cb-truststore",
        {"data": {"ca.pem": base64.b64encode(b"tampered").decode()}},
    )
    wait_for(
        "the Secret edit repaired",
        lambda: (
            (o := api.get("Secret", namespace, "cb-truststore"))
            and o["data"] == good_secret["data"]
        ),
    )
    api.merge_patch("ConfigMap", namespace, "cb-security", {"data": {"setenv.sh": "echo pwned"}})
    wait_for(
        "the ConfigMap edit repaired",
        lambda: (
            (o := api.get("ConfigMap", namespace, "cb-security")) and o["data"] == good_map["data"]
        ),
    )
    api.delete("Secret", namespace, "cb-truststore")
    wait_for(
        "the deleted Secret recreated",
        lambda: (
            (o := api.get("Secret", namespace, "cb-truststore"))
            and o["data"] == good_secret["data"]
        ),
    )
    api.delete("ConfigMap", namespace, "cb-security")
    wait_for(
        "the deleted ConfigMap recreated",
        lambda: (
            (o := api.get("ConfigMap", namespace, "cb-security")) and o["data"] == good_map["data"]
        ),
    )


BAD_INPUTS = [
    # (id, source secret data, source entry, expected reason, message fragment)
    (
        "garbage",
        {"ca.crt": b"\x00\x01 definitely not a certificate"},
        src("bad"),
        "InvalidCertificate",
        "secret bad key ca.crt",
    ),
    (
        "truncated-pem",
        {"ca.crt": b"-----BEGIN CERTIFICATE-----\nMIIB\n"},
        src("bad"),
        "InvalidCertificate",
        "secret bad key ca.crt",
    ),
    (
        "wrong-p12-password",
        "p12",
        src("bad", "ca.p12", passwordKey="pass"),
        "WrongPassword",
        "secret bad key ca.p12",
    ),
    ("leaf", "leaf", src("bad"), "NotACertificateAuthority", "localhost"),
    ("only-expired", "expired", src("bad"), "NoCertificates", "expired"),
    ("missing-key", {"other": b"x"}, src("bad"), "SourceNotFound", "has no key 'ca.crt'"),
    ("missing-secret", None, src("bad"), "SourceNotFound", "secret 'bad' not found"),
    (
        "missing-password-key",
        "p12-no-pass",
        src("bad", "ca.p12", passwordKey="pass"),
        "PasswordNotFound",
        "no password key 'pass'",
    ),
]


@pytest.mark.parametrize(
    ("data", "entry", "reason", "fragment"),
    [b[1:] for b in BAD_INPUTS],
    ids=[b[0] for b in BAD_INPUTS],
)
def test_bad_input_keeps_last_good_output_and_recovers(
    api: Api,
    namespace: str,
    pki: pkim.PKI,
    data: Any,
    entry: dict[str, Any],
    reason: str,
    fragment: str,
) -> None:
    api.apply(secret(namespace, "good", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(cobrowse_tls(namespace, "cb", pem_spec(src("good"))))
    wait_for("Ready", lambda: ready(api, namespace, "cb"))
    good = {
        k: api.get(k, namespace, n)
        for k, n in (("Secret", "cb-truststore"), ("ConfigMap", "cb-security"))
    }

    if data == "p12":
        data = {"ca.p12": pkim.pkcs12_modern(pki.root), "pass": b"not-the-password"}
    elif data == "p12-no-pass":
        data = {"ca.p12": pkim.pkcs12_modern(pki.root)}
    elif data == "leaf":
        data = {"ca.crt": pkim.pem(pki.server)}
    elif data == "expired":
        data = {"ca.crt": pkim.pem(pki.expired_ca, pki.expired_ca2)}
    if data is not None:
        api.apply(secret(namespace, "bad", data))
    # Expired CAs beside a good one are only left out (CertificatesValid says so): with
    # nothing else to trust, the source alone is what makes the input unusable.
    sources = [entry] if reason == "NoCertificates" else [src("good"), entry]
    api.apply(cobrowse_tls(namespace, "cb", pem_spec(*sources)))

    obj = wait_for(f"TrustStoreReady {reason}", lambda: trust_reason(api, namespace, "cb", reason))
    cond = condition(obj, "TrustStoreReady")
    assert cond is not None
    assert cond["status"] == "False"
    assert fragment in cond["message"], cond["message"]
    assert require_condition(obj, "Ready")["status"] == "False"
    wait_for(
        f"a {reason} event",
        lambda: [
            e
            for e in api.events(namespace, "cb")
            if e["reason"] == reason and e["type"] == "Warning"
        ],
    )
    # The last good outputs stay exactly as they were, across resyncs too.
    time.sleep(RESYNC * 1.5)
    for (kind, name), before in zip(
        (("Secret", "cb-truststore"), ("ConfigMap", "cb-security")), good.values(), strict=True
    ):
        now = api.get(kind, namespace, name)
        assert now is not None
        assert before is not None
        assert now["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], kind

    # Fixed input: recovers by itself.
    api.apply(
        secret(
            namespace,
            "bad",
            {
                "ca.crt": pkim.pem(pki.intermediate),
                "ca.p12": pkim.pkcs12_modern(pki.intermediate),
                "pass": pkim.PASSWORD,
            },
        )
    )
    obj = wait_for(
        "recovery",
        lambda: (
            (o := ready(api, namespace, "cb"))
            and o["status"]["trustStore"]["count"] == len(sources)
            and o
        ),
    )
    assert require_condition(obj, "TrustStoreReady")["reason"] == "Rendered"


def test_idle_operator_writes_nothing(
    api: Api, namespace: str, pki: pkim.PKI, operator_proc: OperatorProcess | None
) -> None:
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(cobrowse_tls(namespace, "cb", pem_spec(src("ca"), provider="JKS")))
    wait_for("Ready", lambda: ready(api, namespace, "cb"))
    time.sleep(1.0)  # let the events of the first reconcile settle

    def versions() -> dict[str, str]:
        out = {}
        for kind, name in (
            ("Secret", "cb-truststore"),
            ("ConfigMap", "cb-security"),
            ("CobrowseTLS", "cb"),
        ):
            obj = api.get(kind, namespace, name)
            assert obj is not None
            out[kind] = obj["metadata"]["resourceVersion"]
        return out

    before = versions()
    events_before = len(api.events(namespace, "cb"))
    time.sleep(RESYNC * 3)
    if operator_proc is not None:
        operator_proc.restart()
        time.sleep(RESYNC * 3)
    assert versions() == before
    assert len(api.events(namespace, "cb")) == events_before
    cr = api.get("CobrowseTLS", namespace, "cb")
    assert cr is not None
    # kopf keeps no bookkeeping annotations on the resource.
    annotations = cr["metadata"].get("annotations") or {}
    assert not [k for k in annotations if "kopf" in k], annotations


def test_expiry_conditions(api: Api, namespace: str, pki: pkim.PKI) -> None:
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root, pki.expired_ca)}))
    api.apply(cobrowse_tls(namespace, "cb", pem_spec(src("ca"))))
    obj = wait_for(
        "CertificatesValid Expired",
        lambda: (
            (o := api.get("CobrowseTLS", namespace, "cb"))
            and (c := condition(o, "CertificatesValid"))
            and c["reason"] == "Expired"
            and o
        ),
    )
    assert obj["status"]["trustStore"]["count"] == 1  # the expired CA is left out
    assert require_condition(obj, "TrustStoreReady")["status"] == "True"
    out = api.get("Secret", namespace, "cb-truststore")
    assert out is not None
    assert secret_bytes(out, "ca.pem").count(b"BEGIN CERTIFICATE") == 1


@contextlib.contextmanager
def own_operator(
    cluster: E2ECluster, shared: OperatorProcess | None, log: Path, *args: str
) -> Iterator[OperatorProcess]:
    """An operator with other options, while the shared one is stopped (no two writers)."""
    if shared is None:
        pytest.skip("needs to stop the shared operator, which runs in the cluster")
    shared.stop()
    # The same identity (the chart's ServiceAccount, under its admission policy).
    own = OperatorProcess(shared.kubeconfig, log, *IDENTITY_ARGS, *args)
    own.start()
    try:
        yield own
    finally:
        own.stop()
        shared.start()


def test_expiring_soon_with_a_wide_window(
    cluster: E2ECluster,
    api: Api,
    namespace: str,
    pki: pkim.PKI,
    tmp_path: Path,
    operator_proc: OperatorProcess | None,
) -> None:
    # The test CA lives 365 days: with a 400-day window it is "expiring soon".
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    with own_operator(cluster, operator_proc, tmp_path / "op.log", "--expiry-window", "400"):
        api.apply(cobrowse_tls(namespace, "cb", pem_spec(src("ca"))))
        obj = wait_for(
            "ExpiringSoon",
            lambda: (
                (o := api.get("CobrowseTLS", namespace, "cb"))
                and (c := condition(o, "CertificatesValid"))
                and c["reason"] == "ExpiringSoon"
                and o
            ),
        )
    assert require_condition(obj, "CertificatesValid")["status"] == "False"
    assert require_condition(obj, "Ready")["status"] == "False"
    assert require_condition(obj, "TrustStoreReady")["status"] == "True"
    assert [e for e in api.events(namespace, "cb") if e["reason"] == "ExpiringSoon"]


def test_namespaced_operator_ignores_other_namespaces(
    cluster: E2ECluster,
    api: Api,
    namespace: str,
    pki: pkim.PKI,
    tmp_path: Path,
    operator_proc: OperatorProcess | None,
) -> None:
    watched = f"{namespace}-w"
    api.core.create_namespace(client.V1Namespace.model_validate({"metadata": {"name": watched}}))
    try:
        for ns in (namespace, watched):
            api.apply(secret(ns, "ca", {"ca.crt": pkim.pem(pki.root)}))
        with own_operator(cluster, operator_proc, tmp_path / "op.log", "--namespace", watched):
            for ns in (namespace, watched):
                api.apply(cobrowse_tls(ns, "cb", pem_spec(src("ca"))))
            wait_for("Ready in the watched namespace", lambda: ready(api, watched, "cb"))
            time.sleep(2)
            ignored = api.get("CobrowseTLS", namespace, "cb")
            assert ignored is not None
            assert ignored.get("status") is None
            assert api.get("Secret", namespace, "cb-truststore") is None
    finally:
        api.core.delete_namespace(watched)


def test_deleting_the_cr_removes_outputs(api: Api, namespace: str, pki: pkim.PKI) -> None:
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(cobrowse_tls(namespace, "cb", pem_spec(src("ca"))))
    wait_for("Ready", lambda: ready(api, namespace, "cb"))
    api.delete("CobrowseTLS", namespace, "cb")
    wait_for(
        "the garbage collector to remove the outputs",
        lambda: (
            api.get("Secret", namespace, "cb-truststore") is None
            and api.get("ConfigMap", namespace, "cb-security") is None
        ),
        timeout=60,
    )
    assert api.get("Secret", namespace, "ca") is not None  # sources are never touched


def test_printer_columns(cluster: E2ECluster, api: Api, namespace: str, pki: pkim.PKI) -> None:
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root, pki.intermediate)}))
    api.apply(cobrowse_tls(namespace, "cb", pem_spec(src("ca"))))
    wait_for("Ready", lambda: ready(api, namespace, "cb"))
    out = cluster.kubectl("get", "cbtls", "-n", namespace).stdout
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "PROVIDER", "READY", "CERTIFICATES", "EXPIRES", "AGE"]
    assert row.split()[:4] == ["cb", "PEM", "True", "2"]
    # The earliest expiry, as a timestamp (the test CAs live a year).
    assert row.split()[4] == stamps.rfc3339(pki.root.cert.not_valid_after_utc)


def test_connections_verified_against_real_tls_servers(
    cluster: E2ECluster,
    api: Api,
    namespace: str,
    pki: pkim.PKI,
    tmp_path: Path,
    servers: dict[str, int],
    operator_proc: OperatorProcess | None,
) -> None:
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    good = {"name": "MessageServer", "host": "127.0.0.1", "port": servers["good"]}
    bad = {"name": "ChatServer", "host": "127.0.0.1", "port": servers["other-ca"]}
    spec = {
        "provider": "PEM",
        "application": {"name": "CB_Cluster"},
        "trustedCA": {"sources": [src("ca")]},
        "connections": [good],
    }
    with own_operator(cluster, operator_proc, tmp_path / "op.log", "--verify-connections"):
        api.apply(cobrowse_tls(namespace, "cb", spec))
        obj = wait_for("Ready with verified connections", lambda: ready(api, namespace, "cb"))
        cond = condition(obj, "ConnectionsVerified")
        assert cond is not None
        assert (cond["status"], cond["reason"]) == ("True", "Verified")
        api.apply(cobrowse_tls(namespace, "cb", {**spec, "connections": [good, bad]}))
        obj = wait_for(
            "HandshakeFailed",
            lambda: (
                (o := api.get("CobrowseTLS", namespace, "cb"))
                and (c := condition(o, "ConnectionsVerified"))
                and c["reason"] == "HandshakeFailed"
                and o
            ),
        )
    cond = condition(obj, "ConnectionsVerified")
    assert cond is not None
    assert f"ChatServer 127.0.0.1:{servers['other-ca']}" in cond["message"]
    assert require_condition(obj, "Ready")["status"] == "False"


def test_deleted_source_is_reported_and_the_outputs_stay(
    api: Api, namespace: str, pki: pkim.PKI
) -> None:
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(cobrowse_tls(namespace, "cb", pem_spec(src("ca"))))
    wait_for("Ready", lambda: ready(api, namespace, "cb"))
    before = api.get("Secret", namespace, "cb-truststore")
    assert before is not None
    api.delete("Secret", namespace, "ca")
    obj = wait_for("SourceNotFound", lambda: trust_reason(api, namespace, "cb", "SourceNotFound"))
    assert "secret 'ca' not found" in require_condition(obj, "TrustStoreReady")["message"]
    after = api.get("Secret", namespace, "cb-truststore")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    wait_for("Ready again", lambda: ready(api, namespace, "cb"))


def test_operations_endpoints_metrics_liveness_and_json_logs(
    cluster: E2ECluster,
    api: Api,
    namespace: str,
    pki: pkim.PKI,
    tmp_path: Path,
    operator_proc: OperatorProcess | None,
) -> None:
    metrics_port, live_port = tls_servers.free_port(), tls_servers.free_port()
    args = (
        "--metrics-port", str(metrics_port), "--metrics-address", "127.0.0.1",
        "--liveness", f"http://127.0.0.1:{live_port}/healthz", "--log-format", "json",
    )  # fmt: skip
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    with own_operator(cluster, operator_proc, tmp_path / "op.log", *args) as own:
        api.apply(cobrowse_tls(namespace, "cb", pem_spec(src("ca"))))
        wait_for("Ready", lambda: ready(api, namespace, "cb"))
        # The status is written before the reconcile returns and its metrics are set (the
        # expiry gauge last): wait for them too.
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        gauge = ("cobrowse_tls_certificate_expiry_timestamp_seconds{", f'"{namespace}"')
        text = wait_for("the expiry gauge", lambda: _fetch_with(url, *gauge))
        assert "cobrowse_tls_reconcile_duration_seconds_bucket" in text
        assert 'cobrowse_tls_reconciles_total{result="ok"}' in text
        expiry = pki.root.cert.not_valid_after_utc.timestamp()
        [line] = [
            ln
            for ln in text.splitlines()
            if ln.startswith("cobrowse_tls_certificate_expiry_timestamp_seconds{")
            and f'namespace="{namespace}"' in ln
            and 'name="cb"' in ln
        ]
        assert float(line.split()[-1]) == expiry
        live = wait_for(
            "the liveness endpoint",
            lambda: _get(f"http://127.0.0.1:{live_port}/healthz"),
        )
        assert live == 200
        log_lines = [ln for ln in own.log().splitlines() if ln.startswith("{")]
        assert log_lines
        assert all("message" in json.loads(ln) for ln in log_lines)


def _fetch(url: str) -> str:
    assert url.startswith("http://127.0.0.1:")  # only the operator's own local endpoints
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
        return str(response.read().decode())


def _fetch_with(url: str, *parts: str) -> str | None:
    """The text at ``url`` once one of its lines holds every one of ``parts``."""
    text = _fetch(url)
    return text if any(all(p in ln for p in parts) for ln in text.splitlines()) else None


def _get(url: str) -> int | None:
    assert url.startswith("http://127.0.0.1:")
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            status: int = response.status
            return status
    except OSError:
        return None


def test_the_api_server_refuses_names_too_long_for_the_owner_label(
    api: Api, namespace: str
) -> None:
    spec = {"provider": "Disabled", "application": {"name": "CB"}}
    with pytest.raises(client.ApiException) as refused:
        api.apply(cobrowse_tls(namespace, "c" * 64, spec))
    assert refused.value.status == 422
    assert "at most 63 characters" in str(refused.value.body)
