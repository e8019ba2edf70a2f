"""Unit tests of the certificate-input layer: every format, every error, selection rules."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

import pki as p
from cobrowse_tls.core import certs, pfx
from cobrowse_tls.core.certs import (
    CACertificate,
    CertificateError,
    fingerprint,
    parse_source,
    select,
)

SRC = "secret genesys/genesys-ca key certificateCA.crt"
TYPO = b"Hunter2-typo"  # a wrong password that must not show up in messages
REPO = Path(__file__).resolve().parents[2]


def subjects(found: list[CACertificate]) -> list[str]:
    return [c.subject for c in found]


def parse(data: bytes, password: bytes | None = None) -> list[CACertificate]:
    return parse_source(data, source=SRC, password=password)


# --- formats -----------------------------------------------------------------------------


def test_certificate_fields(pki: p.PKI) -> None:
    (cert,) = parse(pki.root.pem)
    assert cert.der == pki.root.der
    assert cert.sha256 == pki.root.sha256
    assert cert.sha256 == cert.sha256.lower()
    assert len(cert.sha256) == 64
    assert cert.subject == "CN=Test Root CA,O=cobrowse-tls tests"
    assert cert.not_before == pki.now - p.DAY
    assert cert.not_after == pki.now + 365 * p.DAY
    assert cert.not_before.utcoffset() == timedelta(0)
    assert cert.source == SRC
    assert cert.is_ca
    assert cert.pem.encode() == pki.root.pem


def test_pem_many_in_file_order(pki: p.PKI) -> None:
    found = parse(p.pem(pki.intermediate, pki.root, pki.other_root))
    assert [c.sha256 for c in found] == [
        pki.intermediate.sha256,
        pki.root.sha256,
        pki.other_root.sha256,
    ]


@pytest.mark.parametrize(
    "encode",
    [p.pem, p.pem_crlf, p.pem_with_text, lambda *c: p.pem_with_text(*c).replace(b"\n", b"\r\n")],
    ids=["plain", "crlf", "text-around", "text-around-crlf"],
)
def test_pem_variants(pki: p.PKI, encode: Callable[..., bytes]) -> None:
    assert [c.der for c in parse(encode(pki.root, pki.other_root))] == [
        pki.root.der,
        pki.other_root.der,
    ]


def test_pem_bag_attributes_from_openssl_nodes(pki: p.PKI) -> None:
    data = p.pem_bag_attributes(pki.server, pki.root)
    assert b"Bag Attributes" in data
    assert b"PRIVATE KEY" in data
    assert [c.der for c in parse(data)] == [pki.server.der, pki.root.der]


def test_pem_private_key_block_is_skipped(pki: p.PKI) -> None:
    found = parse(p.pem_with_key(pki.root))
    assert [c.der for c in found] == [pki.root.der]


def test_pem_trusted_certificate_label(pki: p.PKI) -> None:
    # OpenSSL's "TRUSTED CERTIFICATE" form appends trust settings after the certificate.
    aux = b"\x30\x0c\x30\x0a\x06\x08\x2b\x06\x01\x05\x05\x07\x03\x01"
    b64 = base64.encodebytes(pki.root.der + aux)
    data = b"-----BEGIN TRUSTED CERTIFICATE-----\n" + b64 + b"-----END TRUSTED CERTIFICATE-----\n"
    assert [c.der for c in parse(data)] == [pki.root.der]


def test_der(pki: p.PKI) -> None:
    assert [c.der for c in parse(pki.root.der)] == [pki.root.der]


PKCS12_ENCODERS = {
    "modern-aes256": p.pkcs12_modern,
    "legacy-3des": p.pkcs12_3des,
}


@pytest.mark.parametrize("kind", PKCS12_ENCODERS)
def test_pkcs12_main_and_additional_bags(pki: p.PKI, kind: str) -> None:
    data = PKCS12_ENCODERS[kind](pki.server, pki.root, pki.intermediate)
    found = parse(data, p.PASSWORD)
    assert [c.der for c in found] == [pki.server.der, pki.root.der, pki.intermediate.der]


def test_pkcs12_without_password(pki: p.PKI) -> None:
    found = parse(p.pkcs12_no_password(pki.root))
    assert [c.der for c in found] == [pki.root.der]


# --- PKCS#12 files written by openssl and keytool ----------------------------------------

EXPORTS = [*p.OPENSSL_EXPORTS, *p.KEYTOOL_EXPORTS]
EMPTY_OR_NONE = [name for name in EXPORTS if "empty-password" in name or "no-password" in name]
PROTECTED = [name for name in EXPORTS if name not in EMPTY_OR_NONE]


@pytest.mark.parametrize("name", EXPORTS)
def test_exported_pkcs12_loads(exported_pkcs12: dict[str, p.Exported], name: str) -> None:
    """cryptography itself decodes every real exporter's file, legacy encryption included."""
    exported = exported_pkcs12[name]
    found = parse(exported.data, exported.password)
    assert tuple(c.der for c in found) == exported.certificates


