"""The certificate store interface shared by the Windows and the file-backed stores.

Certificates are identified by their thumbprint as Windows shows it: the SHA-1 of the DER
encoding, 40 uppercase hex digits. SHA-1 because that is what the Windows store indexes
(``CERT_FIND_SHA1_HASH``) and what administrators see in the Certificates snap-in and in
``Cert:\\`` paths; it identifies, it does not secure anything here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "LOCATIONS",
    "STORE_NAMES",
    "Store",
    "StoreError",
    "Target",
    "is_thumbprint",
    "thumbprint",
]

LOCATIONS = ("LocalMachine", "Service", "User")
STORE_NAMES = ("Root", "CA")

_THUMBPRINT = re.compile(r"[0-9A-F]{40}")


def thumbprint(der: bytes) -> str:
    """The Windows thumbprint of a DER certificate: SHA-1, uppercase hex."""
    return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()


def is_thumbprint(text: str) -> bool:
    return _THUMBPRINT.fullmatch(text) is not None


class StoreError(Exception):
    """A store operation failed; the pass is not in sync and is retried later."""


@dataclass(frozen=True)
class Target:
    """Which store: ``location`` LocalMachine | Service | User, ``store`` Root | CA.

    ``account`` is the service name (Service) or the user's SID (User); None for LocalMachine.
    """

    location: str
    store: str
    account: str | None = None

    @property
    def key(self) -> str:
        """Stable text naming the store, used as the key in the agent's records."""
        if self.account is None:
            return f"{self.location}/{self.store}"
        return f"{self.location}/{self.account}/{self.store}"

    @classmethod
    def from_key(cls, key: str) -> Target:
        parts = key.split("/")
        if len(parts) == 2:
            return cls(parts[0], parts[1])
        if len(parts) == 3:
            return cls(parts[0], parts[2], parts[1])
        raise ValueError(f"not a store key: {key!r}")


class Store(Protocol):
    """One certificate store (for example LocalMachine\\Root)."""

    def list_thumbprints(self) -> set[str]:
        """Thumbprints of every certificate in the store, whoever put it there."""
        ...

    def add(self, der: bytes) -> None:
        """Add the certificate, replacing an existing one with the same thumbprint."""
        ...

    def remove(self, thumbprint: str) -> None:
        """Remove the certificate with this thumbprint; no error when it is absent."""
        ...

    def contains(self, thumbprint: str) -> bool: ...
