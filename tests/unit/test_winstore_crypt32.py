"""The crypt32 code of ``agent/winstore.py`` run for real, against the fake crypt32 in C.

The agent's sync and cleanup passes go through :func:`cobrowse_tls.agent.store_opener` with
the ``windows`` backend, so every store operation is a ctypes call into the fake library;
failures are injected there. After every step: what the store holds (read by the fake, not
through winstore), the agent's records, and no handle or context left open.
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import pytest

import fake_crypt32
import pki as pki_module
from cobrowse_tls import agent
from cobrowse_tls.agent import state, winstore
from cobrowse_tls.agent.stores import StoreError, Target, thumbprint
from cobrowse_tls.core import certs
from fake_crypt32 import FakeCrypt32

ROOT = Target("LocalMachine", "Root")
CA = Target("LocalMachine", "CA")
SERVICE = Target("Service", "Root", "CobrowseServer")
OWNER = "ns/a"


def tp(item: pki_module.CertKey) -> str:
    return thumbprint(item.der)


class Host:
    """One Windows node: the fake's stores, a state directory, a ca.pem and ready file."""

    def __init__(self, base: Path, crypt32: FakeCrypt32) -> None:
        self.base = base
        self.crypt32 = crypt32
        for target in (ROOT, CA, SERVICE):
            crypt32.create_store(target)

    def config(
        self, *items: pki_module.CertKey, target: Target = ROOT, cleanup: bool = False
    ) -> agent.Config:
        ca = self.base / "ca.pem"
        if items:
            ca.write_bytes(pki_module.pem(*items))
        fingerprint = certs.fingerprint(certs.parse_source(ca.read_bytes(), source="t"))
        return agent.Config(
            fingerprint=fingerprint,
            owner=OWNER,
            target=target,
            state_dir=self.base / "state",
            ready_file=self.base / "ready",
            backend="windows",
            ca_file=ca,
            cleanup=cleanup,
        )

    def run(self, config: agent.Config) -> tuple[bool, str]:
        result = agent.run_pass(config, agent.store_opener(config, self.crypt32.crypt32))
        self.crypt32.assert_no_leaks()
        return result

    def record(self) -> dict[str, dict[str, list[str]]] | None:
        path = state.record_path(self.base / "state", OWNER)
        if not path.exists():
            return None
        stores: dict[str, dict[str, list[str]]] = json.loads(path.read_text())["stores"]
        return stores

    def ready(self) -> str | None:
        path = self.base / "ready"
        return path.read_text() if path.exists() else None

    def store(self, target: Target = ROOT) -> winstore.WindowsStore:
        return winstore.WindowsStore(target, self.crypt32.crypt32)


@pytest.fixture
def host(tmp_path: Path, crypt32: FakeCrypt32) -> Host:
    return Host(tmp_path, crypt32)


def test_the_store_operations_through_ctypes(
    crypt32: FakeCrypt32, host: Host, pki: pki_module.PKI
) -> None:
    store = host.store()
    assert store.list_thumbprints() == set()
    store.add(pki.root.der)
    store.add(pki.intermediate.der)
    store.add(pki.root.der)  # CERT_STORE_ADD_REPLACE_EXISTING: still one copy
    # The DER comes back through CERT_CONTEXT.pbCertEncoded/cbCertEncoded intact.
    assert crypt32.certificates(ROOT) == [pki.root.der, pki.intermediate.der]
    assert store.list_thumbprints() == {tp(pki.root), tp(pki.intermediate)}
    assert store.contains(tp(pki.root))
    store.remove(tp(pki.root))
    store.remove(tp(pki.root))  # absent: no error
    assert not store.contains(tp(pki.root))
    assert crypt32.thumbprints(ROOT) == {tp(pki.intermediate)}
    assert crypt32.thumbprints(CA) == set()
    crypt32.assert_no_leaks()


def test_reads_open_read_only_and_every_open_only_an_existing_store(
    crypt32: FakeCrypt32, host: Host, pki: pki_module.PKI
) -> None:
    store = host.store()
    store.list_thumbprints()
    assert crypt32.last_open_flags == 0x00020000 | 0x4000 | 0x8000
    store.contains(tp(pki.root))
    assert crypt32.last_open_flags & 0x8000
    store.add(pki.root.der)
    assert crypt32.last_open_flags == 0x00020000 | 0x4000
    store.remove(tp(pki.root))
    assert crypt32.last_open_flags == 0x00020000 | 0x4000
    crypt32.assert_no_leaks()


