"""The act step of a reconcile: the writes decided, made in order (events last), in one place.

The first write that fails stops the rest (kube.KubeError: the reconcile is retried and decides
again from what is there then). Events are the exception: one lost is not worth a retry.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, assert_never

from cobrowse_tls.core import decide
from cobrowse_tls.engine import kube

log = logging.getLogger("cobrowse_tls.engine.act")


def act(client: kube.Writer, body: Mapping[str, Any], writes: Sequence[decide.Write]) -> None:
    """Make ``writes`` for the CobrowseTLS ``body`` (as observe read it), in order, events last."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    # Events go after the other writes: no output, restart or status waits on an event's round
    # trip. When a write fails, the events decided before it are still posted (as they were
    # when events went in line), the later ones are not.
    due: list[decide.Event] = []
    try:
        for write in writes:
            if isinstance(write, decide.Apply):
                client.apply(write.obj)
            elif isinstance(write, decide.Event):
                due.append(write)
            elif isinstance(write, decide.PatchStatus):
                client.patch_status(namespace, name, write.patch)
            elif isinstance(write, decide.SetFinalizers):
                # Only if the CR is still as observed: a finalizer list is replaced, not merged.
                client.set_finalizers(
                    namespace, name, list(write.finalizers), meta["resourceVersion"]
                )
            elif isinstance(write, decide.DeleteDaemonSet):
                client.delete_daemon_set(namespace, write.name)
            else:
                assert_never(write)
    finally:
        for event in due:
            _event(client, body, event)


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
