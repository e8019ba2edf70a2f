"""Layer 1: the CobrowseTLS models (defaults, validation rules, wire names) and the CRD."""

from __future__ import annotations

import inspect
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pydantic
import pytest
import yaml

import manual_table
import rule_tables
from cobrowse_tls.api import accounts, base, crd, models
from unit.builders import Doc, tls_doc

REPO = pathlib.Path(__file__).resolve().parents[2]
INLINE = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def minimal(provider: str = "PEM", **spec: Any) -> Doc:
    body: Doc = {"provider": provider, "application": {"name": "CB_Cluster"}}
    if provider != "Disabled":
        body["trustedCA"] = {"sources": [{"inline": INLINE}]}
    body.update(spec)
    return {
        "apiVersion": models.API_VERSION,
        "kind": "CobrowseTLS",
        "metadata": {"name": "cb"},
        "spec": body,
    }


def errors_of(doc: Doc) -> str:
    with pytest.raises(pydantic.ValidationError) as info:
        models.parse(doc)
    return str(info.value)


# ---- defaults ------------------------------------------------------------------------------


def test_defaults_as_in_design() -> None:
    tls = models.parse(minimal(configServer={"host": "confserv", "port": 8889}))
    spec = tls.spec
    assert spec.application.type is models.ApplicationType.CLUSTER
    assert spec.application.solution_control_server is False
    assert spec.trusted_ca is not None
    assert spec.trusted_ca.allow_non_ca is False
    assert spec.truststore.secret_name is None
    assert tls.truststore_secret_name == "cb-truststore"
    assert tls.security_config_map_name == "cb-security"
    assert tls.agent_daemonset_name == "cb-mscapi-agent"
    assert spec.truststore.mount_path == "/opt/genesys/cobrowse/security"
    assert spec.truststore.windows_mount_path == "C:\\cobrowse\\security"
    assert spec.truststore.alias == "root"
    assert spec.truststore.password_secret_ref is None
    assert spec.config_server is not None
    assert spec.config_server.connection_mode is models.ConnectionMode.TLS
    assert spec.config_server.backup_host is None
    assert spec.connections == []
    assert spec.workloads == []
    assert spec.restart.policy is models.RestartPolicy.ROLLING
    assert spec.restart.max_concurrent == 1
    assert spec.windows is None


def test_windows_defaults() -> None:
    spec = models.parse(minimal("MSCAPI", windows={})).spec
    assert spec.windows is not None
    assert spec.windows.node_selector == {}
    assert spec.windows.store is models.WindowsStore.ROOT
    assert spec.windows.location is models.WindowsLocation.LOCAL_MACHINE
    assert spec.windows.account == ""


def test_explicit_secret_name_wins() -> None:
    tls = models.parse(minimal(truststore={"secretName": "cobrowse-truststore"}))
    assert tls.truststore_secret_name == "cobrowse-truststore"


def test_crd_defaults_match_model_defaults() -> None:
    spec = crd.generate()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = spec["properties"]
    assert props["application"]["properties"]["type"]["default"] == "Cluster"
    assert props["application"]["properties"]["solutionControlServer"]["default"] is False
    assert props["trustedCA"]["properties"]["allowNonCA"]["default"] is False
    ts = props["truststore"]["properties"]
    assert ts["mountPath"]["default"] == "/opt/genesys/cobrowse/security"
    assert ts["windowsMountPath"]["default"] == "C:\\cobrowse\\security"
    assert ts["alias"]["default"] == "root"
    assert props["configServer"]["properties"]["connectionMode"]["default"] == "TLS"
    assert props["restart"]["properties"]["policy"]["default"] == "Rolling"
    assert props["restart"]["properties"]["maxConcurrent"]["default"] == 1
    assert props["windows"]["properties"]["store"]["default"] == "Root"
    assert props["windows"]["properties"]["location"]["default"] == "LocalMachine"


# ---- wire names ----------------------------------------------------------------------------

