"""Where the API server is and who we are to it, without the kubernetes package.

``load`` turns ``--kubeconfig FILE`` (else $KUBECONFIG, else ~/.kube/config) or the in-cluster
service account into one ``Connection``: engine/kube.py sends its requests with it and kopf's
login handler (engine/handlers.py) hands the same settings to kopf's watches. Importing the
kubernetes client only for its config loader cost about 20 MB of resident memory.

What a kubeconfig means follows client-go (tools/clientcmd/loader.go, plugin/pkg/client/auth/
exec): a relative path is relative to the directory of the kubeconfig file that names it; an
exec command is resolved that way only when it contains a slash, else it is looked up on $PATH;
the ``-data`` fields hold base64 PEM; an exec plugin's credential is kept until its
expirationTimestamp, and asked for again after a 401. Several files in $KUBECONFIG merge the
way kubectl merges them: the first file to name a cluster, user or context wins.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
import os
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
# An exec plugin that hangs must not hang every API call behind it.
EXEC_TIMEOUT = 60.0
# Ask the plugin again a little before its credential expires, not with requests in flight.
EXPIRY_SKEW = timedelta(seconds=10)


class ConfigError(Exception):
    """No usable connection settings: the message is one line, fit for the CLI."""


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What one request authenticates with, as of now."""

    token: str | None = None
    # From an exec plugin (PEM); a kubeconfig's own client certificate is in the Connection.
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    expires: datetime | None = None


