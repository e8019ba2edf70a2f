"""The CobrowseTLS resource (``tls.cobrowse.io/v1alpha1``): spec, status and the whole object.

This module is the single source of truth for the API: the CRD in ``crds/`` is generated from
it (descriptions included, for ``kubectl explain``) and the same rules validate objects
offline in ``cobrowse-tls render``.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import pydantic

from cobrowse_tls.api import accounts, base

GROUP = "tls.cobrowse.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "CobrowseTLS"
PLURAL = "cobrowsetlses"
SINGULAR = "cobrowsetls"
SHORT_NAMES = ("cbtls",)

NAME_MAX = 63
NAME_RULE = {
    "rule": f"size(self.metadata.name) <= {NAME_MAX}",
    "message": f"metadata.name: at most {NAME_MAX} characters (it becomes a label value of"
    " the outputs)",
}

DEFAULT_MOUNT_PATH = "/opt/genesys/cobrowse/security"
DEFAULT_WINDOWS_MOUNT_PATH = "C:\\cobrowse\\security"

# Values that reach setenv.sh / setenv.bat are quoted there too; these patterns are the first
# line of defence and keep cmd.exe's unquotable characters (" % ! and line breaks) out.
APP_NAME_RE = r"^[A-Za-z0-9_][A-Za-z0-9_.@ -]{0,254}$"
MOUNT_PATH_RE = r"^(/[A-Za-z0-9_.-]+)+$"
WINDOWS_MOUNT_PATH_RE = r"^[A-Za-z]:(\\[A-Za-z0-9_. -]+)+$"
ALIAS_RE = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


class Provider(enum.StrEnum):
    PEM = "PEM"
    JKS = "JKS"
    MSCAPI = "MSCAPI"
    DISABLED = "Disabled"


class ApplicationType(enum.StrEnum):
    SERVER = "Server"
    NODE = "Node"
    CLUSTER = "Cluster"


class ConnectionMode(enum.StrEnum):
    TLS = "TLS"
    UPGRADE = "Upgrade"
    UNSECURED = "Unsecured"


class WorkloadKind(enum.StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"
    DAEMON_SET = "DaemonSet"


class RestartPolicy(enum.StrEnum):
    ROLLING = "Rolling"
    MANUAL = "Manual"


class WindowsStore(enum.StrEnum):
    ROOT = "Root"
    CA = "CA"


class WindowsLocation(enum.StrEnum):
    LOCAL_MACHINE = "LocalMachine"
    SERVICE = "Service"
    USER = "User"


# The manual's table: which application object of each Co-browse release reads what. Releases
# are compared as strings (CEL does the same), which the version pattern keeps in step with
# their numeric order: one digit for major and minor, three for the release.
VERSION_RE = r"^(8\.5|9\.[0-9])\.[0-9]{3}(\.[0-9]{1,3})?$"
SERVER_RELEASE = "8.5.000"  # the only release whose Server object reads the options
FIRST_NODE_RELEASE = "8.5.001"  # the Node and Cluster objects appear; Server is 8.5.000 only
FIRST_CLUSTER_SECURITY_RELEASE = "8.5.003"  # [security] may also go on the Cluster object
DEFAULT_RELEASE = f"{FIRST_CLUSTER_SECURITY_RELEASE} or later (application.version not set)"
SECURITY_OBJECTS = "Server: 8.5.000; Node: 8.5.001+; Cluster: 8.5.003+"


def release_label(version: str | None) -> str:
    """The release as messages name it."""
    return f"Co-browse {version or DEFAULT_RELEASE}"


def release(version: str | None, object_type: ApplicationType) -> str | None:
    """The release a CR is for: application.version; not set, 8.5.000 for the Server object
    (the only release that reads it) and a current release (None) for the others."""
    if version is None and object_type is ApplicationType.SERVER:
        return SERVER_RELEASE
    return version


def reads_security(version: str | None, object_type: ApplicationType) -> bool:
    """Whether that release reads the [security] options from that application object."""
    version = release(version, object_type)
    if object_type is ApplicationType.SERVER:
        return version is not None and version < FIRST_NODE_RELEASE
    if object_type is ApplicationType.NODE:
        return version is None or version >= FIRST_NODE_RELEASE
    return version is None or version >= FIRST_CLUSTER_SECURITY_RELEASE


def connections_object(version: str | None, object_type: ApplicationType) -> ApplicationType:
    """The application object whose connections that release reads (its Connections tab)."""
    version = release(version, object_type)
    if version is not None and version < FIRST_NODE_RELEASE:
        return ApplicationType.SERVER
    return ApplicationType.CLUSTER


_CEL_TYPE = "(has(self.type) ? self.type : 'Cluster')"
_CEL_RELEASE = f"'Co-browse ' + (has(self.version) ? self.version : '{DEFAULT_RELEASE}')"


class Application(base.Model):
    """The Genesys application object whose [security] section receives the TLS options."""

    type: ApplicationType = pydantic.Field(
        default=ApplicationType.CLUSTER,
        description=(
            "Which application object holds the [security] options: Server (Co-browse 8.5.000),"
            " Node (8.5.001+) or Cluster (8.5.003+)."
        ),
    )
    name: str = pydantic.Field(
        pattern=APP_NAME_RE,
        description=(
            "Name of that application object in Configuration Server; becomes APP_NAME in"
            " setenv.sh/setenv.bat."
        ),
    )
    version: str | None = pydantic.Field(
        default=None,
        pattern=VERSION_RE,
        max_length=16,
        description=(
            "The Co-browse release, for example 8.5.002 or 8.5.104.03: it decides which"
            " application object reads the [security] options (Server: 8.5.000; Node: 8.5.001+;"
            " Cluster: 8.5.003+) and the connections (Server: 8.5.000; Cluster: 8.5.001+)."
            f" Not set: {SERVER_RELEASE} for type Server, a current release (8.5.003 or later)"
            " for the others."
        ),
    )
    solution_control_server: bool = pydantic.Field(
        default=False,
        description=(
            "True when Solution Control Server manages Co-browse: the options then go on the"
            " Node object, so type Cluster is rejected."
        ),
    )

    rules = (
        base.Rule(
            cel=f"{_CEL_TYPE} == 'Server'"
            f" ? (!has(self.version) || self.version < '{FIRST_NODE_RELEASE}')"
            f" : {_CEL_TYPE} == 'Node'"
            f" ? (!has(self.version) || self.version >= '{FIRST_NODE_RELEASE}')"
            f" : (!has(self.version) || self.version >= '{FIRST_CLUSTER_SECURITY_RELEASE}')",
            message="the Co-browse release does not read the [security] options from this"
            f" application object ({SECURITY_OBJECTS})",
            message_expression=f"{_CEL_RELEASE} + ' does not read the [security] options from"
            f" the ' + {_CEL_TYPE} + ' object ({SECURITY_OBJECTS})'",
            describe=lambda a: (
                f"{release_label(a.version)} does not read the [security] options"
                f" from the {a.type.value} object ({SECURITY_OBJECTS})"
            ),
            check=lambda a: reads_security(a.version, a.type),
        ),
        base.Rule(
            cel="!(has(self.solutionControlServer) && self.solutionControlServer"
            f" && {_CEL_TYPE} == 'Cluster')",
            message="solutionControlServer: with Solution Control Server the Co-browse release"
            " reads the [security] options from the Node object, not the Cluster object",
            message_expression="'solutionControlServer: with Solution Control Server, ' + "
            f"{_CEL_RELEASE} + ' reads the [security] options from the Node object, not the"
            " Cluster object'",
            describe=lambda a: (
                "solutionControlServer: with Solution Control Server,"
                f" {release_label(a.version)} reads"
                " the [security] options from the Node object, not the Cluster object"
            ),
            check=lambda a: not (a.solution_control_server and a.type is ApplicationType.CLUSTER),
        ),
    )


class SecretSource(base.Model):
    """A key of a Secret in the CR's namespace."""

    name: base.ObjectName = pydantic.Field(description="Name of the Secret.")
    key: base.DataKey = pydantic.Field(
        description="Key holding PEM (one or many certificates), DER or PKCS#12 (.pfx/.p12) data."
    )
    password_key: base.DataKey | None = pydantic.Field(
        default=None,
        description="Key of the same Secret holding the PKCS#12 password (PKCS#12 only).",
    )