FULL_JKS: Doc = {
    "apiVersion": "tls.cobrowse.io/v1alpha1",
    "kind": "CobrowseTLS",
    "metadata": {"name": "cobrowse", "namespace": "genesys"},
    "spec": {
        "provider": "JKS",
        "application": {"type": "Node", "name": "CB_Node", "solutionControlServer": True},
        "trustedCA": {
            "sources": [
                {"secret": {"name": "genesys-pfx", "key": "ca.pfx", "passwordKey": "pass"}},
                {"configMap": {"name": "corp-roots", "key": "bundle.pem"}},
                {"inline": INLINE},
            ],
            "allowNonCA": True,
        },
        "truststore": {
            "secretName": "cobrowse-truststore",
            "mountPath": "/opt/genesys/cobrowse/security",
            "windowsMountPath": "C:\\cobrowse\\security",
            "alias": "root",
            "passwordSecretRef": {"name": "jks-password", "key": "password"},
        },
        "configServer": {
            "host": "confserv.genesys.svc",
            "port": 8889,
            "backupHost": "confserv-backup.genesys.svc",
            "backupPort": 8889,
            "connectionMode": "Upgrade",
        },
        "connections": [{"name": "MessageServer", "host": "msgserver.genesys.svc", "port": 9021}],
        "workloads": [
            {"kind": "StatefulSet", "name": "cobrowse-node"},
            {"kind": "Deployment", "selector": {"matchLabels": {"app": "cobrowse"}}},
            {
                "kind": "DaemonSet",
                "selector": {
                    "matchExpressions": [
                        {"key": "app", "operator": "In", "values": ["cobrowse"]},
                        {"key": "canary", "operator": "DoesNotExist"},
                    ]
                },
            },
        ],
        "restart": {"policy": "Manual", "maxConcurrent": 2},
    },
}


def test_full_object_round_trips_with_design_field_names() -> None:
    tls = models.parse(FULL_JKS)
    assert tls.wire()["spec"] == FULL_JKS["spec"]
    spec = tls.spec
    assert spec.trusted_ca is not None
    assert spec.trusted_ca.allow_non_ca is True
    assert spec.trusted_ca.sources[0].secret is not None
    assert spec.trusted_ca.sources[0].secret.password_key == "pass"
    assert spec.application.solution_control_server is True
    assert spec.truststore.password_secret_ref is not None
    assert spec.restart.max_concurrent == 2


def test_mscapi_object_round_trips() -> None:
    windows = {
        "nodeSelector": {"pool": "win"},
        "store": "CA",
        "location": "User",
        "account": "S-1-5-21-1-2-3-1001",
    }
    tls = models.parse(minimal("MSCAPI", windows=windows))
    assert tls.wire()["spec"]["windows"] == windows


def _property_paths(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        yield path
        yield from _property_paths(child, path)
        if "items" in child:
            yield from _property_paths(child["items"], path + "[]")


def crd_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd.generate()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


DESIGN_PATHS = [
    "spec.provider",
    "spec.application.type",
    "spec.application.name",
    "spec.application.solutionControlServer",
    "spec.trustedCA",
    "spec.trustedCA.sources",
    "spec.trustedCA.sources[].secret.name",
    "spec.trustedCA.sources[].secret.key",
    "spec.trustedCA.sources[].secret.passwordKey",
    "spec.trustedCA.sources[].configMap.name",
    "spec.trustedCA.sources[].configMap.key",
    "spec.trustedCA.sources[].inline",
    "spec.trustedCA.allowNonCA",
    "spec.truststore.secretName",
    "spec.truststore.mountPath",
    "spec.truststore.windowsMountPath",
    "spec.truststore.alias",
    "spec.truststore.passwordSecretRef.name",
    "spec.truststore.passwordSecretRef.key",
    "spec.configServer.host",
    "spec.configServer.port",
    "spec.configServer.backupHost",
    "spec.configServer.backupPort",
    "spec.configServer.connectionMode",
    "spec.connections[].name",
    "spec.connections[].host",
    "spec.connections[].port",
    "spec.workloads[].kind",
    "spec.workloads[].name",
    "spec.workloads[].selector.matchLabels",
    "spec.workloads[].selector.matchExpressions",
    "spec.restart.policy",
    "spec.restart.maxConcurrent",
    "spec.windows.nodeSelector",
    "spec.windows.store",
    "spec.windows.location",
    "spec.windows.account",
    "status.observedGeneration",
    "status.conditions[].type",
    "status.conditions[].status",
    "status.conditions[].reason",
    "status.conditions[].message",
    "status.conditions[].lastTransitionTime",
    "status.conditions[].observedGeneration",
    "status.trustStore.secretName",
    "status.trustStore.configMapName",
    "status.trustStore.fingerprint",
    "status.trustStore.certificates[].alias",
    "status.trustStore.certificates[].subject",
    "status.trustStore.certificates[].sha256",
    "status.trustStore.certificates[].notAfter",
    "status.restart.hash",
    "status.restart.workloads[].kind",
    "status.restart.workloads[].name",
    "status.restart.workloads[].state",
    "status.windows.desired",
    "status.windows.ready",
]


def test_crd_has_every_design_field_in_camel_case() -> None:
    paths = set(_property_paths(crd_schema()))
    missing = [p for p in DESIGN_PATHS if p not in paths]
    assert missing == []
    snake = [p for p in paths if "_" in p]
    assert snake == []


@pytest.mark.parametrize(
    ("section", "wrong"),
    [
        (None, "trustedCa"),
        (None, "trusted_ca_typo"),
        ("trustedCA", "allowNonCa"),
        ("truststore", "passwordSecretRefs"),
        ("application", "solutionControlserver"),
        ("restart", "maxconcurrent"),
    ],
)
def test_unknown_fields_are_rejected(section: str | None, wrong: str) -> None:
    doc = minimal(truststore={}, restart={})
    target = doc["spec"] if section is None else doc["spec"][section]
    target[wrong] = True
    assert "Extra inputs are not permitted" in errors_of(doc)


# ---- enums ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s.update(provider="pem"), "provider"),
        (lambda s: s.update(provider=""), "provider"),
        (lambda s: s.update(provider="PKCS12"), "provider"),
        (lambda s: s["application"].update(type="Agent"), "type"),
        (
            lambda s: s.update(configServer={"host": "h", "port": 1, "connectionMode": "tls"}),
            "connectionMode",
        ),
        (lambda s: s.update(workloads=[{"kind": "Pod", "name": "x"}]), "kind"),
        (lambda s: s.update(restart={"policy": "Always"}), "policy"),
        (lambda s: s.update(provider="MSCAPI", windows={"store": "My"}), "store"),
        (lambda s: s.update(provider="MSCAPI", windows={"location": "CurrentUser"}), "location"),
        (
            lambda s: s.update(
                workloads=[
                    {
                        "kind": "Deployment",
                        "selector": {"matchExpressions": [{"key": "a", "operator": "Is"}]},
                    }
                ]
            ),
            "operator",
        ),
    ],
)
def test_enum_values_are_checked(mutate: Callable[[Doc], None], field: str) -> None:
    doc = minimal()
    mutate(doc["spec"])
    assert field in errors_of(doc)