@dataclasses.dataclass(frozen=True)
class ExecPlugin:
    """A kubeconfig user's ``exec`` stanza: a command that prints an ExecCredential."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = EXEC_API_VERSIONS[0]
    install_hint: str = ""
    # The ExecCredential's spec.cluster, when the stanza sets provideClusterInfo.
    cluster: Mapping[str, Any] | None = None

    def run(self) -> Credentials:
        info: dict[str, Any] = {
            "apiVersion": self.api_version,
            "kind": "ExecCredential",
            "spec": {"interactive": False},
        }
        if self.cluster is not None:
            info["spec"]["cluster"] = dict(self.cluster)
        env = {**os.environ, **dict(self.env), "KUBERNETES_EXEC_INFO": json.dumps(info)}
        what = f"exec plugin {self.command}"
        try:
            done = subprocess.run(
                [self.command, *self.args],
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=EXEC_TIMEOUT,
                check=False,
            )
        except FileNotFoundError:
            hint = f" ({_one_line(self.install_hint)})" if self.install_hint else ""
            raise ConfigError(f"{what}: command not found{hint}") from None
        except subprocess.TimeoutExpired:
            raise ConfigError(f"{what}: no answer within {EXEC_TIMEOUT:.0f} s") from None
        except OSError as exc:
            raise ConfigError(f"{what}: {exc.strerror or exc}") from None
        if done.returncode != 0:
            stderr = _one_line(done.stderr.decode(errors="replace"))
            raise ConfigError(f"{what} exited with status {done.returncode}: {stderr}".rstrip(": "))
        try:
            cred = json.loads(done.stdout)
        except ValueError:
            raise ConfigError(f"{what}: its output is not JSON") from None
        if not isinstance(cred, dict) or cred.get("kind") != "ExecCredential":
            raise ConfigError(f"{what}: its output is not an ExecCredential")
        if cred.get("apiVersion") != self.api_version:
            raise ConfigError(
                f"{what}: answered with apiVersion {cred.get('apiVersion')!r},"
                f" the kubeconfig asks for {self.api_version!r}"
            )
        status = cred.get("status")
        if not isinstance(status, dict):
            raise ConfigError(f"{what}: the ExecCredential has no status")
        token = status.get("token") or None
        cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
        if bool(cert) != bool(key):
            raise ConfigError(f"{what}: returned a client certificate or key, not both")
        if not token and not cert:
            raise ConfigError(f"{what}: returned neither a token nor a client certificate")
        expires = None
        if status.get("expirationTimestamp"):
            try:
                expires = datetime.fromisoformat(str(status["expirationTimestamp"]))
            except ValueError:
                raise ConfigError(f"{what}: expirationTimestamp is not RFC 3339") from None
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=UTC)
        return Credentials(
            token=token,
            cert_pem=str(cert).encode() if cert else None,
            key_pem=str(key).encode() if key else None,
            expires=expires,
        )


class Connection:
    """One API server and the credentials for it; safe to share between threads.

    Static settings are attributes; ``credentials()`` gives what may change while the
    process runs: a token file re-read when it changes (projected service account tokens
    rotate), an exec plugin run again when its credential expires.
    """

    def __init__(
        self,
        server: str,
        *,
        ca_file: str | None = None,
        ca_pem: bytes | None = None,
        insecure: bool = False,
        tls_server_name: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        cert_pem: bytes | None = None,
        key_pem: bytes | None = None,
        token: str | None = None,
        token_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        exec_plugin: ExecPlugin | None = None,
        proxy_url: str | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.ca_file, self.ca_pem, self.insecure = ca_file, ca_pem, insecure
        self.tls_server_name = tls_server_name
        self.cert_file, self.key_file = cert_file, key_file
        self.cert_pem, self.key_pem = cert_pem, key_pem
        self.token, self.token_file = token, token_file
        self.username, self.password = username, password
        self.exec_plugin = exec_plugin
        self.proxy_url = proxy_url
        self._lock = threading.Lock()
        self._exec: Credentials | None = None
        self._file_token: tuple[tuple[int, int, int], str] | None = None

    def credentials(self, now: datetime | None = None) -> Credentials:
        """The credentials to send now; runs the exec plugin if it has none that are valid.

        Raises ConfigError when the exec plugin or the token file fails.
        """
        if self.exec_plugin is not None:
            with self._lock:
                cred = self._exec
                moment = now or datetime.now(UTC)
                if cred is None or (cred.expires and moment >= cred.expires - EXPIRY_SKEW):
                    cred = self._exec = self.exec_plugin.run()
            return cred
        if self.token_file:
            return Credentials(token=self._read_token_file(self.token_file))
        return Credentials(token=self.token)

    def refresh(self) -> bool:
        """After a 401: forget cached credentials. Whether fresh ones may differ."""
        with self._lock:
            self._exec = None
            self._file_token = None
        return self.exec_plugin is not None or bool(self.token_file)

    def _read_token_file(self, path: str) -> str:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise ConfigError(f"token file {path}: {exc.strerror or exc}") from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._file_token
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"token file {path}: {exc}") from None
        if not token:
            raise ConfigError(f"token file {path} is empty")
        with self._lock:
            self._file_token = (stamp, token)
        return token

    def headers(self, cred: Credentials) -> dict[str, str]:
        """The Authorization header for ``cred`` (none for client certificates alone)."""
        if cred.token:
            return {"Authorization": f"Bearer {cred.token}"}
        if self.username is not None and self.password is not None:
            basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return {"Authorization": f"Basic {basic}"}
        return {}

    def ssl_context(self, cred: Credentials) -> ssl.SSLContext:
        """Server verification and the client certificate, if any (an exec plugin's wins)."""
        context = ssl.create_default_context(
            cafile=self.ca_file, cadata=self.ca_pem.decode() if self.ca_pem else None
        )
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        cert_pem, key_pem = cred.cert_pem or self.cert_pem, cred.key_pem or self.key_pem
        try:
            if (cert_pem or key_pem) and (self.cert_file or self.key_file):
                # One half as data, the other as a file: client-go takes that mix too.
                cert_pem = cert_pem or Path(str(self.cert_file)).read_bytes()
                key_pem = key_pem or Path(str(self.key_file)).read_bytes()
            if cert_pem and key_pem:
                _load_chain_from_memory(context, cert_pem, key_pem)
            elif self.cert_file and self.key_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"client certificate or key: {exc}") from None
        return context


