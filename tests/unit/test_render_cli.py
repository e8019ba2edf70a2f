"""`cobrowse-tls render`: inputs, outputs, and exit status 2 with nothing written on bad input."""

from __future__ import annotations

import base64
import io
import os
import pathlib
import stat
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jks
import pytest
import yaml

import pki as pki_module
from cobrowse_tls import render_cli
from cobrowse_tls.api import models
from cobrowse_tls.core import certs, render
from unit.builders import Doc, config_map_doc, dump, secret_doc, tls_doc

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
PASSWORD = b"s3cret-Password"
PREFIX = "cobrowse-tls render: "

FILES_BY_PROVIDER = {
    "PEM": {"ca.pem", "security.cfg", "setenv.sh", "setenv.bat"},
    "JKS": {
        "ca.pem",
        "truststore.jks",
        "truststore-password",
        "security-options.cfg",
        "security.cfg",
        "setenv.sh",
        "setenv.bat",
    },
    "MSCAPI": {"ca.pem", "security.cfg", "setenv.sh", "setenv.bat"},
    "Disabled": {"security.cfg", "setenv.sh", "setenv.bat"},
}


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = render_cli.main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def write(path: pathlib.Path, *docs: Doc) -> pathlib.Path:
    path.write_text(dump(*docs))
    return path


def standard(pki: pki_module.PKI, provider: str = "PEM", **spec: Any) -> list[Doc]:
    return [
        secret_doc("genesys-ca", {"ca.crt": pki_module.pem(pki.root)}),
        secret_doc("jks-password", {"password": PASSWORD}),
        tls_doc(provider, **spec),
    ]


def snapshot(directory: pathlib.Path) -> dict[str, tuple[bytes, int]]:
    """Every entry below ``directory`` (names, bytes, modes): to prove nothing changed."""
    return {
        str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mode)
        for p in sorted(directory.rglob("*"))
    }


