"""The act step of a reconcile: the writes decided, made in order (events last), in one place.

The first write that fails stops the rest (kube.KubeError: the reconcile is retried and decides
again from what is there then). Events are the exception: one lost is not worth a retry.
The outputs (a Secret and a ConfigMap) do not depend on each other: decided one after the
other, they are written at once when a pool is given, which saves a round trip on the way to
Ready; everything after them (restarts, status) still waits for both.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Mapping, Sequence
from typing import Any, assert_never

from cobrowse_tls.core import decide
from cobrowse_tls.engine import kube

log = logging.getLogger("cobrowse_tls.engine.act")

OUTPUT_KINDS = frozenset({"Secret", "ConfigMap"})


def act(
    client: kube.Writer,
    body: Mapping[str, Any],
    writes: Sequence[decide.Write],
    pool: concurrent.futures.Executor | None = None,
) -> None:
    """Make ``writes`` for the CobrowseTLS ``body`` (as observe read it), in order, events last;
    consecutive output applies at once in ``pool`` (never the pool the caller runs in)."""
    meta = body["metadata"]
    # Events go after the other writes: no output, restart or status waits on an event's round
    # trip. When a write fails, the events decided before it are still posted (as they were
    # when events went in line), the later ones are not.
    # A fallback event is posted only when a later write fails (core/decide.Event).
    due: list[decide.Event] = []
    failed = True
    try:
        for step, events in _steps(writes):
            if len(step) != 1 or _is_output(step[0]):
                _apply_all(client, [w.obj for w in step if isinstance(w, decide.Apply)], pool)
            else:
                _write(client, meta, step[0])
            due += events
        failed = False
    finally:
        for event in due:
            if failed or not event.fallback:
                _event(client, body, event)


def _is_output(write: decide.Write) -> bool:
    return isinstance(write, decide.Apply) and write.obj.get("kind") in OUTPUT_KINDS


def _steps(
    writes: Sequence[decide.Write],
) -> list[tuple[list[decide.Write], list[decide.Event]]]:
    """The writes made one after the other: a run of output applies (made at once) or one
    other write, each with the events decided after it and before the next one."""
    steps: list[tuple[list[decide.Write], list[decide.Event]]] = [([], [])]
    for write in writes:
        step, events = steps[-1]
        if isinstance(write, decide.Event):
            events.append(write)
        elif _is_output(write) and step and _is_output(step[-1]) and not events:
            step.append(write)
        else:
            steps.append(([write], []))
    return steps


def _write(client: kube.Writer, meta: Mapping[str, Any], write: decide.Write) -> None:
    namespace, name = meta["namespace"], meta["name"]
    if isinstance(write, decide.Apply):
        client.apply(write.obj)
    elif isinstance(write, decide.PatchStatus):
        client.patch_status(namespace, name, write.patch)
    elif isinstance(write, decide.SetFinalizers):
        # Only if the CR is still as observed: a finalizer list is replaced, not merged.
        client.set_finalizers(namespace, name, list(write.finalizers), meta["resourceVersion"])
    elif isinstance(write, decide.DeleteDaemonSet):
        client.delete_daemon_set(namespace, write.name)
    elif isinstance(write, decide.Event):
        raise AssertionError("events are posted by act, after the other writes")
    else:
        assert_never(write)


def _apply_all(
    client: kube.Writer,
    objs: Sequence[Mapping[str, Any]],
    pool: concurrent.futures.Executor | None,
) -> None:
    """Apply ``objs``, at once when there is a pool; raise the first failure (in their order)
    once every one has been tried."""
    if pool is None or len(objs) < 2:
        for obj in objs:
            client.apply(obj)
        return
    others = [pool.submit(client.apply, obj) for obj in objs[1:]]
    failure: BaseException | None = None
    try:
        client.apply(objs[0])
    except Exception as exc:  # the others still run: wait for them before raising
        failure = exc
    for future in others:
        error = future.exception()
        if failure is None and error is not None:
            failure = error
    if failure is not None:
        raise failure


def _event(client: kube.Writer, body: Mapping[str, Any], event: decide.Event) -> None:
    try:
        client.create_event(body, type_=event.type, reason=event.reason, message=event.message)
    except kube.KubeError as exc:
        if exc.namespace_terminating:
            log.debug(
                "%s: namespace being deleted; event %s dropped", kube.key_of(body), event.reason
            )
            return
        # An event lost is not worth a retry of the whole reconcile.
        log.warning("%s: event %s not posted: %s", kube.key_of(body), event.reason, exc)