class ConfigMapSource(base.Model):
    """A key of a ConfigMap in the CR's namespace (data or binaryData)."""

    name: base.ObjectName = pydantic.Field(description="Name of the ConfigMap.")
    key: base.DataKey = pydantic.Field(description="Key holding PEM or DER certificate data.")


class CertificateSource(base.Model):
    """One source of CA certificates: exactly one of secret, configMap or inline."""

    secret: SecretSource | None = pydantic.Field(
        default=None, description="Certificates from a Secret key."
    )
    config_map: ConfigMapSource | None = pydantic.Field(
        default=None, description="Certificates from a ConfigMap key."
    )
    inline: str | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=1048576,
        description="PEM certificates written in the resource.",
    )

    rules = (
        base.Rule(
            cel="[has(self.secret), has(self.configMap), has(self.inline)]"
            ".filter(x, x).size() == 1",
            message="each source sets exactly one of secret, configMap or inline",
            check=lambda s: [s.secret, s.config_map, s.inline].count(None) == 2,
        ),
    )


class TrustedCA(base.Model):
    """The CA certificates to trust."""

    sources: list[CertificateSource] = pydantic.Field(
        min_length=1,
        max_length=64,
        description="Merged and de-duplicated by SHA-256, in a stable order (first appearance).",
    )
    allow_non_ca: bool = pydantic.Field(
        default=False,
        alias="allowNonCA",
        description="Accept certificates without the CA basic constraint (rejected by default).",
    )