@pytest.mark.parametrize("name", EXPORTS)
def test_exported_pkcs12_keys_never_kept(
    pki: p.PKI, exported_pkcs12: dict[str, p.Exported], name: str
) -> None:
    exported = exported_pkcs12[name]
    kept = b"".join(
        c.der + c.pem.encode() + repr(c).encode() for c in parse(exported.data, exported.password)
    )
    for marker in p.private_key_markers(pki.server):
        assert marker not in kept


@pytest.mark.parametrize("name", PROTECTED)
def test_exported_pkcs12_wrong_password(exported_pkcs12: dict[str, p.Exported], name: str) -> None:
    for wrong in (TYPO, b""):
        with pytest.raises(CertificateError) as err:
            parse(exported_pkcs12[name].data, wrong)
        assert (err.value.reason, str(err.value)) == (
            "WrongPassword",
            f"{SRC}: wrong PKCS#12 password",
        )
        assert TYPO.decode() not in str(err.value)


@pytest.mark.parametrize("name", PROTECTED)
def test_exported_pkcs12_no_password_given(
    exported_pkcs12: dict[str, p.Exported], name: str
) -> None:
    with pytest.raises(CertificateError) as err:
        parse(exported_pkcs12[name].data, None)
    assert (err.value.reason, str(err.value)) == (
        "WrongPassword",
        f"{SRC}: PKCS#12 data is password-protected and no password was given",
    )


@pytest.mark.parametrize("name", EMPTY_OR_NONE)
@pytest.mark.parametrize("given", [b"", None], ids=["empty", "none"])
def test_exported_pkcs12_empty_or_no_password(
    exported_pkcs12: dict[str, p.Exported], name: str, given: bytes | None
) -> None:
    """A file exported with an empty password (or none) loads with b"" and without one."""
    exported = exported_pkcs12[name]
    assert tuple(c.der for c in parse(exported.data, given)) == exported.certificates


