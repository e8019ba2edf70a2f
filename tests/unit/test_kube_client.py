"""engine/kube.py on the wire: the requests it sends and how answers become results or KubeErrors.

Against a real HTTP(S) server on 127.0.0.1 (unit.api_server); the e2e suite runs the same
calls against a real kube-apiserver.
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import urllib3
import yaml

import pki as pki_module
from cobrowse_tls.api import models
from cobrowse_tls.engine import kube, kubeconfig
from unit import api_server

STATUS_404 = {"kind": "Status", "code": 404, "message": 'secrets "s" not found'}


@pytest.fixture
def server() -> Iterator[api_server.Server]:
    with api_server.serving() as s:
        yield s


def client(server: api_server.Server, **kw: object) -> kube.Client:
    return kube.Client(kubeconfig.Connection(server.url, **kw))  # type: ignore[arg-type]


def test_apply_is_a_forced_server_side_apply_with_our_field_manager(
    server: api_server.Server,
) -> None:
    server.reply(200, {"kind": "Secret", "metadata": {"name": "s", "resourceVersion": "7"}})
    c = client(server, token="t0k")
    obj = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "n s"}}
    result = c.apply(obj)
    assert result["metadata"]["resourceVersion"] == "7"
    (seen,) = server.seen
    assert seen.method == "PATCH"
    assert seen.path == (
        "/api/v1/namespaces/n%20s/secrets/s?fieldManager=cobrowse-tls-operator&force=true"
    )
    assert seen.headers["Content-Type"] == "application/apply-patch+yaml"
    assert seen.headers["Authorization"] == "Bearer t0k"
    assert seen.headers["Accept"] == "application/json"
    assert seen.json() == obj
    assert c.writes == 1
    assert c.is_own_write(
        "Secret", {"metadata": {"name": "s", "namespace": "n s", "resourceVersion": "7"}}
    )
    c.forget("Secret", "n s", "s")
    assert not c.is_own_write(
        "Secret", {"metadata": {"name": "s", "namespace": "n s", "resourceVersion": "7"}}
    )


def _output(version: str, **changes: object) -> dict[str, object]:
    """A ConfigMap as the watch shows it after our apply (or someone's edit: ``changes``)."""
    meta: dict[str, object] = {
        "name": "o",
        "namespace": "ns",
        "resourceVersion": version,
        "labels": {"app": "cb", "team": "theirs"},
        "annotations": {"hash": "h1"},
        "ownerReferences": [{"uid": "u1", "name": "cb"}],
        "managedFields": [{"manager": kube.FIELD_MANAGER}],
    }
    obj: dict[str, object] = {"kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}
    for path, value in changes.items():
        target, key = (meta, path[5:]) if path.startswith("meta_") else (obj, path)
        target[key] = value
    return obj


def _applied(data: str = "v") -> dict[str, object]:
    """The ConfigMap of _output as we apply it."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "o",
            "namespace": "ns",
            "labels": {"app": "cb"},
            "annotations": {"hash": "h1"},
            "ownerReferences": [{"uid": "u1", "name": "cb"}],
        },
        "data": {"k": data},
    }


def test_the_echo_of_an_apply_is_known_by_its_content_before_the_response_is_in(
    server: api_server.Server,
) -> None:
    # The watch may deliver our write before the apply's response: its resourceVersion is
    # not known then, its content is. An edit by someone else (drift) is not an echo.
    rv9 = {"kind": "ConfigMap", "metadata": {"name": "o", "resourceVersion": "9"}}
    server.reply(200, rv9, delay=3)  # the answer comes late; the echo is checked meanwhile
    c = client(server)
    applying = threading.Thread(target=c.apply, args=(_applied(),))
    applying.start()
    deadline = time.monotonic() + 10
    while not server.seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.seen
    assert applying.is_alive()
    assert c.is_own_write("ConfigMap", _output("9"))  # fields of others do not count
    assert not c.is_own_write("ConfigMap", _output("9", data={"k": "edited"}))
    applying.join()
    assert c.is_own_write("ConfigMap", _output("9", data={"k": "edited"}))  # now by version
    drifts: list[dict[str, object]] = [
        {"data": {"k": "edited"}},
        {"data": {"k": "v", "extra": "x"}},
        {"binaryData": {"b": "AA=="}},
        {"meta_labels": {"team": "theirs"}},
        {"meta_annotations": {"hash": "h2"}},
        {"meta_ownerReferences": []},
    ]
    for drift in drifts:
        assert not c.is_own_write("ConfigMap", _output("10", **drift)), drift
    assert not c.is_own_write("Secret", _output("8"))  # another kind, never applied
    c.forget("ConfigMap", "ns", "o")
    assert not c.is_own_write("ConfigMap", _output("8"))


def test_a_failed_apply_leaves_the_last_one_that_landed_as_the_echo(
    server: api_server.Server,
) -> None:
    server.reply(200, {"kind": "ConfigMap", "metadata": {"name": "o", "resourceVersion": "9"}})
    server.reply(500, {"kind": "Status", "code": 500, "message": "etcdserver: timeout"})
    c = client(server)
    c.apply(_applied("v"))
    with pytest.raises(kube.KubeError):
        c.apply(_applied("never-written"))
    assert c.is_own_write("ConfigMap", _output("10"))  # what landed, by content
    assert not c.is_own_write("ConfigMap", _output("10", data={"k": "never-written"}))


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("ConfigMap", "/api/v1/namespaces/ns/configmaps/o"),
        ("Deployment", "/apis/apps/v1/namespaces/ns/deployments/o"),
        ("StatefulSet", "/apis/apps/v1/namespaces/ns/statefulsets/o"),
        ("DaemonSet", "/apis/apps/v1/namespaces/ns/daemonsets/o"),
    ],
)
def test_apply_paths(server: api_server.Server, kind: str, path: str) -> None:
    server.reply(200, {"metadata": {"resourceVersion": "1"}})
    client(server).apply({"kind": kind, "metadata": {"name": "o", "namespace": "ns"}})
    assert server.seen[0].path.split("?")[0] == path


def test_reads_lists_and_selectors(server: api_server.Server) -> None:
    c = client(server)
    server.reply(200, {"metadata": {"name": "d"}})
    server.reply(200, {"items": [{"metadata": {"name": "b"}}, {"metadata": {"name": "a"}}]})
    server.reply(200, {"items": None})
    server.reply(200, {"items": [{"metadata": {"name": "e"}}]})
    server.reply(404, STATUS_404)
    server.reply(200, {"metadata": {"name": "x"}})
    assert c.get_workload("Deployment", "ns", "d") == {
        "metadata": {"name": "d"},
        "kind": "Deployment",
        "apiVersion": "apps/v1",
    }
    listed = c.list_workloads("StatefulSet", "ns", "app=x,tier in (a,b)")
    assert [o["metadata"]["name"] for o in listed] == ["a", "b"]
    assert {o["kind"] for o in listed} == {"StatefulSet"}
    assert c.list_pods("ns", "app=x") == []
    assert c.list_events("ns", "DaemonSet", "agent", "FailedCreate") == [
        {"metadata": {"name": "e"}}
    ]
    assert c.get_config_map("ns", "s") is None
    assert c.get_namespace("x") == {"metadata": {"name": "x"}}
    assert [(s.method, s.path) for s in server.seen] == [
        ("GET", "/apis/apps/v1/namespaces/ns/deployments/d"),
        (
            "GET",
            "/apis/apps/v1/namespaces/ns/statefulsets?labelSelector=app%3Dx%2Ctier+in+%28a%2Cb%29",
        ),
        ("GET", "/api/v1/namespaces/ns/pods?labelSelector=app%3Dx"),
        (
            "GET",
            "/api/v1/namespaces/ns/events?fieldSelector=involvedObject.kind%3DDaemonSet"
            "%2CinvolvedObject.name%3Dagent%2Creason%3DFailedCreate",
        ),
        ("GET", "/api/v1/namespaces/ns/configmaps/s"),
        ("GET", "/api/v1/namespaces/x"),
    ]
    assert c.writes == 0
    assert "Content-Type" not in server.seen[0].headers


def test_status_finalizers_events_and_delete(server: api_server.Server) -> None:
    c = client(server)
    c.patch_status("ns", "cb", {"observedGeneration": 2})
    c.set_finalizers("ns", "cb", ["f"], "41")
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    cr = {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "metadata": {"name": "cb", "namespace": "ns", "uid": "u"},
    }
    c.create_event(cr, type_="Warning", reason="Bad", message="x" * 2000, now=now)
    server.reply(404, STATUS_404)  # the writes above got the default reply (200, {})
    c.delete_daemon_set("ns", "gone")  # already gone: no error
    custom = f"/apis/{models.GROUP}/{models.VERSION}/namespaces/ns/{models.PLURAL}/cb"
    status, finalizers, event, delete = server.seen
    assert (status.method, status.path) == ("PATCH", custom + "/status")
    assert status.headers["Content-Type"] == "application/merge-patch+json"
    assert status.json() == {"status": {"observedGeneration": 2}}
    assert (finalizers.method, finalizers.path) == ("PATCH", custom)
    assert finalizers.json() == {"metadata": {"finalizers": ["f"], "resourceVersion": "41"}}
    assert (event.method, event.path) == ("POST", "/api/v1/namespaces/ns/events")
    body = event.json()
    assert body["involvedObject"]["uid"] == "u"
    assert body["firstTimestamp"] == "2030-01-02T03:04:05Z"
    assert len(body["message"]) == 1024
    assert event.headers["Content-Type"] == "application/json"
    assert (delete.method, delete.path) == ("DELETE", "/apis/apps/v1/namespaces/ns/daemonsets/gone")
    assert c.writes == 4


def test_leases(server: api_server.Server) -> None:
    c = client(server)
    lease = {"metadata": {"name": "l", "resourceVersion": "3"}, "spec": {}}
    server.reply(404, {"kind": "Status", "message": "not found"})
    server.reply(409, {"kind": "Status", "message": "already exists"})
    server.reply(200, lease)
    server.reply(409, {"kind": "Status", "message": "the object has been modified"})
    assert c.get_lease("ns", "l") is None
    assert c.create_lease("ns", lease) is None
    assert c.replace_lease("ns", "l", lease) == lease
    assert c.replace_lease("ns", "l", lease) is None
    paths = [(s.method, s.path) for s in server.seen]
    assert paths == [
        ("GET", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l"),
        ("POST", "/apis/coordination.k8s.io/v1/namespaces/ns/leases"),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l"),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l"),
    ]
    assert c.writes == 0  # the Lease is never counted nor fenced


def test_errors_carry_the_status_and_the_status_objects_message(
    server: api_server.Server,
) -> None:
    c = client(server)
    terminating = (
        'secrets "s" is forbidden: unable to create new content in namespace ns because it is'
        " being terminated"
    )
    server.reply(403, {"kind": "Status", "code": 403, "message": terminating})
    server.reply(500, b"<html>oops</html>")
    server.reply(429, {"kind": "Status", "message": "too many requests"})
    server.reply(422, {"kind": "Status", "message": "spec.x: Invalid value"})
    with pytest.raises(kube.KubeError) as forbidden:
        c.apply({"kind": "Secret", "metadata": {"name": "s", "namespace": "ns"}})
    assert forbidden.value.status == 403
    assert forbidden.value.namespace_terminating
    assert not forbidden.value.transient
    assert str(forbidden.value) == f"HTTP 403: {terminating}"
    with pytest.raises(kube.KubeError) as broken:
        c.get_secret("ns", "s")
    assert (broken.value.status, str(broken.value)) == (500, "HTTP 500: Internal Server Error")
    assert broken.value.transient
    with pytest.raises(kube.KubeError) as throttled:
        c.get_secret("ns", "s")
    assert throttled.value.transient
    with pytest.raises(kube.KubeError) as invalid:
        c.patch_status("ns", "cb", {})
    assert (invalid.value.status, invalid.value.transient) == (422, False)
    assert "spec.x: Invalid value" in str(invalid.value)


def test_an_unreachable_server_is_status_0_and_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        c = kube.Client(kubeconfig.Connection(f"http://127.0.0.1:{port}"))
        with pytest.raises(kube.KubeError) as refused:
            c.get_secret("ns", "s")
    assert refused.value.status == 0
    assert refused.value.transient
    assert "API server not reachable" in str(refused.value)


def test_a_read_timeout_is_status_0(
    server: api_server.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube, "TIMEOUT", urllib3.Timeout(connect=1, read=0.2))
    monkeypatch.setattr(kube, "RETRIES", 0)
    server.reply(200, {}, delay=1.0)
    with pytest.raises(kube.KubeError) as slow:
        client(server).get_secret("ns", "s")
    assert slow.value.status == 0
    assert "timed out" in str(slow.value).lower()


def test_a_401_refreshes_a_rotated_token_file_once(
    server: api_server.Server, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("old\n")
    c = client(server, token_file=str(token))
    server.reply(200, {"metadata": {"name": "s"}})
    assert c.get_secret("ns", "s") is not None
    token.write_text("new-and-longer\n")
    server.reply(401, {"kind": "Status", "message": "Unauthorized"})
    server.reply(200, {"metadata": {"name": "s"}})
    assert c.get_secret("ns", "s") is not None
    auth = [s.headers["Authorization"] for s in server.seen]
    # The second call may already see the new file (its stamp changed), or only after the 401.
    assert auth[0] == "Bearer old"
    assert auth[-1] == "Bearer new-and-longer"
    server.reply(401, {"kind": "Status", "message": "Unauthorized"})
    server.reply(401, {"kind": "Status", "message": "Unauthorized"})
    with pytest.raises(kube.KubeError) as denied:
        c.get_secret("ns", "s")
    assert (denied.value.status, str(denied.value)) == (401, "HTTP 401: Unauthorized")


def test_a_static_token_gets_no_retry_after_a_401(server: api_server.Server) -> None:
    server.reply(401, {"kind": "Status", "message": "Unauthorized"})
    with pytest.raises(kube.KubeError):
        client(server, token="t").get_secret("ns", "s")
    assert len(server.seen) == 1


def test_basic_auth(server: api_server.Server) -> None:
    client(server, username="ann", password="pw:1").get_namespace("x")
    expected = "Basic " + base64.b64encode(b"ann:pw:1").decode()
    assert server.seen[0].headers["Authorization"] == expected


# -- TLS ---------------------------------------------------------------------------------------


def _server_tls(pki: pki_module.PKI, tmp_path: Path, *, client_ca: bool) -> ssl.SSLContext:
    cert = pki_module.write(tmp_path, "server.pem", pki.server.pem + pki.server.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert)
    if client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=pki.root.pem.decode())
    return context


def _kubeconfig(tmp_path: Path, cluster: dict[str, object], user: dict[str, object]) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_tls_with_client_certificate_data_from_a_kubeconfig(
    pki: pki_module.PKI, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    user_cert = pki_module.make_cert(
        "ann",
        issuer=pki.root,
        ca=False,
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=1),
    )
    with api_server.serving(_server_tls(pki, tmp_path, client_ca=True)) as server:
        path = _kubeconfig(
            tmp_path,
            {"server": server.url, "certificate-authority-data": _b64(pki.root.pem)},
            {
                "client-certificate-data": _b64(user_cert.pem),
                "client-key-data": _b64(user_cert.key_pem),
            },
        )
        c = kube.Client(kubeconfig.load(path))
        server.reply(200, {"metadata": {"name": "s"}})
        assert c.get_secret("ns", "s") == {"metadata": {"name": "s"}}
        assert server.seen[0].client_cn == "ann"
        # One half as data, wrapped over lines, the other as a file (client-go takes both).
        key = tmp_path / "ann.key"
        key.write_bytes(user_cert.key_pem)
        wrapped = _b64(user_cert.pem)
        wrapped = "\n".join(wrapped[i : i + 64] for i in range(0, len(wrapped), 64))
        path = _kubeconfig(
            tmp_path,
            {"server": server.url, "certificate-authority-data": _b64(pki.root.pem)},
            {"client-certificate-data": wrapped, "client-key": str(key)},
        )
        mixed = kube.Client(kubeconfig.load(path))
        server.reply(200, {"metadata": {"name": "s"}})
        assert mixed.get_secret("ns", "s") == {"metadata": {"name": "s"}}
        assert server.seen[1].client_cn == "ann"
        assert "Authorization" not in server.seen[0].headers


def test_a_server_certificate_from_another_ca_is_refused(
    pki: pki_module.PKI, tmp_path: Path
) -> None:
    with api_server.serving(_server_tls(pki, tmp_path, client_ca=False)) as server:
        ca = pki_module.write(tmp_path, "other.pem", pki.other_root.pem)
        c = kube.Client(kubeconfig.Connection(server.url, ca_file=str(ca), token="t"))
        with pytest.raises(kube.KubeError) as refused:
            c.get_secret("ns", "s")
        assert refused.value.status == 0
        assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
        assert server.seen == []
        # insecure-skip-tls-verify: the same server is accepted.
        insecure = kube.Client(kubeconfig.Connection(server.url, insecure=True, token="t"))
        with pytest.warns(urllib3.exceptions.InsecureRequestWarning):
            assert insecure.get_secret("ns", "s") == {}


def test_a_server_url_with_a_path(server: api_server.Server) -> None:
    c = kube.Client(kubeconfig.Connection(server.url + "/k8s/clusters/c-1/"))
    c.get_namespace("x")
    assert server.seen[0].path == "/k8s/clusters/c-1/api/v1/namespaces/x"


def test_a_proxy_url_gets_the_whole_url(server: api_server.Server) -> None:
    # The local server plays the proxy: a plain-HTTP request through a proxy names the
    # absolute URL in its request line.
    conn = kubeconfig.Connection("http://api.example:6443/gw", proxy_url=server.url, token="t")
    kube.Client(conn).get_namespace("x")
    assert server.seen[0].path == "http://api.example:6443/gw/api/v1/namespaces/x"
    assert server.seen[0].headers["Authorization"] == "Bearer t"
    # A proxy URL's credentials go to the proxy (urllib3 does not send them by itself).
    auth = kubeconfig.Connection("http://api.example:6443", proxy_url=server.url.replace(
        "http://", "http://user:pa55@"), token="t")  # fmt: skip
    kube.Client(auth).get_namespace("x")
    headers = {k.lower(): v for k, v in server.seen[1].headers.items()}
    assert headers["proxy-authorization"] == "Basic dXNlcjpwYTU1"
    socks = kubeconfig.Connection("http://api.example:6443", proxy_url="socks5://p:1080")
    with pytest.raises(kube.KubeError, match="only http"):
        kube.Client(socks).get_namespace("x")


def test_a_malformed_server_url_is_a_kube_error_not_a_crash() -> None:
    c = kube.Client(kubeconfig.Connection("https://[::1", token="t"))
    with pytest.raises(kube.KubeError) as info:
        c.get_namespace("x")
    assert info.value.status == 0
