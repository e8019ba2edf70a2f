"""The agent's records on the host: what each owner (CobrowseTLS) added to which store.

One JSON file per owner, ``<state-dir>/<namespace>_<name>.json``::

    {"version": 1, "owner": "ns/name",
     "stores": {"LocalMachine/Root": {"added": [THUMBPRINT, ...], "preexisting": [...]}}}

``added``: certificates this owner put into the store (or means to, written before the
add); ``preexisting``: wanted certificates that were already there, which it must never
remove. Several agents (one DaemonSet per CobrowseTLS) share the directory, so every pass
holds an exclusive lock on ``<state-dir>/.lock``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cobrowse_tls.agent.stores import is_thumbprint

__all__ = [
    "Entry",
    "Record",
    "StateError",
    "atomic_write",
    "delete_record",
    "load_records",
    "locked",
    "record_path",
    "save_record",
]

VERSION = 1
SUFFIX = ".json"


class StateError(Exception):
    """A record cannot be read; the agent then touches no store (it could not tell whose
    certificates are whose)."""


@dataclass
class Entry:
    """One owner's bookkeeping for one store."""

    added: set[str] = field(default_factory=set)
    preexisting: set[str] = field(default_factory=set)

    def copy(self) -> Entry:
        return Entry(set(self.added), set(self.preexisting))

    def __bool__(self) -> bool:
        return bool(self.added or self.preexisting)


@dataclass
class Record:
    owner: str
    stores: dict[str, Entry] = field(default_factory=dict)


def record_path(state_dir: Path, owner: str) -> Path:
    namespace, name = owner.split("/", 1)
    # Namespaces are DNS labels (no "_"), so the first "_" splits the file name unambiguously.
    return state_dir / f"{namespace}_{name}{SUFFIX}"


def _decode(data: Any, path: Path) -> Record:
    problem = f"{path}: not an agent record"
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise StateError(problem + " (unknown version)")
    owner, stores = data.get("owner"), data.get("stores")
    if not isinstance(owner, str) or not isinstance(stores, dict):
        raise StateError(problem)
    record = Record(owner)
    for key, entry in stores.items():
        if not isinstance(entry, dict):
            raise StateError(problem)
        lists = [entry.get("added", []), entry.get("preexisting", [])]
        for items in lists:
            if not isinstance(items, list) or not all(
                isinstance(t, str) and is_thumbprint(t) for t in items
            ):
                raise StateError(problem + f" (bad thumbprint list for {key})")
        record.stores[str(key)] = Entry(set(lists[0]), set(lists[1]))
    return record


def load_records(state_dir: Path) -> dict[str, Record]:
    """Every owner's record in ``state_dir``, by owner."""
    records: dict[str, Record] = {}
    try:
        paths = sorted(state_dir.glob("*" + SUFFIX))
    except OSError as exc:
        raise StateError(f"{state_dir}: cannot list: {exc.strerror}") from None
    for path in paths:
        try:
            data = json.loads(path.read_bytes())
        except OSError as exc:
            raise StateError(f"{path}: cannot read: {exc.strerror}") from None
        except ValueError:
            raise StateError(f"{path}: not valid JSON") from None
        record = _decode(data, path)
        records[record.owner] = record
    return records


def _encode(record: Record) -> bytes:
    stores = {
        key: {"added": sorted(entry.added), "preexisting": sorted(entry.preexisting)}
        for key, entry in sorted(record.stores.items())
        if entry
    }
    body = {"version": VERSION, "owner": record.owner, "stores": stores}
    return (json.dumps(body, indent=2) + "\n").encode("ascii")


def save_record(state_dir: Path, record: Record) -> None:
    """Write the record atomically; an empty record deletes the file."""
    if not any(record.stores.values()):
        delete_record(state_dir, record.owner)
        return
    atomic_write(record_path(state_dir, record.owner), _encode(record))


def delete_record(state_dir: Path, owner: str) -> None:
    record_path(state_dir, owner).unlink(missing_ok=True)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Hold the state directory's lock (blocking) for the duration of one pass."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".lock", "a+b") as handle:
        if sys.platform == "win32":
            import msvcrt

            handle.seek(0)
            while True:
                try:
                    # LK_LOCK itself retries for about 10 s before giving up.
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    time.sleep(1)
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
