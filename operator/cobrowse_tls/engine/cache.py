"""What the watch streams have shown of the objects a reconcile reads, so it need not ask.

kopf feeds the store (engine/handlers.py): indexing functions put every Secret, ConfigMap and
workload (Deployment, StatefulSet, DaemonSet) it lists and watches before they queue the
reconciles the change triggers, and the event handlers of deletions drop deleted ones before
they queue theirs. So a reconcile never reads a state older than the event that triggered it.
kopf runs no handler before every indexed resource is fully listed: from the first handler on,
the store holds every such object, and an object that is not in it does not exist (as far as
the watch has told).

Our own writes go in too (Cached puts what an apply returned): a reconcile that follows
one of ours sees it even before its watch event arrives. An older state never replaces a newer
one (resourceVersions compared), and a deleted object leaves a tombstone, so a list or a read
that started before a deletion cannot bring the object back.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from cobrowse_tls.api import stamps
from cobrowse_tls.engine import kube

SECRET, CONFIG_MAP = "Secret", "ConfigMap"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
KINDS = (SECRET, CONFIG_MAP, *WORKLOAD_KINDS)
API_VERSIONS = {SECRET: "v1", CONFIG_MAP: "v1", **{k: "apps/v1" for k in WORKLOAD_KINDS}}

Key = tuple[str, str, str]  # (kind, namespace, name)


def _version(obj: Mapping[str, Any]) -> int | None:
    value = str(obj.get("metadata", {}).get("resourceVersion") or "")
    return int(value) if value.isdigit() else None


def compact(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a watched object to keep: no managedFields (often its largest part, never
    read), and its keys and short strings interned. Every watch event is parsed on its own, so
    each of thousands of kept objects would otherwise hold its own copy of "metadata",
    "resourceVersion", "ownerReferences", its namespace, its labels, its conditions' types and
    reasons: about a third of a small object's memory."""
    meta = obj.get("metadata")
    if isinstance(meta, Mapping) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    out: dict[str, Any] = _interned(obj)
    return out


_SHORT = 64  # longer strings (certificates, file contents, messages) are rarely shared


def _interned(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {(sys.intern(k) if type(k) is str else k): _interned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interned(v) for v in value]
    if type(value) is str and len(value) <= _SHORT:
        return sys.intern(value)
    return value


def slim(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an object a reconcile reads, compacted: no managedFields, and of a workload
    that is not ours, not its pod spec (the restart step reads its template's annotations,
    replicas and status). The object given is not changed."""
    out = dict(obj)  # compact() below copies what is kept
    out["metadata"] = obj.get("metadata") or {}
    out["kind"] = kind
    out.setdefault("apiVersion", API_VERSIONS[kind])
    labels = out["metadata"].get("labels") or {}
    if kind in WORKLOAD_KINDS and labels.get(stamps.LABEL_MANAGED_BY) != stamps.MANAGER:
        spec = dict(out.get("spec") or {})
        template = dict(spec.get("template") or {})
        template.pop("spec", None)
        spec["template"] = template
        out["spec"] = spec
    return compact(out)


def _long_values(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The maps of a Secret or ConfigMap that hold its (possibly long) values."""
    return [d for d in (obj.get("data"), obj.get("binaryData")) if isinstance(d, dict)]


class Store:
    """Objects by (kind, namespace, name), thread-safe: kopf writes from the event loop,
    reconciles read from their threads. Returned objects are shared: read them, never change
    them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[Key, dict[str, Any]] = {}
        self._by_namespace: dict[tuple[str, str], set[str]] = {}
        self._tombstones: dict[Key, int] = {}
        # Each long data value once, with how many kept objects hold it: the same CA bundle in
        # the source Secret of every namespace and in every output made of it, the same option
        # files in every CR's ConfigMap.
        self._values: dict[str, list[Any]] = {}  # value -> [the kept copy, holders]
        self._ready = False

    @property
    def ready(self) -> bool:
        """True once the watches' initial lists are all in (kopf's first handler call)."""
        return self._ready

    def mark_ready(self) -> None:
        self._ready = True

    def put(self, kind: str, obj: Mapping[str, Any]) -> None:
        """Keep this state of the object unless the store already has it or a newer one."""
        meta = obj.get("metadata") or {}
        key = (kind, str(meta.get("namespace") or ""), str(meta.get("name")))
        new = _version(obj)
        with self._lock:
            old = self._objects.get(key)
            if old is not None:
                before = _version(old)
                # The same version: the watch's echo of what our own apply put here already;
                # not worth compacting it again.
                if new is not None and before is not None and new <= before:
                    return
            dead = self._tombstones.get(key)
            if dead is not None:
                if new is not None and new <= dead:
                    return
                del self._tombstones[key]
            kept = slim(kind, obj)
            self._share(kept)
            if old is not None:
                self._release(old)
            self._objects[key] = kept
            self._by_namespace.setdefault((kind, key[1]), set()).add(key[2])

    def delete(self, kind: str, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (kind, str(meta.get("namespace") or ""), str(meta.get("name")))
        version = _version(obj)
        with self._lock:
            kept = self._objects.get(key)
            before = _version(kept) if kept is not None else None
            # kopf handles each object (by uid) in a task of its own: a name deleted and made
            # again may bring the new object's event before the old one's deletion.
            if version is not None and before is not None and before > version:
                return
            if kept is not None:
                del self._objects[key]
                self._release(kept)
            names = self._by_namespace.get((kind, key[1]))
            if names is not None:
                names.discard(key[2])
                if not names:
                    del self._by_namespace[(kind, key[1])]
            if version is not None and version > self._tombstones.get(key, -1):
                self._tombstones[key] = version
                if len(self._tombstones) > 10_000:  # only recent deletions can race a read
                    for old in list(self._tombstones)[:5_000]:
                        del self._tombstones[old]

    def _share(self, kept: dict[str, Any]) -> None:
        """Point the long data values of an object about to be kept (its own copy, from slim)
        at the copies already kept."""
        for data in _long_values(kept):
            for k, v in data.items():
                if type(v) is str and len(v) > _SHORT:
                    held = self._values.get(v)
                    if held is None:
                        self._values[v] = [v, 1]
                    else:
                        held[1] += 1
                        data[k] = held[0]

    def _release(self, kept: dict[str, Any]) -> None:
        for data in _long_values(kept):
            for v in data.values():
                if type(v) is str and len(v) > _SHORT:
                    held = self._values.get(v)
                    if held is not None:
                        held[1] -= 1
                        if held[1] <= 0:
                            del self._values[v]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get((kind, namespace, name))

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The objects of a kind in a namespace whose labels match ``selector`` (the API's
        string form), sorted by name."""
        match = selector_matcher(selector)
        with self._lock:
            names = sorted(self._by_namespace.get((kind, namespace), ()))
            found = [self._objects[(kind, namespace, n)] for n in names]
        return [o for o in found if match(o.get("metadata", {}).get("labels") or {})]

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)