@pytest.mark.parametrize("provider", ["PEM", "JKS", "MSCAPI", "Disabled"])
def test_every_provider_is_accepted(provider: str) -> None:
    assert models.parse(minimal(provider)).spec.provider.value == provider


@pytest.mark.parametrize("mode", ["TLS", "Upgrade", "Unsecured"])
def test_connection_modes(mode: str) -> None:
    tls = models.parse(minimal(configServer={"host": "h", "port": 1, "connectionMode": mode}))
    assert tls.spec.config_server is not None
    assert tls.spec.config_server.connection_mode.value == mode


# ---- hosts and ports -----------------------------------------------------------------------

GOOD_HOSTS = [
    "confserv",
    "confserv.genesys.svc",
    "confserv.genesys.svc.cluster.local",
    "CONFSERV-1.Example.COM",
    "a" * 63 + ".example",
    ".".join(["a" * 63] * 3) + "." + "b" * 61,  # 253 characters
    "10.0.0.1",
    "127.0.0.1",
    "::1",
    "2001:db8::1",
    "fe80::1",
    "::ffff:10.0.0.1",
    "2001:0db8:0000:0000:0000:ff00:0042:8329",
]
BAD_HOSTS = [
    "",
    "-confserv",
    "confserv-",
    "conf_serv",
    "conf serv",
    "confserv.",
    "confserv..svc",
    "a" * 64,
    ".".join(["a" * 63] * 4),  # 255 characters
    "confserv:8889",
    "[::1]",
    "http://confserv",
    "fe80::1%eth0",
    "fe80::1%$(id)",
    "confserv\n",
    "confserv\ntouch /tmp/pwned",
    "$(id)",
    "`id`",
    "a;b",
    "a'b",
    'a"b',
    "%PATH%",
    "2001:db8::1::2",
    "ünicode.example",
]


def _host_doc(where: str, host: str) -> Doc:
    cs: Doc = {"host": "confserv", "port": 8889}
    conns: list[Doc] = []
    if where == "host":
        cs["host"] = host
    elif where == "backupHost":
        cs.update(backupHost=host, backupPort=8889)
    else:
        conns = [{"name": "MessageServer", "host": host, "port": 9021}]
    return minimal(configServer=cs, connections=conns)


