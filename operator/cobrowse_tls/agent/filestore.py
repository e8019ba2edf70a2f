"""A certificate store kept as files: one DER file ``<THUMBPRINT>.cer`` per certificate.

Stands in for a Windows store on Linux (tests, and the end-to-end run of the real agent
process). Writes go to a temporary file in the same directory and are renamed into place, so
a reader or a crash never sees half a certificate.
"""

from __future__ import annotations

import os
from pathlib import Path

from cobrowse_tls.agent import state
from cobrowse_tls.agent.stores import StoreError, Target, is_thumbprint, thumbprint

__all__ = ["FileStore", "target_dir"]

SUFFIX = ".cer"


def target_dir(root: Path, target: Target) -> Path:
    """Where ``target`` lives under ``root``: ``root/<location>[/<account>]/<store>``.

    Each target gets its own directory so that a change of store or location behaves as it
    does on Windows (the old store keeps its certificates until the agent removes them).
    """
    if target.account is None:
        return root / target.location / target.store
    return root / target.location / target.account / target.store


class FileStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, thumb: str) -> Path:
        if not is_thumbprint(thumb):
            raise StoreError(f"not a thumbprint: {thumb!r}")
        return self.directory / (thumb + SUFFIX)

    def list_thumbprints(self) -> set[str]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return set()
        except OSError as exc:
            raise StoreError(f"{self.directory}: cannot list: {exc.strerror}") from None
        stems = (n[: -len(SUFFIX)] for n in names if n.endswith(SUFFIX))
        return {s for s in stems if is_thumbprint(s)}

    def add(self, der: bytes) -> None:
        path = self._path(thumbprint(der))
        try:
            state.atomic_write(path, der)
        except OSError as exc:
            raise StoreError(f"{path}: cannot write: {exc.strerror}") from None

    def remove(self, thumb: str) -> None:
        path = self._path(thumb)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"{path}: cannot remove: {exc.strerror}") from None

    def contains(self, thumb: str) -> bool:
        return self._path(thumb).is_file()
