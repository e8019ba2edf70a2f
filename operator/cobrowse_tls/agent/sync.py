"""The sync algorithm: make one store hold the wanted CAs, touching only what this owner added.

:func:`converge` works on a :class:`~cobrowse_tls.agent.stores.Store` and the owner's
:class:`~cobrowse_tls.agent.state.Entry` and calls ``save`` whenever the entry must reach the
disk before the next store operation. The order is what makes a crash at any point safe:

* the intent to add is saved *before* the add, so a certificate in the store that this owner
  put there is always in its record, even if the agent dies right after the add;
* a wanted certificate found in the store and in nobody's record was there before: it is
  saved as ``preexisting`` on first sight and never removed;
* a certificate is removed from the store *before* it is dropped from the record, so a crash
  in between leaves a record entry for an absent certificate, which the next pass drops.

Another owner's record listing a certificate keeps it in the store: two CobrowseTLS may
trust the same CA, and the one that stops wanting it must not pull it from under the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cobrowse_tls.agent import state
from cobrowse_tls.agent.state import Entry, Record
from cobrowse_tls.agent.stores import Store, StoreError, Target

__all__ = ["Outcome", "PassResult", "converge", "sync_owner"]


@dataclass
class Outcome:
    """What one :func:`converge` did. ``in_sync``: the store holds every wanted certificate
    and nothing this owner added is left that it no longer wants."""

    in_sync: bool = False
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)  # found there before: kept forever
    left_to_others: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def converge(
    store: Store,
    wanted: Mapping[str, bytes],
    mine: Entry,
    others: Iterable[Entry],
    save: Callable[[Entry], None],
) -> tuple[Entry, Outcome]:
    """Make ``store`` hold ``wanted`` (thumbprint -> DER); returns the new entry and what was done.

    ``others``: the other owners' entries for the same store. Store failures are collected
    in the outcome (not in sync, retried next pass); any other exception is a crash and
    propagates, after which a rerun converges.
    """
    out = Outcome()
    others = list(others)
    added_by_others = set().union(*(o.added for o in others))
    listed_by_others = added_by_others.union(*(o.preexisting for o in others))
    entry = mine.copy()
    try:
        present = store.list_thumbprints()
    except StoreError as exc:
        # Decide nothing on a listing that may be incomplete: a CA missing from it would be
        # taken for one to add, recorded as this owner's, and removed by a later pass.
        out.errors.append(f"list: {exc}")
        return entry, out

    for thumb in sorted(wanted):
        if thumb in entry.added or thumb in entry.preexisting:
            continue
        if thumb in present:
            if thumb in added_by_others:
                # Put there by another owner's agent: share it, so it stays until neither wants it.
                entry.added.add(thumb)
            else:
                entry.preexisting.add(thumb)
                out.adopted.append(thumb)
    missing = sorted(t for t in wanted if t not in present)
    for thumb in missing:
        # Was there once but is gone now (removed by hand): from now on it is ours.
        entry.preexisting.discard(thumb)
        entry.added.add(thumb)
    # A pre-existing certificate no longer wanted is simply forgotten, never removed.
    entry.preexisting &= set(wanted)
    if entry != mine:
        save(entry)

    for thumb in missing:
        try:
            store.add(wanted[thumb])
        except StoreError as exc:
            out.errors.append(f"add {thumb}: {exc}")
        else:
            out.added.append(thumb)

    saved = entry.copy()
    for thumb in sorted(entry.added - set(wanted)):
        if thumb in listed_by_others:
            out.left_to_others.append(thumb)
        elif thumb in present:
            try:
                store.remove(thumb)
            except StoreError as exc:
                out.errors.append(f"remove {thumb}: {exc}")
                continue
            out.removed.append(thumb)
        entry.added.discard(thumb)
    if entry != saved:
        save(entry)

    try:
        final = store.list_thumbprints()
    except StoreError as exc:
        out.errors.append(f"list: {exc}")
        return entry, out
    not_there = sorted(set(wanted) - final)
    if not_there and not out.errors:
        out.errors.append("not in the store after adding: " + ", ".join(not_there))
    out.in_sync = not out.errors and not not_there and entry.added <= set(wanted)
    return entry, out


@dataclass
class PassResult:
    """One pass over every store this owner has touched. ``in_sync`` concerns the target
    (sync mode) or every store (cleanup mode)."""

    in_sync: bool
    outcomes: dict[str, Outcome]
    errors: list[str]


def sync_owner(
    state_dir: Path,
    owner: str,
    target: Target,
    wanted: Mapping[str, bytes],
    open_store: Callable[[Target], Store],
    *,
    cleanup: bool = False,
) -> PassResult:
    """One pass for ``owner``: converge ``target`` to ``wanted`` (to nothing when ``cleanup``),
    and empty every other store this owner added to earlier (a changed location or store).

    Holds the state directory's lock throughout. Raises :class:`state.StateError` when a
    record cannot be read (then no store is touched).
    """
    outcomes: dict[str, Outcome] = {}
    errors: list[str] = []
    with state.locked(state_dir):
        records = state.load_records(state_dir)
        record = records.get(owner) or Record(owner)
        keys = sorted(set(record.stores) | ({target.key} if not cleanup else set()))
        in_sync = True
        for key in keys:
            current = key == target.key and not cleanup
            try:
                store = open_store(target if key == target.key else Target.from_key(key))
            except (StoreError, ValueError) as exc:
                errors.append(f"{key}: cannot open the store: {exc}")
                in_sync = in_sync and not (current or cleanup)
                continue
            others = [r.stores[key] for o, r in records.items() if o != owner and key in r.stores]

            def save(entry: Entry, key: str = key) -> None:
                record.stores[key] = entry
                state.save_record(state_dir, record)

            entry, outcome = converge(
                store, wanted if current else {}, record.stores.get(key, Entry()), others, save
            )
            record.stores[key] = entry
            outcomes[key] = outcome
            errors += [f"{key}: {e}" for e in outcome.errors]
            if current or cleanup:
                in_sync = in_sync and outcome.in_sync
        state.save_record(state_dir, record)
    return PassResult(in_sync, outcomes, errors)
