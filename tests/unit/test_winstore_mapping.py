"""The Windows store's CertOpenStore arguments, checked on any platform (no ctypes.windll)."""

from __future__ import annotations

import hashlib
import sys

import pytest

import pki as pki_module
from cobrowse_tls.agent import winstore
from cobrowse_tls.agent.stores import StoreError, Target, thumbprint
from cobrowse_tls.agent.winstore import open_args

SID = "S-1-5-21-3623811015-3361044348-30300820-1013"


def test_flag_values_match_wincrypt_h() -> None:
    # wincrypt.h: CERT_SYSTEM_STORE_<X>_ID << CERT_SYSTEM_STORE_LOCATION_SHIFT (16).
    assert winstore.CERT_SYSTEM_STORE_LOCAL_MACHINE == 0x00020000
    assert winstore.CERT_SYSTEM_STORE_SERVICES == 0x00050000
    assert winstore.CERT_SYSTEM_STORE_USERS == 0x00060000
    assert winstore.CERT_STORE_PROV_SYSTEM_W == 10
    assert winstore.CERT_STORE_ADD_REPLACE_EXISTING == 3
    assert winstore.CERT_FIND_SHA1_HASH == 0x00010000
    assert winstore.ENCODING == 0x00010001
    assert winstore.CERT_STORE_OPEN_EXISTING_FLAG == 0x00004000
    assert winstore.CERT_STORE_READONLY_FLAG == 0x00008000
    assert winstore.CRYPT_E_NOT_FOUND == 0x80092004
    assert winstore.ERROR_NO_MORE_FILES == 18  # winerror.h


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (Target("LocalMachine", "Root"), (0x00024000, "Root")),
        (Target("LocalMachine", "CA"), (0x00024000, "CA")),
        (Target("Service", "Root", "CobrowseServer"), (0x00054000, "CobrowseServer\\Root")),
        (Target("Service", "CA", "Genesys Cobrowse"), (0x00054000, "Genesys Cobrowse\\CA")),
        (Target("User", "Root", SID), (0x00064000, f"{SID}\\Root")),
        (Target("User", "CA", "S-1-5-18"), (0x00064000, "S-1-5-18\\CA")),
    ],
)
def test_open_args(target: Target, expected: tuple[int, str]) -> None:
    # CERT_STORE_OPEN_EXISTING_FLAG (0x4000) always: a mistyped name must not create a store.
    assert open_args(target) == expected
    flags, name = expected
    assert open_args(target, read_only=True) == (flags | 0x8000, name)  # CERT_STORE_READONLY_FLAG


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (Target("LocalMachine", "My"), "unknown store"),
        (Target("LocalMachine", "root"), "unknown store"),
        (Target("CurrentUser", "Root"), "unknown location"),
        (Target("LocalMachine", "Root", "svc"), "takes no account"),
        (Target("Service", "Root"), "needs an account"),
        (Target("Service", "Root", ""), "needs an account"),
        (Target("User", "Root"), "needs an account"),
        (Target("User", "Root", "alice"), "SID"),
        (Target("User", "Root", "S-1-5-21-1\\Root"), "SID"),
        (Target("Service", "Root", "svc\\Root"), "backslash"),
        (Target("Service", "Root", "a/b"), "slash"),
    ],
)
def test_open_args_rejects(target: Target, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_args(target)


def test_target_keys_round_trip() -> None:
    for target in (
        Target("LocalMachine", "Root"),
        Target("Service", "CA", "svc"),
        Target("User", "Root", SID),
    ):
        assert Target.from_key(target.key) == target
    with pytest.raises(ValueError, match="not a store key"):
        Target.from_key("a/b/c/d")


def test_thumbprint_is_the_windows_sha1(pki: pki_module.PKI) -> None:
    value = thumbprint(pki.root.der)
    assert value == hashlib.sha1(pki.root.der).hexdigest().upper()  # noqa: S324
    assert len(value) == 40


@pytest.mark.skipif(sys.platform == "win32", reason="checks the non-Windows behaviour")
def test_the_system_crypt32_is_loaded_only_on_windows() -> None:
    with pytest.raises(StoreError, match="only on Windows"):
        winstore.load_crypt32()
    with pytest.raises(StoreError, match="only on Windows"):
        winstore.WindowsStore(Target("LocalMachine", "Root"))
