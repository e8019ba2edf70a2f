"""Hypothesis strategies shared by the property tests of render and of the reconciler:
certificate bytes, known good and hostile, whole or mutated."""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import TypeVar

from hypothesis import strategies as st

import pki as pki_module

T = TypeVar("T")
PFX_PASSWORD = b"pfx-Pass"
GOOD = ["root.pem", "chain.pem", "crlf.pem", "bag.pem", "key.pem", "root.der"]


def mostly(common: T, *rare: T) -> st.SearchStrategy[T]:
    """``common`` about seven times in eight, else one of ``rare``.

    Hypothesis favours the ends of a range (and so the last element of sampled_from); here
    the ends map to ``common`` and the rare values sit in the middle.
    """
    n = len(rare)
    return st.integers(0, 8 * n + 1).map(
        lambda i: rare[i - 4 * n] if 4 * n <= i < 5 * n else common
    )


@functools.cache
def known_material() -> dict[str, bytes]:
    pki = pki_module.pki()
    return {
        "root.pem": pki_module.pem(pki.root),
        "chain.pem": pki_module.pem_with_text(pki.root, pki.intermediate, pki.other_root),
        "crlf.pem": pki_module.pem_crlf(pki.intermediate),
        "bag.pem": pki_module.pem_bag_attributes(pki.root, pki.intermediate),
        "key.pem": pki_module.pem_with_key(pki.root),
        "leaf.pem": pki_module.pem(pki.server),
        "expired.pem": pki_module.pem(pki.expired_ca),
        "nobc.pem": pki_module.pem(pki.no_bc),
        "root.der": pki.root.der,
        "modern.pfx": pki_module.pkcs12_modern(pki.root, pki.intermediate, password=PFX_PASSWORD),
        "3des.pfx": pki_module.pkcs12_3des(pki.root, password=PFX_PASSWORD),
        "open.pfx": pki_module.pkcs12_no_password(pki.other_root),
    }


@st.composite
def hostile_subject_pem(draw: st.DrawFn) -> bytes:
    pki = pki_module.pki()
    cn = draw(
        st.one_of(
            st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=64),
            st.sampled_from(
                [
                    "-----BEGIN CERTIFICATE-----",
                    "a\n-----END CERTIFICATE-----\n",
                    "# sha256: 00\r\n-----BEGIN X509 CRL-----",
                ]
            ),
        )
    )
    cert = pki_module.make_cert(
        cn, not_before=pki.now - timedelta(days=1), not_after=pki.now + timedelta(days=9)
    )
    return cert.pem


def _mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    for position, delete, insert in edits:
        at = position % (len(data) + 1)
        data = data[:at] + insert + data[at + delete :]
    return data


edits = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 8), st.binary(max_size=8)), max_size=3
)


@st.composite
def cert_bytes(draw: st.DrawFn) -> bytes:
    material = known_material()
    kind = draw(mostly("good", "known", "hostile", "mutated", "junk", "concat"))
    if kind == "good":
        return material[draw(st.sampled_from(GOOD))]
    if kind == "known":
        return material[draw(st.sampled_from(sorted(material)))]
    if kind == "hostile":
        return draw(hostile_subject_pem())
    if kind == "mutated":
        return _mutate(material[draw(st.sampled_from(sorted(material)))], draw(edits))
    if kind == "concat":
        names = draw(st.lists(st.sampled_from(sorted(material)), min_size=2, max_size=4))
        return b"".join(material[n] for n in names)
    return draw(
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from([b"", b"\n", b"-----BEGIN CERTIFICATE-----\n", b"0\x82\xff\xff"]),
        )
    )
