"""The Windows certificate store through crypt32 (ctypes).

:func:`open_args` (which ``CertOpenStore`` flags and system store name a target maps to) is
plain Python. :class:`WindowsStore` takes crypt32 as a :class:`Crypt32` binding:
:func:`load_crypt32` on Windows (``WinDLL("crypt32", use_last_error=True)``), or the tests' fake
crypt32, a C library with the same functions loaded through the same prototypes, so the ctypes
code runs on Linux too.

* LocalMachine: ``CERT_SYSTEM_STORE_LOCAL_MACHINE``, store ``Root`` / ``CA``.
* Service: ``CERT_SYSTEM_STORE_SERVICES``, store ``<service>\\Root``: the store of the
  account the service runs under, as "Service account" in the Certificates snap-in.
* User: ``CERT_SYSTEM_STORE_USERS``, store ``<SID>\\Root``: ``HKEY_USERS\\<SID>``, which exists
  only while the user's profile is loaded (logged on, or a service running as that user).

Stores are opened with ``CERT_STORE_OPEN_EXISTING_FLAG``: a mistyped service name or SID must
fail, not create an empty store that the agent would then report in sync. Reads also pass
``CERT_STORE_READONLY_FLAG``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import re
import sys
from collections.abc import Callable
from typing import Any

from cobrowse_tls.agent.stores import StoreError, Target, is_thumbprint

__all__ = [
    "CERT_STORE_OPEN_EXISTING_FLAG",
    "CERT_STORE_PROV_SYSTEM_W",
    "CERT_STORE_READONLY_FLAG",
    "CERT_SYSTEM_STORE_LOCAL_MACHINE",
    "CERT_SYSTEM_STORE_SERVICES",
    "CERT_SYSTEM_STORE_USERS",
    "Crypt32",
    "WindowsStore",
    "bind",
    "load_crypt32",
    "open_args",
]

CERT_STORE_PROV_SYSTEM_W = 10
_LOCATION_SHIFT = 16
CERT_SYSTEM_STORE_LOCAL_MACHINE = 2 << _LOCATION_SHIFT
CERT_SYSTEM_STORE_SERVICES = 5 << _LOCATION_SHIFT
CERT_SYSTEM_STORE_USERS = 6 << _LOCATION_SHIFT
X509_ASN_ENCODING = 0x00000001
PKCS_7_ASN_ENCODING = 0x00010000
ENCODING = X509_ASN_ENCODING | PKCS_7_ASN_ENCODING
CERT_STORE_ADD_REPLACE_EXISTING = 3
CERT_FIND_SHA1_HASH = 1 << 16  # CERT_COMPARE_SHA1_HASH << CERT_COMPARE_SHIFT
CERT_STORE_OPEN_EXISTING_FLAG = 0x00004000
CERT_STORE_READONLY_FLAG = 0x00008000
CRYPT_E_NOT_FOUND = 0x80092004
ERROR_FILE_NOT_FOUND = 0x00000002
ERROR_NO_MORE_FILES = 0x00000012
# CertEnumCertificatesInStore's documented end of the list; any other error is a failure.
ENUM_END = (CRYPT_E_NOT_FOUND, ERROR_NO_MORE_FILES)

_SID = re.compile(r"S-1-\d+(-\d+)+")
_LOCATION_FLAGS = {
    "LocalMachine": CERT_SYSTEM_STORE_LOCAL_MACHINE,
    "Service": CERT_SYSTEM_STORE_SERVICES,
    "User": CERT_SYSTEM_STORE_USERS,
}


def open_args(target: Target, *, read_only: bool = False) -> tuple[int, str]:
    """``(dwFlags, pvPara)`` for ``CertOpenStore(CERT_STORE_PROV_SYSTEM_W, ...)``: an existing
    store only, read-only when ``read_only``.

    Raises ValueError for a combination Windows would not understand (an unknown location or
    store, an account missing or given where it has no meaning, a User that is not a SID,
    a service name with a backslash, which would shift the store name).
    """
    if target.store not in ("Root", "CA"):
        raise ValueError(f"unknown store {target.store!r} (Root or CA)")
    flags = _LOCATION_FLAGS.get(target.location)
    if flags is None:
        raise ValueError(f"unknown location {target.location!r} (LocalMachine, Service or User)")
    flags |= CERT_STORE_OPEN_EXISTING_FLAG | (CERT_STORE_READONLY_FLAG if read_only else 0)
    account = target.account
    if target.location == "LocalMachine":
        if account is not None:
            raise ValueError("LocalMachine takes no account")
        return flags, target.store
    if not account:
        raise ValueError(f"{target.location} needs an account")
    if target.location == "User" and not _SID.fullmatch(account):
        raise ValueError(f"User account must be a SID such as S-1-5-21-...: {account!r}")
    if "\\" in account or "/" in account:
        raise ValueError(f"account must not contain a slash or backslash: {account!r}")
    return flags, f"{account}\\{target.store}"


# 64-bit Windows sizes, spelled out so that the same prototypes hold for the fake crypt32 on
# Linux, where wintypes.DWORD (c_ulong) would be 64 bits.
DWORD = ctypes.c_uint32
BOOL = ctypes.c_int32


class _CertContext(ctypes.Structure):
    _fields_ = [
        ("dwCertEncodingType", DWORD),
        ("pbCertEncoded", ctypes.POINTER(ctypes.c_ubyte)),
        ("cbCertEncoded", DWORD),
        ("pCertInfo", ctypes.c_void_p),
        ("hCertStore", ctypes.c_void_p),
    ]


class _HashBlob(ctypes.Structure):
    _fields_ = [
        ("cbData", DWORD),
        ("pbData", ctypes.POINTER(ctypes.c_ubyte)),
    ]


_PCtx = ctypes.POINTER(_CertContext)


@dataclasses.dataclass(frozen=True)
class Crypt32:
    """crypt32's functions with their prototypes set, and how to read the calling thread's
    last error right after one of them failed (ctypes keeps it, see ``use_last_error``)."""

    lib: Any
    last_error: Callable[[], int]
    describe: Callable[[int], str]


def bind(lib: Any, last_error: Callable[[], int], describe: Callable[[int], str]) -> Crypt32:
    """Set the prototypes of wincrypt.h on ``lib``'s functions."""
    lib.CertOpenStore.restype = ctypes.c_void_p
    lib.CertOpenStore.argtypes = [
        ctypes.c_void_p,  # the provider is an integer passed as LPCSTR
        DWORD,
        ctypes.c_void_p,
        DWORD,
        ctypes.c_void_p,  # const void *pvPara: here a NUL-terminated UTF-16 store name
    ]
    lib.CertCloseStore.restype = BOOL
    lib.CertCloseStore.argtypes = [ctypes.c_void_p, DWORD]
    lib.CertAddEncodedCertificateToStore.restype = BOOL
    lib.CertAddEncodedCertificateToStore.argtypes = [
        ctypes.c_void_p,
        DWORD,
        ctypes.c_char_p,
        DWORD,
        DWORD,
        ctypes.c_void_p,
    ]
    lib.CertFindCertificateInStore.restype = _PCtx
    lib.CertFindCertificateInStore.argtypes = [
        ctypes.c_void_p,
        DWORD,
        DWORD,
        DWORD,
        ctypes.c_void_p,
        _PCtx,
    ]
    lib.CertDeleteCertificateFromStore.restype = BOOL
    lib.CertDeleteCertificateFromStore.argtypes = [_PCtx]
    lib.CertEnumCertificatesInStore.restype = _PCtx
    lib.CertEnumCertificatesInStore.argtypes = [ctypes.c_void_p, _PCtx]
    lib.CertFreeCertificateContext.restype = BOOL
    lib.CertFreeCertificateContext.argtypes = [_PCtx]
    return Crypt32(lib, last_error, describe)


