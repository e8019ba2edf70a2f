"""Leader election on a coordination.k8s.io/v1 Lease, with a write fence.

The same protocol as client-go's leaderelection package (so `kubectl get lease` reads the
same), on this process's monotonic clock:

- a candidate takes the Lease when it is free, released, or unchanged for the lease duration
  as *this* candidate observed it (never by comparing its clock with the renewTime written by
  another machine);
- the leader renews every retry period; writes are allowed only until the start of the last
  successful renew (or acquire) plus the renew deadline. The renew deadline is shorter than the
  lease duration, so a leader that cannot renew, or that was paused (SIGSTOP, a long GC, a
  frozen VM) and wakes up after its Lease is gone, stops writing before any other candidate
  can take the Lease: a standby waits a whole lease duration from its first sight of the last
  renew, which was sent after the leader's deadline started;
- a leader that misses its renew deadline, or finds another holder, has lost: the fence stays
  shut and ``on_lost`` runs (the runner exits, as client-go controllers do, and comes back as
  a standby with fresh caches).

Why not ``kubernetes.leaderelection`` from the installed client (37.0.2, it has a LeaseLock):
it measures time with ``time.time()`` (a wall-clock step shortens or stretches the lease), its
renew loop blocks a thread and reports a lost lease only when that loop notices, and it gives
the code that writes no deadline to check. A paused leader's other threads could write before
its own loop ran again; the fence below is checked by every write itself.

The Lease is not released on shutdown: a write still in flight could land after a release
and a new leader's first write. A standby takes over one lease duration after the last renew.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from cobrowse_tls.engine import kube

log = logging.getLogger("cobrowse_tls.engine.leader")

DEFAULT_LEASE_NAME = "cobrowse-tls-operator"


class NotLeaderError(kube.KubeError):
    """A write refused by the fence: this replica does not hold the Lease right now."""

    def __init__(self, identity: str) -> None:
        super().__init__(0, f"{identity} does not hold the leader Lease: write refused")


@dataclasses.dataclass(frozen=True)
class Timing:
    """client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def check(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration"
                f" (got {self.retry_period}, {self.renew_deadline}, {self.lease_duration})"
            )


def default_identity() -> str:
    """The pod name (stable across container restarts) plus a random part, as client-go does:
    two processes never share an identity, so a restarted replica is a new candidate."""
    host = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{host}_{uuid.uuid4().hex[:8]}"


def _micro_time(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Fence:
    """Until when this process may write, on its monotonic clock. Checked by every write."""

    def __init__(self, identity: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.identity = identity
        self._clock = clock
        self._lock = threading.Lock()
        self._until = float("-inf")

    def open_until(self, deadline: float) -> None:
        with self._lock:
            self._until = deadline

    def shut(self) -> None:
        with self._lock:
            self._until = float("-inf")

    def remaining(self) -> float:
        with self._lock:
            return self._until - self._clock()

    def check(self) -> None:
        """Raise NotLeaderError unless a write may start now."""
        if self.remaining() <= 0:
            raise NotLeaderError(self.identity)


class Elector:
    """Campaigns for the Lease in a thread of its own; calls back on becoming and losing
    leader (from that thread)."""

    def __init__(
        self,
        client: kube.Client,
        namespace: str,
        name: str = DEFAULT_LEASE_NAME,
        identity: str | None = None,
        timing: Timing | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.timing = timing or Timing()
        self.timing.check()
        self._clock = clock
        self.fence = Fence(self.identity, clock)
        self.leading = False
        self.lost = False
        self.on_started: Callable[[], None] = lambda: None
        self.on_lost: Callable[[], None] = lambda: None
        # The Lease's spec as last seen, and when (our clock): the basis of expiry.
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.fence.shut()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        log.info("%s: campaigning for Lease %s/%s", self.identity, self.namespace, self.name)
        while not self._stop.is_set():
            self.step()
            if self.lost:
                return
            self._stop.wait(self.timing.retry_period)

    # -- one round --------------------------------------------------------------------------

    def step(self) -> None:
        """One acquire-or-renew round; sets ``leading``/``lost`` and calls back."""
        started = self._clock()
        try:
            held, other = self._try_acquire_or_renew(started)
        except kube.KubeError as exc:
            log.debug("%s: Lease %s/%s: %s", self.identity, self.namespace, self.name, exc)
            held, other = False, None
        if held:
            # Measured from before the request: the server's renewTime is no earlier.
            self.fence.open_until(started + self.timing.renew_deadline)
            if not self.leading:
                self.leading = True
                log.info("%s: leading (Lease %s/%s)", self.identity, self.namespace, self.name)
                self.on_started()
            return
        if self.leading and (other is not None or self.fence.remaining() <= 0):
            self.fence.shut()
            self.leading = False
            self.lost = True
            why = f"taken by {other}" if other else "not renewed within the renew deadline"
            log.error("%s: lost the leader Lease (%s)", self.identity, why)
            self.on_lost()

    def _try_acquire_or_renew(self, now: float) -> tuple[bool, str | None]:
        """(holds the Lease now, the other holder that keeps it from us if any)."""
        wall = _micro_time(datetime.now(UTC))
        lease = self.client.get_lease(self.namespace, self.name)
        if lease is None:
            first = self._spec(wall, wall, 0)
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": first,
            }
            if self.client.create_lease(self.namespace, body) is None:
                return False, None  # somebody else created it first
            self._observe(first, now)
            return True, None
        spec: Mapping[str, Any] = lease.get("spec") or {}
        self._observe(spec, now)
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity:
            duration = float(spec.get("leaseDurationSeconds") or self.timing.lease_duration)
            if self._observed_at + duration > now:
                return False, holder
        if holder == self.identity:
            new = self._spec(spec.get("acquireTime") or wall, wall, spec.get("leaseTransitions"))
        else:
            new = self._spec(wall, wall, int(spec.get("leaseTransitions") or 0) + 1)
        body = {**lease, "spec": new}
        if self.client.replace_lease(self.namespace, self.name, body) is None:
            return False, None  # changed under us (409): look again next round
        self._observe(new, now)
        return True, None

    def _spec(self, acquired: str, renewed: str, transitions: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, math.ceil(self.timing.lease_duration)),
            "acquireTime": acquired,
            "renewTime": renewed,
        }
        if transitions is not None:
            spec["leaseTransitions"] = int(transitions)
        return spec

    def _observe(self, spec: Mapping[str, Any], now: float) -> None:
        record = tuple(
            spec.get(k) for k in ("holderIdentity", "renewTime", "acquireTime", "leaseTransitions")
        )
        if record != self._observed:
            self._observed = record
            self._observed_at = now