class SecretKeyRef(base.Model):
    """A key of a Secret in the CR's namespace."""

    name: base.ObjectName = pydantic.Field(description="Name of the Secret.")
    key: base.DataKey = pydantic.Field(description="Key in that Secret.")


class Truststore(base.Model):
    """Where the trust store goes and how workloads see it."""

    secret_name: base.ObjectName | None = pydantic.Field(
        default=None,
        description="Secret receiving ca.pem (and truststore.jks, truststore-password and"
        " security-options.cfg for JKS); default <metadata.name>-truststore.",
    )
    mount_path: str = pydantic.Field(
        default=DEFAULT_MOUNT_PATH,
        pattern=MOUNT_PATH_RE,
        max_length=1024,
        description="Directory where Linux workloads mount that Secret; trusted-ca points into it.",
    )
    windows_mount_path: str = pydantic.Field(
        default=DEFAULT_WINDOWS_MOUNT_PATH,
        pattern=WINDOWS_MOUNT_PATH_RE,
        max_length=1024,
        description="The same directory on Windows pods (used by setenv.bat).",
    )
    alias: str = pydantic.Field(
        default="root",
        pattern=ALIAS_RE,
        description="JKS alias of the first CA; further CAs get <alias>-2, <alias>-3, ...",
    )
    password_secret_ref: SecretKeyRef | None = pydantic.Field(
        default=None,
        description="JKS only: the Secret key holding the store password. Absent: a strong"
        " password is generated once and kept in the truststore Secret.",
    )


class ConfigServer(base.Model):
    """TLS connection to Configuration Server, rendered into setenv.sh and setenv.bat."""

    host: base.Host = pydantic.Field(description="Primary Configuration Server host.")
    port: base.Port = pydantic.Field(description="Its secure (TLS) port.")
    backup_host: base.Host | None = pydantic.Field(
        default=None, description="Backup Configuration Server host."
    )
    backup_port: base.Port | None = pydantic.Field(
        default=None, description="Backup Configuration Server secure port."
    )
    connection_mode: ConnectionMode = pydantic.Field(
        default=ConnectionMode.TLS,
        description="TLS, Upgrade or Unsecured (PRIMARY_CFGSERVER_CONNECTION_MODE).",
    )

    rules = (
        base.Rule(
            cel="has(self.backupHost) == has(self.backupPort)",
            message="backupHost and backupPort go together",
            check=lambda c: (c.backup_host is None) == (c.backup_port is None),
        ),
    )


class Connection(base.Model):
    """Another Genesys server that Co-browse reaches through its secure port."""

    name: str = pydantic.Field(
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Name of the connection (for example MessageServer).",
    )
    host: base.Host = pydantic.Field(description="Host of that server.")
    port: base.Port = pydantic.Field(description="Its secure (TLS) port.")


SELECTOR_OPERATORS_WITH_VALUES = ("In", "NotIn")