# ---- good inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_examples_render_to_manifests(
    example: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(["-f", str(example)], capsys)
    assert (code, err) == (0, "")
    docs = list(yaml.safe_load_all(out))
    cr = next(d for d in yaml.safe_load_all(example.read_text()) if d["kind"] == "CobrowseTLS")
    kinds = ["Secret", "ConfigMap"]
    if cr["spec"]["provider"] == "MSCAPI":
        kinds.append("DaemonSet")  # the Windows agent
    assert [d["kind"] for d in docs] == kinds
    assert docs[1]["metadata"]["name"] == f"{cr['metadata']['name']}-security"
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "cobrowse-tls-operator"
        assert doc["metadata"]["annotations"]["tls.cobrowse.io/input-hash"].startswith("sha256:")


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_examples_render_to_files(
    example: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    provider = yaml.safe_load_all(example.read_text())
    kind_doc = next(d for d in provider if d and d.get("kind") == "CobrowseTLS")
    expected = FILES_BY_PROVIDER[kind_doc["spec"]["provider"]]
    if kind_doc["spec"].get("connections"):
        expected = expected | {"connections.yaml"}
    out_dir = tmp_path / "out"
    code, out, err = run_main(["-f", str(example), "--output-dir", str(out_dir)], capsys)
    assert (code, err) == (0, "")
    assert {p.name for p in out_dir.iterdir()} == expected
    assert sorted(out.splitlines()) == sorted(str(out_dir / n) for n in expected)
    assert not [p for p in tmp_path.iterdir() if p.name != "out"]  # no scratch left behind


def test_console_command_writes_files(tmp_path: pathlib.Path) -> None:
    out_dir = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    result = subprocess.run(
        [sys.executable, "-m", "cobrowse_tls.cli", "render", "-f", "examples/jks.yaml",
         "--output-dir", str(out_dir)],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    assert {p.name for p in out_dir.iterdir()} == FILES_BY_PROVIDER["JKS"] | {"connections.yaml"}
    for name in ("truststore.jks", "truststore-password", "security-options.cfg"):
        assert stat.S_IMODE((out_dir / name).stat().st_mode) == 0o600
    for name in ("ca.pem", "security.cfg", "setenv.sh", "setenv.bat", "connections.yaml"):
        assert stat.S_IMODE((out_dir / name).stat().st_mode) == 0o644
    password = (out_dir / "truststore-password").read_text()
    assert password == "change-me-to-a-long-random-string"
    store = jks.KeyStore.loads((out_dir / "truststore.jks").read_bytes(), password)
    assert sorted(store.certs) == ["root", "root-2"]
    options = (out_dir / "security-options.cfg").read_text()
    assert options.endswith(f"\ntruststore-password={password}\n")
    assert yaml.safe_load((out_dir / "connections.yaml").read_text()) == {
        "release": "8.5.003+",
        "application": {"type": "Cluster", "name": "CB_Cluster"},
        "connections": [
            {"server": "MessageServer", "host": "msgserver.genesys.svc", "securePort": 9021}
        ],
    }
    for name in ("ca.pem", "security.cfg", "setenv.sh", "setenv.bat", "connections.yaml"):
        assert password not in (out_dir / name).read_text(), name


def test_console_command_bad_input(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    result = subprocess.run(
        [sys.executable, "-m", "cobrowse_tls.cli", "render", "-f", "-", "--output-dir",
         str(tmp_path / "out")],
        input=dump(tls_doc("PEM")), env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        f"{PREFIX}secret genesys-ca key ca.crt: secret 'genesys-ca' not found (SourceNotFound)\n"
    )
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_same_bytes_as_the_operator_renderer(
    pki: pki_module.PKI, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = standard(pki, "JKS")
    code, _, _ = run_main(["-f", str(write(tmp_path / "in.yaml", *docs)), "--output-dir",
                           str(tmp_path / "out")], capsys)  # fmt: skip
    assert code == 0
    tls = models.parse(docs[-1])
    found = render.ObjectData(
        secrets={
            "genesys-ca": {"ca.crt": pki_module.pem(pki.root)},
            "jks-password": {"password": PASSWORD},
        },
        config_maps={},
    )
    expected = render.render(
        tls,
        render.resolve_sources(tls, found),
        password=render.resolve_password(tls, found),
        now=datetime.now(UTC),
    )
    written = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert written == expected.files


def test_manifests_printed_without_output_dir(
    pki: pki_module.PKI,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connections = [{"name": "MessageServer", "host": "msgserver.genesys.svc", "port": 9021}]
    source = write(tmp_path / "in.yaml", *standard(pki, "JKS", connections=connections))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["-f", str(source)], capsys)
    assert (code, err) == (0, "")
    secret, config_map = yaml.safe_load_all(out)
    assert secret["metadata"]["name"] == "cobrowse-truststore"
    assert secret["metadata"]["namespace"] == "genesys"
    # No truststore Secret among the inputs: no hash key (the CLI never draws one).
    assert set(secret["data"]) == {
        "ca.pem",
        "truststore.jks",
        "truststore-password",
        "security-options.cfg",
    }
    assert base64.b64decode(secret["data"]["truststore-password"]) == PASSWORD
    options = base64.b64decode(secret["data"]["security-options.cfg"])
    assert b"\ntruststore-password=" + PASSWORD + b"\n" in options
    # The ConfigMap, connections.yaml included, holds no password.
    assert set(config_map["data"]) == {
        "security.cfg",
        "setenv.sh",
        "setenv.bat",
        "connections.yaml",
    }
    assert PASSWORD.decode() not in yaml.safe_dump(config_map)
    assert "truststore-password=" not in yaml.safe_dump(config_map)
    assert [p.name for p in tmp_path.iterdir()] == ["in.yaml"]


def test_several_files_and_stdin(
    pki: pki_module.PKI,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = standard(pki, "JKS")
    one = write(tmp_path / "one.yaml", *docs)
    code, reference, _ = run_main(["-f", str(one)], capsys)
    assert code == 0
    secrets_file = write(tmp_path / "secrets.yaml", docs[0], docs[1])
    monkeypatch.setattr(sys, "stdin", io.StringIO(dump(docs[2])))
    code, out, err = run_main(["-f", str(secrets_file), "-f", "-"], capsys)
    assert (code, err) == (0, "")
    assert out == reference


def test_multi_document_stream_with_other_kinds_and_empty_documents(
    pki: pki_module.PKI, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = standard(pki, "PEM")
    text = (
        "---\n# comment only\n---\n"
        + dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "genesys"}})
        + "---\n"
        + dump(*docs)
        + "---\n"
        + dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "cobrowse"}})
    )
    (tmp_path / "in.yaml").write_text(text)
    code, out, err = run_main(["-f", str(tmp_path / "in.yaml")], capsys)
    assert (code, err) == (0, "")
    assert [d["kind"] for d in yaml.safe_load_all(out)] == ["Secret", "ConfigMap"]