@pytest.mark.parametrize("where", ["host", "backupHost", "connections"])
@pytest.mark.parametrize("host", GOOD_HOSTS)
def test_good_hosts(where: str, host: str) -> None:
    models.parse(_host_doc(where, host))


@pytest.mark.parametrize("where", ["host", "backupHost", "connections"])
@pytest.mark.parametrize("host", BAD_HOSTS)
def test_bad_hosts(where: str, host: str) -> None:
    message = errors_of(_host_doc(where, host))
    assert where.removesuffix("s") in message
    if host:
        assert base.HOST_MESSAGE in message


def _port_doc(where: str, port: Any) -> Doc:
    cs: Doc = {"host": "confserv", "port": 8889}
    conns: list[Doc] = []
    if where == "port":
        cs["port"] = port
    elif where == "backupPort":
        cs.update(backupHost="backup", backupPort=port)
    else:
        conns = [{"name": "MessageServer", "host": "msg", "port": port}]
    return minimal(configServer=cs, connections=conns)


@pytest.mark.parametrize("where", ["port", "backupPort", "connections"])
@pytest.mark.parametrize("port", [1, 443, 8889, 65535])
def test_good_ports(where: str, port: int) -> None:
    models.parse(_port_doc(where, port))


@pytest.mark.parametrize("where", ["port", "backupPort", "connections"])
@pytest.mark.parametrize("port", [0, 65536, -1, 100000, True, "8889", 8889.5, None])
def test_bad_ports(where: str, port: Any) -> None:
    assert "port" in errors_of(_port_doc(where, port)).lower()


def test_ports_in_crd() -> None:
    cs = crd_schema()["properties"]["spec"]["properties"]["configServer"]["properties"]
    for name in ("port", "backupPort"):
        assert cs[name]["type"] == "integer"
        assert (cs[name]["minimum"], cs[name]["maximum"]) == (1, 65535)


# ---- other patterns ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s["application"].update(name=""), "name"),
        (lambda s: s["application"].update(name="CB'; touch /tmp/pwned; '"), "name"),
        (lambda s: s["application"].update(name="CB$(id)"), "name"),
        (lambda s: s["application"].update(name="CB%PATH%"), "name"),
        (lambda s: s["application"].update(name='CB"x'), "name"),
        (lambda s: s["application"].update(name="CB!x!"), "name"),
        (lambda s: s["application"].update(name="CB\nx"), "name"),
        (lambda s: s["application"].update(name="CB\n"), "name"),
        (lambda s: s["application"].update(name="a" * 256), "name"),
        (lambda s: s.update(truststore={"mountPath": "relative/path"}), "mountPath"),
        (lambda s: s.update(truststore={"mountPath": "/opt/x y"}), "mountPath"),
        (lambda s: s.update(truststore={"mountPath": "/opt/$(id)"}), "mountPath"),
        (lambda s: s.update(truststore={"mountPath": "/opt/x'"}), "mountPath"),
        (lambda s: s.update(truststore={"mountPath": "/opt/x/"}), "mountPath"),
        (lambda s: s.update(truststore={"mountPath": "/opt/x\n"}), "mountPath"),
        (
            lambda s: s.update(truststore={"windowsMountPath": "cobrowse\\security"}),
            "windowsMountPath",
        ),
        (lambda s: s.update(truststore={"windowsMountPath": "C:\\a%PATH%"}), "windowsMountPath"),
        (lambda s: s.update(truststore={"windowsMountPath": 'C:\\a"&calc'}), "windowsMountPath"),
        (lambda s: s.update(truststore={"windowsMountPath": "C:\\a!x!"}), "windowsMountPath"),
        (lambda s: s.update(truststore={"windowsMountPath": "C:\\a&calc"}), "windowsMountPath"),
        (lambda s: s.update(truststore={"windowsMountPath": "C:\\a\r\ncalc"}), "windowsMountPath"),
        (lambda s: s.update(truststore={"alias": "Root"}), "alias"),
        (lambda s: s.update(truststore={"alias": "-root"}), "alias"),
        (lambda s: s.update(truststore={"secretName": "Bad_Name"}), "secretName"),
        (
            lambda s: s["trustedCA"]["sources"].append({"secret": {"name": "x", "key": "a/b"}}),
            "key",
        ),
        (lambda s: s["trustedCA"].update(sources=[]), "sources"),
        (lambda s: s["trustedCA"]["sources"][0].update(inline=""), "inline"),
        (lambda s: s.update(restart={"maxConcurrent": 0}), "maxConcurrent"),
        (lambda s: s.update(connections=[{"name": "", "host": "h", "port": 1}]), "name"),
        (
            lambda s: s.update(
                provider="MSCAPI", windows={"location": "Service", "account": "a;b"}
            ),
            "account",
        ),
    ],
)
def test_patterns_and_bounds(mutate: Callable[[Doc], None], field: str) -> None:
    doc = minimal()
    mutate(doc["spec"])
    assert field in errors_of(doc)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "CB_Cluster"),
        ("name", "CB Node 1"),
        ("name", "cobrowse@host-1.example"),
        ("mountPath", "/opt/genesys/cobrowse/security"),
        ("mountPath", "/x"),
        ("windowsMountPath", "C:\\cobrowse\\security"),
        ("windowsMountPath", "D:\\Program Files\\GCTI\\Co-browse"),
    ],
)
def test_values_reaching_setenv_that_are_accepted(field: str, value: str) -> None:
    if field == "name":
        wire = models.parse(minimal(application={"name": value})).wire()["spec"]["application"]
    else:
        wire = models.parse(minimal(truststore={field: value})).wire()["spec"]["truststore"]
    assert wire[field] == value