class LabelSelectorRequirement(base.Model):
    """A label selector requirement (as in metav1.LabelSelector)."""

    key: str = pydantic.Field(min_length=1, max_length=317, description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = pydantic.Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[Annotated[str, pydantic.Field(max_length=63)]] | None = pydantic.Field(
        default=None,
        max_length=64,
        description="Values for In and NotIn (at least one); none for Exists and DoesNotExist.",
    )

    # As the API server's own selector validation: `app in ()` selects nothing and is refused.
    rules = (
        base.Rule(
            cel="!(self.operator in ['In', 'NotIn'])"
            " || (has(self.values) && size(self.values) > 0)",
            message="operators In and NotIn need at least one value",
            check=lambda r: r.operator not in SELECTOR_OPERATORS_WITH_VALUES or bool(r.values),
        ),
        base.Rule(
            cel="self.operator in ['In', 'NotIn'] || !has(self.values) || size(self.values) == 0",
            message="operators Exists and DoesNotExist take no values",
            check=lambda r: r.operator in SELECTOR_OPERATORS_WITH_VALUES or not r.values,
        ),
    )


def _names_workloads(selector: LabelSelector) -> bool:
    if selector.match_labels:
        return True
    return any(r.operator == "In" and r.values for r in selector.match_expressions or ())


class LabelSelector(base.Model):
    """A label selector (as in metav1.LabelSelector)."""

    match_labels: dict[str, str] | None = pydantic.Field(
        default=None, description="Labels the workload must carry."
    )
    match_expressions: list[LabelSelectorRequirement] | None = pydantic.Field(
        default=None, max_length=16, description="Label requirements, ANDed."
    )

    # A selector of only NotIn/Exists/DoesNotExist terms can match every workload of the
    # namespace (`!x` does): restarts would reach workloads nobody named.
    rules = (
        base.Rule(
            cel="(has(self.matchLabels) && size(self.matchLabels) > 0)"
            " || (has(self.matchExpressions) && self.matchExpressions.exists(e,"
            " e.operator == 'In' && has(e.values) && size(e.values) > 0))",
            message="a selector needs at least one matchLabels entry or an In expression with"
            " values (NotIn, Exists and DoesNotExist alone could select every workload)",
            check=_names_workloads,
        ),
    )


class Workload(base.Model):
    """Workloads in the CR's namespace restarted when what they consume changes."""

    kind: WorkloadKind = pydantic.Field(description="Deployment, StatefulSet or DaemonSet.")
    name: base.ObjectName | None = pydantic.Field(default=None, description="The workload's name.")
    selector: LabelSelector | None = pydantic.Field(
        default=None, description="Or: every workload of that kind matching this selector."
    )

    rules = (
        base.Rule(
            cel="has(self.name) != has(self.selector)",
            message="each workload sets exactly one of name or selector",
            check=lambda w: (w.name is None) != (w.selector is None),
        ),
    )


class Restart(base.Model):
    """How consuming workloads are restarted (the options only take effect after a restart)."""

    policy: RestartPolicy = pydantic.Field(
        default=RestartPolicy.ROLLING,
        description="Rolling restarts automatically; Manual only reports that a restart is"
        " pending until approved.",
    )
    max_concurrent: int = pydantic.Field(
        default=1, ge=1, le=100, description="Workloads restarted at once."
    )


class Windows(base.Model):
    """MSCAPI only: the agent that imports the CA into each Windows node's certificate store."""

    node_selector: dict[str, str] = pydantic.Field(
        default_factory=dict, description="Added to kubernetes.io/os: windows."
    )
    store: WindowsStore = pydantic.Field(
        default=WindowsStore.ROOT,
        description="Root (Trusted Root Certification Authorities) or CA (Intermediate CAs).",
    )
    location: WindowsLocation = pydantic.Field(
        default=WindowsLocation.LOCAL_MACHINE,
        description="LocalMachine, Service (a service account's store) or User (a user's store)"
        " - the account the Co-browse server runs under.",
    )
    account: str = pydantic.Field(
        default="",
        max_length=accounts.MAX_LENGTH,
        pattern=accounts.PATTERN,
        description="Service name (location Service) or user SID (location User).",
    )

    # The same rule as the agent's (cobrowse_tls.api.accounts), so an accepted object never
    # gives an agent that refuses to start.
    rules = (
        base.Rule(
            cel="(has(self.location) && self.location != 'LocalMachine')"
            " == (has(self.account) && self.account != '')",
            message=accounts.MESSAGE_REQUIRED,
            check=lambda w: (w.location is not WindowsLocation.LOCAL_MACHINE) == (w.account != ""),
        ),
        base.Rule(
            cel="!has(self.location) || self.location != 'User'"
            f" || self.account.matches('{accounts.SID_PATTERN}')",
            message=accounts.MESSAGE_SID,
            check=lambda w: w.location is not WindowsLocation.USER or accounts.is_sid(w.account),
        ),
        base.Rule(
            cel="!has(self.account) || !(self.account in "
            + "["
            + ", ".join(f"'{r}'" for r in accounts.RESERVED)
            + "])",
            message=accounts.MESSAGE_RESERVED,
            check=lambda w: w.account not in accounts.RESERVED,
        ),
        # CertOpenStore (CERT_SYSTEM_STORE_UNPROTECTED_FLAG): when the user's programs open
        # their Root store, roots that are not on the protected root list are dropped, and the
        # agent, as SYSTEM, writes the registry store without adding them to that list.
        base.Rule(
            cel="!has(self.location) || self.location != 'User'"
            " || (has(self.store) && self.store == 'CA')",
            message="location User takes store CA only: Windows hides a user's Root certificates"
            " that are not on the protected root list from that user's programs; use location"
            " LocalMachine (trusted by every account on the node) for a root CA",
            check=lambda w: w.location is not WindowsLocation.USER or w.store is WindowsStore.CA,
        ),
    )


class CobrowseTLSSpec(base.Model):
    """Desired TLS configuration of one Genesys Co-browse deployment."""

    provider: Provider = pydantic.Field(
        description="Trusted store: PEM, JKS, MSCAPI (Windows certificate store) or Disabled"
        " (renders an empty provider: TLS off)."
    )
    application: Application = pydantic.Field(
        description="The application object whose [security] section is configured."
    )
    trusted_ca: TrustedCA | None = pydantic.Field(
        default=None,
        alias="trustedCA",
        description="The CA certificates to trust (required unless provider is Disabled).",
    )
    truststore: Truststore = pydantic.Field(
        default_factory=Truststore, description="The trust store Secret and where it is mounted."
    )
    config_server: ConfigServer | None = pydantic.Field(
        default=None, description="Configuration Server connection, rendered into setenv files."
    )
    connections: list[Connection] = pydantic.Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Other Genesys servers, reached through their secure ports; listed in"
        " connections.yaml for the application object that reads them (Server: 8.5.000;"
        " Cluster: 8.5.001+).",
    )
    workloads: list[Workload] = pydantic.Field(
        default_factory=list,
        max_length=64,
        description="Workloads restarted when what they consume changes (same namespace).",
    )
    restart: Restart = pydantic.Field(
        default_factory=Restart, description="How the workloads are restarted."
    )
    windows: Windows | None = pydantic.Field(
        default=None, description="MSCAPI only: the Windows certificate store agent."
    )

    rules = (
        base.Rule(
            cel="self.provider == 'Disabled' || has(self.trustedCA)",
            message="trustedCA is required unless provider is Disabled",
            check=lambda s: s.provider is Provider.DISABLED or s.trusted_ca is not None,
        ),
        base.Rule(
            cel="!has(self.truststore) || !has(self.truststore.passwordSecretRef)"
            " || self.provider == 'JKS'",
            message="truststore.passwordSecretRef is only valid with provider JKS",
            check=lambda s: s.truststore.password_secret_ref is None or s.provider is Provider.JKS,
        ),
        base.Rule(
            cel="!has(self.windows) || self.provider == 'MSCAPI'",
            message="windows is only valid with provider MSCAPI",
            check=lambda s: s.windows is None or s.provider is Provider.MSCAPI,
        ),
    )

    @pydantic.field_validator("connections")
    @classmethod
    def _unique_connections(cls, value: list[Connection]) -> list[Connection]:
        names = [c.name for c in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate connection name(s): {', '.join(dupes)}")
        return value


# ---- status -------------------------------------------------------------------------------


class Condition(base.Model):
    """A standard metav1.Condition."""

    type: str = pydantic.Field(description="Condition type, for example Ready.")
    status: Literal["True", "False", "Unknown"] = pydantic.Field(
        description="True, False or Unknown."
    )
    reason: str = pydantic.Field(description="Machine-readable CamelCase reason.")
    message: str = pydantic.Field(default="", description="Human-readable details.")
    last_transition_time: str = pydantic.Field(
        json_schema_extra={"format": "date-time"}, description="When the status last changed."
    )
    observed_generation: int | None = pydantic.Field(
        default=None, description="The spec generation this condition was computed from."
    )


class CertificateInfo(base.Model):
    """One CA in the trust store (public data only)."""

    alias: str = pydantic.Field(description="JKS alias (or position name for PEM/MSCAPI).")
    subject: str = pydantic.Field(description="RFC 4514 subject.")
    sha256: str = pydantic.Field(description="SHA-256 fingerprint of the DER certificate.")
    not_after: str = pydantic.Field(
        json_schema_extra={"format": "date-time"}, description="Expiry time."
    )


class TrustStoreStatus(base.Model):
    """What the operator wrote."""

    secret_name: str | None = pydantic.Field(default=None, description="The truststore Secret.")
    config_map_name: str | None = pydantic.Field(
        default=None, description="The security ConfigMap."
    )
    fingerprint: str | None = pydantic.Field(
        default=None, description="sha256 of the normalized certificate set."
    )
    count: int | None = pydantic.Field(default=None, description="Number of CA certificates.")
    expires: str | None = pydantic.Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="Earliest expiry among the CA certificates.",
    )
    certificates: list[CertificateInfo] | None = pydantic.Field(
        default=None, description="The CA certificates in the store, in store order."
    )


