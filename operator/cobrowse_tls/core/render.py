"""Layer 3: spec + source data -> the objects and files the operator writes. Pure.

The same function serves the operator and ``cobrowse-tls render``, so both produce the same
bytes. Every output is a function of the spec, the source bytes, the JKS password and the
time (which only decides which CAs have expired): no random values, no generation numbers.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import yaml

from cobrowse_tls.api import models, stamps
from cobrowse_tls.core import agent_manifest, certs, limits, truststores

CA_PEM = "ca.pem"
TRUSTSTORE_JKS = "truststore.jks"
TRUSTSTORE_PASSWORD = "truststore-password"
SECURITY_CFG = "security.cfg"
SETENV_SH = "setenv.sh"
SETENV_BAT = "setenv.bat"
SECURITY_OPTIONS_CFG = "security-options.cfg"
CONNECTIONS_YAML = "connections.yaml"
SECRET_FILES = (CA_PEM, TRUSTSTORE_JKS, TRUSTSTORE_PASSWORD, SECURITY_OPTIONS_CFG)
CONFIG_FILES = (SECURITY_CFG, SETENV_SH, SETENV_BAT, CONNECTIONS_YAML)
ALL_FILES = SECRET_FILES + CONFIG_FILES

# Condition reasons of TrustStoreReady that come from the inputs rather than the certificates.
SOURCE_NOT_FOUND = "SourceNotFound"
PASSWORD_NOT_FOUND = "PasswordNotFound"
INVALID_PASSWORD = "InvalidPassword"
# A source or password names one of the objects this CobrowseTLS writes (the operator reports
# the same reason when such an object exists and is someone else's).
OUTPUT_CONFLICT = "OutputConflict"

_CONNECTION_MODES = {
    models.ConnectionMode.TLS: "TLS",
    models.ConnectionMode.UPGRADE: "UPGRADE",
    models.ConnectionMode.UNSECURED: "UNSECURED",
}


class InvalidInput(Exception):
    """An input that cannot give a usable output; ``reason`` is the condition reason.

    ``where`` names the field or source (``spec.truststore.passwordSecretRef``,
    ``secret genesys-ca key certificateCA.crt``); the message never holds secret material.
    """

    def __init__(self, reason: str, where: str, detail: str) -> None:
        super().__init__(f"{where}: {detail}")
        self.reason = reason
        self.where = where
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class SourceData:
    """The bytes of one ``trustedCA.sources`` entry, fetched by the caller."""

    label: str
    data: bytes
    password: bytes | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True)
class ObjectData:
    """The data the caller could find: Secrets and ConfigMaps of the CR's namespace, by name."""

    secrets: Mapping[str, Mapping[str, bytes]] = dataclasses.field(repr=False)
    config_maps: Mapping[str, Mapping[str, bytes]]


def source_label(source: models.CertificateSource, index: int) -> str:
    if source.secret is not None:
        return f"secret {source.secret.name} key {source.secret.key}"
    if source.config_map is not None:
        return f"configMap {source.config_map.name} key {source.config_map.key}"
    return f"spec.trustedCA.sources[{index}].inline"


def referenced_secrets(tls: models.CobrowseTLS) -> list[str]:
    """Names of the Secrets the spec reads (for watches and RBAC-friendly reads)."""
    names: list[str] = []
    if tls.spec.trusted_ca is not None:
        names += [s.secret.name for s in tls.spec.trusted_ca.sources if s.secret is not None]
    ref = tls.spec.truststore.password_secret_ref
    if ref is not None and tls.spec.provider is models.Provider.JKS:
        names.append(ref.name)
    return sorted(set(names))


def referenced_config_maps(tls: models.CobrowseTLS) -> list[str]:
    if tls.spec.trusted_ca is None:
        return []
    return sorted({s.config_map.name for s in tls.spec.trusted_ca.sources if s.config_map})