# ---- cross-field rules ---------------------------------------------------------------------

# (model class, mutation of a valid spec, the rule's message fragment); every Rule appears here.
RULE_CASES: list[tuple[type[base.Model], Callable[[Doc], None], str]] = [
    (
        models.Application,
        lambda s: s["application"].update(type="Cluster", solutionControlServer=True),
        "reads the [security] options from the Node object, not the Cluster object",
    ),
    (
        models.Application,
        lambda s: s["application"].update(solutionControlServer=True),  # type defaults to Cluster
        "reads the [security] options from the Node object, not the Cluster object",
    ),
    (
        models.Application,
        lambda s: s["application"].update(type="Server", version="8.5.001"),
        "does not read the [security] options from th",
    ),
    (
        models.CertificateSource,
        lambda s: s["trustedCA"].update(sources=[{}]),
        "each source sets exactly one of secret, configMap or inline",
    ),
    (
        models.CertificateSource,
        lambda s: s["trustedCA"].update(
            sources=[{"secret": {"name": "a", "key": "k"}, "configMap": {"name": "b", "key": "k"}}]
        ),
        "each source sets exactly one of secret, configMap or inline",
    ),
    (
        models.CertificateSource,
        lambda s: s["trustedCA"].update(
            sources=[{"secret": {"name": "a", "key": "k"}, "inline": INLINE}]
        ),
        "each source sets exactly one of secret, configMap or inline",
    ),
    (
        models.CertificateSource,
        lambda s: s["trustedCA"].update(
            sources=[
                {
                    "secret": {"name": "a", "key": "k"},
                    "configMap": {"name": "b", "key": "k"},
                    "inline": INLINE,
                }
            ]
        ),
        "each source sets exactly one of secret, configMap or inline",
    ),
    (
        models.ConfigServer,
        lambda s: s.update(configServer={"host": "h", "port": 1, "backupHost": "b"}),
        "backupHost and backupPort go together",
    ),
    (
        models.ConfigServer,
        lambda s: s.update(configServer={"host": "h", "port": 1, "backupPort": 2}),
        "backupHost and backupPort go together",
    ),
    (
        models.LabelSelector,
        lambda s: s.update(workloads=[{"kind": "Deployment", "selector": {}}]),
        "a selector needs at least one matchLabels entry or an In expression",
    ),
    (
        models.LabelSelector,
        lambda s: s.update(workloads=[{"kind": "Deployment", "selector": {"matchLabels": {}}}]),
        "a selector needs at least one matchLabels entry or an In expression",
    ),
    (
        models.LabelSelectorRequirement,
        lambda s: s.update(
            workloads=[
                {
                    "kind": "Deployment",
                    "selector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
                }
            ]
        ),
        "operators In and NotIn need at least one value",
    ),
    (
        models.LabelSelectorRequirement,
        lambda s: s.update(
            workloads=[
                {
                    "kind": "Deployment",
                    "selector": {
                        "matchLabels": {"a": "b"},
                        "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}],
                    },
                }
            ]
        ),
        "operators Exists and DoesNotExist take no values",
    ),
    (
        models.Workload,
        lambda s: s.update(workloads=[{"kind": "Deployment"}]),
        "each workload sets exactly one of name or selector",
    ),
    (
        models.Workload,
        lambda s: s.update(
            workloads=[{"kind": "Deployment", "name": "x", "selector": {"matchLabels": {"a": "b"}}}]
        ),
        "each workload sets exactly one of name or selector",
    ),
    (
        models.Windows,
        lambda s: s.update(provider="MSCAPI", windows={"location": "Service"}),
        "account is required for location Service or User",
    ),
    (
        models.Windows,
        lambda s: s.update(provider="MSCAPI", windows={"account": "cobrowse"}),
        "account is required for location Service or User",
    ),
    (
        models.Windows,
        lambda s: s.update(provider="MSCAPI", windows={"location": "User", "account": "bob"}),
        "for location User, account is the user's SID",
    ),
    (
        models.Windows,
        lambda s: s.update(
            provider="MSCAPI", windows={"location": "User", "account": "S-1-5-21-7-8-9-1001"}
        ),
        "location User takes store CA only",
    ),
    (
        models.Windows,
        lambda s: s.update(
            provider="MSCAPI",
            windows={"location": "User", "account": "S-1-5-21-7-8-9-1001", "store": "Root"},
        ),
        "protected root list",
    ),
    (
        models.Windows,
        lambda s: s.update(provider="MSCAPI", windows={"location": "Service", "account": ".."}),
        "account must not be '.' or '..'",
    ),
    (
        models.CobrowseTLSSpec,
        lambda s: s.pop("trustedCA"),
        "trustedCA is required unless provider is Disabled",
    ),
    (
        models.CobrowseTLSSpec,
        lambda s: s.update(truststore={"passwordSecretRef": {"name": "p", "key": "k"}}),
        "truststore.passwordSecretRef is only valid with provider JKS",
    ),
    (
        models.CobrowseTLSSpec,
        lambda s: s.update(
            provider="MSCAPI", truststore={"passwordSecretRef": {"name": "p", "key": "k"}}
        ),
        "truststore.passwordSecretRef is only valid with provider JKS",
    ),
    (
        models.CobrowseTLSSpec,
        lambda s: s.update(windows={}),
        "windows is only valid with provider MSCAPI",
    ),
    (
        models.CobrowseTLSSpec,
        lambda s: s.update(provider="JKS", windows={}),
        "windows is only valid with provider MSCAPI",
    ),
]


