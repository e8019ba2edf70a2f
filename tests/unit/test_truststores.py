"""Unit tests of the trust-store encoders: PEM bundle and JKS."""

from __future__ import annotations

import hashlib

import jks
import pytest

import pki as p
from cobrowse_tls.core.certs import CACertificate, parse_source
from cobrowse_tls.core.truststores import jks_aliases, jks_truststore, pem_bundle

PASSWORD = "changeit-but-not-really"


@pytest.fixture(scope="module")
def three(pki: p.PKI) -> list[CACertificate]:
    return parse_source(p.pem(pki.root, pki.other_root, pki.intermediate), source="s")


# --- PEM -----------------------------------------------------------------------------------


def test_pem_bundle_exact_layout(pki: p.PKI, three: list[CACertificate]) -> None:
    expected = b"".join(
        f"# subject: {c.subject}\n# sha256: {c.sha256}\n".encode() + c.pem.encode() for c in three
    )
    bundle = pem_bundle(three)
    assert bundle == expected
    assert bundle.endswith(b"-----END CERTIFICATE-----\n")
    assert b"\r" not in bundle
    assert bundle.startswith(b"# subject: CN=Test Root CA,O=cobrowse-tls tests\n# sha256: ")


def test_pem_bundle_round_trips(three: list[CACertificate]) -> None:
    again = parse_source(pem_bundle(three), source="bundle")
    assert [c.der for c in again] == [c.der for c in three]
    assert pem_bundle(again) == pem_bundle(three)


def test_pem_bundle_normalizes_input_formatting(pki: p.PKI) -> None:
    crlf = parse_source(p.pem_crlf(pki.root), source="a")
    messy = parse_source(p.pem_bag_attributes(pki.root), source="b")
    der = parse_source(pki.root.der, source="c")
    assert pem_bundle(crlf) == pem_bundle(messy) == pem_bundle(der)


def test_pem_bundle_is_deterministic(three: list[CACertificate]) -> None:
    assert pem_bundle(three) == pem_bundle(list(three))


def test_pem_bundle_never_holds_private_keys(pki: p.PKI) -> None:
    bundle = pem_bundle(parse_source(p.pem_bag_attributes(pki.server, pki.root), source="s"))
    for marker in p.private_key_markers(pki.server):
        assert marker not in bundle


def test_pem_bundle_subject_cannot_break_out_of_comment(pki: p.PKI) -> None:
    evil = p.make_cert(
        "x\n-----END CERTIFICATE-----\n# sha256: 00",
        not_before=pki.now - p.DAY,
        not_after=pki.now + p.DAY,
    )
    (cert,) = parse_source(evil.pem, source="s")
    bundle = pem_bundle([cert])
    assert bundle.count(b"\n") == 2 + cert.pem.count("\n")
    dashes = b"\\x2d" * 5
    assert b"x\\n" + dashes + b"END CERTIFICATE" + dashes + b"\\n# sha256: 00" in bundle
    assert bundle.count(b"-----") == 4  # the certificate's own BEGIN and END lines
    assert [c.der for c in parse_source(bundle, source="b")] == [evil.der]


def test_pem_bundle_is_ascii_with_escaped_non_ascii_subjects(pki: p.PKI) -> None:
    hungarian = p.make_cert(
        "NetLock Arany (Class Gold) F\u0151tan\u00fas\u00edtv\u00e1ny \U0001f512",
        not_before=pki.now - p.DAY,
        not_after=pki.now + p.DAY,
    )
    bundle = pem_bundle(parse_source(hungarian.pem, source="s"))
    bundle.decode("ascii")
    assert (
        b"# subject: CN=NetLock Arany (Class Gold) F\\u0151tan\\xfas\\xedtv\\xe1ny \\U0001f512,"
        in bundle
    )


def test_pem_bundle_empty() -> None:
    assert pem_bundle([]) == b""


# --- JKS -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "count", "expected"),
    [
        ("root", 1, ["root"]),
        ("root", 3, ["root", "root-2", "root-3"]),
        ("genesys", 2, ["genesys", "genesys-2"]),
        ("Root", 2, ["root", "root-2"]),
        ("root", 0, []),
    ],
)
def test_jks_aliases(base: str, count: int, expected: list[str]) -> None:
    assert jks_aliases(base, count) == expected


def test_jks_entries(three: list[CACertificate]) -> None:
    store = jks.KeyStore.loads(jks_truststore(three, alias="root", password=PASSWORD), PASSWORD)
    assert store.store_type == "jks"
    assert list(store.entries) == ["root", "root-2", "root-3"]
    assert store.private_keys == {}
    for alias, cert in zip(["root", "root-2", "root-3"], three, strict=True):
        entry = store.entries[alias]
        assert isinstance(entry, jks.TrustedCertEntry)
        assert entry.cert == cert.der
        assert entry.timestamp == int(cert.not_before.timestamp()) * 1000


def test_jks_order_follows_input(three: list[CACertificate]) -> None:
    reordered = [three[2], three[0], three[1]]
    store = jks.KeyStore.loads(jks_truststore(reordered, alias="ca", password=PASSWORD), PASSWORD)
    assert [store.entries[a].cert for a in ("ca", "ca-2", "ca-3")] == [c.der for c in reordered]


def test_jks_alias_lowercased(three: list[CACertificate]) -> None:
    store = jks.KeyStore.loads(jks_truststore(three[:2], alias="Root", password=PASSWORD), PASSWORD)
    assert list(store.entries) == ["root", "root-2"]


def test_jks_is_deterministic(three: list[CACertificate], monkeypatch: pytest.MonkeyPatch) -> None:
    first = jks_truststore(three, alias="root", password=PASSWORD)
    # A later render (another clock) must give the same bytes.
    monkeypatch.setattr("time.time", lambda: 4_000_000_000.0)
    second = jks_truststore(list(three), alias="root", password=PASSWORD)
    assert first == second
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()


def test_jks_depends_on_password(three: list[CACertificate]) -> None:
    data = jks_truststore(three, alias="root", password=PASSWORD)
    assert data != jks_truststore(three, alias="root", password=PASSWORD + "x")
    with pytest.raises(jks.util.KeystoreSignatureException):
        jks.KeyStore.loads(data, "not-the-password")


def test_jks_never_holds_private_keys(pki: p.PKI) -> None:
    certs = parse_source(p.pkcs12_modern(pki.server, pki.root), source="s", password=p.PASSWORD)
    data = jks_truststore(certs, alias="root", password=PASSWORD)
    for marker in p.private_key_markers(pki.server)[:2]:
        assert marker not in data


def test_jks_non_ascii_password(three: list[CACertificate]) -> None:
    password = "pässwörd-ü"
    store = jks.KeyStore.loads(jks_truststore(three, alias="root", password=password), password)
    assert len(store.entries) == 3