def resolve_sources(tls: models.CobrowseTLS, found: ObjectData) -> list[SourceData]:
    """Pick each source's bytes out of the objects found; a missing one is SourceNotFound."""
    check_outputs_not_inputs(tls)
    if tls.spec.trusted_ca is None or tls.spec.provider is models.Provider.DISABLED:
        return []
    out: list[SourceData] = []
    for index, source in enumerate(tls.spec.trusted_ca.sources):
        label = source_label(source, index)
        if source.inline is not None:
            out.append(SourceData(label, source.inline.encode()))
            continue
        ref = source.secret or source.config_map
        assert ref is not None  # the model guarantees exactly one of the three
        kind = "secret" if source.secret is not None else "configMap"
        objects = found.secrets if source.secret is not None else found.config_maps
        if ref.name not in objects:
            raise InvalidInput(SOURCE_NOT_FOUND, label, f"{kind} {ref.name!r} not found")
        data = objects[ref.name]
        if ref.key not in data:
            raise InvalidInput(
                SOURCE_NOT_FOUND, label, f"{kind} {ref.name!r} has no key {ref.key!r}"
            )
        password: bytes | None = None
        if source.secret is not None and source.secret.password_key is not None:
            pkey = source.secret.password_key
            if pkey not in data:
                raise InvalidInput(
                    PASSWORD_NOT_FOUND, label, f"secret {ref.name!r} has no password key {pkey!r}"
                )
            password = data[pkey]
        out.append(SourceData(label, data[ref.key], password))
    check_source_limits(out)
    return out


def check_outputs_not_inputs(tls: models.CobrowseTLS) -> None:
    """Refuse a spec that reads one of the objects it writes: applying the outputs would
    replace the user's CA or password (``render | kubectl apply``), or the operator would feed
    its own output back in as input."""
    if tls.spec.provider is models.Provider.DISABLED:
        return  # no Secret is written and no source is read
    secret, config_map = tls.truststore_secret_name, tls.security_config_map_name
    sources = tls.spec.trusted_ca.sources if tls.spec.trusted_ca is not None else []
    for index, source in enumerate(sources):
        if source.secret is not None and source.secret.name == secret:
            clash = f"secret {secret!r} is this CobrowseTLS's truststore Secret"
        elif source.config_map is not None and source.config_map.name == config_map:
            clash = f"configMap {config_map!r} is this CobrowseTLS's security ConfigMap"
        else:
            continue
        raise InvalidInput(
            OUTPUT_CONFLICT,
            f"spec.trustedCA.sources[{index}]",
            f"{clash}: it would be overwritten; rename the source or set"
            " spec.truststore.secretName",
        )
    ref = tls.spec.truststore.password_secret_ref
    if tls.spec.provider is models.Provider.JKS and ref is not None and ref.name == secret:
        raise InvalidInput(
            OUTPUT_CONFLICT,
            "spec.truststore.passwordSecretRef",
            f"secret {secret!r} is this CobrowseTLS's truststore Secret: it would be"
            " overwritten; name another Secret or set spec.truststore.secretName",
        )


def _too_large(where: str, detail: str) -> InvalidInput:
    return InvalidInput(limits.TOO_LARGE, where, detail)


def check_source_limits(sources: Sequence[SourceData]) -> None:
    """Bound what parsing may cost before any certificate is parsed (see core.limits)."""
    total = 0
    for source in sources:
        size = len(source.data)
        total += size
        if size > limits.SOURCE_BYTES:
            raise _too_large(
                source.label, f"{size} bytes, more than the limit of {limits.SOURCE_BYTES}"
            )
        # Counting BEGIN lines over-counts (keys, CRLs) but never under-counts certificates.
        if source.data.count(b"-----BEGIN ") > limits.CERTIFICATES_PER_SOURCE:
            raise _too_large(
                source.label,
                f"more than {limits.CERTIFICATES_PER_SOURCE} PEM blocks in one source",
            )
        if source.password is not None:
            try:
                source.password.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(
                    INVALID_PASSWORD, source.label, "the PKCS#12 password is not UTF-8 text"
                ) from None
    if total > limits.ALL_SOURCES_BYTES:
        raise _too_large(
            certs.ALL_SOURCES,
            f"{total} bytes in all sources together, more than the limit of"
            f" {limits.ALL_SOURCES_BYTES}",
        )


def resolve_password(tls: models.CobrowseTLS, found: ObjectData) -> str | None:
    """The JKS password named by passwordSecretRef, or None when the spec names none."""
    ref = tls.spec.truststore.password_secret_ref
    if tls.spec.provider is not models.Provider.JKS or ref is None:
        return None
    where = "spec.truststore.passwordSecretRef"
    if ref.name not in found.secrets:
        raise InvalidInput(PASSWORD_NOT_FOUND, where, f"secret {ref.name!r} not found")
    if ref.key not in found.secrets[ref.name]:
        raise InvalidInput(PASSWORD_NOT_FOUND, where, f"secret {ref.name!r} has no key {ref.key!r}")
    return check_password(found.secrets[ref.name][ref.key], where)