@pytest.mark.parametrize(("cls", "mutate", "message"), RULE_CASES)
def test_cross_field_rules(
    cls: type[base.Model], mutate: Callable[[Doc], None], message: str
) -> None:
    doc = minimal()
    mutate(doc["spec"])
    assert message in errors_of(doc)
    assert any(message in rule.message for rule in cls.rules)


def all_model_classes() -> list[type[base.Model]]:
    return [
        c
        for _, c in inspect.getmembers(models, inspect.isclass)
        if issubclass(c, base.Model) and c.__module__ == models.__name__
    ]


def test_every_rule_has_a_case() -> None:
    tested = {(cls, m) for cls, _, m in RULE_CASES}
    for cls in all_model_classes():
        for rule in cls.rules:
            assert any(c is cls and m in rule.message for c, m in tested), (cls, rule.message)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s["application"].update(type="Node", solutionControlServer=True),
        lambda s: s["application"].update(
            type="Server", version="8.5.000", solutionControlServer=True
        ),
        # A CR from before application.version: the Server object means Co-browse 8.5.000.
        lambda s: s["application"].update(type="Server"),
        lambda s: s.update(
            configServer={"host": "h", "port": 1, "backupHost": "b", "backupPort": 2}
        ),
        lambda s: s.update(
            workloads=[{"kind": "Deployment", "selector": {"matchLabels": {"a": "b"}}}]
        ),
        lambda s: s.update(
            provider="MSCAPI", windows={"location": "Service", "account": "CoBrowse Svc"}
        ),
        lambda s: s.update(
            provider="MSCAPI",
            windows={"location": "User", "account": "S-1-5-21-7-8-9-1001", "store": "CA"},
        ),
        lambda s: s.update(
            provider="JKS", truststore={"passwordSecretRef": {"name": "p", "key": "k"}}
        ),
        lambda s: (s.pop("trustedCA"), s.update(provider="Disabled")),
    ],
)
def test_rules_accept_the_allowed_combinations(mutate: Callable[[Doc], None]) -> None:
    doc = minimal()
    mutate(doc["spec"])
    models.parse(doc)