def _load_chain_from_memory(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    # ssl loads a certificate chain only from files: private ones (mkstemp: 0600) in a private
    # folder, removed as soon as they are read.
    with tempfile.TemporaryDirectory(prefix="cobrowse-tls-") as folder:
        paths = []
        for name, data in (("tls.crt", cert_pem), ("tls.key", key_pem)):
            fd, path = tempfile.mkstemp(prefix=name, dir=folder)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            paths.append(path)
        context.load_cert_chain(paths[0], paths[1])


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- loading ---------------------------------------------------------------------------------


def load(
    kubeconfig: str | None = None,
    context: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    service_account: Path = SERVICE_ACCOUNT,
) -> Connection:
    """The connection from ``kubeconfig``, else $KUBECONFIG or ~/.kube/config, else in-cluster.

    A file given explicitly must work. Without one, a kubeconfig that is found but unusable
    gives way to the in-cluster account when there is one (as the kubernetes client did).
    """
    env = os.environ if environ is None else environ
    if kubeconfig:
        return from_kubeconfig([kubeconfig], context)
    listed = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if not listed and env.get("HOME"):
        listed = [str(Path(env["HOME"]) / ".kube" / "config")]
    found = [p for p in listed if os.path.exists(p)]
    if found:
        try:
            return from_kubeconfig(found, context)
        except ConfigError:
            if not env.get("KUBERNETES_SERVICE_HOST"):
                raise
    return in_cluster(env, service_account)


def in_cluster(environ: Mapping[str, str], service_account: Path = SERVICE_ACCOUNT) -> Connection:
    """The pod's service account: the token file is re-read whenever the kubelet rotates it."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigError(
            "no kubeconfig (--kubeconfig FILE, $KUBECONFIG or ~/.kube/config) and not in a"
            " cluster ($KUBERNETES_SERVICE_HOST/PORT not set)"
        )
    token, ca = service_account / "token", service_account / "ca.crt"
    for path in (token, ca):
        if not path.is_file():
            raise ConfigError(f"in-cluster: {path} not found")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    connection = Connection(f"https://{host}:{port}", ca_file=str(ca), token_file=str(token))
    connection.credentials()  # an empty or unreadable token fails here, not at the first call
    return connection


@dataclasses.dataclass
class _Entry:
    value: Mapping[str, Any]
    base: Path  # directory of the file that named it


def from_kubeconfig(paths: list[str], context: str | None = None) -> Connection:
    """A connection from kubeconfig files (merged like kubectl's $KUBECONFIG)."""
    named: dict[str, dict[str, _Entry]] = {"clusters": {}, "users": {}, "contexts": {}}
    inner = {"clusters": "cluster", "users": "user", "contexts": "context"}
    current = None
    for path in paths:
        doc = _read_yaml(path)
        base = Path(path).resolve().parent
        for section, entries in named.items():
            listed = doc.get(section) or []
            if not isinstance(listed, list):
                raise ConfigError(f"{path}: {section} is not a list")
            for item in listed:
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    raise ConfigError(f"{path}: an entry of {section} has no name")
                value = item.get(inner[section]) or {}
                if not isinstance(value, dict):
                    raise ConfigError(f"{path}: {section} {item['name']!r} is not a mapping")
                entries.setdefault(item["name"], _Entry(value, base))
        current = current or doc.get("current-context") or None
    where = paths[0] if len(paths) == 1 else "$KUBECONFIG"
    name = context or current
    if not name:
        raise ConfigError(f"{where}: no current-context, and no context given")
    if name not in named["contexts"]:
        raise ConfigError(f"{where}: context {name!r} not found")
    ctx = named["contexts"][name].value
    cluster_name = ctx.get("cluster")
    if not cluster_name or cluster_name not in named["clusters"]:
        raise ConfigError(f"{where}: cluster {cluster_name!r} of context {name!r} not found")
    cluster = named["clusters"][cluster_name]
    user_name = ctx.get("user")
    if user_name and user_name not in named["users"]:
        raise ConfigError(f"{where}: user {user_name!r} of context {name!r} not found")
    user = named["users"][user_name] if user_name else _Entry({}, cluster.base)
    return _connection(where, cluster, user)


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"kubeconfig {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"kubeconfig {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"kubeconfig {path}: not valid YAML{at}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"kubeconfig {path}: not a kubeconfig (expected a mapping)")
    return doc


def _connection(where: str, cluster: _Entry, user: _Entry) -> Connection:
    c, u = cluster.value, user.value
    server = c.get("server")
    if not server or not isinstance(server, str):
        raise ConfigError(f"{where}: the cluster has no server")
    if u.get("auth-provider"):
        raise ConfigError(
            f"{where}: auth-provider {u['auth-provider'].get('name', '')!r} is not supported;"
            " use an exec credential plugin"
        )
    cert_file, key_file = _path(u, "client-certificate", user), _path(u, "client-key", user)
    cert_pem, key_pem = (
        _data(where, u, "client-certificate-data"),
        _data(where, u, "client-key-data"),
    )
    if bool(cert_file or cert_pem) != bool(key_file or key_pem):
        raise ConfigError(f"{where}: a client certificate needs a client key, and back")
    ca_pem = _data(where, c, "certificate-authority-data")
    return Connection(
        server,
        ca_file=None if ca_pem else _path(c, "certificate-authority", cluster),
        ca_pem=ca_pem,
        insecure=bool(c.get("insecure-skip-tls-verify")),
        tls_server_name=c.get("tls-server-name") or None,
        cert_file=None if cert_pem else cert_file,
        key_file=None if key_pem else key_file,
        cert_pem=cert_pem,
        key_pem=key_pem,
        token=u.get("token") or None,
        token_file=None if u.get("token") else _path(u, "tokenFile", user),
        username=u.get("username"),
        password=u.get("password"),
        exec_plugin=_exec(where, u.get("exec"), user.base, c, ca_pem),
        proxy_url=c.get("proxy-url") or None,
    )


def _path(stanza: Mapping[str, Any], key: str, entry: _Entry) -> str | None:
    value = stanza.get(key)
    if not value:
        return None
    return str(entry.base / os.path.expanduser(str(value)))  # an absolute path stays as it is


def _data(where: str, stanza: Mapping[str, Any], key: str) -> bytes | None:
    value = stanza.get(key)
    if not value:
        return None
    try:
        # Go's decoder, client-go's, skips line breaks (a YAML block scalar wraps the text).
        return base64.b64decode("".join(str(value).split()), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: {key} is not base64") from None


def _exec(
    where: str, stanza: Any, base: Path, cluster: Mapping[str, Any], ca_pem: bytes | None
) -> ExecPlugin | None:
    if not stanza:
        return None
    if not isinstance(stanza, dict) or not stanza.get("command"):
        raise ConfigError(f"{where}: exec needs a command")
    version = stanza.get("apiVersion")
    if version not in EXEC_API_VERSIONS:
        raise ConfigError(
            f"{where}: exec apiVersion {version!r} is not supported"
            f" (one of {', '.join(EXEC_API_VERSIONS)})"
        )
    if stanza.get("interactiveMode") == "Always":
        raise ConfigError(f"{where}: the exec plugin wants a terminal (interactiveMode: Always)")
    command = str(stanza["command"])
    if os.sep in command:
        command = str(base / command)
    try:
        env = tuple((str(e["name"]), str(e["value"])) for e in stanza.get("env") or ())
    except (KeyError, TypeError):
        raise ConfigError(f"{where}: each exec env entry needs a name and a value") from None
    info = None
    if stanza.get("provideClusterInfo"):
        info = {
            "server": cluster.get("server"),
            "tls-server-name": cluster.get("tls-server-name"),
            "insecure-skip-tls-verify": bool(cluster.get("insecure-skip-tls-verify")),
            "certificate-authority-data": base64.b64encode(ca_pem).decode() if ca_pem else None,
            "proxy-url": cluster.get("proxy-url"),
        }
        info = {k: v for k, v in info.items() if v not in (None, "", False)}
        with contextlib.suppress(AttributeError, TypeError):
            for ext in cluster.get("extensions") or ():
                if ext.get("name") == "client.authentication.k8s.io/exec":
                    info["config"] = ext.get("extension")
    return ExecPlugin(
        command=command,
        args=tuple(str(a) for a in stanza.get("args") or ()),
        env=env,
        api_version=str(version),
        install_hint=str(stanza.get("installHint") or ""),
        cluster=info,
    )