class WorkloadRestartStatus(base.Model):
    """Restart progress of one workload."""

    kind: str = pydantic.Field(description="Workload kind.")
    name: str = pydantic.Field(description="Workload name.")
    state: str = pydantic.Field(description="Pending, RollingOut, Done, Stalled or NotFound.")
    started_at: str | None = pydantic.Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="When the operator restarted it for the current hash.",
    )


class RestartStatus(base.Model):
    """Restart progress for the current material."""

    hash: str | None = pydantic.Field(default=None, description="Hash of the rendered material.")
    since: str | None = pydantic.Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="When the material first had this hash (start of the batching window).",
    )
    workloads: list[WorkloadRestartStatus] | None = pydantic.Field(
        default=None, description="Each targeted workload and its state."
    )


class WindowsStatus(base.Model):
    """MSCAPI agent rollout."""

    desired: int | None = pydantic.Field(default=None, description="Windows nodes targeted.")
    ready: int | None = pydantic.Field(default=None, description="Nodes whose store is in sync.")
    not_synced: list[str] | None = pydantic.Field(
        default=None, description="Nodes not yet in sync."
    )


class CobrowseTLSStatus(base.Model):
    """Observed state, written by the operator."""

    observed_generation: int | None = pydantic.Field(
        default=None, description="The spec generation last reconciled."
    )
    conditions: list[Condition] | None = pydantic.Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Ready, TrustStoreReady, WorkloadsRestarted, WindowsTrustSynced,"
        " ConnectionsVerified, CertificatesValid.",
    )
    trust_store: TrustStoreStatus | None = pydantic.Field(
        default=None, description="The trust store written."
    )
    restart: RestartStatus | None = pydantic.Field(default=None, description="Restart progress.")
    windows: WindowsStatus | None = pydantic.Field(default=None, description="Windows agents.")