@pytest.mark.parametrize("name", EXPORTS)
def test_exported_pkcs12_truncated(exported_pkcs12: dict[str, p.Exported], name: str) -> None:
    exported = exported_pkcs12[name]
    for password in (exported.password, TYPO, None):
        with pytest.raises(CertificateError) as err:
            parse(exported.data[: len(exported.data) // 2], password)
        assert (err.value.reason, str(err.value)) == (
            "InvalidCertificate",
            f"{SRC}: invalid PKCS#12 data: truncated",
        )


@pytest.mark.parametrize("name", EXPORTS)
def test_exported_pkcs12_garbage(exported_pkcs12: dict[str, p.Exported], name: str) -> None:
    """A PFX header (SEQUENCE, version 3) followed by bytes that are no ContentInfo."""
    exported = exported_pkcs12[name]
    header = exported.data[:7]
    assert header[-3:] == b"\x02\x01\x03"
    junk = bytes(range(0xE0, 0x100)) * (len(exported.data) // 32 + 1)
    data = header + junk[: len(exported.data) - len(header)]
    for password in (exported.password, TYPO, None):
        with pytest.raises(CertificateError) as err:
            parse(data, password)
        assert (err.value.reason, str(err.value)) == (
            "InvalidCertificate",
            f"{SRC}: invalid PKCS#12 data: malformed",
        )


def _refuse(data: bytes, password: bytes | None) -> object:
    raise ValueError("Invalid password or PKCS12 data")


@pytest.mark.parametrize("name", EXPORTS)
def test_exported_pkcs12_mac_tells_wrong_password_from_undecryptable(
    exported_pkcs12: dict[str, p.Exported], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When cryptography refuses a file, the MAC says whether the password was the reason.

    This is what an OpenSSL without the legacy provider (FIPS builds) does with RC2 files; the
    empty password must verify under both of OpenSSL's encodings (terminator or nothing).
    """
    monkeypatch.setattr(pkcs12, "load_pkcs12", _refuse)
    exported = exported_pkcs12[name]
    if exported.encryption:
        with pytest.raises(CertificateError) as err:
            parse(exported.data, exported.password)
        assert (err.value.reason, str(err.value)) == (
            "InvalidCertificate",
            f"{SRC}: invalid PKCS#12 data: cannot decrypt {exported.encryption}",
        )
    if name in PROTECTED:
        with pytest.raises(CertificateError) as err:
            parse(exported.data, TYPO)
        assert err.value.reason == "WrongPassword"


def test_empty_password_encodings(exported_pkcs12: dict[str, p.Exported]) -> None:
    """OpenSSL 3 writes an empty password's MAC over the BMPString terminator alone."""
    for name in ("openssl-modern-empty-password", "openssl-legacy-empty-password"):
        data = exported_pkcs12[name].data
        for given in (b"", None):
            with pytest.raises(pfx.Pkcs12Error) as err:
                pfx.check(data, given)
            assert not isinstance(err.value, pfx.WrongPasswordError)
        with pytest.raises(pfx.WrongPasswordError):
            pfx.check(data, TYPO)


def test_legacy_pkcs12_without_openssl_legacy_provider(
    exported_pkcs12: dict[str, p.Exported], tmp_path: Path
) -> None:
    """An OpenSSL without its legacy provider cannot decrypt RC2: reported as such, not as a
    wrong password (the MAC still verifies)."""
    exported = exported_pkcs12["openssl-legacy"]
    path = p.write(tmp_path, "legacy.p12", exported.data)
    code = (
        "import sys, pathlib\n"
        "from cobrowse_tls.core.certs import CertificateError, parse_source\n"
        "data = pathlib.Path(sys.argv[1]).read_bytes()\n"
        "for password in (sys.argv[2].encode(), b'wrong'):\n"
        "    try:\n"
        "        parse_source(data, source='s', password=password)\n"
        "    except CertificateError as exc:\n"
        "        print(exc.reason, exc)\n"
    )
    env = {"CRYPTOGRAPHY_OPENSSL_NO_LEGACY": "1", "PYTHONPATH": str(REPO / "operator")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), p.PASSWORD.decode()],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == [
        "InvalidCertificate s: invalid PKCS#12 data: cannot decrypt pbeWithSHAAnd40BitRC2-CBC",
        "WrongPassword s: wrong PKCS#12 password",
    ]


@pytest.mark.parametrize(
    "data",
    [
        p.pem_with_key,
        lambda ck: p.pem_bag_attributes(ck),
        p.pkcs12_modern,
        p.pkcs12_3des,
    ],
    ids=["pem-key", "bag-attributes", "p12-modern", "p12-3des"],
)
def test_private_keys_never_kept(pki: p.PKI, data: Callable[[p.CertKey], bytes]) -> None:
    found = parse(data(pki.server), p.PASSWORD)
    assert [c.der for c in found] == [pki.server.der]
    kept = b"".join(c.der + c.pem.encode() + repr(c).encode() for c in found)
    for marker in p.private_key_markers(pki.server):
        assert marker not in kept


# --- parse errors ------------------------------------------------------------------------


def _truncated_pem(pki: p.PKI) -> bytes:
    return pki.root.pem[: len(pki.root.pem) // 2]


def _bad_base64(pki: p.PKI) -> bytes:
    return pki.root.pem.replace(b"-----\n", b"-----\n!!!!", 1)


def _not_a_cert(pki: p.PKI) -> bytes:
    junk = base64.encodebytes(b"\x30\x03\x02\x01\x05")
    return pki.root.pem + b"-----BEGIN CERTIFICATE-----\n" + junk + b"-----END CERTIFICATE-----\n"


def _truncated_der(pki: p.PKI) -> bytes:
    return pki.root.der[:100]


def _truncated_p12(pki: p.PKI) -> bytes:
    return p.pkcs12_modern(pki.root)[:300]


BAD_INPUTS: list[tuple[str, Callable[[p.PKI], bytes], bytes | None, str, str]] = [
    ("garbage-text", lambda _: b"hello world", None, "InvalidCertificate",
     "not PEM, DER or PKCS#12 data"),
    ("garbage-binary", lambda _: bytes(range(256)), None, "InvalidCertificate",
     "not PEM, DER or PKCS#12 data"),
    ("truncated-der", _truncated_der, None, "InvalidCertificate",
     "truncated DER or PKCS#12 data (100 of {der_len} bytes)"),
    ("truncated-p12", _truncated_p12, p.PASSWORD, "InvalidCertificate",
     "invalid PKCS#12 data: truncated"),
    ("truncated-pem", _truncated_pem, None, "InvalidCertificate",
     "PEM certificate block 1 has no END line"),
    ("truncated-pem-then-more", lambda k: _truncated_pem(k) + k.other_root.pem, None,
     "InvalidCertificate", "PEM certificate block 1 has no END line"),
    ("bad-base64", _bad_base64, None, "InvalidCertificate",
     "PEM certificate block 1 is not valid base64"),
    ("not-a-certificate", _not_a_cert, None, "InvalidCertificate",
     "PEM certificate block 2 is not a valid X.509 certificate"),
    ("empty", lambda _: b"", None, "NoCertificates", "empty, no certificate"),
    ("blank", lambda _: b" \r\n\n", None, "NoCertificates", "empty, no certificate"),
    ("only-a-key", lambda k: k.root.key_pem, None, "NoCertificates",
     "no certificate in PEM data"),
    ("p12-modern-wrong-password", lambda k: p.pkcs12_modern(k.root), TYPO, "WrongPassword",
     "wrong PKCS#12 password"),
    ("p12-3des-wrong-password", lambda k: p.pkcs12_3des(k.root), TYPO, "WrongPassword",
     "wrong PKCS#12 password"),
    ("p12-no-password", lambda k: p.pkcs12_modern(k.root), None, "WrongPassword",
     "PKCS#12 data is password-protected and no password was given"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "password", "reason", "detail"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_parse_errors(
    pki: p.PKI,
    make: Callable[[p.PKI], bytes],
    password: bytes | None,
    reason: str,
    detail: str,
) -> None:
    with pytest.raises(CertificateError) as err:
        parse(make(pki), password)
    expected = detail.format(der_len=len(pki.root.der))
    assert err.value.reason == reason
    assert err.value.source == SRC
    assert str(err.value) == f"{SRC}: {expected}"
    assert "\n" not in str(err.value)
    if password:
        assert password.decode() not in str(err.value)


# --- selection ---------------------------------------------------------------------------


def test_select_dedups_keeps_first_appearance_order(pki: p.PKI) -> None:
    a = parse_source(p.pem(pki.intermediate, pki.root), source="a")
    b = parse_source(p.pem(pki.root, pki.other_root, pki.intermediate), source="b")
    chosen = select([*a, *b], allow_non_ca=False, now=pki.now)
    assert [c.sha256 for c in chosen.certificates] == [
        pki.intermediate.sha256,
        pki.root.sha256,
        pki.other_root.sha256,
    ]
    assert [c.source for c in chosen.certificates] == ["a", "a", "b"]
    assert chosen.expired == ()
    assert chosen.non_ca == ()


def test_select_leaves_out_expired(pki: p.PKI) -> None:
    found = parse(p.pem(pki.expired_ca, pki.root, pki.expired_ca, pki.expired_ca2))
    chosen = select(found, allow_non_ca=False, now=pki.now)
    assert [c.der for c in chosen.certificates] == [pki.root.der]
    assert [c.der for c in chosen.expired] == [pki.expired_ca.der, pki.expired_ca2.der]


def test_select_expiry_is_relative_to_now(pki: p.PKI) -> None:
    found = parse(p.pem(pki.root, pki.expired_ca))
    before = select(found, allow_non_ca=False, now=pki.now - 100 * p.DAY)
    assert len(before.certificates) == 2
    # notAfter itself is still valid (expired means not_after < now).
    at_end = select(found, allow_non_ca=False, now=found[0].not_after)
    assert [c.der for c in at_end.certificates] == [pki.root.der]


@pytest.mark.parametrize(
    ("items", "detail"),
    [
        (("expired_ca", "expired_ca2"), "all 2 certificates have expired"),
        (("expired_ca", "expired_ca"), "the only certificate has expired"),
        ((), "no certificate"),
    ],
)
def test_select_nothing_usable(pki: p.PKI, items: tuple[str, ...], detail: str) -> None:
    found = [c for name in items for c in parse(getattr(pki, name).pem)]
    with pytest.raises(CertificateError) as err:
        select(found, allow_non_ca=False, now=pki.now)
    assert err.value.reason == "NoCertificates"
    assert str(err.value) == f"trustedCA.sources: {detail}"


@pytest.mark.parametrize("name", ["server", "no_bc"])
def test_select_rejects_leaf(pki: p.PKI, name: str) -> None:
    leaf: p.CertKey = getattr(pki, name)
    found = parse_source(p.pem(pki.root), source="a") + parse_source(leaf.pem, source=SRC)
    with pytest.raises(CertificateError) as err:
        select(found, allow_non_ca=False, now=pki.now)
    assert err.value.reason == "NotACertificateAuthority"
    assert err.value.source == SRC
    assert str(err.value) == (
        f'{SRC}: certificate "{leaf.subject}" is not a certificate authority '
        "(no basicConstraints CA=true); set allowNonCA to trust it anyway"
    )


def test_select_allows_leaf_when_asked(pki: p.PKI) -> None:
    found = parse(p.pem(pki.server, pki.root, pki.no_bc))
    chosen = select(found, allow_non_ca=True, now=pki.now)
    assert [c.der for c in chosen.certificates] == [pki.server.der, pki.root.der, pki.no_bc.der]
    assert [c.der for c in chosen.non_ca] == [pki.server.der, pki.no_bc.der]


def test_select_needs_aware_now(pki: p.PKI) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        select(parse(pki.root.pem), allow_non_ca=False, now=datetime(2030, 1, 1))


def test_select_accepts_any_timezone(pki: p.PKI) -> None:
    found = parse(pki.root.pem)
    tz = datetime.now(UTC).astimezone().tzinfo
    assert select(found, allow_non_ca=False, now=pki.now.astimezone(tz)).certificates


def test_expiring(pki: p.PKI) -> None:
    found = parse(p.pem(pki.root, pki.other_root))
    assert certs.expiring(found, now=pki.now, within=30 * p.DAY) == ()
    assert len(certs.expiring(found, now=pki.now, within=400 * p.DAY)) == 2


def test_quote_escapes_control_characters() -> None:
    assert certs._quote("CN=a\nb") == '"CN=a\\x0ab"'
    assert certs._quote("") == '"(empty subject)"'


# --- fingerprint -------------------------------------------------------------------------


def test_fingerprint_is_order_independent_and_set_based(pki: p.PKI) -> None:
    a, b, c = parse(p.pem(pki.root, pki.other_root, pki.intermediate))
    value = fingerprint([a, b, c])
    assert value.startswith("sha256:")
    assert len(value) == len("sha256:") + 64
    assert fingerprint([c, a, b]) == value
    assert fingerprint([b, c, a, a]) == value
    assert fingerprint([a, b]) != value
    assert fingerprint([a]) != fingerprint([b])
