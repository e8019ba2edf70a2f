"""kopf registrations: thin. Each handler hands its event to the controller.

Only event handlers are used: they need no per-object bookkeeping in the watched objects, so
kopf writes nothing to CobrowseTLS resources (no last-handled-configuration, no progress
annotations) and nothing at all to Secrets and ConfigMaps.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

import kopf

from cobrowse_tls.api import models
from cobrowse_tls.engine import cache, kubeconfig, leader, metrics
from cobrowse_tls.engine import controller as controller_mod


class Memo(kopf.Memo):
    """Operator-wide state handed to every handler by kopf."""

    controller: controller_mod.Controller
    # None: standalone, this process reconciles from the start.
    elector: leader.Elector | None
    kubeconfig: str | None
    # Set to stop the operator (kopf's stop flag): a leader that lost its Lease exits.
    stop: asyncio.Event


@kopf.on.login()
def login(memo: Memo, **_: Any) -> kopf.ConnectionInfo:
    # kopf's watches log in from the same kubeconfig (or in-cluster account) as the client the
    # reconciler writes with: `run --kubeconfig FILE` must not depend on $KUBECONFIG. Read
    # afresh on each (re-)login, so rotated tokens and certificates are picked up; an exec
    # credential's expiry makes kopf log in again in time.
    conn = kubeconfig.load(memo.kubeconfig)
    cred = conn.credentials()
    basic = not cred.token and conn.username is not None and conn.password is not None
    return kopf.ConnectionInfo(
        server=conn.server,
        ca_path=conn.ca_file,
        ca_data=_pem(conn.ca_pem),
        insecure=conn.insecure,
        username=conn.username if basic else None,
        password=conn.password if basic else None,
        scheme="Bearer" if cred.token else None,
        token=cred.token,
        certificate_path=None if cred.cert_pem or conn.cert_pem else conn.cert_file,
        certificate_data=_pem(cred.cert_pem or conn.cert_pem),
        private_key_path=None if cred.key_pem or conn.key_pem else conn.key_file,
        private_key_data=_pem(cred.key_pem or conn.key_pem),
        proxy_url=conn.proxy_url,
        expiration=cred.expires,
    )


def _pem(data: bytes | None) -> bytes | None:
    # kopf takes PEM that starts with its BEGIN line as it is and base64-decodes anything else
    # (a CA bundle with text before its first certificate, for one); it reads either as ASCII,
    # so a bundle's comments in other scripts (system bundles have them) are left out.
    if data is None:
        return None
    if not data.isascii():
        data = b"".join(m.group(0) + b"\n" for m in _PEM_BLOCK.finditer(data))
    if data.startswith(b"-----BEGIN "):
        return data
    return base64.b64encode(data)


_PEM_BLOCK = re.compile(rb"-----BEGIN [A-Z0-9 ]+-----[A-Za-z0-9+/=\s]+-----END [A-Z0-9 ]+-----")


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff base for operators without change-detecting handlers (on.create, on.update,
    on.field, ...; only those read ``old``, ``new`` and ``diff``): it remembers nothing and
    writes nothing to the objects. kopf builds the essence of every watched object on every
    event, a deep copy of its body, whether a handler reads it or not; this one is empty."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Memo, **_: Any) -> None:
    # Events are posted by the reconciler, with our own reasons; kopf's would be noise.
    settings.posting.level = logging.CRITICAL
    settings.persistence.diffbase_storage = NoDiffBase()
    # kopf keeps a task and a queue per object while its events come, and until this long
    # after the last one (5 s by default): when 1,000 CRs arrive at once that is a worker for
    # nearly every object in the cluster at the same time. A new event after this starts one
    # anew, which is cheap.
    settings.queueing.idle_timeout = 0.5
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    elector = memo.elector
    if elector is None:
        metrics.LEADER.set(1)
        memo.controller.start()
        return
    # A standby keeps watching (its caches stay warm) but reconciles nothing until it leads.
    loop = asyncio.get_running_loop()

    def lead() -> None:
        metrics.LEADER.set(1)
        memo.controller.start()

    def lost() -> None:
        metrics.LEADER.set(0)
        memo.stop.set()

    elector.on_started = lambda: _soon(loop, lead)
    elector.on_lost = lambda: _soon(loop, lost)
    metrics.LEADER.set(0)
    elector.start()


def _soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    # The elector calls back from its own thread.
    loop.call_soon_threadsafe(callback)


@kopf.on.cleanup()
async def cleanup(memo: Memo, **_: Any) -> None:
    if memo.elector is not None:
        memo.elector.stop()
    await memo.controller.stop()


@kopf.on.probe(id="leader")
def leader_probe(memo: Memo, **_: Any) -> dict[str, Any]:
    """In kopf's /healthz: which replica leads. Leader and standby are both live and ready
    (a standby's job is to be ready to take over); a dead election thread is not live."""
    elector = memo.elector
    if elector is None:
        return {"leading": True, "election": False}
    if not elector.alive and not elector.lost:
        raise RuntimeError("the leader election thread is not running")
    return {"leading": elector.leading, "identity": elector.identity}


# The store of what reconciles read (engine/cache.py). kopf calls indexing functions before
# any handler of the same event, and runs no handler at all before every indexed resource is
# listed in full: the store is complete when the first handler runs. They keep nothing in
# kopf's own indices (they return None).
#
# Per watch event kopf's own work (causes, handler state, invocation) costs more than ours, so
# each Secret, ConfigMap and workload event runs one function, not two: the indexing function
# also routes the event (kopf does not call it for a deletion, nor before the store is
# complete), and an event handler, filtered to DELETED, drops a deleted object from the store
# before the reconcile its deletion triggers. Both are coroutines: kopf runs a plain function
# in a thread of its executor, a round trip that costs more than the function.


def _index(kind: str, body: kopf.Body, memo: Memo) -> None:
    controller = memo.controller
    controller.store.put(kind, body)
    # Before the store is complete no CobrowseTLS is known (only a handler adds one, and marks
    # the store ready first): nothing to route to, and an indexing function must not mark the
    # store ready. A workload's change queues nothing; only its deletion changes the store.
    if kind not in cache.WORKLOAD_KINDS and controller.store.ready:
        controller.on_source(kind, None, body)


def _deleted(event: kopf.RawEvent, **_: Any) -> bool:
    return event["type"] == "DELETED"


@kopf.index("", "v1", "secrets")
async def secret_store(body: kopf.Body, memo: Memo, **_: Any) -> None:
    _index(cache.SECRET, body, memo)


@kopf.index("", "v1", "configmaps")
async def config_map_store(body: kopf.Body, memo: Memo, **_: Any) -> None:
    _index(cache.CONFIG_MAP, body, memo)


@kopf.index("apps", "v1", "deployments")
async def deployment_store(body: kopf.Body, memo: Memo, **_: Any) -> None:
    _index("Deployment", body, memo)


@kopf.index("apps", "v1", "statefulsets")
async def stateful_set_store(body: kopf.Body, memo: Memo, **_: Any) -> None:
    _index("StatefulSet", body, memo)


@kopf.index("apps", "v1", "daemonsets")
async def daemon_set_store(body: kopf.Body, memo: Memo, **_: Any) -> None:
    _index("DaemonSet", body, memo)


@kopf.on.event("apps", "v1", "deployments", when=_deleted)
async def deployment_deleted(event: kopf.RawEvent, memo: Memo, **_: Any) -> None:
    memo.controller.on_workload("Deployment", event["type"], event["object"])


@kopf.on.event("apps", "v1", "statefulsets", when=_deleted)
async def stateful_set_deleted(event: kopf.RawEvent, memo: Memo, **_: Any) -> None:
    memo.controller.on_workload("StatefulSet", event["type"], event["object"])


@kopf.on.event("apps", "v1", "daemonsets", when=_deleted)
async def daemon_set_deleted(event: kopf.RawEvent, memo: Memo, **_: Any) -> None:
    memo.controller.on_workload("DaemonSet", event["type"], event["object"])


@kopf.on.event(models.GROUP, models.VERSION, models.PLURAL)
async def cobrowse_tls_event(event: kopf.RawEvent, memo: Memo, **_: Any) -> None:
    memo.controller.on_cobrowse_tls(event["type"], event["object"])


@kopf.on.event("", "v1", "secrets", when=_deleted)
async def secret_deleted(event: kopf.RawEvent, memo: Memo, **_: Any) -> None:
    memo.controller.on_source(cache.SECRET, event["type"], event["object"])


@kopf.on.event("", "v1", "configmaps", when=_deleted)
async def config_map_deleted(event: kopf.RawEvent, memo: Memo, **_: Any) -> None:
    memo.controller.on_source(cache.CONFIG_MAP, event["type"], event["object"])