@pytest.mark.parametrize("row", manual_table.ROWS, ids=[r.id for r in manual_table.ROWS])
def test_the_manuals_table_of_releases_and_objects(row: manual_table.Row) -> None:
    doc = minimal(
        application=row.application(),
        connections=[{"name": "MessageServer", "host": "msgserver", "port": 9021}],
    )
    if row.refusal is None:
        app = models.parse(doc).spec.application
        assert models.connections_object(app.version, app.type).value == row.connections_object
    else:
        message = errors_of(doc)
        assert row.refusal in message
        assert message.count("Value error") == 1  # one line in `render`


def test_release_versions() -> None:
    for good in ("8.5.001", "8.5.003.01", "9.0.005.104"):
        models.parse(minimal(application={"type": "Node", "name": "CB", "version": good}))
    for bad in ("8.5", "8.5.1", "8.5.0001", "10.0.000", "v8.5.003", "8.5.003\n", "8.4.000"):
        doc = minimal(application={"type": "Node", "name": "CB", "version": bad})
        assert "spec.application.version" in errors_of(doc)
    # YAML reads an unquoted 8.5 as a number: refused, not guessed.
    doc = minimal(application={"type": "Node", "name": "CB", "version": 8.5})
    assert "Input should be a valid string" in errors_of(doc)


@pytest.mark.parametrize(("selector", "accepted"), rule_tables.SELECTORS)
def test_selector_table(selector: Doc, accepted: bool) -> None:
    doc = minimal(workloads=[{"kind": "Deployment", "selector": selector}])
    if accepted:
        models.parse(doc)
    else:
        errors_of(doc)


@pytest.mark.parametrize(("location", "account", "accepted"), rule_tables.ACCOUNTS)
def test_account_table_model_and_agent_agree(location: str, account: str, accepted: bool) -> None:
    windows: Doc = {"location": location}
    if location == "User":
        windows["store"] = "CA"  # User takes store CA only (a rule of its own)
    if account:
        windows["account"] = account
    doc = minimal("MSCAPI", windows=windows)
    if accepted:
        models.parse(doc)
    else:
        errors_of(doc)
    # The agent validates its --account with the very same rule.
    assert (accounts.problem(location, account or None) is None) is accepted


def test_duplicate_connection_names() -> None:
    conns = [{"name": "MS", "host": "a", "port": 1}, {"name": "MS", "host": "b", "port": 2}]
    assert "duplicate connection name(s): MS" in errors_of(minimal(connections=conns))


def test_rule_checks_run_on_direct_construction() -> None:
    with pytest.raises(pydantic.ValidationError, match="go together"):
        models.ConfigServer(host="h", port=1, backup_host="b")


def test_builder_documents_are_valid() -> None:
    for provider in ("PEM", "JKS", "MSCAPI", "Disabled"):
        models.parse(tls_doc(provider))


# ---- the CRD -------------------------------------------------------------------------------


def test_committed_crd_is_generated_from_the_model() -> None:
    committed = (REPO / crd.CRD_FILE).read_text()
    assert committed == crd.to_yaml(), (
        f"{crd.CRD_FILE} is out of date: run `cobrowse-tls crd > {crd.CRD_FILE}`"
    )


def test_crd_command_prints_the_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert crd.main([]) == 0
    out = capsys.readouterr().out
    assert out == crd.to_yaml()
    assert yaml.safe_load(out) == crd.generate()


