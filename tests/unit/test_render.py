"""Layer 3: the pure renderer (Secret, ConfigMap, security.cfg, setenv files, input hash)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
from datetime import timedelta
from typing import Any

import jks
import pydantic
import pytest
import yaml

import manual_table
import pki as pki_module
from cobrowse_tls.api import models, stamps
from cobrowse_tls.core import certs, render
from unit.builders import Doc, tls_doc

PASSWORD = "s3cret-Password"
# What the operator generates once and keeps in the truststore Secret (random there).
HASH_KEY = bytes(range(32))
SH = shutil.which("sh")
FROM_REF = "<resolve the password from passwordSecretRef>"


def parse(doc: Doc) -> models.CobrowseTLS:
    return models.parse(doc)


def found(pki: pki_module.PKI, *extra: pki_module.CertKey) -> render.ObjectData:
    return render.ObjectData(
        secrets={
            "genesys-ca": {"ca.crt": pki_module.pem(pki.root, *extra)},
            "jks-password": {"password": PASSWORD.encode() + b"\n"},
        },
        config_maps={"corp-roots": {"bundle.pem": pki_module.pem(pki.other_root)}},
    )


def do_render(
    pki: pki_module.PKI,
    doc: Doc,
    objects: render.ObjectData | None = None,
    password: str | None = FROM_REF,
    hash_key: bytes | None = HASH_KEY,
) -> render.Rendered:
    tls = parse(doc)
    objects = objects if objects is not None else found(pki)
    sources = render.resolve_sources(tls, objects)
    if password is FROM_REF:
        password = render.resolve_password(tls, objects)
    return render.render(tls, sources, password=password, now=pki.now, hash_key=hash_key)


def b64(data: dict[str, str]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in data.items()}


# ---- outputs per provider ------------------------------------------------------------------


def test_pem_outputs(pki: pki_module.PKI) -> None:
    out = do_render(pki, tls_doc("PEM"))
    assert set(out.files) == {"ca.pem", "security.cfg", "setenv.sh", "setenv.bat"}
    assert out.secret is not None
    assert out.secret["metadata"]["name"] == "cobrowse-truststore"
    assert out.secret["type"] == "Opaque"
    assert b64(out.secret["data"]) == {"ca.pem": out.files["ca.pem"]}
    assert pki.root.pem.decode().strip() in out.files["ca.pem"].decode()
    assert out.config_map["metadata"]["name"] == "cobrowse-security"
    assert set(out.config_map["data"]) == {"security.cfg", "setenv.sh", "setenv.bat"}
    assert out.files["security.cfg"] == (
        b"[security]\nprovider=PEM\ntrusted-ca=/opt/genesys/cobrowse/security/ca.pem\n"
    )
    assert out.config_map["data"]["security.cfg"] == out.files["security.cfg"].decode()
    assert out.aliases == ("root",)
    assert out.certificate_status() == [
        {
            "alias": "root",
            "subject": pki.root.subject,
            "sha256": pki.root.sha256,
            "notAfter": stamps.rfc3339(pki.root.cert.not_valid_after_utc),
        }
    ]


def test_jks_outputs(pki: pki_module.PKI) -> None:
    doc = tls_doc("JKS")
    doc["spec"]["trustedCA"]["sources"].append(
        {"configMap": {"name": "corp-roots", "key": "bundle.pem"}}
    )
    out = do_render(pki, doc)
    assert set(out.files) == {
        "ca.pem",
        "truststore.jks",
        "truststore-password",
        "security-options.cfg",
        "security.cfg",
        "setenv.sh",
        "setenv.bat",
    }
    assert out.secret is not None
    assert set(out.secret["data"]) == {
        "ca.pem",
        "truststore.jks",
        "truststore-password",
        "security-options.cfg",
        "hash-key",
    }
    assert b64(out.secret["data"])["truststore-password"] == PASSWORD.encode()
    assert out.files["security.cfg"] == (
        b"[security]\nprovider=JKS\ntrusted-ca=/opt/genesys/cobrowse/security/truststore.jks\n"
    )
    # The manual's step 7 too: the whole section, for Genesys Administrator's option import.
    assert b64(out.secret["data"])["security-options.cfg"] == (
        b"[security]\nprovider=JKS\ntrusted-ca=/opt/genesys/cobrowse/security/truststore.jks\n"
        b"truststore-password=" + PASSWORD.encode() + b"\n"
    )
    assert PASSWORD not in str(out.config_map)
    store = jks.KeyStore.loads(out.files["truststore.jks"], PASSWORD)
    assert sorted(store.certs) == ["root", "root-2"]
    assert store.certs["root"].cert == pki.root.der
    assert store.certs["root-2"].cert == pki.other_root.der
    assert (
        store.certs["root"].timestamp == int(pki.root.cert.not_valid_before_utc.timestamp()) * 1000
    )
    assert out.aliases == ("root", "root-2")


def test_jks_alias_from_spec(pki: pki_module.PKI) -> None:
    doc = tls_doc("JKS")
    doc["spec"]["truststore"]["alias"] = "genesys"
    doc["spec"]["trustedCA"]["sources"].append(
        {"configMap": {"name": "corp-roots", "key": "bundle.pem"}}
    )
    out = do_render(pki, doc)
    assert sorted(jks.KeyStore.loads(out.files["truststore.jks"], PASSWORD).certs) == [
        "genesys",
        "genesys-2",
    ]


def test_no_password_in_config_map(pki: pki_module.PKI) -> None:
    out = do_render(pki, tls_doc("JKS", connections=CONNECTIONS))
    text = repr(out.config_map)
    assert PASSWORD not in text
    assert set(out.config_map["data"]) == {
        "security.cfg",
        "setenv.sh",
        "setenv.bat",
        "connections.yaml",
    }
    for name in ("setenv.sh", "setenv.bat", "security.cfg", "connections.yaml"):
        assert PASSWORD.encode() not in out.files[name]
    assert "truststore-password" not in out.config_map["data"]
    assert "truststore-password=" not in text


def test_security_options_only_for_jks(pki: pki_module.PKI) -> None:
    for provider in ("PEM", "MSCAPI", "Disabled"):
        out = do_render(pki, tls_doc(provider))
        assert "security-options.cfg" not in out.files, provider
    options = do_render(pki, tls_doc("JKS")).files["security-options.cfg"].decode()
    # What security.cfg says, plus the password: one [security] section, option=value lines.
    assert options.splitlines() == [
        "[security]",
        "provider=JKS",
        "trusted-ca=/opt/genesys/cobrowse/security/truststore.jks",
        f"truststore-password={PASSWORD}",
    ]


CONNECTIONS = [
    {"name": "MessageServer", "host": "msgserver.genesys.svc", "port": 9021},
    {"name": "ChatServer", "host": "10.0.0.7", "port": 4443},
]


@pytest.mark.parametrize(
    "row",
    [r for r in manual_table.ROWS if r.refusal is None],
    ids=[r.id for r in manual_table.ROWS if r.refusal is None],
)
def test_connections_yaml_names_the_object_the_release_reads(
    pki: pki_module.PKI, row: manual_table.Row
) -> None:
    doc = tls_doc("PEM", application=row.application(), connections=CONNECTIONS)
    text = do_render(pki, doc).config_map["data"]["connections.yaml"]
    assert text.startswith("# Generated by cobrowse-tls-operator from CobrowseTLS cobrowse")
    application = {"type": row.connections_object}
    if row.connections_object == row.type:
        application["name"] = f"CB_{row.type}"
    else:
        assert "of the Cluster application object (the one Node CB_Node belongs to)" in text
    assert yaml.safe_load(text) == {
        "release": manual_table.release(row.version, row.type) or "8.5.003+",
        "application": application,
        "connections": [
            {"server": "MessageServer", "host": "msgserver.genesys.svc", "securePort": 9021},
            {"server": "ChatServer", "host": "10.0.0.7", "securePort": 4443},
        ],
    }


def test_connections_yaml_only_when_connections_are_set(pki: pki_module.PKI) -> None:
    base = do_render(pki, tls_doc("JKS"))
    empty = do_render(pki, tls_doc("JKS", connections=[]))
    assert "connections.yaml" not in base.files
    assert empty.config_map == base.config_map
    assert empty.input_hash == base.input_hash
    with_connections = do_render(pki, tls_doc("JKS", connections=CONNECTIONS))
    # The ConfigMap changes, so its input hash does; the workloads consume none of it.
    assert with_connections.input_hash != base.input_hash
    assert with_connections.material_hash == base.material_hash


def test_jks_without_password_is_refused(pki: pki_module.PKI) -> None:
    doc = tls_doc("JKS")
    del doc["spec"]["truststore"]
    with pytest.raises(render.InvalidInput) as info:
        do_render(pki, doc, password=None)
    assert info.value.reason == "PasswordNotFound"


def test_mscapi_outputs(pki: pki_module.PKI) -> None:
    out = do_render(pki, tls_doc("MSCAPI", windows={"store": "CA"}))
    assert set(out.files) == {"ca.pem", "security.cfg", "setenv.sh", "setenv.bat"}
    assert out.secret is not None
    assert set(out.secret["data"]) == {"ca.pem"}
    assert out.files["security.cfg"] == b"[security]\nprovider=MSCAPI\n"
    assert b"\nTRUSTED_CA=''\n" in out.files["setenv.sh"]
    assert b'\r\nset "PROVIDER=MSCAPI"\r\n' in out.files["setenv.bat"]


def test_disabled_outputs(pki: pki_module.PKI) -> None:
    out = do_render(pki, tls_doc("Disabled"))
    assert set(out.files) == {"security.cfg", "setenv.sh", "setenv.bat"}
    assert out.secret is None
    assert out.files["security.cfg"] == b"[security]\nprovider=\n"
    assert b"\nPROVIDER=''\n" in out.files["setenv.sh"]
    assert b'\r\nset "PROVIDER="\r\n' in out.files["setenv.bat"]
    assert out.selection.certificates == ()


def test_custom_secret_name_and_mount_paths(pki: pki_module.PKI) -> None:
    doc = tls_doc(
        "PEM",
        truststore={
            "secretName": "my-store",
            "mountPath": "/etc/cobrowse/tls",
            "windowsMountPath": "D:\\GCTI\\tls",
        },
    )
    out = do_render(pki, doc)
    assert out.secret is not None
    assert out.secret["metadata"]["name"] == "my-store"
    assert b"trusted-ca=/etc/cobrowse/tls/ca.pem\n" in out.files["security.cfg"]
    assert b"\nTRUSTED_CA='/etc/cobrowse/tls/ca.pem'\n" in out.files["setenv.sh"]
    assert b'set "TRUSTED_CA=D:\\GCTI\\tls\\ca.pem"\r\n' in out.files["setenv.bat"]


# ---- setenv files --------------------------------------------------------------------------

FULL_SETENV_SH = """\
# Generated by cobrowse-tls-operator from CobrowseTLS cobrowse: do not edit.
# Source it from the Co-browse server directory: . ./setenv.sh
PRIMARY_CFGSERVER_HOST='confserv.genesys.svc'
PRIMARY_CFGSERVER_PORT='8889'
BACKUP_CFGSERVER_HOST='10.0.0.2'
BACKUP_CFGSERVER_PORT='8890'
PRIMARY_CFGSERVER_CONNECTION_MODE='UPGRADE'
APP_NAME='CB Node 1'
PROVIDER='JKS'
TRUSTED_CA='/opt/genesys/cobrowse/security/truststore.jks'
# The password stays in the mounted Secret; this file holds none.
TRUSTSTORE_PASSWORD="$(cat '/opt/genesys/cobrowse/security/truststore-password')"
export PRIMARY_CFGSERVER_HOST PRIMARY_CFGSERVER_PORT BACKUP_CFGSERVER_HOST \
BACKUP_CFGSERVER_PORT PRIMARY_CFGSERVER_CONNECTION_MODE APP_NAME PROVIDER TRUSTED_CA \
TRUSTSTORE_PASSWORD
"""

FULL_SETENV_BAT = (
    "@rem Generated by cobrowse-tls-operator from CobrowseTLS cobrowse: do not edit.\r\n"
    "@rem Call it from the Co-browse server directory: call setenv.bat\r\n"
    'set "PRIMARY_CFGSERVER_HOST=confserv.genesys.svc"\r\n'
    'set "PRIMARY_CFGSERVER_PORT=8889"\r\n'
    'set "BACKUP_CFGSERVER_HOST=10.0.0.2"\r\n'
    'set "BACKUP_CFGSERVER_PORT=8890"\r\n'
    'set "PRIMARY_CFGSERVER_CONNECTION_MODE=UPGRADE"\r\n'
    'set "APP_NAME=CB Node 1"\r\n'
    'set "PROVIDER=JKS"\r\n'
    'set "TRUSTED_CA=C:\\cobrowse\\security\\truststore.jks"\r\n'
    "@rem The password stays in the mounted Secret; this file holds none.\r\n"
    'set /p TRUSTSTORE_PASSWORD=<"C:\\cobrowse\\security\\truststore-password"\r\n'
)


def full_jks_doc() -> Doc:
    return tls_doc(
        "JKS",
        application={"type": "Node", "name": "CB Node 1"},
        configServer={
            "host": "confserv.genesys.svc",
            "port": 8889,
            "backupHost": "10.0.0.2",
            "backupPort": 8890,
            "connectionMode": "Upgrade",
        },
    )


def test_setenv_sh_content(pki: pki_module.PKI) -> None:
    out = do_render(pki, full_jks_doc())
    # The export line is one line in the file; the expectation wraps it for readability.
    assert out.files["setenv.sh"].decode() == FULL_SETENV_SH.replace("\\\n", "")


def test_setenv_bat_content_and_crlf(pki: pki_module.PKI) -> None:
    out = do_render(pki, full_jks_doc())
    bat = out.files["setenv.bat"]
    assert bat.decode() == FULL_SETENV_BAT
    assert bat.count(b"\n") == bat.count(b"\r\n")
    assert b"\r" not in out.files["setenv.sh"]


@pytest.mark.parametrize(
    ("mode", "value"), [("TLS", "TLS"), ("Upgrade", "UPGRADE"), ("Unsecured", "UNSECURED")]
)
def test_connection_mode_values(pki: pki_module.PKI, mode: str, value: str) -> None:
    doc = tls_doc("PEM", configServer={"host": "h", "port": 1, "connectionMode": mode})
    out = do_render(pki, doc)
    assert f"\nPRIMARY_CFGSERVER_CONNECTION_MODE='{value}'\n".encode() in out.files["setenv.sh"]
    assert f'set "PRIMARY_CFGSERVER_CONNECTION_MODE={value}"'.encode() in out.files["setenv.bat"]


def test_setenv_without_config_server(pki: pki_module.PKI) -> None:
    doc = tls_doc("PEM")
    del doc["spec"]["configServer"]
    sh = do_render(pki, doc).files["setenv.sh"].decode()
    assert "CFGSERVER" not in sh
    assert sh.splitlines()[-1] == "export APP_NAME PROVIDER TRUSTED_CA"


# ---- labels, annotations, owner ------------------------------------------------------------


def test_labels_annotations_and_namespace(pki: pki_module.PKI) -> None:
    out = do_render(pki, tls_doc("JKS"))
    assert out.secret is not None
    for obj in (out.secret, out.config_map):
        meta = obj["metadata"]
        assert meta["namespace"] == "genesys"
        assert meta["labels"] == {
            "app.kubernetes.io/managed-by": "cobrowse-tls-operator",
            "tls.cobrowse.io/owner": "cobrowse",
        }
        assert "ownerReferences" not in meta
    assert out.secret["metadata"]["annotations"] == {"tls.cobrowse.io/input-hash": out.input_hash}
    assert out.config_map["metadata"]["annotations"] == {
        "tls.cobrowse.io/input-hash": render.config_map_hash(out.config_map["data"])
    }
    assert out.input_hash.startswith("sha256:")
    assert len(out.input_hash) == len("sha256:") + 64


def test_owner_references_when_uid_given(pki: pki_module.PKI) -> None:
    doc = tls_doc("PEM")
    doc["metadata"]["uid"] = "0b5a3c1e-1111-2222-3333-444455556666"
    out = do_render(pki, doc)
    assert out.secret is not None
    for obj in (out.secret, out.config_map):
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "tls.cobrowse.io/v1alpha1",
                "kind": "CobrowseTLS",
                "name": "cobrowse",
                "uid": "0b5a3c1e-1111-2222-3333-444455556666",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


# ---- determinism ---------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["PEM", "JKS", "MSCAPI", "Disabled"])
def test_two_renders_are_identical(pki: pki_module.PKI, provider: str) -> None:
    doc = tls_doc(provider)
    first = do_render(pki, doc)
    second = do_render(pki, doc)
    assert first.files == second.files
    assert first.secret == second.secret
    assert first.config_map == second.config_map
    assert first.input_hash == second.input_hash


def test_render_does_not_depend_on_the_clock_beyond_expiry(pki: pki_module.PKI) -> None:
    tls = parse(tls_doc("JKS"))
    objects = found(pki)
    sources = render.resolve_sources(tls, objects)
    a = render.render(tls, sources, password=PASSWORD, now=pki.now)
    b = render.render(tls, sources, password=PASSWORD, now=pki.now + timedelta(days=100))
    assert a.files == b.files
    assert a.input_hash == b.input_hash


def test_input_hash_changes_with_inputs(pki: pki_module.PKI) -> None:
    base = do_render(pki, tls_doc("JKS")).input_hash
    more_cas = do_render(pki, tls_doc("JKS"), found(pki, pki.intermediate)).input_hash
    other_password = do_render(pki, tls_doc("JKS"), password="another-password").input_hash
    other_spec = do_render(pki, tls_doc("JKS", application={"type": "Node", "name": "CB2"}))
    other_mount = do_render(
        pki,
        tls_doc(
            "JKS",
            truststore={
                "mountPath": "/srv/tls",
                "passwordSecretRef": {"name": "jks-password", "key": "password"},
            },
        ),
    )
    hashes = [base, more_cas, other_password, other_spec.input_hash, other_mount.input_hash]
    assert len(set(hashes)) == len(hashes)


def test_the_config_map_changes_only_with_what_it_holds(pki: pki_module.PKI) -> None:
    # A CA rotation or a new password rewrites the Secret, not the option files: their
    # ConfigMap (bytes and hash annotation) stays as it was, so it is not written again.
    base = do_render(pki, tls_doc("JKS"))
    rotated = do_render(pki, tls_doc("JKS"), found(pki, pki.intermediate))
    repassworded = do_render(pki, tls_doc("JKS"), password="another-password")
    assert rotated.input_hash != base.input_hash
    assert rotated.config_map == base.config_map
    assert repassworded.config_map == base.config_map
    assert rotated.material_hash != base.material_hash  # the workloads still restart
    other_app = do_render(pki, tls_doc("JKS", application={"type": "Node", "name": "CB2"}))
    assert other_app.config_map["data"] != base.config_map["data"]
    assert (
        other_app.config_map["metadata"]["annotations"]
        != base.config_map["metadata"]["annotations"]
    )


def test_input_hash_ignores_metadata_other_than_the_name(pki: pki_module.PKI) -> None:
    doc = tls_doc("PEM")
    base = do_render(pki, doc)
    doc["metadata"].update(generation=7, labels={"x": "y"}, resourceVersion="123")
    again = do_render(pki, doc)
    assert again.input_hash == base.input_hash
    assert again.files == base.files


def test_ca_order_and_duplicates(pki: pki_module.PKI) -> None:
    doc = tls_doc("PEM")
    doc["spec"]["trustedCA"]["sources"] += [
        {"configMap": {"name": "corp-roots", "key": "bundle.pem"}},
        {"inline": pki_module.pem(pki.root).decode()},
    ]
    out = do_render(pki, doc)
    assert [c.sha256 for c in out.selection.certificates] == [
        pki.root.sha256,
        pki.other_root.sha256,
    ]
    assert out.files["ca.pem"].count(b"BEGIN CERTIFICATE") == 2


def test_expired_ca_is_left_out(pki: pki_module.PKI) -> None:
    out = do_render(pki, tls_doc("JKS"), found(pki, pki.expired_ca))
    assert [c.sha256 for c in out.selection.certificates] == [pki.root.sha256]
    assert [c.sha256 for c in out.selection.expired] == [pki.expired_ca.sha256]
    assert pki.expired_ca.pem not in out.files["ca.pem"]
    store = jks.KeyStore.loads(out.files["truststore.jks"], PASSWORD)
    assert list(store.certs) == ["root"]


def test_only_expired_cas_fail(pki: pki_module.PKI) -> None:
    objects = render.ObjectData(
        secrets={"genesys-ca": {"ca.crt": pki_module.pem(pki.expired_ca)}}, config_maps={}
    )
    with pytest.raises(certs.CertificateError) as info:
        do_render(pki, tls_doc("PEM"), objects)
    assert info.value.reason == "NoCertificates"
    assert "expired" in info.value.detail


def test_private_keys_never_reach_the_outputs(pki: pki_module.PKI) -> None:
    objects = render.ObjectData(
        secrets={
            "genesys-ca": {"ca.crt": pki_module.pem_with_key(pki.root)},
            "jks-password": {"password": PASSWORD.encode()},
        },
        config_maps={},
    )
    out = do_render(pki, tls_doc("JKS"), objects)
    for data in out.files.values():
        for marker in pki_module.private_key_markers(pki.root):
            assert marker not in data


# ---- resolving sources and the password ----------------------------------------------------


def test_resolve_sources_labels_and_passwords(pki: pki_module.PKI) -> None:
    doc = tls_doc("PEM")
    doc["spec"]["trustedCA"]["sources"] = [
        {"secret": {"name": "pfx", "key": "ca.pfx", "passwordKey": "pass"}},
        {"configMap": {"name": "corp-roots", "key": "bundle.pem"}},
        {"inline": "INLINE"},
    ]
    objects = render.ObjectData(
        secrets={"pfx": {"ca.pfx": b"PFX", "pass": b"pw"}},
        config_maps={"corp-roots": {"bundle.pem": b"PEM"}},
    )
    sources = render.resolve_sources(parse(doc), objects)
    assert sources == [
        render.SourceData("secret pfx key ca.pfx", b"PFX", b"pw"),
        render.SourceData("configMap corp-roots key bundle.pem", b"PEM", None),
        render.SourceData("spec.trustedCA.sources[2].inline", b"INLINE", None),
    ]
    tls = parse(doc)
    assert render.referenced_secrets(tls) == ["pfx"]
    assert render.referenced_config_maps(tls) == ["corp-roots"]


@pytest.mark.parametrize(
    ("secrets", "reason", "message"),
    [
        ({}, "SourceNotFound", "secret pfx key ca.pfx: secret 'pfx' not found"),
        ({"pfx": {}}, "SourceNotFound", "secret pfx key ca.pfx: secret 'pfx' has no key 'ca.pfx'"),
        (
            {"pfx": {"ca.pfx": b"x"}},
            "PasswordNotFound",
            "secret pfx key ca.pfx: secret 'pfx' has no password key 'pass'",
        ),
    ],
)
def test_resolve_sources_errors(
    secrets: dict[str, dict[str, bytes]], reason: str, message: str
) -> None:
    doc = tls_doc("PEM")
    doc["spec"]["trustedCA"]["sources"] = [
        {"secret": {"name": "pfx", "key": "ca.pfx", "passwordKey": "pass"}}
    ]
    with pytest.raises(render.InvalidInput) as info:
        render.resolve_sources(parse(doc), render.ObjectData(secrets=secrets, config_maps={}))
    assert (info.value.reason, str(info.value)) == (reason, message)


def test_missing_config_map() -> None:
    doc = tls_doc("PEM")
    doc["spec"]["trustedCA"]["sources"] = [{"configMap": {"name": "roots", "key": "b.pem"}}]
    with pytest.raises(render.InvalidInput, match="configMap 'roots' not found"):
        render.resolve_sources(parse(doc), render.ObjectData(secrets={}, config_maps={}))


def test_disabled_resolves_no_sources() -> None:
    assert render.resolve_sources(parse(tls_doc("Disabled")), render.ObjectData({}, {})) == []


def test_resolve_password(pki: pki_module.PKI) -> None:
    assert render.resolve_password(parse(tls_doc("JKS")), found(pki)) == PASSWORD
    assert render.resolve_password(parse(tls_doc("PEM")), found(pki)) is None
    with pytest.raises(render.InvalidInput) as info:
        render.resolve_password(parse(tls_doc("JKS")), render.ObjectData({}, {}))
    assert info.value.reason == "PasswordNotFound"
    assert str(info.value) == "spec.truststore.passwordSecretRef: secret 'jks-password' not found"
    with pytest.raises(render.InvalidInput, match="has no key 'password'"):
        render.resolve_password(parse(tls_doc("JKS")), render.ObjectData({"jks-password": {}}, {}))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(b"pw", "pw"), (b"pw\n", "pw"), (b"pw\r\n", "pw"), (b"p w'$(x)", "p w'$(x)")],
)
def test_check_password_accepts(raw: bytes, expected: str) -> None:
    assert render.check_password(raw, "here") == expected


@pytest.mark.parametrize("raw", [b"", b"\n", b"a\nb", b"a\x00b", b"\xff\xfe", b"x" * 1025])
def test_check_password_rejects(raw: bytes) -> None:
    with pytest.raises(render.InvalidInput) as info:
        render.check_password(raw, "here")
    assert info.value.reason == "InvalidPassword"
    assert info.value.where == "here"


# ---- quoting: nothing in a value runs as a command -----------------------------------------

NASTY = [
    "'; touch {canary}; '",
    "$(touch {canary})",
    "`touch {canary}`",
    "a\ntouch {canary}\n",
    '"; touch {canary}; "',
    "${{PATH}}$HOME\\n\\$(x)",
    "it's",
    "''''",
    "' \"'\" '",
    "; touch {canary} #",
    "| touch {canary}",
    "&& touch {canary}",
    "\\",
    "",
    "x\r\ny",
    "\t*?[a]~",
]


@pytest.mark.skipif(SH is None, reason="needs sh")
@pytest.mark.parametrize("template", NASTY)
def test_sh_quote_round_trips_without_running_anything(
    tmp_path: pathlib.Path, template: str
) -> None:
    canary = tmp_path / "pwned"
    value = template.format(canary=canary)
    (tmp_path / "setenv.sh").write_text(f"VAR={render.sh_quote(value)}\nexport VAR\n")
    result = subprocess.run(
        ["sh", "-c", '. ./setenv.sh; printf %s "$VAR"'],
        cwd=tmp_path,
        capture_output=True,
        check=True,
        env={"PATH": os.environ["PATH"], "HOME": "/nonexistent"},
    )
    assert result.stdout.decode() == value
    assert result.stderr == b""
    assert not canary.exists()


@pytest.mark.parametrize("value", ['a"b', "100%", "!x!", "a\nb", "a\rb", "a\x00b", "a\x07b"])
def test_bat_quote_refuses_what_cmd_cannot_quote(value: str) -> None:
    with pytest.raises(render.InvalidInput, match=r"cmd\.exe cannot quote"):
        render.bat_quote("APP_NAME", value)


def test_bat_quote_plain_values() -> None:
    assert render.bat_quote("X", "C:\\a b\\c&d^e") == 'set "X=C:\\a b\\c&d^e"'


# Every string of the spec that reaches setenv.sh/setenv.bat, with values a shell or cmd.exe
# would act on: the model rejects them all before any file is written.
SETENV_FIELDS: list[tuple[str, Any]] = [
    ("application.name", lambda s, v: s["application"].update(name=v)),
    ("configServer.host", lambda s, v: s["configServer"].update(host=v)),
    ("configServer.backupHost", lambda s, v: s["configServer"].update(backupHost=v, backupPort=1)),
    ("truststore.mountPath", lambda s, v: s.update(truststore={"mountPath": "/opt/x" + v})),
    (
        "truststore.windowsMountPath",
        lambda s, v: s.update(truststore={"windowsMountPath": "C:\\x" + v}),
    ),
]
INJECTIONS = [
    "'; touch /tmp/pwned; '",
    "$(id)",
    "`id`",
    "x\nid",
    "x\r\nid",
    '"&calc&"',
    "%COMSPEC%",
    "!PATH!",
    "x;id",
    "x|id",
    "x&id",
    "x>y",
    "${IFS}",
]


@pytest.mark.parametrize("injection", INJECTIONS)
@pytest.mark.parametrize(("field", "mutate"), SETENV_FIELDS, ids=[f for f, _ in SETENV_FIELDS])
def test_model_rejects_injection_in_every_setenv_string(
    field: str, mutate: Any, injection: str
) -> None:
    doc = tls_doc("JKS")
    mutate(doc["spec"], injection)
    with pytest.raises(pydantic.ValidationError) as info:
        models.parse(doc)
    assert field.split(".")[-1] in str(info.value)


def test_setenv_fields_list_is_complete(pki: pki_module.PKI) -> None:
    """Every spec string in the setenv files is covered by SETENV_FIELDS (plus fixed values)."""
    doc = full_jks_doc()
    doc["spec"]["truststore"].update(mountPath="/m/p", windowsMountPath="D:\\w\\p")
    tls = parse(doc)
    values = {v for _, v in render._variables(tls, windows=False)}
    values |= {v for _, v in render._variables(tls, windows=True)}
    fixed = {"8889", "8890", "UPGRADE", "JKS"}
    derived = {"/m/p/truststore.jks", "D:\\w\\p\\truststore.jks"}
    covered = {"CB Node 1", "confserv.genesys.svc", "10.0.0.2"}
    assert values == fixed | derived | covered


# ---- sourcing the generated setenv.sh in a real sh -----------------------------------------


@pytest.mark.interop
@pytest.mark.skipif(SH is None, reason="needs sh")
def test_sourcing_setenv_sh_yields_the_variables(
    pki: pki_module.PKI, tmp_path: pathlib.Path
) -> None:
    mount = tmp_path / "security"
    mount.mkdir()
    doc = full_jks_doc()
    doc["spec"]["truststore"]["mountPath"] = str(mount)
    out = do_render(pki, doc)
    (mount / "truststore-password").write_bytes(out.files["truststore-password"] + b"\n")
    (tmp_path / "setenv.sh").write_bytes(out.files["setenv.sh"])
    names = [
        "PRIMARY_CFGSERVER_HOST",
        "PRIMARY_CFGSERVER_PORT",
        "BACKUP_CFGSERVER_HOST",
        "BACKUP_CFGSERVER_PORT",
        "PRIMARY_CFGSERVER_CONNECTION_MODE",
        "APP_NAME",
        "PROVIDER",
        "TRUSTED_CA",
        "TRUSTSTORE_PASSWORD",
    ]
    # A child process (env) sees them: the file exports every variable it sets.
    result = subprocess.run(
        ["sh", "-c", ". ./setenv.sh && env -0"],
        cwd=tmp_path,
        capture_output=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    )
    assert result.stderr == b""
    env = dict(item.split("=", 1) for item in result.stdout.decode().split("\0") if "=" in item)
    assert {n: env.get(n) for n in names} == {
        "PRIMARY_CFGSERVER_HOST": "confserv.genesys.svc",
        "PRIMARY_CFGSERVER_PORT": "8889",
        "BACKUP_CFGSERVER_HOST": "10.0.0.2",
        "BACKUP_CFGSERVER_PORT": "8890",
        "PRIMARY_CFGSERVER_CONNECTION_MODE": "UPGRADE",
        "APP_NAME": "CB Node 1",
        "PROVIDER": "JKS",
        "TRUSTED_CA": f"{mount}/truststore.jks",
        "TRUSTSTORE_PASSWORD": PASSWORD,
    }


# ---- hashes that are published -----------------------------------------------------------


def test_material_hash_follows_what_workloads_consume(pki: pki_module.PKI) -> None:
    base = do_render(pki, tls_doc("JKS")).material_hash
    assert base == do_render(pki, tls_doc("JKS")).material_hash
    changed = [
        do_render(pki, tls_doc("JKS"), password="another-password").material_hash,
        do_render(pki, tls_doc("JKS"), found(pki, pki.intermediate)).material_hash,
        do_render(
            pki,
            tls_doc(
                "JKS",
                truststore={
                    "alias": "genesys",
                    "passwordSecretRef": {"name": "jks-password", "key": "password"},
                },
            ),
        ).material_hash,
    ]
    assert base not in changed
    assert len(set(changed)) == len(changed)
    # Who restarts, and how, is not material: no restart for editing the list itself.
    doc = tls_doc("JKS")
    doc["spec"]["workloads"] = [{"kind": "Deployment", "name": "web"}]
    doc["spec"]["restart"] = {"policy": "Manual", "maxConcurrent": 3}
    again = do_render(pki, doc)
    assert again.material_hash == base
    assert again.input_hash == do_render(pki, tls_doc("JKS")).input_hash


def _old_pbkdf2_input_hash(tls: models.CobrowseTLS, fingerprint: str, guess: str) -> str:
    """The input hash as published before: the password through salted PBKDF2 (50,000 rounds),
    which anyone reading the ConfigMap could recompute for each guess."""
    salt = f"cobrowse-tls:{tls.metadata.namespace or ''}/{tls.metadata.name}"
    derived = hashlib.pbkdf2_hmac("sha256", guess.encode(), salt.encode(), 50_000).hex()
    spec = tls.spec.wire()
    for key in ("workloads", "restart", "connections", "windows"):
        spec.pop(key, None)
    material = {
        "name": tls.metadata.name,
        "spec": spec,
        "fingerprint": fingerprint,
        "password": derived,
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def test_published_hashes_do_not_let_a_reader_test_password_guesses(
    pki: pki_module.PKI,
) -> None:
    out = do_render(pki, tls_doc("JKS"))
    assert out.secret is not None
    tls = parse(tls_doc("JKS"))
    published = out.secret["metadata"]["annotations"][render_annotation()]
    assert published == out.input_hash
    # The ConfigMap's hash is of its own data alone: no password, no key in it at all.
    assert out.config_map["metadata"]["annotations"][render_annotation()] == (
        render.config_map_hash(out.config_map["data"])
    )
    # The attacker's best case: the guess IS the password. The old recipe confirmed it.
    assert _old_pbkdf2_input_hash(tls, out.fingerprint, PASSWORD) != published
    # A fast hash of the password, alone or mixed in, appears nowhere either.
    fast = hashlib.sha256(PASSWORD.encode()).hexdigest()
    for guess_part in (fast, PASSWORD, None):
        material = {
            "name": tls.metadata.name,
            "spec": tls.spec.wire(),
            "fingerprint": out.fingerprint,
            "password": guess_part,
        }
        canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
        assert "sha256:" + hashlib.sha256(canonical.encode()).hexdigest() != published
    # Checking a guess needs the key, which is only in the Secret: with it (that is, with
    # read access to the Secret, which holds the password anyway) the recipe reproduces the
    # hash; with any other key it does not.
    stolen = b64(out.secret["data"])[render.HASH_KEY]
    assert stolen == HASH_KEY
    assert render.input_hash(tls, out.fingerprint, PASSWORD, stolen) == published
    assert render.input_hash(tls, out.fingerprint, PASSWORD, b"\1" * 32) != published
    assert render.input_hash(tls, out.fingerprint, "wrong guess", stolen) != published
    assert HASH_KEY.hex() not in str(out.config_map)
    assert base64.b64encode(HASH_KEY).decode() not in str(out.config_map)


def render_annotation() -> str:
    return stamps.ANNOTATION_INPUT_HASH


def test_hash_key_is_kept_and_only_with_a_password(pki: pki_module.PKI) -> None:
    first = do_render(pki, tls_doc("JKS"))
    again = do_render(pki, tls_doc("JKS"))
    # Same key, same password: same hashes, so nothing restarts.
    assert (first.input_hash, first.material_hash) == (again.input_hash, again.material_hash)
    # The password changes, the key stays: both hashes change, once.
    other = do_render(pki, tls_doc("JKS"), password="another-password")
    assert other.material_hash != first.material_hash
    assert other.input_hash != first.input_hash
    # PEM has no password: no key in its Secret, hashes as before the key existed.
    pem = do_render(pki, tls_doc("PEM"))
    assert pem.secret is not None
    assert render.HASH_KEY not in pem.secret["data"]
    assert pem.input_hash == do_render(pki, tls_doc("PEM"), hash_key=None).input_hash
    # Without a key (render without the truststore Secret) the password is left out of the
    # published hashes rather than exposed to guessing; the Secret then holds no key.
    keyless = do_render(pki, tls_doc("JKS"), hash_key=None)
    assert keyless.secret is not None
    assert render.HASH_KEY not in keyless.secret["data"]
    assert keyless.input_hash == render.input_hash(
        parse(tls_doc("JKS")), keyless.fingerprint, None, None
    )
    with pytest.raises(ValueError, match="hash_key"):
        do_render(pki, tls_doc("JKS"), hash_key=b"short")
