"""The operator's engine between kopf's watch streams and the reconciler.

kopf delivers events; this module keeps the latest body of every CobrowseTLS, an index from
each source Secret/ConfigMap to the CRs that read it (so a changed source finds its CRs without
a scan), and a de-duplicating work queue (a key queued twice runs once; a key changed while it
runs runs again after). Reconciles run in threads because the Kubernetes client is blocking.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from cobrowse_tls.api import stamps
from cobrowse_tls.core import decide
from cobrowse_tls.core import settings as settings_mod
from cobrowse_tls.engine import cache, kube, metrics, reconciler

log = logging.getLogger("cobrowse_tls.engine.controller")

SourceRef = tuple[str, str, str]  # (kind, namespace, name)


class WorkQueue:
    """Keys to process, each at most once at a time, with delayed re-adds for retries."""

    def __init__(self, process: Callable[[str], Awaitable[float | None]], workers: int) -> None:
        self._process = process
        self._workers = workers
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._dirty: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def add(self, key: str, delay: float = 0.0) -> None:
        if delay > 0:
            loop = asyncio.get_running_loop()
            if key not in self._timers:
                self._timers[key] = loop.call_later(delay, self._fire, key)
            return
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)
            metrics.QUEUE_DEPTH.set(len(self._queued))

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            metrics.QUEUE_DEPTH.set(len(self._queued))
            self._active.add(key)
            retry: float | None = None
            try:
                retry = await self._process(key)
            finally:
                self._active.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            elif retry is not None:
                self.add(key, retry)


class Controller:
    def __init__(
        self,
        client: kube.Api,
        settings: settings_mod.Settings,
        *,
        workers: int = 4,
        resync_seconds: float = 300.0,
        store: cache.Store | None = None,
    ) -> None:
        # Filled by kopf's indexing functions (engine/handlers.py); reconciles read from it.
        self.store = store if store is not None else cache.Store()
        self.client = cache.Cached(client, self.store)
        self.settings = settings
        self.resync_seconds = resync_seconds
        self.queue = WorkQueue(self._process, workers)
        # A pool of its own: the loop's default one (cores + 4 threads) would cap the
        # reconciles in flight below `workers`, and they mostly wait on the API server.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="reconcile"
        )
        # The outputs a reconcile writes at once (engine/act.py): a second pool, since a
        # reconcile waiting on a task queued behind the busy reconciles would never return.
        self._writes = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="write"
        )
        self.bodies: dict[str, dict[str, Any]] = {}
        self._refs: dict[str, set[SourceRef]] = {}
        self._index: dict[SourceRef, set[str]] = {}
        self._seen: dict[str, tuple[Any, ...]] = {}
        self._failures: dict[str, int] = {}
        self._resync_task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        # A standby that becomes leader has cached (and queued) every CR while it watched;
        # queue them all once more in case a retry was dropped.
        for key in self.bodies:
            self.queue.add(key)
        self.queue.start()
        self._resync_task = asyncio.create_task(self._resync())

    async def stop(self) -> None:
        if self._resync_task is not None:
            self._resync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync_task
        await self.queue.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._writes.shutdown(wait=False, cancel_futures=True)

    async def _resync(self) -> None:
        # Level-based safety net and the periodic expiry check: every CR, every period.
        while True:
            await asyncio.sleep(self.resync_seconds)
            for key in list(self.bodies):
                self.queue.add(key)

    # -- events ---------------------------------------------------------------------------

    def on_cobrowse_tls(self, event_type: str | None, obj: Mapping[str, Any]) -> None:
        self.store.mark_ready()
        key = kube.key_of(obj)
        if event_type == "DELETED":
            self.bodies.pop(key, None)
            self._seen.pop(key, None)
            self._failures.pop(key, None)
            self._set_refs(key, set())
            metrics.forget(key)
            return
        # Kept until the CR's next event, compacted like the store's objects (no managedFields,
        # shared short strings): with thousands of CRs their bodies would dominate our memory.
        body = cache.compact(obj)
        self.bodies[key] = body
        self._set_refs(key, _source_refs(body))
        meta = body.get("metadata", {})
        # Our own status writes come back as events too; they need no reconcile.
        fingerprint = (
            meta.get("generation"),
            tuple(sorted((meta.get("labels") or {}).items())),
            tuple(sorted(_own_annotations(meta).items())),
            meta.get("deletionTimestamp"),
        )
        if self._seen.get(key) != fingerprint:
            self._seen[key] = fingerprint
            self.queue.add(key)

    def on_source(self, kind: str, event_type: str | None, obj: Mapping[str, Any]) -> None:
        self.store.mark_ready()
        if event_type == "DELETED":
            # Before any reconcile this event triggers: it must not find the object.
            self.store.delete(kind, obj)
        meta = obj.get("metadata", {})
        namespace, name = meta.get("namespace"), meta.get("name")
        for key in self._index.get((kind, namespace, name), ()):
            self.queue.add(key)
        labels = meta.get("labels") or {}
        if labels.get(stamps.LABEL_MANAGED_BY) == stamps.MANAGER and stamps.LABEL_OWNER in labels:
            if event_type == "DELETED":
                self.client.forget(kind, str(namespace), str(name))
            elif self.client.is_own_write(kind, obj):
                return  # the echo of our own apply
            # One of our outputs changed or vanished: reconcile its owner to repair drift.
            owner = f"{namespace}/{labels[stamps.LABEL_OWNER]}"
            if owner in self.bodies:
                self.queue.add(owner)

    def on_workload(self, kind: str, event_type: str | None, obj: Mapping[str, Any]) -> None:
        self.store.mark_ready()
        if event_type == "DELETED":
            self.store.delete(kind, obj)

    def _set_refs(self, key: str, refs: set[SourceRef]) -> None:
        for ref in self._refs.pop(key, set()) - refs:
            keys = self._index.get(ref)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._index[ref]
        for ref in refs:
            self._index.setdefault(ref, set()).add(key)
        if refs:
            self._refs[key] = refs

    # -- work -----------------------------------------------------------------------------

    async def _process(self, key: str) -> float | None:
        body = self.bodies.get(key)
        if body is None:
            return None
        started = time.perf_counter()
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(
                self._executor,
                reconciler.reconcile,
                self.client,
                body,
                self.settings,
                datetime.now(UTC),
                self._writes,
            )
        except kube.KubeError as exc:
            if exc.namespace_terminating:
                # Its objects are going away with the namespace: nothing left to reconcile.
                log.debug("%s: namespace being deleted; reconcile dropped", key)
                return None
            metrics.RECONCILES.labels("error").inc()
            if key in self.bodies:  # not deleted meanwhile: its series would stay forever
                metrics.reconcile_failed(key)
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            backoff = min(60.0, 0.5 * float(2 ** min(failures, 7)))
            delay = backoff * (0.5 + random.random())  # jitter spreads retries of many CRs
            log.warning("%s: reconcile failed (%s); retry in %.1fs", key, exc, delay)
            return delay
        except Exception:
            metrics.RECONCILES.labels("error").inc()
            if key in self.bodies:  # not deleted meanwhile: its series would stay forever
                metrics.reconcile_failed(key)
            log.exception("%s: reconcile crashed; retry in 30s", key)
            return 30.0
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        self._failures.pop(key, None)
        metrics.RECONCILES.labels(outcome.result).inc()
        current = self.bodies.get(key)
        if current is not None and outcome.status is not None:
            metrics.record(key, body.get("status"), outcome.status)
            # Until the watch delivers our status write, remember it: a reconcile in between
            # must not see the old status and write the same new one again.
            others = {
                k: v
                for k, v in (current.get("status") or {}).items()
                if k not in decide.STATUS_KEYS
            }
            current["status"] = {**others, **outcome.status}
        return outcome.requeue_after


def _own_annotations(meta: Mapping[str, Any]) -> dict[str, str]:
    # kopf's and kubectl's bookkeeping annotations do not change what we render.
    skip = ("kopf.zalando.org/", "kubectl.kubernetes.io/last-applied-configuration")
    return {k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith(skip)}


def _source_refs(body: Mapping[str, Any]) -> set[SourceRef]:
    """Secrets and ConfigMaps the CR reads, from the raw spec (valid or not)."""
    namespace = body.get("metadata", {}).get("namespace")
    spec = body.get("spec") or {}
    refs: set[SourceRef] = set()
    for source in (spec.get("trustedCA") or {}).get("sources") or ():
        if not isinstance(source, dict):
            continue
        if isinstance(source.get("secret"), dict) and source["secret"].get("name"):
            refs.add(("Secret", namespace, source["secret"]["name"]))
        if isinstance(source.get("configMap"), dict) and source["configMap"].get("name"):
            refs.add(("ConfigMap", namespace, source["configMap"]["name"]))
    ref = (spec.get("truststore") or {}).get("passwordSecretRef")
    if isinstance(ref, dict) and ref.get("name"):
        refs.add(("Secret", namespace, ref["name"]))
    return refs
