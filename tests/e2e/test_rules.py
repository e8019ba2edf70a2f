"""The rule tables (tests/rule_tables.py) on the real API server: the CRD's schema and CEL give
the same verdict as the model (tests/unit/test_api.py runs the same tables through the model
and, for accounts, the agent)."""

from __future__ import annotations

from typing import Any

import pydantic
from kubernetes.client import ApiException

import rule_tables
from cobrowse_tls.api import models
from e2e.operator_support import Api, cobrowse_tls


def server_accepts(api: Api, namespace: str, spec: dict[str, Any]) -> tuple[bool, str]:
    """Whether the API server would create a CobrowseTLS with this spec (a dry run)."""
    body = cobrowse_tls(namespace, "rules", spec)
    try:
        api.custom.create_namespaced_custom_object(
            models.GROUP, models.VERSION, namespace, models.PLURAL, body, dry_run="All"
        )
    except ApiException as exc:
        # 422 is the schema's or a rule's refusal; anything else is not a verdict.
        return False, f"HTTP {exc.status}: {exc.body}"
    return True, ""


def model_accepts(namespace: str, spec: dict[str, Any]) -> bool:
    try:
        models.parse(cobrowse_tls(namespace, "rules", spec))
    except pydantic.ValidationError:
        return False
    return True


def base_spec(provider: str = "PEM") -> dict[str, Any]:
    return {
        "provider": provider,
        "application": {"type": "Cluster", "name": "CB_Cluster"},
        "trustedCA": {"sources": [{"secret": {"name": "ca", "key": "ca.crt"}}]},
    }


def test_selector_table_same_verdict_on_the_api_server(api: Api, namespace: str) -> None:
    wrong = []
    for selector, accepted in rule_tables.SELECTORS:
        spec = base_spec() | {"workloads": [{"kind": "Deployment", "selector": selector}]}
        server, message = server_accepts(api, namespace, spec)
        if (server, model_accepts(namespace, spec)) != (accepted, accepted) or (
            not server and "HTTP 422" not in message
        ):
            wrong.append((selector, accepted, server, message))
    assert not wrong, wrong


def test_account_table_same_verdict_on_the_api_server(api: Api, namespace: str) -> None:
    wrong = []
    for location, account, accepted in rule_tables.ACCOUNTS:
        windows: dict[str, Any] = {"location": location}
        if location == "User":
            windows["store"] = "CA"  # User takes store CA only (a rule of its own)
        if account:
            windows["account"] = account
        spec = base_spec("MSCAPI") | {"windows": windows}
        server, message = server_accepts(api, namespace, spec)
        if (server, model_accepts(namespace, spec)) != (accepted, accepted) or (
            not server and "HTTP 422" not in message
        ):
            wrong.append((location, account, accepted, server, message))
    assert not wrong, wrong