def check_password(raw: bytes, where: str) -> str:
    # `echo secret > file` leaves a newline that is not part of the password.
    text = raw.decode("utf-8", errors="replace").removesuffix("\n").removesuffix("\r")
    if not text:
        raise InvalidInput(INVALID_PASSWORD, where, "the password is empty")
    if "\ufffd" in text or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidInput(
            INVALID_PASSWORD,
            where,
            "the password holds a line break, a control character or bytes that are not UTF-8",
        )
    if len(text) > 1024:
        raise InvalidInput(INVALID_PASSWORD, where, "the password is longer than 1024 characters")
    return text


@dataclasses.dataclass(frozen=True)
class Rendered:
    """Everything the operator writes for one CobrowseTLS, and what its status reports."""

    files: dict[str, bytes] = dataclasses.field(repr=False)  # the JKS password among them
    secret: dict[str, Any] | None = dataclasses.field(repr=False)
    config_map: dict[str, Any]
    selection: certs.Selection
    fingerprint: str
    input_hash: str
    aliases: tuple[str, ...]
    material_hash: str  # what the workloads consume: a change restarts them
    daemon_set: dict[str, Any] | None = None  # the MSCAPI agent

    def certificate_status(self) -> list[dict[str, str]]:
        return [
            {
                "alias": a,
                "subject": c.subject,
                "sha256": c.sha256,
                "notAfter": stamps.rfc3339(c.not_after),
            }
            for a, c in zip(self.aliases, self.selection.certificates, strict=True)
        ]


def render(
    tls: models.CobrowseTLS,
    sources: Sequence[SourceData],
    *,
    password: str | None,
    now: datetime,
    agent: agent_manifest.AgentConfig | None = None,
    hash_key: bytes | None = None,
) -> Rendered:
    """Render every output. Raises InvalidInput or certs.CertificateError on bad input.

    ``agent`` (operator configuration) is needed only for provider MSCAPI; default settings
    are used when it is not given. ``hash_key`` (random, at least HASH_KEY_MIN_BYTES, kept in
    the truststore Secret) keys the password's part of the published hashes; it is used, and
    stored in the Secret, only when there is a password.
    """
    if hash_key is not None and len(hash_key) < HASH_KEY_MIN_BYTES:
        raise ValueError(f"hash_key: at least {HASH_KEY_MIN_BYTES} bytes")
    spec = tls.spec
    provider = spec.provider
    if provider is models.Provider.DISABLED:
        selection = certs.Selection(certificates=(), expired=(), non_ca=())
    else:
        assert spec.trusted_ca is not None  # the model requires it unless Disabled
        parsed: list[certs.CACertificate] = []
        for source in sources:
            found = certs.parse_source(source.data, source=source.label, password=source.password)
            if len(found) > limits.CERTIFICATES_PER_SOURCE:
                raise _too_large(
                    source.label,
                    f"{len(found)} certificates, more than the limit of"
                    f" {limits.CERTIFICATES_PER_SOURCE}",
                )
            parsed += found
            if len(parsed) > limits.CERTIFICATES:
                raise _too_large(
                    certs.ALL_SOURCES,
                    f"more than {limits.CERTIFICATES} certificates in all sources together",
                )
        selection = certs.select(parsed, allow_non_ca=spec.trusted_ca.allow_non_ca, now=now)
    chosen = selection.certificates
    if provider is models.Provider.JKS:
        if password is None:
            raise InvalidInput(PASSWORD_NOT_FOUND, "spec.truststore", "no truststore password")
        aliases = tuple(truststores.jks_aliases(spec.truststore.alias, len(chosen)))
    else:
        aliases = tuple(_plain_aliases(spec.truststore.alias, len(chosen)))

    files: dict[str, bytes] = {}
    if provider is not models.Provider.DISABLED:
        files[CA_PEM] = truststores.pem_bundle(chosen)
    if provider is models.Provider.JKS:
        assert password is not None
        files[TRUSTSTORE_JKS] = truststores.jks_truststore(
            chosen, alias=spec.truststore.alias, password=password
        )
        files[TRUSTSTORE_PASSWORD] = password.encode()
        files[SECURITY_OPTIONS_CFG] = security_options_cfg(tls, password).encode()
    files[SECURITY_CFG] = security_cfg(tls).encode()
    files[SETENV_SH] = setenv_sh(tls).encode()
    files[SETENV_BAT] = setenv_bat(tls).encode()
    if spec.connections:
        files[CONNECTIONS_YAML] = connections_yaml(tls).encode()

    fingerprint = certs.fingerprint(chosen)
    key = hash_key if password is not None else None
    digest = input_hash(tls, fingerprint, password, key)
    labels = {stamps.LABEL_MANAGED_BY: stamps.MANAGER, stamps.LABEL_OWNER: tls.metadata.name}
    annotations = {stamps.ANNOTATION_INPUT_HASH: digest}
    secret = None
    if provider is not models.Provider.DISABLED:
        secret_data = {
            k: base64.b64encode(v).decode("ascii") for k, v in files.items() if k in SECRET_FILES
        }
        if key is not None:
            secret_data[HASH_KEY] = base64.b64encode(key).decode("ascii")
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _metadata(tls, tls.truststore_secret_name, labels, annotations),
            "type": "Opaque",
            "data": secret_data,
        }
    config_data = {k: v.decode() for k, v in files.items() if k in CONFIG_FILES}
    # The ConfigMap's hash covers only what it holds: a CA rotation leaves it unwritten.
    map_annotations = {stamps.ANNOTATION_INPUT_HASH: config_map_hash(config_data)}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(tls, tls.security_config_map_name, labels, map_annotations),
        "data": config_data,
    }
    daemon_set = None
    if provider is models.Provider.MSCAPI:
        daemon_set = agent_daemon_set(
            tls,
            fingerprint=fingerprint,
            input_hash=digest,
            agent=agent or agent_manifest.AgentConfig(),
        )
    return Rendered(
        files=files,
        secret=secret,
        config_map=config_map,
        selection=selection,
        fingerprint=fingerprint,
        input_hash=digest,
        aliases=aliases,
        material_hash=material_hash(tls, files, aliases, password, key),
        daemon_set=daemon_set,
    )


