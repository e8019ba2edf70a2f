"""Tables of inputs with the verdict every validator must give: the model, the CRD on the real
API server and (for accounts) the agent. One table, so the rules cannot drift apart."""

from __future__ import annotations

from typing import Any

# (workloads[].selector, accepted)
SELECTORS: list[tuple[dict[str, Any], bool]] = [
    ({"matchLabels": {"app": "cobrowse"}}, True),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["cobrowse"]}]}, True),
    (
        {
            "matchLabels": {"app": "cobrowse"},
            "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}],
        },
        True,
    ),
    (
        {
            "matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["db"]},
                {"key": "app", "operator": "In", "values": ["a", "b"]},
            ]
        },
        True,
    ),
    ({}, False),
    ({"matchLabels": {}}, False),
    ({"matchExpressions": []}, False),
    # Each of these alone matches workloads nobody named (`!x` matches nearly everything).
    ({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, False),
    ({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, False),
    ({"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["y"]}]}, False),
    ({"matchLabels": {}, "matchExpressions": [{"key": "x", "operator": "Exists"}]}, False),
    # In/NotIn without values: `app in ()`.
    ({"matchExpressions": [{"key": "app", "operator": "In"}]}, False),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": []}]}, False),
    (
        {
            "matchLabels": {"app": "cobrowse"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": []}],
        },
        False,
    ),
    (
        {
            "matchLabels": {"app": "cobrowse"},
            "matchExpressions": [{"key": "tier", "operator": "Exists", "values": ["x"]}],
        },
        False,
    ),
]

# (windows.location, windows.account, accepted)
ACCOUNTS: list[tuple[str, str, bool]] = [
    ("LocalMachine", "", True),
    ("LocalMachine", "svc", False),
    ("Service", "CoBrowse Svc", True),
    ("Service", "cobrowse_1.$svc-x", True),
    ("Service", "", False),
    ("Service", ".", False),
    ("Service", "..", False),
    ("Service", "...", True),
    ("Service", "a\\b", False),
    ("Service", "a/b", False),
    ("Service", "a;b", False),
    ("Service", "caf\u00e9", False),
    ("Service", "x" * 256, True),
    ("Service", "x" * 257, False),
    ("User", "S-1-5-21-7-8-9-1001", True),
    ("User", "alice", False),
    ("User", "S-1-5", False),
    ("User", "..", False),
]