def test_data_and_string_data_are_equivalent(
    pki: pki_module.PKI, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = []
    for string_data in (False, True):
        docs = [
            secret_doc("genesys-ca", {"ca.crt": pki_module.pem(pki.root)}, string_data=string_data),
            secret_doc("jks-password", {"password": PASSWORD}, string_data=string_data),
            tls_doc("JKS"),
        ]
        code, out, _ = run_main(["-f", str(write(tmp_path / f"{string_data}.yaml", *docs))], capsys)
        assert code == 0
        outputs.append(out)
    assert outputs[0] == outputs[1]


def test_string_data_wins_over_data(
    pki: pki_module.PKI, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = secret_doc("genesys-ca", {"ca.crt": b"garbage"})
    secret["stringData"] = {"ca.crt": pki_module.pem(pki.root).decode()}
    docs = [secret, tls_doc("PEM")]
    out_dir = tmp_path / "out"
    code, _, err = run_main(
        ["-f", str(write(tmp_path / "in.yaml", *docs)), "--output-dir", str(out_dir)], capsys
    )
    assert (code, err) == (0, "")
    assert pki.root.pem in (out_dir / "ca.pem").read_bytes()


def test_config_map_binary_data_and_pkcs12(
    pki: pki_module.PKI, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cm = config_map_doc("roots", {})
    cm["binaryData"] = {"ca.der": base64.b64encode(pki.other_root.der).decode()}
    pfx = secret_doc(
        "pfx",
        {
            "ca.pfx": pki_module.pkcs12_modern(pki.root, pki.intermediate),
            "pass": pki_module.PASSWORD,
        },
    )
    sources = [
        {"configMap": {"name": "roots", "key": "ca.der"}},
        {"secret": {"name": "pfx", "key": "ca.pfx", "passwordKey": "pass"}},
    ]
    docs = [cm, pfx, tls_doc("PEM", trustedCA={"sources": sources})]
    out_dir = tmp_path / "out"
    code, _, err = run_main(
        ["-f", str(write(tmp_path / "in.yaml", *docs)), "--output-dir", str(out_dir)], capsys
    )
    assert (code, err) == (0, "")
    bundle = (out_dir / "ca.pem").read_text()
    assert [line.split()[-1] for line in bundle.splitlines() if line.startswith("# sha256:")] == [
        pki.other_root.sha256,
        pki.root.sha256,
        pki.intermediate.sha256,
    ]
    assert "PRIVATE KEY" not in bundle


def test_jks_password_kept_from_existing_truststore_secret(
    pki: pki_module.PKI, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The truststore Secret as `kubectl get -o yaml` exports it: with the operator's labels.
    kept = secret_doc("cobrowse-truststore", {"truststore-password": b"kept-password"})
    kept["metadata"]["labels"] = {
        "app.kubernetes.io/managed-by": "cobrowse-tls-operator",
        "tls.cobrowse.io/owner": "cobrowse",
    }
    docs = [
        secret_doc("genesys-ca", {"ca.crt": pki_module.pem(pki.root)}),
        kept,
        tls_doc("JKS", truststore={}),
    ]
    out_dir = tmp_path / "out"
    code, _, err = run_main(
        ["-f", str(write(tmp_path / "in.yaml", *docs)), "--output-dir", str(out_dir)], capsys
    )
    assert (code, err) == (0, "")
    assert (out_dir / "truststore-password").read_bytes() == b"kept-password"


def test_hash_key_comes_only_from_the_given_truststore_secret(
    pki: pki_module.PKI, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same inputs, same bytes: the CLI never draws a key; it reuses the operator's."""
    plain = write(tmp_path / "plain.yaml", *standard(pki, "JKS"))
    first = run_main(["-f", str(plain)], capsys)
    assert first == run_main(["-f", str(plain)], capsys)
    secret, config_map = yaml.safe_load_all(first[1])
    assert render.HASH_KEY not in secret["data"]
    # Without the key the password is left out of the published hash: it still follows the
    # spec and the CAs, and offers nothing to test a password guess against.
    tls = models.parse(standard(pki, "JKS")[-1])
    annotation = secret["metadata"]["annotations"]["tls.cobrowse.io/input-hash"]
    assert annotation == render.input_hash(tls, _fingerprint(secret), None, None)

    key = bytes(range(100, 132))
    kept = secret_doc("cobrowse-truststore", {render.HASH_KEY: key})
    kept["metadata"]["labels"] = {  # the operator's output, as `kubectl get -o yaml` gives it
        "app.kubernetes.io/managed-by": "cobrowse-tls-operator",
        "tls.cobrowse.io/owner": "cobrowse",
    }
    with_key = write(tmp_path / "with-key.yaml", *standard(pki, "JKS"), kept)
    code, out, err = run_main(["-f", str(with_key)], capsys)
    assert (code, err) == (0, "")
    assert (code, out, err) == run_main(["-f", str(with_key)], capsys)
    secret, config_map = yaml.safe_load_all(out)
    assert base64.b64decode(secret["data"][render.HASH_KEY]) == key
    annotation = secret["metadata"]["annotations"]["tls.cobrowse.io/input-hash"]
    assert annotation == render.input_hash(tls, _fingerprint(secret), PASSWORD.decode(), key)
    # The ConfigMap's hash covers its own data only, key or not.
    assert config_map["metadata"]["annotations"]["tls.cobrowse.io/input-hash"] == (
        render.config_map_hash(config_map["data"])
    )


def _fingerprint(secret: Doc) -> str:
    pem = base64.b64decode(secret["data"]["ca.pem"])
    return certs.fingerprint(certs.parse_source(pem, source="ca.pem"))


def test_jks_password_generated_with_a_warning(
    pki: pki_module.PKI, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = [
        secret_doc("genesys-ca", {"ca.crt": pki_module.pem(pki.root)}),
        tls_doc("JKS", truststore={}),
    ]
    out_dir = tmp_path / "out"
    code, _, err = run_main(
        ["-f", str(write(tmp_path / "in.yaml", *docs)), "--output-dir", str(out_dir)], capsys
    )
    assert code == 0
    assert err.startswith(PREFIX + "generated a new truststore password")
    password = (out_dir / "truststore-password").read_text()
    assert len(password) >= 24
    jks.KeyStore.loads((out_dir / "truststore.jks").read_bytes(), password)


def test_rerender_replaces_files_of_another_provider(
    pki: pki_module.PKI, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    jks_in = write(tmp_path / "jks.yaml", *standard(pki, "JKS"))
    pem_in = write(tmp_path / "pem.yaml", *standard(pki, "PEM"))
    assert run_main(["-f", str(jks_in), "--output-dir", str(out_dir)], capsys)[0] == 0
    (out_dir / "notes.txt").write_text("mine")
    assert run_main(["-f", str(pem_in), "--output-dir", str(out_dir)], capsys)[0] == 0
    assert {p.name for p in out_dir.iterdir()} == FILES_BY_PROVIDER["PEM"] | {"notes.txt"}
    assert b"provider=PEM" in (out_dir / "security.cfg").read_bytes()


# ---- bad inputs ----------------------------------------------------------------------------

# Each case: the input text (from the test certificates) and the exact stderr line after the
# "cobrowse-tls render: " prefix. The input is read from stdin, so its label is <stdin>.
Case = Callable[[pki_module.PKI], str]


def _std(
    ca: Callable[[pki_module.PKI], bytes] | None = None, provider: str = "PEM", **spec: Any
) -> Case:
    def build(pki: pki_module.PKI) -> str:
        data = ca(pki) if ca else pki_module.pem(pki.root)
        return dump(
            secret_doc("genesys-ca", {"ca.crt": data}),
            secret_doc("jks-password", {"password": PASSWORD}),
            tls_doc(provider, **spec),
        )

    return build


def _docs(*docs: Doc) -> Case:
    return lambda pki: dump(*docs)


def _wrong_pkcs12_password(pki: pki_module.PKI) -> str:
    sources = [{"secret": {"name": "pfx", "key": "ca.pfx", "passwordKey": "pass"}}]
    return dump(
        secret_doc("pfx", {"ca.pfx": pki_module.pkcs12_modern(pki.root), "pass": b"not-it"}),
        tls_doc("PEM", trustedCA={"sources": sources}),
    )


def _pkcs12_without_password(pki: pki_module.PKI) -> str:
    sources = [{"secret": {"name": "pfx", "key": "ca.pfx"}}]
    return dump(
        secret_doc("pfx", {"ca.pfx": pki_module.pkcs12_modern(pki.root)}),
        tls_doc("PEM", trustedCA={"sources": sources}),
    )


def _truncated_pem(pki: pki_module.PKI) -> bytes:
    return pki_module.pem(pki.root)[:300]


def _bad_base64(pki: pki_module.PKI) -> str:
    return (
        "apiVersion: v1\nkind: Secret\nmetadata: {name: genesys-ca}\n"
        "data: {ca.crt: '!!not base64!!'}\n---\n" + dump(tls_doc("PEM"))
    )


def _garbage_yaml_text(pki: pki_module.PKI) -> str:
    return "apiVersion: v1\nkind: [Secret\n"


HOST_ERR = "must be an RFC 1123 host name or an IP address"
PATTERN_NAME = "String should match pattern '^[A-Za-z0-9_][A-Za-z0-9_.@ -]{0,254}$'"
PATTERN_MOUNT = "String should match pattern '^(/[A-Za-z0-9_.-]+)+$'"
PATTERN_WIN = "String should match pattern '^[A-Za-z]:(\\\\[A-Za-z0-9_. -]+)+$'"
SPEC = "<stdin>: CobrowseTLS spec"
CFG = {"host": "confserv", "port": 8889}

BAD_INPUTS: list[tuple[str, Case, str]] = [
    (
        "garbage bytes",
        _std(lambda p: b"\x00\x01\x02garbage\xff\xfe"),
        "secret genesys-ca key ca.crt: not PEM, DER or PKCS#12 data (InvalidCertificate)",
    ),
    (
        "garbage text",
        _std(lambda p: b"hello, I am not a certificate\n"),
        "secret genesys-ca key ca.crt: not PEM, DER or PKCS#12 data (InvalidCertificate)",
    ),
    (
        "truncated PEM",
        _std(_truncated_pem),
        "secret genesys-ca key ca.crt: PEM certificate block 1 has no END line"
        " (InvalidCertificate)",
    ),
    (
        "truncated DER",
        _std(lambda p: p.root.der[:200]),
        "secret genesys-ca key ca.crt: truncated DER or PKCS#12 data (200 of {der_length}"
        " bytes) (InvalidCertificate)",
    ),
    (
        "wrong PKCS#12 password",
        _wrong_pkcs12_password,
        "secret pfx key ca.pfx: wrong PKCS#12 password (WrongPassword)",
    ),
    (
        "PKCS#12 without passwordKey",
        _pkcs12_without_password,
        "secret pfx key ca.pfx: PKCS#12 data is password-protected and no password was given"
        " (WrongPassword)",
    ),
    (
        "leaf certificate",
        _std(lambda p: pki_module.pem(p.server)),
        'secret genesys-ca key ca.crt: certificate "CN=localhost,O=cobrowse-tls tests" is not a'
        " certificate authority (no basicConstraints CA=true); set allowNonCA to trust it anyway"
        " (NotACertificateAuthority)",
    ),
    (
        "only expired CAs",
        _std(lambda p: pki_module.pem(p.expired_ca, p.expired_ca2)),
        "trustedCA.sources: all 2 certificates have expired (NoCertificates)",
    ),
    (
        "empty source",
        _std(lambda p: b"\n"),
        "secret genesys-ca key ca.crt: empty, no certificate (NoCertificates)",
    ),
    (
        "missing Secret",
        _docs(tls_doc("PEM")),
        "secret genesys-ca key ca.crt: secret 'genesys-ca' not found (SourceNotFound)",
    ),
    (
        "missing key",
        _docs(secret_doc("genesys-ca", {"other.crt": b"x"}), tls_doc("PEM")),
        "secret genesys-ca key ca.crt: secret 'genesys-ca' has no key 'ca.crt' (SourceNotFound)",
    ),
    (
        "missing ConfigMap",
        _docs(
            tls_doc(
                "PEM", trustedCA={"sources": [{"configMap": {"name": "roots", "key": "b.pem"}}]}
            )
        ),
        "configMap roots key b.pem: configMap 'roots' not found (SourceNotFound)",
    ),
    (
        "missing JKS password Secret",
        _docs(secret_doc("genesys-ca", {"ca.crt": b"x"}), tls_doc("JKS")),
        "spec.truststore.passwordSecretRef: secret 'jks-password' not found (PasswordNotFound)",
    ),
    (
        "missing JKS password key",
        lambda p: dump(
            secret_doc("genesys-ca", {"ca.crt": pki_module.pem(p.root)}),
            secret_doc("jks-password", {"pw": b"x"}),
            tls_doc("JKS"),
        ),
        "spec.truststore.passwordSecretRef: secret 'jks-password' has no key 'password'"
        " (PasswordNotFound)",
    ),
    (
        "empty JKS password",
        lambda p: dump(
            secret_doc("genesys-ca", {"ca.crt": pki_module.pem(p.root)}),
            secret_doc("jks-password", {"password": b"\n"}),
            tls_doc("JKS"),
        ),
        "spec.truststore.passwordSecretRef: the password is empty (InvalidPassword)",
    ),
    (
        "bad host",
        _std(configServer={"host": "conf_serv", "port": 8889}),
        f"{SPEC}.configServer.host: 'conf_serv' {HOST_ERR}",
    ),
    (
        "bad connection host",
        _std(connections=[{"name": "MS", "host": "-ms", "port": 9021}]),
        f"{SPEC}.connections[0].host: '-ms' {HOST_ERR}",
    ),
    (
        "port 0",
        _std(configServer={"host": "confserv", "port": 0}),
        f"{SPEC}.configServer.port: Input should be greater than or equal to 1",
    ),
    (
        "port 65536",
        _std(configServer={"host": "confserv", "port": 65536}),
        f"{SPEC}.configServer.port: Input should be less than or equal to 65535",
    ),
    (
        "backupPort out of range",
        _std(configServer={**CFG, "backupHost": "b", "backupPort": 70000}),
        f"{SPEC}.configServer.backupPort: Input should be less than or equal to 65535",
    ),
    (
        "unknown provider",
        _std(provider="PKCS12"),
        f"{SPEC}.provider: Input should be 'PEM', 'JKS', 'MSCAPI' or 'Disabled'",
    ),
    (
        "passwordSecretRef with PEM",
        _std(truststore={"passwordSecretRef": {"name": "jks-password", "key": "password"}}),
        f"{SPEC}: truststore.passwordSecretRef is only valid with provider JKS",
    ),
    (
        "solutionControlServer with Cluster",
        _std(application={"type": "Cluster", "name": "CB", "solutionControlServer": True}),
        f"{SPEC}.application: solutionControlServer: with Solution Control Server, Co-browse"
        " 8.5.003 or later (application.version not set) reads the [security] options from the"
        " Node object, not the Cluster object",
    ),
    (
        "security options on an object the release does not read",
        _std(application={"type": "Cluster", "name": "CB", "version": "8.5.002"}),
        f"{SPEC}.application: Co-browse 8.5.002 does not read the [security] options from the"
        " Cluster object (Server: 8.5.000; Node: 8.5.001+; Cluster: 8.5.003+)",
    ),
    (
        "secret and inline in one source",
        _std(
            trustedCA={
                "sources": [{"secret": {"name": "genesys-ca", "key": "ca.crt"}, "inline": "x"}]
            }
        ),
        f"{SPEC}.trustedCA.sources[0]: each source sets exactly one of secret, configMap or inline",
    ),
    (
        "secret and configMap in one source",
        _std(
            trustedCA={
                "sources": [
                    {"inline": "x"},
                    {"secret": {"name": "a", "key": "k"}, "configMap": {"name": "b", "key": "k"}},
                ]
            }
        ),
        f"{SPEC}.trustedCA.sources[1]: each source sets exactly one of secret, configMap or inline",
    ),
    (
        "windows without MSCAPI",
        _std(windows={}),
        f"{SPEC}: windows is only valid with provider MSCAPI",
    ),
    (
        "backupHost without backupPort",
        _std(configServer={**CFG, "backupHost": "b"}),
        f"{SPEC}.configServer: backupHost and backupPort go together",
    ),
    (
        "injection in application.name",
        _std(application={"type": "Node", "name": "CB'; touch /tmp/pwned; '"}),
        f"{SPEC}.application.name: {PATTERN_NAME}",
    ),
    (
        "cmd injection in application.name",
        _std(application={"type": "Node", "name": 'CB" & calc & "'}),
        f"{SPEC}.application.name: {PATTERN_NAME}",
    ),
    (
        "injection in configServer.host",
        _std(configServer={"host": "$(touch /tmp/pwned)", "port": 8889}),
        f"{SPEC}.configServer.host: '$(touch /tmp/pwned)' {HOST_ERR}",
    ),
    (
        "injection in configServer.backupHost",
        _std(configServer={**CFG, "backupHost": "b`id`", "backupPort": 8889}),
        f"{SPEC}.configServer.backupHost: 'b`id`' {HOST_ERR}",
    ),
    (
        "newline in configServer.host",
        _std(configServer={"host": "confserv\ntouch /tmp/pwned", "port": 8889}),
        f"{SPEC}.configServer.host: 'confserv\\ntouch /tmp/pwned' {HOST_ERR}",
    ),
    (
        "injection in truststore.mountPath",
        _std(truststore={"mountPath": "/opt/x';touch /tmp/pwned;'"}),
        f"{SPEC}.truststore.mountPath: {PATTERN_MOUNT}",
    ),
    (
        "injection in truststore.windowsMountPath",
        _std(truststore={"windowsMountPath": "C:\\x%COMSPEC%"}),
        f"{SPEC}.truststore.windowsMountPath: {PATTERN_WIN}",
    ),
    (
        "unknown field",
        _std(trustedCa={"sources": []}),
        f"{SPEC}.trustedCa: Extra inputs are not permitted",
    ),
    (
        "invalid YAML",
        _garbage_yaml_text,
        "<stdin>: line 3: invalid YAML: did not find expected ',' or ']'",
    ),
    (
        "a document that is not an object",
        lambda p: "- a\n- b\n",
        "<stdin>: document 1 is not a Kubernetes object",
    ),
    (
        "no CobrowseTLS",
        _docs(secret_doc("genesys-ca", {"ca.crt": b"x"})),
        "expected exactly one CobrowseTLS in the input, found 0",
    ),
    (
        "two CobrowseTLS",
        _docs(tls_doc("PEM"), tls_doc("JKS")),
        "expected exactly one CobrowseTLS in the input, found 2",
    ),
    ("bad base64", _bad_base64, "<stdin>: secret genesys-ca key ca.crt: data is not base64"),
    (
        "Secret without a name",
        _docs({"apiVersion": "v1", "kind": "Secret", "metadata": {}}, tls_doc("PEM")),
        "<stdin>: a Secret without metadata.name",
    ),
]


def _expected(pki: pki_module.PKI, message: str) -> str:
    # The truncated-DER case names the certificate's full length (it varies with the key).
    message = message.replace("{der_length}", str(len(pki.root.der)))
    return PREFIX + message + "\n"


def _run_bad(
    pki: pki_module.PKI,
    build: Case,
    out_dir: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(build(pki)))
    return run_main(["-f", "-", "--output-dir", str(out_dir)], capsys)


def test_the_table_is_big_enough() -> None:
    assert len(BAD_INPUTS) >= 15
    assert len({name for name, _, _ in BAD_INPUTS}) == len(BAD_INPUTS)


@pytest.mark.parametrize(("name", "build", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_new_output_dir(
    pki: pki_module.PKI,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    build: Case,
    message: str,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    code, out, err = _run_bad(pki, build, work / "out", capsys, monkeypatch)
    assert code == 2
    assert err == _expected(pki, message)
    assert err.count("\n") == 1
    assert out == ""
    assert list(work.iterdir()) == []  # no output dir, no scratch dir


@pytest.mark.parametrize(("name", "build", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_existing_output_dir_untouched(
    pki: pki_module.PKI,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    build: Case,
    message: str,
) -> None:
    out_dir = tmp_path / "out"
    good = write(tmp_path / "good.yaml", *standard(pki, "JKS"))
    assert run_main(["-f", str(good), "--output-dir", str(out_dir)], capsys)[0] == 0
    before = snapshot(tmp_path)
    code, out, err = _run_bad(pki, build, out_dir, capsys, monkeypatch)
    assert (code, out) == (2, "")
    assert err == _expected(pki, message)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("name", "build", "message"), BAD_INPUTS[:3], ids=[c[0] for c in BAD_INPUTS[:3]]
)
def test_bad_input_without_output_dir_prints_nothing(
    pki: pki_module.PKI,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    build: Case,
    message: str,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(build(pki)))
    code, out, err = run_main(["-f", "-"], capsys)
    assert (code, out, err) == (2, "", _expected(pki, message))


def test_unreadable_and_non_utf8_files(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.yaml"
    code, _, err = run_main(["-f", str(missing), "--output-dir", str(tmp_path / "out")], capsys)
    assert (code, err) == (2, f"{PREFIX}{missing}: cannot read: No such file or directory\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    code, _, err = run_main(["-f", str(binary), "--output-dir", str(tmp_path / "out")], capsys)
    assert (code, err) == (2, f"{PREFIX}{binary}: not UTF-8 text\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["binary.yaml"]


def test_output_dir_that_is_a_file(
    pki: pki_module.PKI, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out"
    target.write_text("a file")
    source = write(tmp_path / "in.yaml", *standard(pki, "PEM"))
    code, _, err = run_main(["-f", str(source), "--output-dir", str(target)], capsys)
    assert code == 2
    assert err == f"{PREFIX}{target}: not a directory\n"
    assert target.read_text() == "a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.yaml", "out"]


def test_missing_file_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main([], capsys)
    assert code == 2
    assert "-f/--filename" in err


def test_readme_example_matches_the_real_output(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (REPO / "README.md").read_text()
    assert "## Offline rendering: cobrowse-tls render" in readme
    out_dir = tmp_path / "out"
    code, _, _ = run_main(
        ["-f", str(REPO / "examples/pem.yaml"), "--output-dir", str(out_dir)], capsys
    )
    assert code == 0
    for name in ("security.cfg", "setenv.sh", "setenv.bat", "connections.yaml"):
        shown = (out_dir / name).read_text().replace("\r\n", "\n")
        assert f"$ cat out/{name}\n{shown}" in readme, f"README's {name} is out of date"
    jks_dir = tmp_path / "jks"
    code, _, _ = run_main(
        ["-f", str(REPO / "examples/jks.yaml"), "--output-dir", str(jks_dir)], capsys
    )
    assert code == 0
    shown = (jks_dir / "security-options.cfg").read_text()
    assert f"$ cat out/security-options.cfg\n{shown}" in readme, "README's options file is stale"