def agent_daemon_set(
    tls: models.CobrowseTLS,
    *,
    fingerprint: str,
    input_hash: str,
    agent: agent_manifest.AgentConfig,
    mode: str = agent_manifest.SYNC,
    cleanup_since: str | None = None,
) -> dict[str, Any]:
    """The agent DaemonSet, with an input hash that also covers the operator's agent settings."""
    windows = tls.spec.windows.wire() if tls.spec.windows is not None else None
    material = json.dumps(
        [input_hash, windows, dataclasses.asdict(agent), mode],
        sort_keys=True,
        separators=(",", ":"),
    )
    labels = {stamps.LABEL_MANAGED_BY: stamps.MANAGER, stamps.LABEL_OWNER: tls.metadata.name}
    annotations = {
        stamps.ANNOTATION_INPUT_HASH: "sha256:" + hashlib.sha256(material.encode()).hexdigest()
    }
    return agent_manifest.daemon_set(
        tls,
        fingerprint=fingerprint,
        secret_name=tls.truststore_secret_name,
        metadata=_metadata(tls, tls.agent_daemonset_name, labels, annotations),
        agent=agent,
        mode=mode,
        cleanup_since=cleanup_since,
    )


def _plain_aliases(base: str, count: int) -> list[str]:
    # PEM and MSCAPI have no aliases of their own; the same names make status comparable.
    return truststores.jks_aliases(base, count)


# Hashes published outside the truststore Secret (annotations, status, events, workloads) must
# not let a reader test password guesses. The password enters them only as an HMAC keyed with a
# random value that lives only in that Secret (HASH_KEY): without the Secret a guess cannot be
# checked, however fast the hash. The key is generated once by the caller and then kept, like a
# generated password, so an unchanged password gives unchanged hashes.
HASH_KEY = "hash-key"
HASH_KEY_MIN_BYTES = 32


def kept_hash_key(data: Mapping[str, bytes] | None) -> bytes | None:
    """The key stored in a truststore Secret's data, if it is a usable one."""
    key = (data or {}).get(HASH_KEY)
    if key is None or len(key) < HASH_KEY_MIN_BYTES:
        return None
    return key


def password_digest(password: str, key: bytes) -> str:
    return hmac.new(key, b"truststore-password\0" + password.encode(), hashlib.sha256).hexdigest()