def test_a_mistyped_service_name_fails_instead_of_creating_an_empty_store(
    crypt32: FakeCrypt32, host: Host, pki: pki_module.PKI
) -> None:
    typo = Target("Service", "Root", "CobrowseServr")
    config = host.config(pki.root, target=typo)
    ready, message = host.run(config)
    assert not ready
    assert "ERROR_FILE_NOT_FOUND" in message
    assert "no such store" in message
    assert not crypt32.exists(typo)
    assert host.ready() is None
    assert host.record() is None  # nothing decided for a store that could not be listed
    # The right name works.
    ready, _ = host.run(host.config(pki.root, target=SERVICE))
    assert ready
    assert crypt32.thumbprints(SERVICE) == {tp(pki.root)}


def test_sync_then_rotation_then_cleanup(
    crypt32: FakeCrypt32, host: Host, pki: pki_module.PKI
) -> None:
    host.store().add(pki.other_root.der)  # there before the agent
    ready, _ = host.run(host.config(pki.root, pki.other_root))
    assert ready
    assert crypt32.thumbprints(ROOT) == {tp(pki.root), tp(pki.other_root)}
    assert host.record() == {
        "LocalMachine/Root": {"added": [tp(pki.root)], "preexisting": [tp(pki.other_root)]}
    }
    config = host.config(pki.intermediate)
    ready, _ = host.run(config)
    assert ready
    assert host.ready() == config.fingerprint
    assert crypt32.thumbprints(ROOT) == {tp(pki.intermediate), tp(pki.other_root)}
    ready, _ = host.run(host.config(cleanup=True))
    assert ready
    assert crypt32.thumbprints(ROOT) == {tp(pki.other_root)}  # never removes what it found
    assert host.record() is None
    assert host.ready() == "cleaned:" + config.fingerprint


def test_a_failed_add_is_not_in_sync_and_the_next_pass_converges(
    crypt32: FakeCrypt32, host: Host, pki: pki_module.PKI
) -> None:
    config = host.config(pki.root, pki.intermediate)
    first, second = sorted([tp(pki.root), tp(pki.intermediate)])  # the order of the adds
    crypt32.inject("CertAddEncodedCertificateToStore", fake_crypt32.E_ACCESSDENIED, skip=1)
    ready, message = host.run(config)
    assert not ready
    assert f"add {second}: CertAddEncodedCertificateToStore: E_ACCESSDENIED" in message
    assert host.ready() is None
    assert crypt32.thumbprints(ROOT) == {first}
    # The intent is recorded before the add, so whatever landed is known to be ours.
    assert host.record() == {"LocalMachine/Root": {"added": [first, second], "preexisting": []}}
    ready, _ = host.run(config)
    assert ready
    assert crypt32.thumbprints(ROOT) == {tp(pki.root), tp(pki.intermediate)}


def test_a_failed_delete_keeps_the_record_and_the_next_pass_removes_it(
    crypt32: FakeCrypt32, host: Host, pki: pki_module.PKI
) -> None:
    assert host.run(host.config(pki.root))[0]
    config = host.config(pki.intermediate)
    crypt32.inject("CertDeleteCertificateFromStore", fake_crypt32.E_ACCESSDENIED)
    ready, message = host.run(config)  # also checks the context was freed despite the failure
    assert not ready
    assert f"remove {tp(pki.root)}: CertDeleteCertificateFromStore: E_ACCESSDENIED" in message
    assert crypt32.thumbprints(ROOT) == {tp(pki.root), tp(pki.intermediate)}
    assert host.record() == {
        "LocalMachine/Root": {
            "added": sorted([tp(pki.root), tp(pki.intermediate)]),
            "preexisting": [],
        }
    }
    ready, _ = host.run(config)
    assert ready
    assert crypt32.thumbprints(ROOT) == {tp(pki.intermediate)}
    assert host.record() == {
        "LocalMachine/Root": {"added": [tp(pki.intermediate)], "preexisting": []}
    }


