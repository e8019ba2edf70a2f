"""Counts the series the operator's /metrics exposes for N CobrowseTLS objects (default 1,000).

Feeds representative statuses through the real metrics code (engine/metrics.record) and counts
the samples of the real exposition text, per kind of CR:

    python hack/metrics_cardinality.py [N]
"""

from __future__ import annotations

import sys
from typing import Any

import prometheus_client
from prometheus_client import parser

from cobrowse_tls.engine import metrics


def _cond(type_: str, status: str = "True", reason: str = "Ok") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": ""}


def _status(kind: str, certificates: int) -> dict[str, Any]:
    conds = [_cond("Ready"), _cond("TrustStoreReady"), _cond("CertificatesValid")]
    status: dict[str, Any] = {
        "trustStore": {
            "expires": "2031-01-01T00:00:00Z",
            "certificates": [{"alias": f"root-{i}"} for i in range(certificates)],
        }
    }
    if kind in ("workloads", "worst"):
        conds.append(_cond("WorkloadsRestarted"))
        status["restart"] = {
            "hash": "h",
            "workloads": [
                {"kind": "Deployment", "name": f"w{i}", "state": "Done", "startedAt": "T"}
                for i in range(5)
            ],
        }
    if kind == "worst":
        conds += [_cond("WindowsTrustSynced"), _cond("ConnectionsVerified")]
        status["windows"] = {"desired": 20, "ready": 20}
    status["conditions"] = conds
    return status


def series() -> int:
    text = prometheus_client.generate_latest(metrics.REGISTRY).decode()
    return sum(len(f.samples) for f in parser.text_string_to_metric_families(text))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    base = series()
    print(f"operator-wide series (no CR): {base}")
    kinds = (
        ("PEM/JKS, no workloads", "plain"),
        ("PEM/JKS with workloads", "workloads"),
        ("MSCAPI + workloads + connections (every condition)", "worst"),
    )
    for label, kind in kinds:
        for i in range(n):
            metrics.record(f"ns-{i % 50}/cb-{i}", None, _status(kind, certificates=3))
        total = series()
        print(f"{n} CRs, {label}: {total - base} per-CR series ({(total - base) / n:g} per CR)")
        for i in range(n):
            metrics.forget(f"ns-{i % 50}/cb-{i}")
    assert series() == base


if __name__ == "__main__":
    main()