def _password_part(password: str | None, hash_key: bytes | None) -> str | None:
    # No key (render without the truststore Secret): the hashes leave the password out rather
    # than publish anything a guess could be checked against.
    if password is None or hash_key is None:
        return None
    return password_digest(password, hash_key)


def _output_spec(tls: models.CobrowseTLS) -> dict[str, Any]:
    # Which workloads restart and how change no output byte. Connections are rendered into
    # connections.yaml, so they count when set; an empty list keeps the hash it always had.
    spec = tls.spec.wire()
    for key in ("workloads", "restart", "windows"):
        spec.pop(key, None)
    if not spec.get("connections"):
        spec.pop("connections", None)
    return spec


def input_hash(
    tls: models.CobrowseTLS, fingerprint: str, password: str | None, hash_key: bytes | None
) -> str:
    """sha256 over what decides the Secret and ConfigMap: spec, certificate set, password."""
    material = {
        "name": tls.metadata.name,
        "spec": _output_spec(tls),
        "fingerprint": fingerprint,
        "password": _password_part(password, hash_key),
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


_NOT_CONSUMED = {TRUSTSTORE_JKS, TRUSTSTORE_PASSWORD, SECURITY_OPTIONS_CFG, CONNECTIONS_YAML}


def material_hash(
    tls: models.CobrowseTLS,
    files: Mapping[str, bytes],
    aliases: Sequence[str],
    password: str | None,
    hash_key: bytes | None,
) -> str:
    """What the workloads consume: every rendered file; the JKS as its inputs (certificates,
    aliases, password), since its bytes would let a reader test password guesses.

    security-options.cfg and connections.yaml are for the administrator (Genesys
    Administrator), not the workloads; the options they carry are already counted.
    """
    digest = hashlib.sha256()
    for name in sorted(set(files) - _NOT_CONSUMED):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest() + b"\0")
    if TRUSTSTORE_JKS in files:
        digest.update(b"jks\0" + "\0".join(aliases).encode() + b"\0")
    part = _password_part(password, hash_key)
    if part is not None and TRUSTSTORE_PASSWORD in files:
        digest.update(b"password\0" + part.encode())
    return "sha256:" + digest.hexdigest()


