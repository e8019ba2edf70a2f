"""engine/kubeconfig.py: real kubeconfig files, exec plugins and service account folders."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

import pki as pki_module
from cobrowse_tls.engine import handlers, kubeconfig
from unit import api_server

REPO = Path(__file__).resolve().parents[2]


def write_config(
    path: Path,
    user: dict[str, Any] | None = None,
    cluster: dict[str, Any] | None = None,
    *,
    current: str | None = "x",
    contexts: dict[str, tuple[str, str]] | None = None,
) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://api:6443", **(cluster or {})}}],
        "users": [{"name": "u", "user": user or {}}],
        "contexts": [
            {"name": name, "context": {"cluster": c, "user": u}}
            for name, (c, u) in (contexts or {"x": ("c", "u")}).items()
        ],
    }
    if current:
        doc["current-context"] = current
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_relative_paths_are_relative_to_the_kubeconfig_file(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "conf" / "kubeconfig",
        {"client-certificate": "certs/user.pem", "client-key": "/abs/user.key", "tokenFile": "t"},
        {"certificate-authority": "../ca.pem", "proxy-url": "http://proxy:3128"},
    )
    conn = kubeconfig.load(str(config))
    conf = tmp_path / "conf"
    assert conn.server == "https://api:6443"
    assert conn.ca_file == str(conf / ".." / "ca.pem")
    assert conn.cert_file == str(conf / "certs" / "user.pem")
    assert conn.key_file == "/abs/user.key"
    assert conn.token_file == str(conf / "t")
    assert conn.proxy_url == "http://proxy:3128"


def test_a_relative_kubeconfig_path_resolves_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path / "conf" / "kc", cluster={"certificate-authority": "ca.pem"})
    monkeypatch.chdir(tmp_path)
    conn = kubeconfig.load("conf/kc")
    assert conn.ca_file == str(tmp_path / "conf" / "ca.pem")


def test_data_fields_are_base64_pem_and_win_over_paths(tmp_path: Path, pki: pki_module.PKI) -> None:
    user = {
        "client-certificate-data": b64(pki.server.pem),
        "client-key-data": b64(pki.server.key_pem),
        "client-certificate": "ignored.pem",
        "client-key": "ignored.key",
        "token": "t0k",
    }
    cluster = {"certificate-authority-data": b64(pki.root.pem), "certificate-authority": "x"}
    conn = kubeconfig.load(str(write_config(tmp_path / "kc", user, cluster)))
    assert (conn.ca_pem, conn.ca_file) == (pki.root.pem, None)
    assert (conn.cert_pem, conn.key_pem) == (pki.server.pem, pki.server.key_pem)
    assert (conn.cert_file, conn.key_file) == (None, None)
    cred = conn.credentials()
    assert cred.token == "t0k"
    assert conn.headers(cred) == {"Authorization": "Bearer t0k"}
    conn.ssl_context(cred)  # the in-memory certificate and key load
    assert not list(tmp_path.glob("**/tls.*"))


def test_bad_base64_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "kc", cluster={"certificate-authority-data": "not base64!"})
    with pytest.raises(kubeconfig.ConfigError, match="certificate-authority-data is not base64"):
        kubeconfig.load(str(config))


def test_a_token_file_is_re_read_when_it_changes(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    conn = kubeconfig.load(str(write_config(tmp_path / "kc", {"tokenFile": "token"})))
    assert conn.credentials().token == "one"
    token.write_text("two-rotated\n")
    assert conn.credentials().token == "two-rotated"
    token.write_text("")
    with pytest.raises(kubeconfig.ConfigError, match="is empty"):
        conn.credentials()


def test_basic_auth_from_username_and_password(tmp_path: Path) -> None:
    conn = kubeconfig.load(
        str(write_config(tmp_path / "kc", {"username": "ann", "password": "pw"}))
    )
    auth = conn.headers(conn.credentials())["Authorization"]
    assert base64.b64decode(auth.removeprefix("Basic ")) == b"ann:pw"


# -- exec plugins --------------------------------------------------------------------------------

PLUGIN = """\
#!{python}
import json, os, sys
from pathlib import Path
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
runs = Path(sys.argv[1])
n = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(n))
status = {{"token": f"{{os.environ['GREETING']}}-{{n}}-{{info['spec']['interactive']}}"}}
if os.environ.get("EXPIRES"):
    status["expirationTimestamp"] = os.environ["EXPIRES"]
if os.environ.get("CERT"):
    status = {{"clientCertificateData": Path(os.environ["CERT"]).read_text(),
              "clientKeyData": Path(os.environ["KEY"]).read_text()}}
if "cluster" in info["spec"]:
    status["token"] += "-" + info["spec"]["cluster"]["server"]
