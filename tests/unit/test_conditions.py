"""Conditions: standard shape, stable lastTransitionTime, Ready aggregation, transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pki as pkim
from cobrowse_tls.core import certs, conditions

T0 = datetime(2030, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)


def obs(type_: str, status: bool | None, reason: str) -> conditions.Observation:
    return conditions.Observation(type_, status, reason, f"{reason} message")


def test_merge_builds_standard_conditions_with_ready_first() -> None:
    conds, transitions = conditions.merge(
        None,
        [obs("CertificatesValid", True, "Valid"), obs("TrustStoreReady", True, "Rendered")],
        now=T0,
        generation=3,
    )
    assert [c["type"] for c in conds] == ["Ready", "TrustStoreReady", "CertificatesValid"]
    for c in conds:
        assert set(c) == {
            "type",
            "status",
            "reason",
            "message",
            "lastTransitionTime",
            "observedGeneration",
        }
        assert c["lastTransitionTime"] == "2030-01-01T00:00:00Z"
        assert c["observedGeneration"] == 3
    assert conds[0]["status"] == "True"
    # Born True: only Ready is announced.
    assert [t.type for t in transitions] == ["Ready"]


def test_unchanged_status_keeps_time_and_gives_no_transition() -> None:
    first, _ = conditions.merge(
        None, [obs("TrustStoreReady", True, "Rendered")], now=T0, generation=1
    )
    again, transitions = conditions.merge(
        first, [obs("TrustStoreReady", True, "Rendered")], now=T1, generation=1
    )
    assert again == first
    assert transitions == []


def test_failure_sets_ready_false_with_its_reason_and_new_time() -> None:
    first, _ = conditions.merge(
        None, [obs("TrustStoreReady", True, "Rendered")], now=T0, generation=1
    )
    bad, transitions = conditions.merge(
        first, [obs("TrustStoreReady", False, "InvalidCertificate")], now=T1, generation=2
    )
    ready = conditions.find(bad, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "InvalidCertificate")
    assert ready["lastTransitionTime"] == "2030-01-01T01:00:00Z"
    assert [(t.type, t.event_type) for t in transitions] == [
        ("Ready", "Warning"),
        ("TrustStoreReady", "Warning"),
    ]


def test_reason_change_with_same_status_keeps_time_but_announces() -> None:
    first, _ = conditions.merge(
        None, [obs("TrustStoreReady", False, "SourceNotFound")], now=T0, generation=1
    )
    second, transitions = conditions.merge(
        first, [obs("TrustStoreReady", False, "InvalidCertificate")], now=T1, generation=1
    )
    cond = conditions.find(second, "TrustStoreReady")
    assert cond is not None
    assert cond["lastTransitionTime"] == "2030-01-01T00:00:00Z"
    assert "TrustStoreReady" in {t.type for t in transitions}


def _selection(*items: pkim.CertKey, expired: tuple[pkim.CertKey, ...] = ()) -> certs.Selection:
    def ca(i: pkim.CertKey) -> certs.CACertificate:
        return certs.CACertificate.from_x509(i.cert, source="test")

    return certs.Selection(
        certificates=tuple(ca(i) for i in items),
        expired=tuple(ca(i) for i in expired),
        non_ca=(),
    )


def test_certificate_validity(pki: pkim.PKI) -> None:
    now = pki.now
    valid = conditions.certificate_validity(
        _selection(pki.root), now=now, window=timedelta(days=30)
    )
    assert (valid.status, valid.reason) == (True, "Valid")
    soon = conditions.certificate_validity(
        _selection(pki.root), now=now, window=timedelta(days=400)
    )
    assert (soon.status, soon.reason) == (False, "ExpiringSoon")
    assert "Test Root CA" in soon.message
    expired = conditions.certificate_validity(
        _selection(pki.root, expired=(pki.expired_ca,)), now=now, window=timedelta(days=30)
    )
    assert (expired.status, expired.reason) == (False, "Expired")
    assert "Expired CA" in expired.message


def test_a_condition_born_false_is_announced() -> None:
    _, transitions = conditions.merge(
        None, [obs("TrustStoreReady", False, "SourceNotFound")], now=T0, generation=1
    )
    assert [(t.type, t.reason) for t in transitions] == [
        ("Ready", "SourceNotFound"),
        ("TrustStoreReady", "SourceNotFound"),
    ]


def test_progress_is_a_normal_event_and_failure_a_warning() -> None:
    first, _ = conditions.merge(
        None, [obs("WorkloadsRestarted", True, "RolloutComplete")], now=T0, generation=1
    )
    _, rolling = conditions.merge(
        first, [obs("WorkloadsRestarted", False, "RolloutInProgress")], now=T1, generation=2
    )
    _, stalled = conditions.merge(
        first, [obs("WorkloadsRestarted", False, "RolloutStalled")], now=T1, generation=2
    )
    events = {t.reason: t.event_type for t in rolling + stalled if t.type != "Ready"}
    assert events == {"RolloutInProgress": "Normal", "RolloutStalled": "Warning"}


def test_ready_takes_the_first_failing_condition_in_the_documented_order() -> None:
    failing = [
        conditions.Observation("CertificatesValid", False, "ExpiringSoon", "soon"),
        conditions.Observation("WindowsTrustSynced", False, "SyncInProgress", "1/2"),
        conditions.Observation("TrustStoreReady", True, "Rendered", "ok"),
        conditions.Observation("WorkloadsRestarted", False, "RolloutInProgress", "1 rolling"),
    ]
    for observations in (failing, failing[::-1]):
        ready = conditions.ready(observations)
        assert (ready.status, ready.reason) == (False, "RolloutInProgress")
