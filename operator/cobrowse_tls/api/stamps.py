"""What the operator stamps on the objects it writes (labels, annotations) and API timestamps."""

from __future__ import annotations

from datetime import UTC, datetime

MANAGER = "cobrowse-tls-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_OWNER = "tls.cobrowse.io/owner"
ANNOTATION_INPUT_HASH = "tls.cobrowse.io/input-hash"


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    """A Kubernetes timestamp (``2030-01-01T00:00:00Z``) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
