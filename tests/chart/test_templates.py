"""The Helm chart rendered by the real helm: lint, objects, security, RBAC, values and schema."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart.helm_support import (
    CHART,
    KUBE_VERSION,
    REPO,
    by_kind,
    find_helm,
    one,
    run_helm,
    template,
)

VALUES_FILES = sorted((Path(__file__).parent / "values").glob("*.yaml"))

Rule = tuple[str, str, frozenset[str]]  # (apiGroup, resource[names], verbs)

# Exactly what operator/cobrowse_tls/engine/kube.py calls, plus kopf's events and watches (the
# workloads are watched for the store that reconciles read, engine/cache.py).
NAMESPACED_RULES: set[Rule] = {
    ("tls.cobrowse.io", "cobrowsetlses", frozenset({"get", "list", "watch", "patch"})),
    ("tls.cobrowse.io", "cobrowsetlses/status", frozenset({"patch"})),
    ("", "secrets", frozenset({"get", "list", "watch", "create", "patch"})),
    ("", "configmaps", frozenset({"get", "list", "watch", "create", "patch"})),
    ("", "events", frozenset({"create", "list"})),
    ("apps", "deployments", frozenset({"get", "list", "watch", "patch"})),
    ("apps", "statefulsets", frozenset({"get", "list", "watch", "patch"})),
    ("apps", "daemonsets", frozenset({"get", "list", "watch", "patch"})),
}
# Only where MSCAPI is allowed: the agent DaemonSet's creation and deletion, its pods.
AGENT_RULES: set[Rule] = {
    ("apps", "daemonsets", frozenset({"create", "delete"})),
    ("", "pods", frozenset({"list"})),
}
CRD_RULE: Rule = ("apiextensions.k8s.io", "customresourcedefinitions", frozenset({"list", "watch"}))
NAMESPACES_RULE: Rule = ("", "namespaces", frozenset({"list", "watch"}))


def peering_rules(resource: str, name: str) -> set[Rule]:
    return {
        ("kopf.dev", f"{resource}[{name}]", frozenset({"get", "patch"})),
        ("kopf.dev", resource, frozenset({"list", "watch"})),
    }


@pytest.fixture(scope="module")
def helm() -> str:
    return find_helm()


def merged(*rule_sets: set[Rule]) -> set[Rule]:
    """Rule sets as one role grants them: the verbs of the same resource together."""
    verbs: dict[tuple[str, str], set[str]] = {}
    for rule_set in rule_sets:
        for group, resource, vs in rule_set:
            verbs.setdefault((group, resource), set()).update(vs)
    return {(g, r, frozenset(v)) for (g, r), v in verbs.items()}


def rules(role: Mapping[str, Any]) -> set[Rule]:
    """A role's rules, one (group, resource, verbs) per resource; resourceNames in brackets.

    No URLs; no verb granted twice for the same resource."""
    out: dict[tuple[str, str], list[str]] = {}
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule
        names = ",".join(rule.get("resourceNames", ()))
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = (group, f"{resource}[{names}]" if names else resource)
                out.setdefault(key, []).extend(rule["verbs"])
    for key, vs in out.items():
        assert len(vs) == len(set(vs)), f"{key}: a verb granted twice: {vs}"
    return {(g, r, frozenset(vs)) for (g, r), vs in out.items()}


def container(objs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    deployment = one(list(objs), "Deployment")
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(c)


# -- the CRD --------------------------------------------------------------------------------------


def test_chart_crd_is_the_top_level_crd() -> None:
    name = "cobrowsetlses.tls.cobrowse.io.yaml"
    chart_copy = CHART / "crds" / name
    assert chart_copy.read_bytes() == (REPO / "crds" / name).read_bytes(), (
        f"{chart_copy} differs from crds/{name}: run make chart-crds"
    )
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [name]


def test_crd_is_not_a_template(helm: str) -> None:
    """In crds/, helm installs it once and never deletes it: CRs survive an uninstall."""
    assert not by_kind(template(helm), "CustomResourceDefinition")
    with_crds = template(helm, "--include-crds")
    assert [o["metadata"]["name"] for o in by_kind(with_crds, "CustomResourceDefinition")] == [
        "cobrowsetlses.tls.cobrowse.io"
    ]


# -- lint -----------------------------------------------------------------------------------------


def test_lint_default_values(helm: str) -> None:
    result = run_helm(helm, "lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=lambda p: p.stem)
def test_lint_and_template_non_default_values(helm: str, values_file: Path) -> None:
    result = run_helm(
        helm, "lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART), "-f", str(values_file)
    )
    assert "0 chart(s) failed" in result.stdout
    assert template(helm, "-f", str(values_file))


# -- objects and security -------------------------------------------------------------------------

CLUSTER_SCOPED = (
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
)


def test_default_objects(helm: str) -> None:
    objs = template(helm)
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objs)
    assert kinds == [
        ("ClusterRole", "cbtls-cobrowse-tls-operator"),
        ("ClusterRoleBinding", "cbtls-cobrowse-tls-operator"),
        ("Deployment", "cbtls-cobrowse-tls-operator"),
        ("Service", "cbtls-cobrowse-tls-operator-metrics"),
        ("ServiceAccount", "cbtls-cobrowse-tls-operator"),
        ("ValidatingAdmissionPolicy", "cbtls-cobrowse-tls-operator"),
        ("ValidatingAdmissionPolicyBinding", "cbtls-cobrowse-tls-operator"),
    ]
    for o in objs:
        labels = o["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "cbtls"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        if o["kind"] not in CLUSTER_SCOPED:
            assert o["metadata"]["namespace"] == "cbtls-system"


def test_restricted_security_context(helm: str) -> None:
    deployment = one(template(helm), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (c,) = pod["containers"]
    assert c["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for host_access in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host_access)
    assert all("hostPath" not in v for v in pod["volumes"])
    assert c["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"memory": "256Mi"},
    }
    assert pod["serviceAccountName"] == "cbtls-cobrowse-tls-operator"
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["replicas"] == 1


def test_liveness_uses_kopf_endpoint(helm: str) -> None:
    c = container(template(helm))
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    probe = c["livenessProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {"name": "healthz", "containerPort": 8080, "protocol": "TCP"} in c["ports"]


def test_default_args(helm: str) -> None:
    c = container(template(helm))
    assert c["image"] == "cobrowse-tls-operator:0.1.0"
    assert c["args"] == [
        "run",
        "--log-format=json",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-port=9090",
        "--expiry-window=30",
        "--restart-window=1",
        "--rollout-deadline=600",
        "--resync=300",
        "--cleanup-timeout=120",
        "--workers=4",
        "--agent-image=cobrowse-tls-agent:0.1.0",
    ]


def test_values_reach_the_operator(helm: str, tmp_path: Path) -> None:
    objs = template(
        helm,
        values={
            "watchNamespaces": ["genesys"],
            "operator": {"logFormat": "plain", "expiryWindowDays": 45, "restartWindowSeconds": 2.5},
            "agent": {"image": "registry.example.com/agent:1.2.3"},
        },
        tmp=tmp_path,
    )
    args = container(objs)["args"]
    for arg in (
        "--namespace=genesys",
        "--log-format=plain",
        "--expiry-window=45",
        "--restart-window=2.5",
        "--agent-image=registry.example.com/agent:1.2.3",
    ):
        assert arg in args


def test_the_args_parse_with_the_operators_own_parser(helm: str) -> None:
    """Every flag the chart passes is one `cobrowse-tls run` accepts."""
    from cobrowse_tls.engine import runner

    for values_file in [None, *VALUES_FILES]:
        extra = ["-f", str(values_file)] if values_file else []
        args = container(template(helm, *extra))["args"]
        assert args[0] == "run"
        parsed = runner._parser().parse_args(args[1:])
        assert parsed.log_format in ("plain", "full", "json")


def test_decimal_values_given_with_set(helm: str) -> None:
    """helm --set passes 0.5 as a string: the schema takes it, the operator gets 0.5."""
    args = container(
        template(
            helm,
            "--set",
            "operator.restartWindowSeconds=0.5",
            "--set",
            "operator.resyncSeconds=2.5",
            "--set",
            "operator.expiryWindowDays=14.5",
        )
    )["args"]
    assert "--restart-window=0.5" in args
    assert "--resync=2.5" in args
    assert "--expiry-window=14.5" in args


def test_agent_command_and_verify_connections(helm: str) -> None:
    args = container(
        template(
            helm,
            "--set",
            "agent.command=python -m cobrowse_tls.cli",
            "--set",
            "operator.verifyConnections=true",
        )
    )["args"]
    assert "--agent-command=python -m cobrowse_tls.cli" in args
    assert "--verify-connections" in args


def test_image_digest_wins(helm: str) -> None:
    digest = "sha256:" + "ab" * 32
    c = container(template(helm, "--set", f"image.digest={digest}", "--set", "image.tag=9.9"))
    assert c["image"] == f"cobrowse-tls-operator@{digest}"


# -- RBAC -----------------------------------------------------------------------------------------


def test_cluster_wide_rbac(helm: str) -> None:
    objs = template(helm)
    assert not by_kind(objs, "Role")
    assert not by_kind(objs, "RoleBinding")
    role = one(objs, "ClusterRole")
    assert rules(role) == NAMESPACED_RULES | {CRD_RULE}
    binding = one(objs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": "cbtls-cobrowse-tls-operator",
            "namespace": "cbtls-system",
        }
    ]
    assert not any(a.startswith("--namespace") for a in container(objs)["args"])


@pytest.mark.parametrize("discovery", [True, False])
def test_namespaced_rbac(helm: str, tmp_path: Path, discovery: bool) -> None:
    objs = template(
        helm,
        values={"watchNamespaces": ["ns-a", "ns-b"], "rbac": {"namespaceDiscovery": discovery}},
        tmp=tmp_path,
    )
    # Cluster scope: discovery only. No Secret (or any other object content) cluster-wide.
    cluster_role = one(objs, "ClusterRole")
    assert cluster_role["metadata"]["name"] == "cbtls-cobrowse-tls-operator-discovery"
    expected = {CRD_RULE, NAMESPACES_RULE} if discovery else {CRD_RULE}
    assert rules(cluster_role) == expected
    assert "secrets" not in json.dumps(cluster_role)
    crb = one(objs, "ClusterRoleBinding")
    assert crb["roleRef"]["name"] == cluster_role["metadata"]["name"]

    roles = by_kind(objs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ns-a", "ns-b"]
    for role in roles:
        assert rules(role) == NAMESPACED_RULES
    bindings = by_kind(objs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["ns-a", "ns-b"]
    for b in bindings:
        assert b["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "cbtls-cobrowse-tls-operator",
        }
        assert b["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": "cbtls-cobrowse-tls-operator",
                "namespace": "cbtls-system",
            }
        ]
    args = container(objs)["args"]
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=ns-a",
        "--namespace=ns-b",
    ]


def test_rbac_create_false(helm: str) -> None:
    objs = template(helm, "--set", "rbac.create=false")
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not by_kind(objs, kind)


def test_existing_service_account(helm: str) -> None:
    objs = template(helm, "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=x")
    assert not by_kind(objs, "ServiceAccount")
    assert one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "x"
    assert one(objs, "ClusterRoleBinding")["subjects"][0]["name"] == "x"


# -- MSCAPI opt-in -------------------------------------------------------------------------------


def test_mscapi_allowed_nowhere_by_default(helm: str) -> None:
    objs = template(helm)
    assert "--mscapi" not in json.dumps(container(objs)["args"])
    assert [r["metadata"]["name"] for r in by_kind(objs, "ClusterRole")] == [
        "cbtls-cobrowse-tls-operator"
    ]
    assert "pods" not in json.dumps(objs)


def test_mscapi_namespaces_cluster_wide(helm: str) -> None:
    objs = template(helm, "--set", "mscapi.namespaces={genesys,genesys-b}")
    args = container(objs)["args"]
    assert [a for a in args if a.startswith("--mscapi")] == [
        "--mscapi-namespace=genesys",
        "--mscapi-namespace=genesys-b",
    ]
    roles = {r["metadata"]["name"]: r for r in by_kind(objs, "ClusterRole")}
    assert rules(roles["cbtls-cobrowse-tls-operator"]) == NAMESPACED_RULES | {CRD_RULE}
    assert rules(roles["cbtls-cobrowse-tls-operator-mscapi"]) == AGENT_RULES
    # Bound only in the allowed namespaces, never cluster-wide.
    bindings = by_kind(objs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["genesys", "genesys-b"]
    for b in bindings:
        assert b["roleRef"]["name"] == "cbtls-cobrowse-tls-operator-mscapi"
    assert len(by_kind(objs, "ClusterRoleBinding")) == 1


def test_mscapi_namespace_labels_cluster_wide(helm: str, tmp_path: Path) -> None:
    objs = template(
        helm,
        values={"mscapi": {"namespaceLabels": {"tls.cobrowse.io/mscapi": "yes"}}},
        tmp=tmp_path,
    )
    assert "--mscapi-namespace-label=tls.cobrowse.io/mscapi=yes" in container(objs)["args"]
    roles = {r["metadata"]["name"]: r for r in by_kind(objs, "ClusterRole")}
    assert rules(roles["cbtls-cobrowse-tls-operator"]) == NAMESPACED_RULES | {
        CRD_RULE,
        ("", "namespaces", frozenset({"get"})),
    }
    bindings = {b["metadata"]["name"]: b for b in by_kind(objs, "ClusterRoleBinding")}
    assert bindings["cbtls-cobrowse-tls-operator-mscapi"]["roleRef"]["name"] == (
        "cbtls-cobrowse-tls-operator-mscapi"
    )


def test_mscapi_namespaced_mode(helm: str, tmp_path: Path) -> None:
    objs = template(
        helm,
        values={
            "watchNamespaces": ["ns-a", "ns-b"],
            "mscapi": {"namespaces": ["ns-b"], "namespaceLabels": {"win": "ok"}},
            "rbac": {"namespaceDiscovery": False},
        },
        tmp=tmp_path,
    )
    # Labels: the watched namespaces' labels, by name, and nothing else cluster-wide.
    assert rules(one(objs, "ClusterRole")) == {
        CRD_RULE,
        ("", "namespaces[ns-a,ns-b]", frozenset({"get"})),
    }
    for role in by_kind(objs, "Role"):
        assert rules(role) == merged(NAMESPACED_RULES, AGENT_RULES)
    objs = template(
        helm,
        values={"watchNamespaces": ["ns-a", "ns-b"], "mscapi": {"namespaces": ["ns-b"]}},
        tmp=tmp_path,
    )
    roles = {r["metadata"]["namespace"]: r for r in by_kind(objs, "Role")}
    assert rules(roles["ns-a"]) == NAMESPACED_RULES
    assert rules(roles["ns-b"]) == merged(NAMESPACED_RULES, AGENT_RULES)
    assert "namespaces[" not in json.dumps(objs)


# -- the admission policy -------------------------------------------------------------------------


def policy_variables(objs: list[dict[str, Any]]) -> dict[str, str]:
    policy = one(objs, "ValidatingAdmissionPolicy")
    return {v["name"]: v["expression"] for v in policy["spec"]["variables"]}


def test_admission_policy_matches_only_the_operator(helm: str) -> None:
    objs = template(helm)
    policy = one(objs, "ValidatingAdmissionPolicy")
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    (condition,) = spec["matchConditions"]
    assert condition["expression"] == (
        'request.userInfo.username == "system:serviceaccount:cbtls-system:'
        'cbtls-cobrowse-tls-operator"'
    )
    # Every write of that identity is seen (reads never reach admission).
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["*/*"]
    assert rule["apiGroups"] == ["*"]
    assert set(rule["operations"]) == {"CREATE", "UPDATE", "DELETE", "CONNECT"}
    for validation in spec["validations"]:
        assert validation["reason"] == "Forbidden"
        text = validation.get("message") or validation["messageExpression"]
        assert "cobrowse-tls-operator admission policy" in text
    binding = one(objs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    sa = template(helm, "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=x")
    (condition,) = one(sa, "ValidatingAdmissionPolicy")["spec"]["matchConditions"]
    assert condition["expression"].endswith(':cbtls-system:x"')


def test_admission_policy_knows_the_agent_image_and_command(helm: str) -> None:
    from cobrowse_tls.core import agent_manifest

    default = policy_variables(template(helm))
    assert json.loads(default["agentImage"]) == agent_manifest.DEFAULT_IMAGE
    assert json.loads(default["agentCommand"]) == list(agent_manifest.AgentConfig().command)
    assert json.loads(default["agentCommand"]) == (runner_default_command()), (
        "the chart's default agent command must be the operator's"
    )
    custom = policy_variables(
        template(
            helm,
            "--set",
            "agent.image=registry.example.com/agent:2",
            "--set",
            "agent.command=python  -m cobrowse_tls.cli",
        )
    )
    assert json.loads(custom["agentImage"]) == "registry.example.com/agent:2"
    assert json.loads(custom["agentCommand"]) == ["python", "-m", "cobrowse_tls.cli"]
    assert "request.namespace in []" in default["mscapiNamespace"]
    labelled = policy_variables(
        template(
            helm,
            "--set",
            "mscapi.namespaces={genesys}",
            "--set",
            "mscapi.namespaceLabels.win=ok",
        )
    )
    assert 'request.namespace in ["genesys"]' in labelled["mscapiNamespace"]
    assert '{"win":"ok"}' in labelled["mscapiNamespace"]


def test_e2e_identity_args_are_what_the_chart_passes(helm: str, tmp_path: Path) -> None:
    """The e2e suite runs its operator with these flags under the policy of these values."""
    from e2e import operator_support as e2e

    key, value = e2e.MSCAPI_LABEL
    values = {"agent": {"image": e2e.AGENT_IMAGE}, "mscapi": {"namespaceLabels": {key: value}}}
    args = container(template(helm, values=values, tmp=tmp_path))["args"]
    for arg in e2e.IDENTITY_ARGS:
        assert arg in args


def runner_default_command() -> list[str]:
    from cobrowse_tls.engine import runner

    return str(runner._parser().parse_args([]).agent_command).split()


def test_admission_policy_can_be_turned_off(helm: str) -> None:
    objs = template(helm, "--set", "admissionPolicy.enabled=false")
    assert not by_kind(objs, "ValidatingAdmissionPolicy")
    assert not by_kind(objs, "ValidatingAdmissionPolicyBinding")


def test_kube_version_is_the_one_the_crd_and_policy_need() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.30.0-0"


# -- optional objects -----------------------------------------------------------------------------


def test_peering_cluster_wide(helm: str) -> None:
    objs = template(helm, "--set", "peering.enabled=true", "--set", "replicaCount=2")
    peering = one(objs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "cbtls-cobrowse-tls-operator"
    assert rules(one(objs, "ClusterRole")) == NAMESPACED_RULES | {CRD_RULE} | peering_rules(
        "clusterkopfpeerings", "cbtls-cobrowse-tls-operator"
    )
    deployment = one(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "--peering=cbtls-cobrowse-tls-operator" in container(objs)["args"]


def test_peering_namespaced(helm: str, tmp_path: Path) -> None:
    objs = template(
        helm,
        values={"watchNamespaces": ["ns-a", "ns-b"], "peering": {"enabled": True, "name": "p"}},
        tmp=tmp_path,
    )
    assert not by_kind(objs, "ClusterKopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in by_kind(objs, "KopfPeering")) == [
        "ns-a",
        "ns-b",
    ]
    for role in by_kind(objs, "Role"):
        assert rules(role) == NAMESPACED_RULES | peering_rules("kopfpeerings", "p")
    assert "kopf" not in json.dumps(one(objs, "ClusterRole"))


def test_two_replicas_elect_a_leader_on_a_lease(helm: str) -> None:
    """replicaCount: 2 works as it is: Lease election, no CRDs, rights on one Lease only."""
    objs = template(helm, "--set", "replicaCount=2")
    deployment = one(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate"}
    c = container(objs)
    name = "cbtls-cobrowse-tls-operator"
    for arg in (
        "--leader-elect",
        f"--lease-name={name}",
        "--lease-duration=15",
        "--renew-deadline=10",
        "--retry-period=2",
    ):
        assert arg in c["args"]
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c["env"]}
    assert env["POD_NAMESPACE"] == "metadata.namespace"
    assert env["POD_NAME"] == "metadata.name"
    role = next(
        r for r in by_kind(objs, "Role") if r["metadata"]["name"].endswith("-leader-election")
    )
    assert role["metadata"]["namespace"] == "cbtls-system"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [name],
            "verbs": ["get", "update"],
        },
    ]
    binding = next(
        b for b in by_kind(objs, "RoleBinding") if b["roleRef"]["name"] == role["metadata"]["name"]
    )
    assert binding["subjects"][0]["name"] == name
    assert "kopf" not in json.dumps(objs)
    assert not any(o["kind"] == "CustomResourceDefinition" for o in objs)


def test_admission_policy_lets_the_leader_lease_through_only_with_election(helm: str) -> None:
    def rules(*extra: str) -> str:
        policy = one(template(helm, *extra), "ValidatingAdmissionPolicy")
        return json.dumps(policy["spec"]["validations"])

    assert "coordination.k8s.io/leases" not in rules()
    text = rules("--set", "replicaCount=2")
    assert "variables.resource == 'coordination.k8s.io/leases'" in text
    assert 'request.namespace == \\"cbtls-system\\"' in text
    assert 'object.metadata.name == \\"cbtls-cobrowse-tls-operator\\"' in text


def test_one_replica_needs_no_election_unless_asked(helm: str) -> None:
    assert "--leader-elect" not in container(template(helm))["args"]
    objs = template(
        helm,
        "--set",
        "leaderElection.enabled=true",
        "--set",
        "leaderElection.retryPeriodSeconds=0.5",
    )
    assert "--retry-period=0.5" in container(objs)["args"]
    assert any(r["metadata"]["name"].endswith("-leader-election") for r in by_kind(objs, "Role"))


def test_peering_replaces_leader_election(helm: str) -> None:
    args = container(template(helm, "--set", "peering.enabled=true", "--set", "replicaCount=2"))[
        "args"
    ]
    assert "--leader-elect" not in args


def test_metrics_service_and_service_monitor(helm: str) -> None:
    objs = template(
        helm, "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.port=9100"
    )
    service = one(objs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/name": "cobrowse-tls-operator",
        "app.kubernetes.io/instance": "cbtls",
    }
    monitor = one(objs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert "--metrics-port=9100" in container(objs)["args"]


def test_metrics_disabled(helm: str) -> None:
    objs = template(
        helm, "--set", "metrics.enabled=false", "--set", "metrics.serviceMonitor.enabled=true"
    )
    assert not by_kind(objs, "Service")
    assert not by_kind(objs, "ServiceMonitor")
    c = container(objs)
    assert not any(a.startswith("--metrics") for a in c["args"])
    assert [p["name"] for p in c["ports"]] == ["healthz"]


def test_pod_disruption_budget(helm: str) -> None:
    assert not by_kind(template(helm), "PodDisruptionBudget")
    pdb = one(template(helm, "--set", "podDisruptionBudget.enabled=true"), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    pdb = one(
        template(
            helm,
            "--set",
            "podDisruptionBudget.enabled=true",
            "--set",
            "podDisruptionBudget.minAvailable=50%",
        ),
        "PodDisruptionBudget",
    )
    assert pdb["spec"]["minAvailable"] == "50%"
    assert "maxUnavailable" not in pdb["spec"]


def test_full_values_file(helm: str) -> None:
    objs = template(helm, "-f", str(Path(__file__).parent / "values" / "full.yaml"))
    c = container(objs)
    # A Windows path with spaces and backslashes reaches the operator as one argument.
    assert "--agent-command=agent\\python\\python.exe -m cobrowse_tls.cli" in c["args"]
    assert c["image"].startswith("registry.example.com/cobrowse-tls-operator@sha256:")
    assert {"name": "TZ", "value": "UTC"} in c["env"]
    assert "--verbose" in c["args"]
    pod = one(objs, "Deployment")["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "platform"
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"
    assert one(objs, "ServiceMonitor")["metadata"]["labels"]["release"] == "prom"
    assert one(objs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


# -- the schema -----------------------------------------------------------------------------------

BAD_VALUES = [
    (["--set", "operator.logFormat=xml"], "logFormat"),
    (["--set", "operator.workers=0"], "workers"),
    (["--set", "operator.expiryWindowDays=-1"], "expiryWindowDays"),
    (["--set", "operator.restartWindowSeconds=soon"], "restartWindowSeconds"),
    (["--set", "operator.resyncSeconds=0"], "resyncSeconds"),
    (["--set", "operator.resyncSeconds=0.0"], "resyncSeconds"),
    (["--set", "operator.restartWindowSeconds=-1"], "restartWindowSeconds"),
    (["--set", "operator.restartWindowSeconds=1e3"], "restartWindowSeconds"),
    (["--set", "watchNamespaces={Genesys}"], "watchNamespaces"),
    (["--set", "watchNamespaces={genesys-*}"], "watchNamespaces"),
    (["--set", "watchNamespaces={a,a}"], "watchNamespaces"),
    (["--set", "watchNamespaces=genesys"], "watchNamespaces"),
    (["--set", "metrics.port=70000"], "port"),
    (["--set", "liveness.port=0"], "port"),
    (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
    (["--set", "image.digest=latest"], "digest"),
    (["--set", "agent.image="], "image"),
    (["--set", "replicaCount=-1"], "replicaCount"),
    (["--set", "podDisruptionBudget.maxUnavailable=lots"], "maxUnavailable"),
    (["--set", "metrics.serviceMonitor.interval=often"], "interval"),
    (["--set", "metrics.service.type=ExternalName"], "type"),
    (["--set", "operatr.logFormat=json"], "operatr"),
    (["--set", "rbac.clusterWide=true"], "clusterWide"),
    (["--set", "rbac.create=yes"], "create"),
    (["--set", "resources.requests.memory[0]=x"], "memory"),
    (["--set", "mscapi.namespaces={Genesys}"], "namespaces"),
    (["--set", "mscapi.namespaces=genesys"], "namespaces"),
    (["--set", "mscapi.namespaceLabels.a=b c"], "namespaceLabels"),
    (["--set", "admissionPolicy.enabled=yes"], "enabled"),
]


@pytest.mark.parametrize(("args", "field"), BAD_VALUES, ids=lambda a: str(a))
def test_schema_rejects_bad_values(helm: str, args: list[str], field: str) -> None:
    result = run_helm(
        helm, "template", "x", str(CHART), "--kube-version", KUBE_VERSION, *args, check=False
    )
    assert result.returncode != 0, f"{args} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert field in result.stderr


def _leaves(values: Any, path: tuple[str, ...] = ()) -> Iterable[tuple[str, ...]]:
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from _leaves(value, (*path, key))
    else:
        yield path


def test_schema_covers_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    def check_objects(node: Mapping[str, Any], where: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{where} accepts unknown keys"
            for key, child in node["properties"].items():
                check_objects(child, f"{where}.{key}")

    check_objects(schema, "values")
    for path in _leaves(values):
        node = schema
        for key in path:
            if isinstance(node.get("additionalProperties"), dict):
                break  # a map (resources.requests, nodeSelector): its keys are free
            props = node.get("properties")
            assert props is not None, f"{'.'.join(path)}: the schema has no properties there"
            assert key in props, f"{'.'.join(path)} is not in the schema"
            node = props[key]
        has_type = "type" in node or "oneOf" in node
        assert has_type, f"{'.'.join(path)} has no type in the schema"
        assert node.get("description") or len(path) > 1, f"{'.'.join(path)} lacks a description"