print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                  "status": status}}))
"""


def exec_user(tmp_path: Path, version: str = "v1", **env: str) -> dict[str, Any]:
    plugin = tmp_path / "conf" / "bin" / "plugin.py"
    plugin.parent.mkdir(parents=True, exist_ok=True)
    plugin.write_text(PLUGIN.format(python=sys.executable))
    plugin.chmod(0o755)
    return {
        "exec": {
            "apiVersion": f"client.authentication.k8s.io/{version}",
            "command": "./bin/plugin.py",  # has a slash: relative to the kubeconfig's folder
            "args": [str(tmp_path / "runs")],
            "env": [{"name": "GREETING", "value": "hello"}]
            + [{"name": k, "value": v} for k, v in env.items()],
            "interactiveMode": "Never",
        }
    }


def runs(tmp_path: Path) -> int:
    return int((tmp_path / "runs").read_text())


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_an_exec_plugin_token_is_cached_until_it_expires(tmp_path: Path, version: str) -> None:
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    user = exec_user(tmp_path, version, EXPIRES="2030-01-01T00:00:00Z")
    conn = kubeconfig.load(str(write_config(tmp_path / "conf" / "kc", user)))
    assert (tmp_path / "runs").exists() is False  # loading runs nothing yet
    before = expires - timedelta(minutes=5)
    first = conn.credentials(now=before)
    assert (first.token, first.expires) == ("hello-1-False", expires)
    assert conn.credentials(now=before).token == "hello-1-False"
    assert runs(tmp_path) == 1
    # Past expirationTimestamp (and within the skew before it) the plugin runs again.
    assert conn.credentials(now=expires + timedelta(seconds=1)).token == "hello-2-False"
    assert conn.credentials(now=expires - timedelta(seconds=1)).token == "hello-3-False"
    assert runs(tmp_path) == 3
    # A 401 makes the next call ask again.
    assert conn.refresh()
    assert conn.credentials(now=before).token == "hello-4-False"


def test_an_exec_credential_without_expiry_is_kept(tmp_path: Path) -> None:
    conn = kubeconfig.load(str(write_config(tmp_path / "conf" / "kc", exec_user(tmp_path))))
    for _ in range(3):
        assert conn.credentials().token == "hello-1-False"


def test_provide_cluster_info(tmp_path: Path) -> None:
    user = exec_user(tmp_path)
    user["exec"]["provideClusterInfo"] = True
    conn = kubeconfig.load(str(write_config(tmp_path / "conf" / "kc", user)))
    assert conn.credentials().token == "hello-1-False-https://api:6443"


def test_an_exec_plugin_client_certificate_reaches_a_tls_server(
    tmp_path: Path, pki: pki_module.PKI
) -> None:
    import ssl

    from cobrowse_tls.engine import kube

    now = datetime.now(UTC)
    ann = pki_module.make_cert(
        "ann", issuer=pki.root, ca=False, not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=1),
    )  # fmt: skip
    cert = pki_module.write(tmp_path, "ann.pem", ann.pem)
    key = pki_module.write(tmp_path, "ann.key", ann.key_pem)
    server_pem = pki_module.write(tmp_path, "server.pem", pki.server.pem + pki.server.key_pem)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(server_pem)
    tls.verify_mode = ssl.CERT_REQUIRED
    tls.load_verify_locations(cadata=pki.root.pem.decode())
    with api_server.serving(tls) as server:
        user = exec_user(tmp_path, CERT=str(cert), KEY=str(key))
        config = write_config(
            tmp_path / "conf" / "kc",
            user,
            {"server": server.url, "certificate-authority-data": b64(pki.root.pem)},
        )
        client = kube.Client(kubeconfig.load(str(config)))
        assert client.get_namespace("x") == {}
        assert server.seen[0].client_cn == "ann"


def test_exec_plugin_failures_are_one_line(tmp_path: Path) -> None:
    script = tmp_path / "fail.sh"
    script.write_text(
        "#!/bin/sh\necho 'warming up' >&2\necho 'no session: run login' >&2\nexit 3\n"
    )
    script.chmod(0o755)
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(script)}}
    conn = kubeconfig.load(str(write_config(tmp_path / "kc", user)))
    with pytest.raises(kubeconfig.ConfigError) as failed:
        conn.credentials()
    assert str(failed.value) == f"exec plugin {script} exited with status 3: no session: run login"
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "cobrowse-no-such-plugin",
            "installHint": "install it with\n  brew install it",
        }
    }
    conn = kubeconfig.load(str(write_config(tmp_path / "kc", user)))
    with pytest.raises(kubeconfig.ConfigError, match=r"command not found \(brew install it\)"):
        conn.credentials()


def test_exec_stanzas_checked_on_load(tmp_path: Path) -> None:
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}}
    with pytest.raises(kubeconfig.ConfigError, match="v1alpha1' is not supported"):
        kubeconfig.load(str(write_config(tmp_path / "kc", user)))
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1"}}
    with pytest.raises(kubeconfig.ConfigError, match="exec needs a command"):
        kubeconfig.load(str(write_config(tmp_path / "kc", user)))
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "x",
                     "interactiveMode": "Always"}}  # fmt: skip
    with pytest.raises(kubeconfig.ConfigError, match="wants a terminal"):
        kubeconfig.load(str(write_config(tmp_path / "kc", user)))
    user = {"auth-provider": {"name": "gcp"}}
    with pytest.raises(kubeconfig.ConfigError, match="auth-provider 'gcp' is not supported"):
        kubeconfig.load(str(write_config(tmp_path / "kc", user)))


# -- choosing the file and the context ---------------------------------------------------------


def test_contexts(tmp_path: Path) -> None:
    contexts = {"x": ("c", "u"), "y": ("c", "u"), "broken": ("nope", "u")}
    path = str(write_config(tmp_path / "kc", contexts=contexts, current=None))
    with pytest.raises(kubeconfig.ConfigError, match="no current-context, and no context given"):
        kubeconfig.load(path)
    assert kubeconfig.load(path, context="y").server == "https://api:6443"
    with pytest.raises(kubeconfig.ConfigError) as missing:
        kubeconfig.load(path, context="z")
    assert str(missing.value) == f"{path}: context 'z' not found"
    with pytest.raises(kubeconfig.ConfigError, match="cluster 'nope' of context 'broken'"):
        kubeconfig.load(path, context="broken")


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(kubeconfig.ConfigError) as missing:
        kubeconfig.load(str(tmp_path / "none"))
    assert str(missing.value) == f"kubeconfig {tmp_path / 'none'} not found"
    bad = tmp_path / "bad"
    bad.write_text("clusters: [\n")
    with pytest.raises(kubeconfig.ConfigError, match="not valid YAML"):
        kubeconfig.load(str(bad))
    bad.write_text("- a list\n")
    with pytest.raises(kubeconfig.ConfigError, match="expected a mapping"):
        kubeconfig.load(str(bad))


def test_kubeconfig_variable_merges_files_first_wins(tmp_path: Path) -> None:
    first = write_config(
        tmp_path / "a" / "kc", {"token": "a"}, {"server": "https://a"}, current=None
    )
    second = write_config(tmp_path / "b" / "kc", {"token": "b"}, {"server": "https://b"})
    env = {"KUBECONFIG": os.pathsep.join([str(first), str(tmp_path / "absent"), str(second)])}
    conn = kubeconfig.load(environ=env)
    # current-context comes from the second file; cluster and user from the first.
    assert (conn.server, conn.credentials().token) == ("https://a", "a")


def test_the_home_kubeconfig_then_in_cluster(tmp_path: Path) -> None:
    write_config(tmp_path / "home" / ".kube" / "config", {"token": "home"})
    assert kubeconfig.load(environ={"HOME": str(tmp_path / "home")}).token == "home"
    with pytest.raises(kubeconfig.ConfigError, match="not in a cluster"):
        kubeconfig.load(environ={"HOME": str(tmp_path / "nobody")})


def service_account(tmp_path: Path, content: str = "sa-1") -> Path:
    folder = tmp_path / "sa"
    folder.mkdir(exist_ok=True)
    (folder / "token").write_text(content)
    (folder / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    return folder


def test_in_cluster(tmp_path: Path) -> None:
    folder = service_account(tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    conn = kubeconfig.load(environ=env, service_account=folder)
    assert conn.server == "https://10.0.0.1:443"
    assert conn.ca_file == str(folder / "ca.crt")
    assert conn.credentials().token == "sa-1"
    # The kubelet rotates projected tokens by swapping the file.
    (folder / "new").write_text("sa-2-rotated")
    (folder / "new").replace(folder / "token")
    assert conn.credentials().token == "sa-2-rotated"
    env6 = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    assert kubeconfig.load(environ=env6, service_account=folder).server == "https://[fd00::1]:6443"


def test_in_cluster_without_a_token(tmp_path: Path) -> None:
    folder = service_account(tmp_path, content="")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(kubeconfig.ConfigError, match="token is empty"):
        kubeconfig.load(environ=env, service_account=folder)
    (folder / "token").unlink()
    with pytest.raises(kubeconfig.ConfigError, match="token not found"):
        kubeconfig.load(environ=env, service_account=folder)


def test_an_unusable_home_kubeconfig_gives_way_to_in_cluster(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text("current-context: gone\n")
    env = {"HOME": str(home), "KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "1"}
    conn = kubeconfig.load(environ=env, service_account=service_account(tmp_path))
    assert conn.server == "https://h:1"
    # Given explicitly, the same file is an error.
    with pytest.raises(kubeconfig.ConfigError, match="context 'gone' not found"):
        kubeconfig.load(str(home / ".kube" / "config"), environ=env)


# -- kopf's login: the same settings ---------------------------------------------------------


def login(path: Path) -> Any:
    memo = handlers.Memo()
    memo.kubeconfig = str(path)
    # kopf's decorator types it as an activity that kopf calls with all its kwargs.
    fn = cast(Callable[..., Any], handlers.login)
    return fn(memo=memo)


def test_kopf_logs_in_with_the_same_settings(tmp_path: Path, pki: pki_module.PKI) -> None:
    user = {
        "client-certificate-data": b64(pki.server.pem),
        "client-key-data": b64(pki.server.key_pem),
    }
    info = login(
        write_config(tmp_path / "kc", user, {"certificate-authority-data": b64(pki.root.pem)})
    )
    assert info.server == "https://api:6443"
    assert (info.ca_data, info.ca_path) == (pki.root.pem, None)
    assert (info.certificate_data, info.private_key_data) == (pki.server.pem, pki.server.key_pem)
    assert (info.token, info.scheme, info.insecure) == (None, None, False)
    info.as_ssl_context()  # kopf accepts the PEM data as it is

    # A bundle with comments in other scripts: kopf reads PEM as ASCII, so only the blocks go.
    bundle = "# Größte Wurzel\n".encode() + pki.root.pem
    info = login(write_config(tmp_path / "kc", user, {"certificate-authority-data": b64(bundle)}))
    assert info.ca_data is not None
    assert info.ca_data.strip() == pki.root.pem.strip()
    info.as_ssl_context()

    (tmp_path / "token").write_text("tok")
    info = login(
        write_config(
            tmp_path / "kc",
            {"tokenFile": "token"},
            {"certificate-authority": "ca.pem", "insecure-skip-tls-verify": True},
        )
    )
    assert (info.scheme, info.token, info.insecure) == ("Bearer", "tok", True)
    assert info.ca_path == str(tmp_path / "ca.pem")

    info = login(write_config(tmp_path / "kc", {"username": "ann", "password": "pw"}))
    assert (info.username, info.password, info.token) == ("ann", "pw", None)


def test_kopf_gets_a_ca_bundle_with_text_before_its_first_certificate(
    tmp_path: Path, pki: pki_module.PKI
) -> None:
    bundle = b"subject=CN = Test Root CA\n" + pki.root.pem
    info = login(write_config(tmp_path / "kc", {}, {"certificate-authority-data": b64(bundle)}))
    assert base64.b64decode(info.ca_data) == bundle
    context = info.as_ssl_context()
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("organizationName", "cobrowse-tls tests"),), (("commonName", "Test Root CA"),))
    ]


def test_kopf_login_carries_the_exec_credentials_expiry(tmp_path: Path) -> None:
    user = exec_user(tmp_path, EXPIRES="2099-01-01T00:00:00Z")
    info = login(write_config(tmp_path / "conf" / "kc", user))
    assert (info.scheme, info.token) == ("Bearer", "hello-1-False")
    assert info.expiration == datetime(2099, 1, 1, tzinfo=UTC)


# -- the `run` command -----------------------------------------------------------------------


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def test_run_never_imports_the_kubernetes_client(tmp_path: Path) -> None:
    # Installed (for the tests and hack/): kopf would import it if `run` did not block it.
    assert importlib.util.find_spec("kubernetes") is not None
    # `cobrowse-tls run` goes through cli.main; its error path returns after kopf is imported,
    # then the handlers module is imported as main does next.
    done = _run_python(
        f"""
        import sys
        from cobrowse_tls import cli
        assert cli.main(["run", "--kubeconfig", {str(tmp_path / "none")!r}]) == 2
        import cobrowse_tls.engine.handlers
        assert "kopf" in sys.modules
        print(sorted(m for m in sys.modules if m.split(".")[0] == "kubernetes"
                     and sys.modules[m] is not None))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_run_with_a_bad_kubeconfig_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "kc"
    bad.write_text(json.dumps({"clusters": [], "current-context": "x"}))
    done = subprocess.run(
        [sys.executable, "-m", "cobrowse_tls.cli", "run", "--kubeconfig", str(bad)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == f"cobrowse-tls run: {bad}: context 'x' not found\n"
