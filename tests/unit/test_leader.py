"""Lease leader election and its write fence, over an in-memory Lease store and fake clocks.

The rule under test: a replica writes only until the start of its last successful renew plus
the renew deadline, which ends before any other candidate may take the Lease (one lease
duration after it last saw the Lease change).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cobrowse_tls.engine import kube, kubeconfig, leader

TIMING = leader.Timing(lease_duration=15, renew_deadline=10, retry_period=2)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Leases:
    """The API server's side: one Lease, optimistic concurrency on resourceVersion."""

    def __init__(self) -> None:
        self.obj: dict[str, Any] | None = None
        self.version = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise kube.KubeError(0, "API server not reachable")

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        return copy.deepcopy(self.obj)

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self._check()
        if self.obj is not None:
            return None
        return self._store(body)

    def replace_lease(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        self._check()
        if self.obj is None or body["metadata"].get("resourceVersion") != str(self.version):
            return None
        return self._store(body)

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.obj = copy.deepcopy(body)
        self.obj["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.obj)


def elector(leases: Leases, clock: Clock, identity: str) -> leader.Elector:
    client: Any = leases
    return leader.Elector(client, "ns", identity=identity, timing=TIMING, clock=clock)


def test_first_candidate_leads_and_may_write_until_its_renew_deadline() -> None:
    leases, clock = Leases(), Clock()
    a = elector(leases, clock, "a")
    a.step()
    assert a.leading
    assert leases.obj is not None
    assert leases.obj["spec"]["holderIdentity"] == "a"
    assert leases.obj["spec"]["leaseDurationSeconds"] == 15
    a.fence.check()
    clock.t += 9.9
    a.fence.check()
    clock.t += 0.2
    with pytest.raises(leader.NotLeaderError):
        a.fence.check()


def test_standby_waits_a_lease_duration_from_its_own_sight_of_the_last_renew() -> None:
    leases, clock = Leases(), Clock()
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    a.step()
    b.step()
    assert not b.leading
    with pytest.raises(leader.NotLeaderError):
        b.fence.check()
    # a renews every retry period: b never takes over.
    for _ in range(20):
        clock.t += 2
        a.step()
        b.step()
    assert a.leading
    assert not b.leading
    # a stops renewing (killed): b takes over one lease duration after the last change it saw.
    last_change_seen = clock.t
    clock.t += 14.9
    b.step()
    assert not b.leading
    clock.t = last_change_seen + 15.1
    b.step()
    assert b.leading
    assert leases.obj is not None
    assert leases.obj["spec"]["holderIdentity"] == "b"
    assert leases.obj["spec"]["leaseTransitions"] == 1


def test_paused_leader_wakes_up_fenced_and_loses() -> None:
    leases, clock = Leases(), Clock()
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    lost: list[str] = []
    a.on_lost = lambda: lost.append("a")
    a.step()
    b.step()
    renewed_at = clock.t
    # a is SIGSTOPped: its clock runs on, its code does not.
    clock.t += 16
    b.step()
    assert b.leading
    # a wakes up: before its elector runs again, its writes are already refused, and they were
    # refused from renew + renew deadline on, before b could take the Lease.
    with pytest.raises(leader.NotLeaderError):
        a.fence.check()
    assert renewed_at + TIMING.renew_deadline < renewed_at + TIMING.lease_duration
    a.step()
    assert a.lost
    assert not a.leading
    assert lost == ["a"]
    with pytest.raises(leader.NotLeaderError):
        a.fence.check()


def test_leader_that_cannot_renew_stops_at_the_renew_deadline() -> None:
    leases, clock = Leases(), Clock()
    a = elector(leases, clock, "a")
    a.step()
    leases.down = True
    for _ in range(4):
        clock.t += 2
        a.step()
        assert a.leading  # still within the renew deadline
        a.fence.check()
    clock.t += 2.1
    a.step()
    assert a.lost
    with pytest.raises(leader.NotLeaderError):
        a.fence.check()


def test_a_conflicting_acquire_loses_the_race() -> None:
    leases, clock = Leases(), Clock()
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    a.step()
    stale = leases.get_lease("ns", "x")
    assert stale is not None
    a.step()  # renewed: resourceVersion moved on
    assert leases.replace_lease("ns", "x", stale) is None
    b.step()
    assert not b.leading


def test_the_client_checks_the_fence_before_every_write() -> None:
    fence = leader.Fence("a", Clock())
    # Nothing listens on port 9: a write that got past the fence would fail differently.
    client = kube.Client(kubeconfig.Connection("http://127.0.0.1:9"))
    client.fence = fence
    with pytest.raises(leader.NotLeaderError):
        client.patch_status("ns", "cb", {})
    with pytest.raises(leader.NotLeaderError):
        client.apply({"kind": "Secret", "metadata": {"name": "s", "namespace": "ns"}})
    assert client.writes == 0


def test_timing_must_order_retry_renew_and_lease() -> None:
    with pytest.raises(ValueError, match="renew deadline"):
        leader.Timing(lease_duration=10, renew_deadline=10, retry_period=2).check()
    with pytest.raises(ValueError, match="retry period"):
        leader.Timing(lease_duration=15, renew_deadline=10, retry_period=10).check()