@pytest.mark.parametrize("skip", [0, 1])
def test_an_enumeration_ending_with_an_error_never_adopts_a_ca_as_its_own(
    crypt32: FakeCrypt32, host: Host, pki: pki_module.PKI, skip: int
) -> None:
    # Both CAs are in the store before the agent; the listing breaks off after ``skip`` of them.
    host.store().add(pki.intermediate.der)
    host.store().add(pki.root.der)
    config = host.config(pki.root, pki.intermediate)
    crypt32.inject("CertEnumCertificatesInStore", fake_crypt32.ERROR_NOT_READY, skip=skip)
    ready, message = host.run(config)
    assert not ready
    assert "CertEnumCertificatesInStore: ERROR_NOT_READY (0x80070015)" in message
    assert host.record() is None  # nothing decided on a truncated listing
    ready, _ = host.run(config)
    assert ready
    assert host.record() == {
        "LocalMachine/Root": {
            "added": [],
            "preexisting": sorted([tp(pki.root), tp(pki.intermediate)]),
        }
    }
    # No longer wanted, still there: they were never this agent's.
    assert host.run(host.config(pki.other_root))[0]
    assert host.run(host.config(cleanup=True))[0]
    assert crypt32.thumbprints(ROOT) == {tp(pki.root), tp(pki.intermediate)}


def test_both_documented_ends_of_an_enumeration(
    crypt32: FakeCrypt32, host: Host, pki: pki_module.PKI
) -> None:
    host.store().add(pki.root.der)
    # ERROR_NO_MORE_FILES (external stores) ends a listing as CRYPT_E_NOT_FOUND does.
    crypt32.inject("CertEnumCertificatesInStore", fake_crypt32.ERROR_NO_MORE_FILES, skip=1)
    assert host.store().list_thumbprints() == {tp(pki.root)}
    crypt32.inject("CertEnumCertificatesInStore", fake_crypt32.E_INVALIDARG, skip=1)
    with pytest.raises(StoreError, match="E_INVALIDARG"):
        host.store().list_thumbprints()
    crypt32.assert_no_leaks()


def test_a_failed_search_is_an_error_not_an_absent_certificate(
    crypt32: FakeCrypt32, host: Host, pki: pki_module.PKI
) -> None:
    host.store().add(pki.root.der)
    crypt32.inject("CertFindCertificateInStore", fake_crypt32.E_INVALIDARG, times=2)
    with pytest.raises(StoreError, match="CertFindCertificateInStore: E_INVALIDARG"):
        host.store().remove(tp(pki.root))
    with pytest.raises(StoreError, match="CertFindCertificateInStore"):
        host.store().contains(tp(pki.root))
    assert crypt32.thumbprints(ROOT) == {tp(pki.root)}
    crypt32.assert_no_leaks()


def test_a_store_that_cannot_be_opened_leaves_everything_alone(
    crypt32: FakeCrypt32, host: Host, pki: pki_module.PKI
) -> None:
    assert host.run(host.config(pki.root))[0]
    before = host.record()
    crypt32.inject("CertOpenStore", fake_crypt32.E_ACCESSDENIED, times=100)
    ready, message = host.run(host.config(pki.intermediate))
    assert not ready
    assert "CertOpenStore LocalMachine/Root: E_ACCESSDENIED" in message
    assert host.record() == before
    assert crypt32.thumbprints(ROOT) == {tp(pki.root)}


def test_a_new_store_is_converged_and_the_old_one_emptied(
    crypt32: FakeCrypt32, host: Host, pki: pki_module.PKI
) -> None:
    assert host.run(host.config(pki.root))[0]
    assert host.run(host.config(pki.root, target=CA))[0]
    assert crypt32.thumbprints(ROOT) == set()
    assert crypt32.thumbprints(CA) == {tp(pki.root)}
    assert host.record() == {"LocalMachine/CA": {"added": [tp(pki.root)], "preexisting": []}}


def test_the_structures_have_the_64_bit_windows_layout() -> None:
    # wincrypt.h on x64: CERT_CONTEXT is DWORD, BYTE*, DWORD, PCERT_INFO, HCERTSTORE (40 bytes,
    # the pointers 8-aligned); CRYPT_HASH_BLOB is DWORD, BYTE* (16). The C fake asserts the same.
    context = winstore._CertContext
    assert ctypes.sizeof(context) == 40
    assert [
        getattr(context, f).offset for f in ("pbCertEncoded", "cbCertEncoded", "hCertStore")
    ] == [
        8,
        16,
        32,
    ]
    assert ctypes.sizeof(winstore._HashBlob) == 16
    assert ctypes.sizeof(winstore.DWORD) == ctypes.sizeof(winstore.BOOL) == 4