def _walk(node: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


def _schemas(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node (not the validation rules or enum values inside them)."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _schemas(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _schemas(node[key], f"{path}[{key}]")


def test_crd_schema_is_structural() -> None:
    schema = crd_schema()
    forbidden = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const", "definitions"}
    for path, node in _walk(schema):
        if isinstance(node, dict) and "x-kubernetes-validations" not in path:
            assert not forbidden & set(node), path
            assert node.get("additionalProperties") is not False, path
    for path, node in _schemas(schema):
        assert "type" in node, f"{path} has no type"
        if "properties" in node:
            assert node["type"] == "object", path
            assert "additionalProperties" not in node, path
            assert set(node.get("required", [])) <= set(node["properties"]), path
        if "default" in node:
            assert node["default"] is not None, path


def test_every_property_has_a_description() -> None:
    missing = [
        path
        for path, node in _schemas(crd_schema())
        # Items of a list of strings are not properties: the list itself is described.
        if path
        and path != ".metadata"  # the API server forbids anything but its type
        and "[additionalProperties]" not in path
        and not (path.endswith("[items]") and node["type"] != "object")
        and not node.get("description")
    ]
    assert missing == []
    assert crd_schema()["description"]


def _validations(schema: dict[str, Any]) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    for _, node in _schemas(schema):
        found += node.get("x-kubernetes-validations", [])
    return found


def test_every_rule_is_in_the_crd_as_cel() -> None:
    in_crd = {(v["rule"], v["message"]) for v in _validations(crd_schema())}
    rules = [rule for cls in all_model_classes() for rule in cls.rules]
    assert len(rules) >= 10
    for rule in rules:
        assert (rule.cel, rule.message) in in_crd, rule.message


@pytest.mark.parametrize(
    ("path", "cls"),
    [
        ("spec", models.CobrowseTLSSpec),
        ("spec.application", models.Application),
        ("spec.trustedCA.sources[]", models.CertificateSource),
        ("spec.configServer", models.ConfigServer),
        ("spec.workloads[]", models.Workload),
        ("spec.workloads[].selector", models.LabelSelector),
        ("spec.windows", models.Windows),
    ],
)
def test_rules_sit_on_their_object(path: str, cls: type[base.Model]) -> None:
    node = crd_schema()
    for part in path.split("."):
        node = node["properties"][part.removesuffix("[]")]
        if part.endswith("[]"):
            node = node["items"]
    assert [v["rule"] for v in node["x-kubernetes-validations"]] == [r.cel for r in cls.rules]


def test_hosts_carry_the_host_rule_in_the_crd() -> None:
    spec = crd_schema()["properties"]["spec"]["properties"]
    hosts = [
        spec["configServer"]["properties"]["host"],
        spec["configServer"]["properties"]["backupHost"],
        spec["connections"]["items"]["properties"]["host"],
    ]
    for host in hosts:
        assert host["type"] == "string"
        assert host["maxLength"] == 253
        (rule,) = host["x-kubernetes-validations"]
        assert base.HOSTNAME_RE in rule["rule"]
        assert "isIP(self)" in rule["rule"]


def test_crd_names_scope_and_subresources() -> None:
    generated = crd.generate()
    assert generated["metadata"]["name"] == "cobrowsetlses.tls.cobrowse.io"
    spec = generated["spec"]
    assert spec["group"] == "tls.cobrowse.io"
    assert spec["scope"] == "Namespaced"
    names = spec["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (
        "CobrowseTLS",
        "cobrowsetlses",
        "cobrowsetls",
    )
    assert names["shortNames"] == ["cbtls"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    assert version["schema"]["openAPIV3Schema"]["required"] == ["spec"]


def test_printer_columns() -> None:
    columns = crd.generate()["spec"]["versions"][0]["additionalPrinterColumns"]
    visible = [c["name"] for c in columns if not c.get("priority")]
    assert visible == ["Provider", "Ready", "Certificates", "Expires", "Age"]
    by_name = {c["name"]: c for c in columns}
    assert by_name["Provider"]["jsonPath"] == ".spec.provider"
    assert by_name["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert by_name["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    # The timestamp itself: kubectl would show a future `date` as "<invalid>".
    assert by_name["Expires"]["type"] == "string"
    paths = set(_property_paths(crd_schema()))
    for column in columns:
        json_path = column["jsonPath"].lstrip(".")
        if json_path.startswith(("status.trustStore", "spec.")):
            assert json_path in paths, column


def test_status_conditions_are_a_map_list() -> None:
    conditions = crd_schema()["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) >= {
        "type",
        "status",
        "reason",
        "lastTransitionTime",
    }


def test_parse_refuses_snake_case_names_the_api_server_would_drop() -> None:
    doc = {
        "apiVersion": "tls.cobrowse.io/v1alpha1",
        "kind": "CobrowseTLS",
        "metadata": {"name": "x"},
        "spec": {
            "provider": "PEM",
            "application": {"name": "CB"},
            "trusted_ca": {"sources": [{"inline": "x"}]},
        },
    }
    with pytest.raises(pydantic.ValidationError, match="trusted_ca"):
        models.parse(doc)


def test_names_longer_than_a_label_value_are_refused() -> None:
    def doc(name: str) -> dict[str, Any]:
        return {
            "apiVersion": "tls.cobrowse.io/v1alpha1",
            "kind": "CobrowseTLS",
            "metadata": {"name": name},
            "spec": {"provider": "Disabled", "application": {"name": "CB"}},
        }

    with pytest.raises(pydantic.ValidationError, match=r"metadata\.name"):
        models.parse(doc("c" * 64))
    assert models.parse(doc("c" * 63)).name == "c" * 63
    rules = crd.generate()["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "x-kubernetes-validations"
    ]
    assert {"rule": "size(self.metadata.name) <= 63"}.items() <= rules[0].items()
