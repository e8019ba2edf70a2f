"""The Windows certificate store through crypt32 (ctypes). The class exists only on Windows.

:func:`open_args` (which ``CertOpenStore`` flags and system store name a target maps to) is
plain Python, so that the mapping is tested on Linux too.

* LocalMachine: ``CERT_SYSTEM_STORE_LOCAL_MACHINE``, store ``Root`` / ``CA``.
* Service: ``CERT_SYSTEM_STORE_SERVICES``, store ``<service>\\Root``: the store of the
  account the service runs under, as "Service account" in the Certificates snap-in.
* User: ``CERT_SYSTEM_STORE_USERS``, store ``<SID>\\Root``: ``HKEY_USERS\\<SID>``, which exists
  only while the user's profile is loaded (logged on, or a service running as that user).
"""

from __future__ import annotations

import hashlib
import re
import sys

from cobrowse_tls.agent.stores import Target

__all__ = [
    "CERT_STORE_PROV_SYSTEM_W",
    "CERT_SYSTEM_STORE_LOCAL_MACHINE",
    "CERT_SYSTEM_STORE_SERVICES",
    "CERT_SYSTEM_STORE_USERS",
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
CRYPT_E_NOT_FOUND = 0x80092004

_SID = re.compile(r"S-1-\d+(-\d+)+")
_LOCATION_FLAGS = {
    "LocalMachine": CERT_SYSTEM_STORE_LOCAL_MACHINE,
    "Service": CERT_SYSTEM_STORE_SERVICES,
    "User": CERT_SYSTEM_STORE_USERS,
}


def open_args(target: Target) -> tuple[int, str]:
    """``(dwFlags, pvPara)`` for ``CertOpenStore(CERT_STORE_PROV_SYSTEM_W, ...)``.

    Raises ValueError for a combination Windows would not understand (an unknown location or
    store, an account missing or given where it has no meaning, a User that is not a SID,
    a service name with a backslash, which would shift the store name).
    """
    if target.store not in ("Root", "CA"):
        raise ValueError(f"unknown store {target.store!r} (Root or CA)")
    flags = _LOCATION_FLAGS.get(target.location)
    if flags is None:
        raise ValueError(f"unknown location {target.location!r} (LocalMachine, Service or User)")
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


if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    from cobrowse_tls.agent.stores import StoreError, is_thumbprint

    class _CertContext(ctypes.Structure):
        _fields_ = [
            ("dwCertEncodingType", wintypes.DWORD),
            ("pbCertEncoded", ctypes.POINTER(ctypes.c_ubyte)),
            ("cbCertEncoded", wintypes.DWORD),
            ("pCertInfo", ctypes.c_void_p),
            ("hCertStore", ctypes.c_void_p),
        ]

    class _HashBlob(ctypes.Structure):
        _fields_ = [
            ("cbData", wintypes.DWORD),
            ("pbData", ctypes.POINTER(ctypes.c_ubyte)),
        ]

    _PCtx = ctypes.POINTER(_CertContext)
    _crypt32 = ctypes.WinDLL("crypt32", use_last_error=True)
    _open = _crypt32.CertOpenStore
    _open.restype = ctypes.c_void_p
    _open.argtypes = [
        ctypes.c_void_p,  # the provider is an integer passed as LPCSTR
        wintypes.DWORD,
        ctypes.c_void_p,
        wintypes.DWORD,
        wintypes.LPCWSTR,
    ]
    _close = _crypt32.CertCloseStore
    _close.restype = wintypes.BOOL
    _close.argtypes = [ctypes.c_void_p, wintypes.DWORD]
    _add = _crypt32.CertAddEncodedCertificateToStore
    _add.restype = wintypes.BOOL
    _add.argtypes = [
        ctypes.c_void_p,
        wintypes.DWORD,
        ctypes.c_char_p,
        wintypes.DWORD,
        wintypes.DWORD,
        ctypes.c_void_p,
    ]
    _find = _crypt32.CertFindCertificateInStore
    _find.restype = _PCtx
    _find.argtypes = [
        ctypes.c_void_p,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.DWORD,
        ctypes.c_void_p,
        _PCtx,
    ]
    _delete = _crypt32.CertDeleteCertificateFromStore
    _delete.restype = wintypes.BOOL
    _delete.argtypes = [_PCtx]
    _enum = _crypt32.CertEnumCertificatesInStore
    _enum.restype = _PCtx
    _enum.argtypes = [ctypes.c_void_p, _PCtx]
    _free = _crypt32.CertFreeCertificateContext
    _free.restype = wintypes.BOOL
    _free.argtypes = [_PCtx]

    def _failure(what: str) -> StoreError:
        code = ctypes.get_last_error()
        return StoreError(f"{what}: {ctypes.FormatError(code).strip()} (0x{code & 0xFFFFFFFF:08X})")

    class WindowsStore:
        """A system store; opened for each operation, so no handle outlives a pass."""

        def __init__(self, target: Target) -> None:
            self.target = target
            self._flags, self._name = open_args(target)

        def _handle(self) -> int:
            handle = _open(CERT_STORE_PROV_SYSTEM_W, 0, None, self._flags, self._name)
            if not handle:
                raise _failure(f"CertOpenStore {self.target.key}")
            return int(handle)

        def list_thumbprints(self) -> set[str]:
            store = self._handle()
            try:
                found: set[str] = set()
                ctx = _enum(store, None)
                # Each call frees the previous context; the last returns NULL.
                while ctx:
                    c = ctx.contents
                    der = ctypes.string_at(c.pbCertEncoded, c.cbCertEncoded)
                    found.add(hashlib.sha1(der, usedforsecurity=False).hexdigest().upper())
                    ctx = _enum(store, ctx)
                return found
            finally:
                _close(store, 0)

        def add(self, der: bytes) -> None:
            store = self._handle()
            try:
                ok = _add(store, ENCODING, der, len(der), CERT_STORE_ADD_REPLACE_EXISTING, None)
                if not ok:
                    raise _failure("CertAddEncodedCertificateToStore")
            finally:
                _close(store, 0)

        def _find(self, store: int, thumb: str) -> ctypes._Pointer[_CertContext] | None:
            if not is_thumbprint(thumb):
                raise StoreError(f"not a thumbprint: {thumb!r}")
            raw = bytes.fromhex(thumb)
            buf = (ctypes.c_ubyte * len(raw)).from_buffer_copy(raw)
            blob = _HashBlob(len(raw), ctypes.cast(buf, ctypes.POINTER(ctypes.c_ubyte)))
            ctx: ctypes._Pointer[_CertContext] = _find(
                store, ENCODING, 0, CERT_FIND_SHA1_HASH, ctypes.byref(blob), None
            )
            if not ctx:
                if ctypes.get_last_error() & 0xFFFFFFFF == CRYPT_E_NOT_FOUND:
                    return None
                raise _failure("CertFindCertificateInStore")
            return ctx

        def remove(self, thumb: str) -> None:
            store = self._handle()
            try:
                ctx = self._find(store, thumb)
                # CertDeleteCertificateFromStore frees the context, even when it fails.
                if ctx is not None and not _delete(ctx):
                    raise _failure("CertDeleteCertificateFromStore")
            finally:
                _close(store, 0)

        def contains(self, thumb: str) -> bool:
            store = self._handle()
            try:
                ctx = self._find(store, thumb)
                if ctx is None:
                    return False
                _free(ctx)
                return True
            finally:
                _close(store, 0)