_loaded: list[Crypt32] = []


def load_crypt32() -> Crypt32:
    """The system's crypt32 (Windows only), loaded once."""
    if sys.platform != "win32":
        raise StoreError("crypt32 exists only on Windows")
    if not _loaded:
        lib = ctypes.WinDLL("crypt32", use_last_error=True)
        _loaded.append(
            bind(lib, ctypes.get_last_error, lambda code: ctypes.FormatError(code).strip())
        )
    return _loaded[0]


def _wide(text: str) -> ctypes.Array[ctypes.c_char]:
    """A NUL-terminated UTF-16 string (LPCWSTR), whatever the size of the C wchar_t."""
    return ctypes.create_string_buffer((text + "\0").encode("utf-16-le"))


class WindowsStore:
    """A system store; opened for each operation, so no handle outlives a pass."""

    def __init__(self, target: Target, crypt32: Crypt32 | None = None) -> None:
        self.target = target
        open_args(target)  # ValueError now rather than at the first operation
        self._api = crypt32 if crypt32 is not None else load_crypt32()

    def _failure(self, what: str) -> StoreError:
        code = self._api.last_error() & 0xFFFFFFFF
        hint = ""
        if what.startswith("CertOpenStore") and code == ERROR_FILE_NOT_FOUND:
            hint = " (no such store: check the service name or SID; a user's store exists only"
            hint += " while the profile is loaded)"
        return StoreError(f"{what}: {self._api.describe(code)} (0x{code:08X}){hint}")

    def _handle(self, *, read_only: bool) -> int:
        flags, name = open_args(self.target, read_only=read_only)
        handle = self._api.lib.CertOpenStore(CERT_STORE_PROV_SYSTEM_W, 0, None, flags, _wide(name))
        if not handle:
            raise self._failure(f"CertOpenStore {self.target.key}")
        return int(handle)

    def _close(self, store: int) -> None:
        self._api.lib.CertCloseStore(store, 0)

    def list_thumbprints(self) -> set[str]:
        enum = self._api.lib.CertEnumCertificatesInStore
        store = self._handle(read_only=True)
        ctx = None
        try:
            found: set[str] = set()
            # Each call frees the context passed in, even when it fails.
            ctx = enum(store, None)
            while ctx:
                c = ctx.contents
                der = ctypes.string_at(c.pbCertEncoded, c.cbCertEncoded)
                found.add(hashlib.sha1(der, usedforsecurity=False).hexdigest().upper())
                ctx = enum(store, ctx)
            # NULL is the end only with the documented codes: anything else is a truncated
            # listing, which would make a CA that was already there look like one to add.
            if self._api.last_error() & 0xFFFFFFFF not in ENUM_END:
                raise self._failure("CertEnumCertificatesInStore")
            return found
        finally:
            if ctx:
                self._api.lib.CertFreeCertificateContext(ctx)
            self._close(store)

    def add(self, der: bytes) -> None:
        store = self._handle(read_only=False)
        try:
            ok = self._api.lib.CertAddEncodedCertificateToStore(
                store, ENCODING, der, len(der), CERT_STORE_ADD_REPLACE_EXISTING, None
            )
            if not ok:
                raise self._failure("CertAddEncodedCertificateToStore")
        finally:
            self._close(store)

    def _find(self, store: int, thumb: str) -> ctypes._Pointer[_CertContext] | None:
        if not is_thumbprint(thumb):
            raise StoreError(f"not a thumbprint: {thumb!r}")
        raw = bytes.fromhex(thumb)
        buf = (ctypes.c_ubyte * len(raw)).from_buffer_copy(raw)
        blob = _HashBlob(len(raw), ctypes.cast(buf, ctypes.POINTER(ctypes.c_ubyte)))
        ctx: ctypes._Pointer[_CertContext] = self._api.lib.CertFindCertificateInStore(
            store, ENCODING, 0, CERT_FIND_SHA1_HASH, ctypes.byref(blob), None
        )
        if not ctx:
            if self._api.last_error() & 0xFFFFFFFF == CRYPT_E_NOT_FOUND:
                return None
            raise self._failure("CertFindCertificateInStore")
        return ctx

    def remove(self, thumb: str) -> None:
        store = self._handle(read_only=False)
        try:
            ctx = self._find(store, thumb)
            # CertDeleteCertificateFromStore frees the context, even when it fails.
            if ctx is not None and not self._api.lib.CertDeleteCertificateFromStore(ctx):
                raise self._failure("CertDeleteCertificateFromStore")
        finally:
            self._close(store)

    def contains(self, thumb: str) -> bool:
        store = self._handle(read_only=True)
        try:
            ctx = self._find(store, thumb)
            if ctx is None:
                return False
            self._api.lib.CertFreeCertificateContext(ctx)
            return True
        finally:
            self._close(store)