_SET = re.compile(r"^\s*([^\s!=,()]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ = re.compile(r"^\s*([^\s!=,()]+)\s*(==|=|!=)\s*([^\s,()]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^\s!=,()]+)\s*$")


def _requirements(selector: str) -> list[str]:
    """Split on the commas that are not inside a value set."""
    parts, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return parts


Matcher = Callable[[Mapping[str, str]], bool]


def selector_matcher(selector: str) -> Matcher:
    """A predicate over a label dict for a label selector in the API's string form (what
    core/restart_plan.label_selector writes: =, ==, !=, in, notin, exists, !exists)."""
    requirements: list[tuple[str, str, frozenset[str]]] = []  # (operator, key, values)
    for part in _requirements(selector):
        if m := _SET.match(part):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            requirements.append((m.group(2), m.group(1), values))
        elif m := _EQ.match(part):
            op = "!=" if m.group(2) == "!=" else "in"
            requirements.append((op, m.group(1), frozenset([m.group(3)])))
        elif m := _EXISTS.match(part):
            requirements.append(("!" if m.group(1) else "exists", m.group(2), frozenset()))
        else:
            raise ValueError(f"unsupported label selector requirement: {part!r}")

    def match(labels: Mapping[str, str]) -> bool:
        for op, key, values in requirements:
            ok = {
                "in": key in labels and labels[key] in values,
                "notin": key not in labels or labels[key] not in values,
                "!=": labels.get(key) not in values,
                "exists": key in labels,
                "!": key not in labels,
            }[op]
            if not ok:
                return False
        return True

    return match


class Cached:
    """kube.Api whose reads of Secrets, ConfigMaps and workloads come from the store once it
    is complete (before that, and for pods, events and Namespaces, from ``api``), and whose
    applies put what the API server returned into the store."""

    def __init__(self, api: kube.Api, store: Store) -> None:
        self.api = api
        self.store = store

    # -- kube.Reader --------------------------------------------------------------------------

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.store.ready:
            return self.store.get(SECRET, namespace, name)
        return self.api.get_secret(namespace, name)

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.store.ready:
            return self.store.get(CONFIG_MAP, namespace, name)
        return self.api.get_config_map(namespace, name)

    def get_workload(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if self.store.ready:
            return self.store.get(kind, namespace, name)
        return self.api.get_workload(kind, namespace, name)

    def list_workloads(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        if self.store.ready:
            return self.store.list(kind, namespace, selector)
        return self.api.list_workloads(kind, namespace, selector)

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.api.list_pods(namespace, selector)

    def get_namespace(self, name: str) -> dict[str, Any] | None:
        return self.api.get_namespace(name)

    def list_events(
        self, namespace: str, kind: str, name: str, reason: str
    ) -> list[dict[str, Any]]:
        return self.api.list_events(namespace, kind, name, reason)

    # -- kube.Writer --------------------------------------------------------------------------

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        result = self.api.apply(obj)
        # The next reconcile must not act on the state before our own write, whose watch
        # event may still be on its way.
        self.store.put(str(obj["kind"]), result)
        return result

    def delete_daemon_set(self, namespace: str, name: str) -> None:
        self.api.delete_daemon_set(namespace, name)

    def set_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> None:
        self.api.set_finalizers(namespace, name, finalizers, resource_version)

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.api.patch_status(namespace, name, status)

    def create_event(
        self,
        involved: Mapping[str, Any],
        *,
        type_: str,
        reason: str,
        message: str,
        now: datetime | None = None,
    ) -> None:
        self.api.create_event(involved, type_=type_, reason=reason, message=message, now=now)

    # -- the controller's -------------------------------------------------------------------

    def is_own_write(self, kind: str, obj: Mapping[str, Any]) -> bool:
        return self.api.is_own_write(kind, obj)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self.api.forget(kind, namespace, name)