def config_map_hash(data: Mapping[str, str]) -> str:
    """sha256 over the ConfigMap's own data (option files only: no secret material in it)."""
    canonical = json.dumps(dict(data), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _metadata(
    tls: models.CobrowseTLS, name: str, labels: dict[str, str], annotations: dict[str, str]
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if tls.metadata.namespace:
        meta["namespace"] = tls.metadata.namespace
    meta["labels"] = dict(labels)
    meta["annotations"] = dict(annotations)
    if tls.metadata.uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": models.API_VERSION,
                "kind": models.KIND,
                "name": tls.metadata.name,
                "uid": tls.metadata.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return meta


# ---- option files ---------------------------------------------------------------------------


def trusted_ca_path(tls: models.CobrowseTLS, *, windows: bool = False) -> str:
    """The trusted-ca option: where the store is mounted in the workload, or '' if none."""
    provider = tls.spec.provider
    if provider not in (models.Provider.PEM, models.Provider.JKS):
        return ""
    filename = CA_PEM if provider is models.Provider.PEM else TRUSTSTORE_JKS
    if windows:
        return tls.spec.truststore.windows_mount_path + "\\" + filename
    return tls.spec.truststore.mount_path + "/" + filename


def _provider_value(tls: models.CobrowseTLS) -> str:
    provider = tls.spec.provider
    return "" if provider is models.Provider.DISABLED else provider.value


def _security_lines(tls: models.CobrowseTLS) -> list[str]:
    lines = ["[security]", f"provider={_provider_value(tls)}"]
    if trusted_ca_path(tls):
        lines.append(f"trusted-ca={trusted_ca_path(tls)}")
    return lines


def security_cfg(tls: models.CobrowseTLS) -> str:
    """The [security] section in the INI form Genesys configuration import reads."""
    return "\n".join(_security_lines(tls)) + "\n"


def security_options_cfg(tls: models.CobrowseTLS, password: str) -> str:
    """JKS: the whole [security] section of the manual, truststore-password included.

    The form Genesys Administrator's option import takes ([section], then option=value
    lines); it holds the password, so it lives only in the Secret.
    """
    return "\n".join([*_security_lines(tls), f"truststore-password={password}"]) + "\n"


def connections_yaml(tls: models.CobrowseTLS) -> str:
    """What to configure on the application object that reads connections, per release.

    The Server object in 8.5.000, the Cluster object from 8.5.001: its name is known only when
    it is the object spec.application names.
    """
    app = tls.spec.application
    target = models.connections_object(app.version, app.type)
    application: dict[str, str] = {"type": target.value}
    where = f"the {target.value} application object"
    if target is app.type:
        application["name"] = app.name
    else:
        where += f" (the one {app.type.value} {app.name} belongs to)"
    release = models.release(app.version, app.type)
    doc: dict[str, Any] = {"release": release or f"{models.FIRST_CLUSTER_SECURITY_RELEASE}+"}
    doc["application"] = application
    doc["connections"] = [
        {"server": c.name, "host": c.host, "securePort": c.port} for c in tls.spec.connections
    ]
    header = (
        f"# Generated by cobrowse-tls-operator from CobrowseTLS {tls.metadata.name}: do not edit.\n"
        f"# Add each server to the Connections of {where}, through its secure port.\n"
    )
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1000)
    return header + body


def _variables(tls: models.CobrowseTLS, *, windows: bool) -> list[tuple[str, str]]:
    spec = tls.spec
    out: list[tuple[str, str]] = []
    if spec.config_server is not None:
        cs = spec.config_server
        out += [("PRIMARY_CFGSERVER_HOST", cs.host), ("PRIMARY_CFGSERVER_PORT", str(cs.port))]
        if cs.backup_host is not None and cs.backup_port is not None:
            out += [
                ("BACKUP_CFGSERVER_HOST", cs.backup_host),
                ("BACKUP_CFGSERVER_PORT", str(cs.backup_port)),
            ]
        out.append(("PRIMARY_CFGSERVER_CONNECTION_MODE", _CONNECTION_MODES[cs.connection_mode]))
    out += [
        ("APP_NAME", spec.application.name),
        ("PROVIDER", _provider_value(tls)),
        ("TRUSTED_CA", trusted_ca_path(tls, windows=windows)),
    ]
    return out


def sh_quote(value: str) -> str:
    """Single-quote for POSIX sh: nothing inside single quotes is special but the quote."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


# Inside `set "NAME=value"` cmd.exe still expands %...% (and !...! with delayed expansion),
# and a double quote ends the quoting: such values cannot be written safely at all.
_BAT_UNSAFE = set('"%!\r\n\x00')


def bat_quote(name: str, value: str) -> str:
    bad = sorted(_BAT_UNSAFE & set(value)) or [c for c in value if ord(c) < 32]
    if bad:
        raise InvalidInput(
            "InvalidSpec", name, f"value holds characters cmd.exe cannot quote: {bad!r}"
        )
    return f'set "{name}={value}"'


def setenv_sh(tls: models.CobrowseTLS) -> str:
    lines = [
        f"# Generated by cobrowse-tls-operator from CobrowseTLS {tls.metadata.name}: do not edit.",
        "# Source it from the Co-browse server directory: . ./setenv.sh",
    ]
    names = []
    for name, value in _variables(tls, windows=False):
        lines.append(f"{name}={sh_quote(value)}")
        names.append(name)
    if tls.spec.provider is models.Provider.JKS:
        path = tls.spec.truststore.mount_path + "/" + TRUSTSTORE_PASSWORD
        lines.append("# The password stays in the mounted Secret; this file holds none.")
        lines.append(f'TRUSTSTORE_PASSWORD="$(cat {sh_quote(path)})"')
        names.append("TRUSTSTORE_PASSWORD")
    lines.append("export " + " ".join(names))
    return "\n".join(lines) + "\n"


def setenv_bat(tls: models.CobrowseTLS) -> str:
    lines = [
        "@rem Generated by cobrowse-tls-operator from CobrowseTLS "
        f"{tls.metadata.name}: do not edit.",
        "@rem Call it from the Co-browse server directory: call setenv.bat",
    ]
    lines += [bat_quote(name, value) for name, value in _variables(tls, windows=True)]
    if tls.spec.provider is models.Provider.JKS:
        path = tls.spec.truststore.windows_mount_path + "\\" + TRUSTSTORE_PASSWORD
        lines.append("@rem The password stays in the mounted Secret; this file holds none.")
        lines.append(f'set /p TRUSTSTORE_PASSWORD=<"{path}"')
    return "\r\n".join(lines) + "\r\n"