class ObjectMeta(pydantic.BaseModel):
    """The part of metav1.ObjectMeta the operator reads; the rest is kept as is."""

    model_config = pydantic.ConfigDict(extra="allow", frozen=True)

    # 63, not 253: the name becomes the value of the outputs' tls.cobrowse.io/owner label.
    name: Annotated[base.ObjectName, pydantic.Field(max_length=NAME_MAX)]
    namespace: base.ObjectName | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class CobrowseTLS(base.Model):
    """CobrowseTLS makes the Genesys Co-browse "Configuring TLS" procedure declarative."""

    model_config = pydantic.ConfigDict(extra="ignore")

    api_version: Literal["tls.cobrowse.io/v1alpha1"] = pydantic.Field(
        default="tls.cobrowse.io/v1alpha1", alias="apiVersion"
    )
    kind: Literal["CobrowseTLS"] = "CobrowseTLS"
    metadata: ObjectMeta
    spec: CobrowseTLSSpec
    status: CobrowseTLSStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def truststore_secret_name(self) -> str:
        return self.spec.truststore.secret_name or f"{self.metadata.name}-truststore"

    @property
    def security_config_map_name(self) -> str:
        return f"{self.metadata.name}-security"

    @property
    def agent_daemonset_name(self) -> str:
        return agent_daemonset_name(self.metadata.name)


def agent_daemonset_name(name: str) -> str:
    """The MSCAPI agent DaemonSet of the CobrowseTLS ``name`` (also when its spec is unreadable)."""
    return f"{name}-mscapi-agent"


def parse(obj: Any) -> CobrowseTLS:
    """Validate a CobrowseTLS given as a plain dict (from YAML or the API)."""
    # Only the API's camelCase names: a snake_case field would pass here but be dropped by the
    # API server, so `render` and the operator would disagree.
    return CobrowseTLS.model_validate(obj, by_alias=True, by_name=False)
