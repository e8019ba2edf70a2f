"""`cobrowse-tls render` against hostile input (issue 13): one line, exit 2, nothing written.

Each bad case runs twice, into a new DIR (never created) and over a DIR holding a good render
(unchanged to the byte and mode); the good cases show that what the API server accepts,
render accepts too.
"""

from __future__ import annotations

import base64
import io
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import yaml

import pki as pki_module
from cobrowse_tls import render_cli, render_input
from cobrowse_tls.core import certs, limits
from unit.builders import Doc, config_map_doc, dump, secret_doc, tls_doc

PREFIX = "cobrowse-tls render: "
PASSWORD = b"s3cret-Password"
OWNER_LABELS = {
    "app.kubernetes.io/managed-by": "cobrowse-tls-operator",
    "tls.cobrowse.io/owner": "cobrowse",
}
Build = Callable[[pki_module.PKI], str]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = render_cli.main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(directory: pathlib.Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mode)
        for p in sorted(directory.rglob("*"))
    }


def ca_secret(pki: pki_module.PKI) -> Doc:
    return secret_doc("genesys-ca", {"ca.crt": pki_module.pem(pki.root)})


def docs(*items: Doc | Callable[[pki_module.PKI], Doc]) -> Build:
    return lambda pki: dump(*(i(pki) if callable(i) else i for i in items))


def text(*parts: str | Callable[[pki_module.PKI], str]) -> Build:
    """Raw YAML text (for what a dict cannot express: aliases, duplicate keys, nulls)."""
    return lambda pki: "".join(p(pki) if callable(p) else p for p in parts)


def pem_tls(pki: pki_module.PKI) -> str:
    return dump(ca_secret(pki), tls_doc("PEM"))


def labelled(doc: Doc) -> Doc:
    doc["metadata"]["labels"] = dict(OWNER_LABELS)
    return doc


def pfx_with_password(password: bytes) -> Build:
    def build(pki: pki_module.PKI) -> str:
        sources = [{"secret": {"name": "pfx", "key": "ca.pfx", "passwordKey": "pass"}}]
        return dump(
            secret_doc("pfx", {"ca.pfx": pki_module.pkcs12_modern(pki.root), "pass": password}),
            tls_doc("PEM", trustedCA={"sources": sources}),
        )

    return build


def alias_bomb(levels: int) -> str:
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata: {name: unrelated}", "x:"]
    lines.append("  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]")
    for i in range(1, levels):
        lines.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n---\n"


def nested(depth: int) -> str:
    return (
        "apiVersion: v1\nkind: List\nmetadata: {}\nitems: " + "[" * depth + "]" * depth + "\n---\n"
    )


SPEC = "<stdin>: CobrowseTLS spec"
SOURCE0 = "spec.trustedCA.sources[0]"
CONFLICT_HINT = "it would be overwritten; rename the source or set spec.truststore.secretName"

BAD: list[tuple[str, Build, str]] = [
    # 1. outputs over inputs
    (
        "source Secret is the truststore Secret",
        docs(
            labelled(secret_doc("cobrowse-truststore", {"ca.crt": b"x"})),
            tls_doc(
                "PEM",
                trustedCA={
                    "sources": [{"secret": {"name": "cobrowse-truststore", "key": "ca.crt"}}]
                },
            ),
        ),
        f"{SOURCE0}: secret 'cobrowse-truststore' is this CobrowseTLS's truststore Secret:"
        f" {CONFLICT_HINT} (OutputConflict)",
    ),
    (
        "source ConfigMap is the security ConfigMap",
        docs(
            tls_doc(
                "PEM",
                trustedCA={"sources": [{"configMap": {"name": "cobrowse-security", "key": "a"}}]},
            )
        ),
        f"{SOURCE0}: configMap 'cobrowse-security' is this CobrowseTLS's security ConfigMap:"
        f" {CONFLICT_HINT} (OutputConflict)",
    ),
    (
        "passwordSecretRef is the truststore Secret",
        docs(
            ca_secret,
            tls_doc(
                "JKS",
                truststore={"passwordSecretRef": {"name": "cobrowse-truststore", "key": "p"}},
            ),
        ),
        "spec.truststore.passwordSecretRef: secret 'cobrowse-truststore' is this CobrowseTLS's"
        " truststore Secret: it would be overwritten; name another Secret or set"
        " spec.truststore.secretName (OutputConflict)",
    ),
    (
        "someone else's Secret with the truststore name",
        docs(ca_secret, secret_doc("cobrowse-truststore", {"x": b"y"}), tls_doc("PEM")),
        "<stdin>: secret cobrowse-truststore exists and is not managed by this CobrowseTLS: its"
        " output would overwrite it; rename it or set spec.truststore.secretName (OutputConflict)",
    ),
    (
        "someone else's ConfigMap with the security name",
        docs(ca_secret, config_map_doc("cobrowse-security", {"x": "y"}), tls_doc("PEM")),
        "<stdin>: configMap cobrowse-security exists and is not managed by this CobrowseTLS: its"
        " output would overwrite it; rename it or set spec.truststore.secretName (OutputConflict)",
    ),
    # 2. limits
    (
        "alias bomb in an unreferenced object",
        text(alias_bomb(10), pem_tls),
        "<stdin>: line 10: the document holds more than 200000 nodes (aliases expanded)",
    ),
    (
        "nested deeper than the limit",
        text(nested(limits.NESTING_DEPTH + 1), pem_tls),
        f"<stdin>: line 4: nested deeper than {limits.NESTING_DEPTH} levels",
    ),
    (
        "nested deeper than libyaml goes",
        text(nested(5000), pem_tls),
        "<stdin>: line 4: invalid YAML: exceeded maximum nesting depth",
    ),
    (
        "a document larger than the API server takes",
        text("apiVersion: v1\nkind: List\nmetadata: {}\nx: ", "a" * (3 * 1024 * 1024 + 1), "\n"),
        "<stdin>: line 4: the document holds more than 3145728 bytes (aliases expanded)",
    ),
    (
        "a Secret larger than the API server takes",
        docs(secret_doc("genesys-ca", {"ca.crt": b"x" * (1024 * 1024 + 1)}), tls_doc("PEM")),
        "<stdin>: secret genesys-ca: 1048577 bytes of data, more than the API server's limit"
        " of 1048576",
    ),
    (
        "an inline source larger than the limit",
        docs(tls_doc("PEM", trustedCA={"sources": [{"inline": "x" * 1048575 + "é"}]})),
        "spec.trustedCA.sources[0].inline: 1048577 bytes, more than the limit of 1048576"
        " (InputTooLarge)",
    ),
    (
        "more certificates in one source than the limit",
        lambda pki: dump(
            secret_doc("genesys-ca", {"ca.crt": pki_module.pem(pki.root) * 1001}),
            tls_doc("PEM"),
        ),
        "secret genesys-ca key ca.crt: more than 1000 PEM blocks in one source (InputTooLarge)",
    ),
    # 3. no tracebacks
    (
        "PKCS#12 password that is not UTF-8",
        pfx_with_password(b"\xff\xfe-not-utf8"),
        "secret pfx key ca.pfx: the PKCS#12 password is not UTF-8 text (InvalidPassword)",
    ),
    (
        "metadata that is a string",
        text("apiVersion: v1\nkind: Secret\nmetadata: foo\n---\n", pem_tls),
        "<stdin>: a Secret: metadata is not a mapping",
    ),
    (
        "CobrowseTLS metadata that is a string",
        text(
            lambda p: dump(ca_secret(p)),
            "---\napiVersion: tls.cobrowse.io/v1alpha1\nkind: CobrowseTLS\nmetadata: foo\n",
        ),
        "<stdin>: a CobrowseTLS: metadata is not a mapping",
    ),
    (
        "Secret data that is a list",
        text("apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ndata: [x]\n---\n", pem_tls),
        "<stdin>: secret a: data is not a mapping",
    ),
    (
        "ConfigMap data that is a string",
        text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: foo\n---\n", pem_tls),
        "<stdin>: configMap a: data is not a mapping",
    ),
    (
        "a document without apiVersion",
        text("kind: Secret\nmetadata: {name: a}\n---\n", pem_tls),
        "<stdin>: document 1: apiVersion is not set",
    ),
    # 7. what the API server refuses
    (
        "stringData value that is a list",
        text(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: jks-password}\n"
            "stringData: {password: [a, b]}\n---\n",
            lambda p: dump(ca_secret(p), tls_doc("JKS")),
        ),
        "<stdin>: secret jks-password: stringData.password is a list, not a string",
    ),
    (
        "ConfigMap value that is a number",
        text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: 1e3}\n---\n", pem_tls
        ),
        "<stdin>: configMap a: data.k is a number, not a string",
    ),
    (
        "null stringData password is empty",
        text(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: jks-password}\n"
            "stringData: {password: }\n---\n",
            lambda p: dump(ca_secret(p), tls_doc("JKS")),
        ),
        "spec.truststore.passwordSecretRef: the password is empty (InvalidPassword)",
    ),
    (
        "duplicate key in the CobrowseTLS",
        text(
            lambda p: dump(ca_secret(p)),
            "---\napiVersion: tls.cobrowse.io/v1alpha1\nkind: CobrowseTLS\n"
            "metadata: {name: cobrowse}\nspec:\n  provider: Disabled\n  provider: PEM\n",
        ),
        "<stdin>: line 13: invalid YAML: duplicate key 'provider' in a mapping",
    ),
    (
        "base64 with spaces",
        text(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ndata: {k: YWJj ZGVm}\n---\n",
            pem_tls,
        ),
        "<stdin>: secret a key k: data is not base64",
    ),
    (
        "data key with a slash",
        text(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\nstringData: {a/b: x}\n---\n",
            pem_tls,
        ),
        "<stdin>: secret a: stringData key 'a/b' is not a valid key (letters, digits, '-', '_',"
        " '.'; at most 253)",
    ),
    (
        "the same key in data and binaryData",
        text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
            "data: {k: x}\nbinaryData: {k: eA==}\n---\n",
            pem_tls,
        ),
        "<stdin>: configMap a: key k is in both data and binaryData",
    ),
]


def run_stdin(
    build: Build,
    pki: pki_module.PKI,
    out_dir: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(build(pki)))
    return run(["-f", "-", "--output-dir", str(out_dir)], capsys)


@pytest.mark.parametrize(("name", "build", "message"), BAD, ids=[c[0] for c in BAD])
def test_bad_input_into_a_new_dir(
    pki: pki_module.PKI,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    build: Build,
    message: str,
) -> None:
    code, out, err = run_stdin(build, pki, tmp_path / "out", capsys, monkeypatch)
    assert (code, out, err) == (2, "", PREFIX + message + "\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("name", "build", "message"), BAD, ids=[c[0] for c in BAD])
def test_bad_input_over_a_good_render(
    pki: pki_module.PKI,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    build: Build,
    message: str,
) -> None:
    out_dir = tmp_path / "out"
    good = tmp_path / "good.yaml"
    good.write_text(pem_tls(pki))
    assert run(["-f", str(good), "--output-dir", str(out_dir)], capsys)[0] == 0
    before = snapshot(tmp_path)
    code, out, err = run_stdin(build, pki, out_dir, capsys, monkeypatch)
    assert (code, out, err) == (2, "", PREFIX + message + "\n")
    assert snapshot(tmp_path) == before


def test_dev_zero_stops_at_the_file_limit(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["-f", "/dev/zero", "--output-dir", str(tmp_path / "out")], capsys)
    assert (code, out) == (2, "")
    assert err == f"{PREFIX}/dev/zero: larger than the limit of {limits.FILE_BYTES} bytes\n"


def test_certifi_bundle_passes_with_room(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certifi = pytest.importorskip("certifi")
    bundle = pathlib.Path(certifi.where()).read_text()
    count = bundle.count("-----BEGIN CERTIFICATE-----")
    # The limits are meant to leave real bundles several times their size.
    assert count * 4 < limits.CERTIFICATES_PER_SOURCE
    assert len(bundle) * 3 < limits.SOURCE_BYTES
    spec = {"trustedCA": {"sources": [{"configMap": {"name": "roots", "key": "bundle.pem"}}]}}
    source = tmp_path / "in.yaml"
    source.write_text(dump(config_map_doc("roots", {"bundle.pem": bundle}), tls_doc("PEM", **spec)))
    code, _, err = run(["-f", str(source), "--output-dir", str(tmp_path / "out")], capsys)
    assert (code, err) == (0, "")


# ---- 4. ca.pem comment lines ----------------------------------------------------------------


@pytest.mark.parametrize(
    "cn",
    [
        "-----BEGIN CERTIFICATE-----",
        "x\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nMIIB",
        "------------------------- ten dashes and more",
        "-----BEGIN RSA PRIVATE KEY-----",
    ],
)
def test_pem_markers_in_a_subject_never_reach_the_comment_lines(
    pki: pki_module.PKI, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], cn: str
) -> None:
    hostile = pki_module.make_cert(
        cn, not_before=pki.now - timedelta(days=1), not_after=pki.now + timedelta(days=30)
    )
    source = tmp_path / "in.yaml"
    source.write_text(
        dump(secret_doc("genesys-ca", {"ca.crt": pki_module.pem(pki.root, hostile)}), tls_doc())
    )
    out_dir = tmp_path / "out"
    code, _, err = run(["-f", str(source), "--output-dir", str(out_dir)], capsys)
    assert (code, err) == (0, "")
    bundle = (out_dir / "ca.pem").read_bytes()
    comments = [line for line in bundle.splitlines() if line.startswith(b"#")]
    assert len(comments) == 4
    assert not [line for line in comments if b"-----" in line]
    # The project's own reader (the Windows agent's) reads every ca.pem render writes.
    parsed = certs.parse_source(bundle, source="ca.pem")
    assert [c.sha256 for c in parsed] == [pki.root.sha256, hostile.sha256]
    if shutil.which("openssl"):
        listed = subprocess.run(
            ["openssl", "storeutl", "-noout", "-certs", str(out_dir / "ca.pem")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        assert "Total found: 2" in listed.stdout


def test_plain_subjects_keep_their_comment_bytes(
    pki: pki_module.PKI, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.yaml"
    source.write_text(pem_tls(pki))
    code, _, _ = run(["-f", str(source), "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 0
    first = (tmp_path / "out" / "ca.pem").read_bytes().splitlines()[0]
    assert first == b"# subject: " + pki.root.subject.encode()


# ---- 5 and 6. the output directory ----------------------------------------------------------


@pytest.mark.parametrize("name", ["setenv.sh", "truststore.jks", "ca.pem"])
def test_a_directory_where_a_file_goes_stops_before_any_write(
    pki: pki_module.PKI, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    out_dir = tmp_path / "out"
    jks = tmp_path / "jks.yaml"
    jks.write_text(
        dump(ca_secret(pki), secret_doc("jks-password", {"password": PASSWORD}), tls_doc("JKS"))
    )
    assert run(["-f", str(jks), "--output-dir", str(out_dir)], capsys)[0] == 0
    target = out_dir / name
    target.unlink()
    target.mkdir()
    (target / "inside").write_text("keep")
    # PEM over JKS: truststore.jks is stale (removed), the others are replaced.
    pem = tmp_path / "pem.yaml"
    pem.write_text(pem_tls(pki))
    before = snapshot(tmp_path)
    code, out, err = run(["-f", str(pem), "--output-dir", str(out_dir)], capsys)
    assert (code, out) == (2, "")
    assert err == f"{PREFIX}{target}: is a directory, where render writes a file\n"
    assert snapshot(tmp_path) == before


def test_a_failed_move_puts_back_what_was_replaced(
    pki: pki_module.PKI,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out_dir = tmp_path / "out"
    jks = tmp_path / "jks.yaml"
    jks.write_text(
        dump(ca_secret(pki), secret_doc("jks-password", {"password": PASSWORD}), tls_doc("JKS"))
    )
    assert run(["-f", str(jks), "--output-dir", str(out_dir)], capsys)[0] == 0
    before = snapshot(out_dir)
    real_replace = os.replace
    moves: list[str] = []

    def failing_replace(src: Any, dst: Any) -> None:
        if pathlib.Path(dst).parent == out_dir:
            moves.append(pathlib.Path(dst).name)
            if len(moves) == 3:
                raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr("cobrowse_tls.render_output.os.replace", failing_replace)
    pem = tmp_path / "pem.yaml"
    pem.write_text(pem_tls(pki))
    code, out, err = run(["-f", str(pem), "--output-dir", str(out_dir)], capsys)
    assert (code, out, err) == (
        2,
        "",
        f"{PREFIX}{out_dir}: cannot write: No space left on device\n",
    )
    assert len(moves) >= 3
    assert snapshot(out_dir) == before  # the two files already replaced were put back


def test_scratch_directory_is_inside_an_existing_dir(
    pki: pki_module.PKI,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    made: list[pathlib.Path] = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(**kwargs: Any) -> str:
        path: str = real_mkdtemp(**kwargs)
        made.append(pathlib.Path(path))
        return path

    monkeypatch.setattr("cobrowse_tls.render_output.tempfile.mkdtemp", recording_mkdtemp)
    source = tmp_path / "in.yaml"
    source.write_text(pem_tls(pki))
    assert run(["-f", str(source), "--output-dir", str(out_dir)], capsys)[0] == 0
    assert [p.parent for p in made] == [out_dir]
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "ca.pem",
        "security.cfg",
        "setenv.bat",
        "setenv.sh",
    ]


def _mount_namespace_available() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def _render_in_mount(
    tmp_path: pathlib.Path, pki: pki_module.PKI, options: str
) -> subprocess.CompletedProcess[str]:
    """Render into a fresh tmpfs mounted on DIR, in a private mount namespace."""
    if not _mount_namespace_available():
        pytest.fail("this test needs root and unshare(1) to mount a tmpfs privately")
    source = tmp_path / "in.yaml"
    source.write_text(pem_tls(pki))
    out_dir = tmp_path / "mnt"
    out_dir.mkdir()
    repo = pathlib.Path(__file__).resolve().parents[2]
    script = (
        f"mount -t tmpfs -o {options} tmpfs {out_dir} && "
        f"{sys.executable} -m cobrowse_tls.cli render -f {source} --output-dir {out_dir}; "
        f"rc=$?; ls -A {out_dir}; exit $rc"
    )
    env = {**os.environ, "PYTHONPATH": str(repo / "operator")}
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_render_into_a_mount_point(pki: pki_module.PKI, tmp_path: pathlib.Path) -> None:
    result = _render_in_mount(tmp_path, pki, "rw,size=4m")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    listed = result.stdout.splitlines()[-4:]
    assert sorted(listed) == ["ca.pem", "security.cfg", "setenv.bat", "setenv.sh"]


def test_render_into_a_read_only_mount(pki: pki_module.PKI, tmp_path: pathlib.Path) -> None:
    result = _render_in_mount(tmp_path, pki, "ro,size=4m")
    assert result.returncode == 2
    assert result.stderr == f"{PREFIX}{tmp_path / 'mnt'}: cannot write: Read-only file system\n"
    assert result.stdout == ""  # nothing written, and nothing listed in the empty mount


# ---- 7. what the API server accepts, render accepts --------------------------------------


def test_base64_wrapped_over_lines_is_accepted_as_the_api_server_does(
    pki: pki_module.PKI, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    encoded = base64.encodebytes(pki_module.pem(pki.root)).decode()  # 76-column lines
    assert encoded.count("\n") > 3
    wrapped = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "genesys-ca"},
        "data": {"ca.crt": encoded.replace("\n", "\r\n")},
    }
    outputs = []
    for name, secret in (("wrapped", wrapped), ("plain", ca_secret(pki))):
        source = tmp_path / f"{name}.yaml"
        source.write_text(dump(secret, tls_doc("PEM")))
        code, _, err = run(["-f", str(source), "--output-dir", str(tmp_path / name)], capsys)
        assert (code, err) == (0, "")
        outputs.append((tmp_path / name / "ca.pem").read_bytes())
    assert outputs[0] == outputs[1]


def test_yaml_scalars_read_as_kubectl_reads_them(
    pki: pki_module.PKI, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A date stays a string (kubectl sends "2001-01-01"); integer and boolean keys become
    # their text; a null value is an empty value.
    source = tmp_path / "in.yaml"
    source.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: odd}\n"
        "data: {when: 2001-01-01, 1: one, true: yes-text, empty: }\n---\n" + pem_tls(pki)
    )
    code, _, err = run(["-f", str(source)], capsys)
    assert (code, err) == (0, "")

    loaded = render_input.load_documents("x", source.read_text())
    _, data = render_input.config_map_data(loaded[0])
    assert data == {"when": b"2001-01-01", "1": b"one", "true": b"yes-text", "empty": b""}


def test_other_namespaces_are_not_sources(
    pki: pki_module.PKI, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = ca_secret(pki)
    elsewhere["metadata"]["namespace"] = "elsewhere"
    source = tmp_path / "in.yaml"
    source.write_text(yaml.safe_dump_all([elsewhere, tls_doc("PEM")]))
    code, _, err = run(["-f", str(source)], capsys)
    assert code == 2
    assert err == (
        f"{PREFIX}secret genesys-ca key ca.crt: secret 'genesys-ca' not found (SourceNotFound)\n"
    )


# ---- memory, measured on the real command ----------------------------------------------------

# Address space of the whole process (Python, cryptography, libyaml): a run that needed more
# would die with MemoryError and a traceback instead of its one line.
ADDRESS_SPACE = 400 * 1024 * 1024


def _certifi_bundle() -> str:
    certifi = pytest.importorskip("certifi")
    return pathlib.Path(certifi.where()).read_text()


def _roots_config_map(bundle: str) -> str:
    body = "".join(f"    {line}\n" for line in bundle.splitlines())
    head = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: roots}\n"
    return head + "data:\n  bundle.pem: |\n" + body


def _roots_tls(*extra_sources: dict[str, Any]) -> str:
    sources = [{"configMap": {"name": "roots", "key": "bundle.pem"}}, *extra_sources]
    return dump(tls_doc("PEM", trustedCA={"sources": sources}))


BIG_FILES: dict[str, Callable[[], str]] = {
    "a 40 MB PEM bundle": lambda: (
        _roots_config_map(_certifi_bundle() * 140) + "---\n" + _roots_tls()
    ),
    "15 MB of list items": lambda: (
        nested(1) + "apiVersion: v1\nkind: List\nmetadata: {}\nitems:\n" + "- a\n" * 3_900_000
    ),
    "an alias bomb": lambda: alias_bomb(12) + _roots_tls(),
    "many documents of many nodes": lambda: (
        ("---\napiVersion: v1\nkind: List\nmetadata: {}\nitems:\n" + "- a\n" * 150_000) * 8
        + "---\n"
        + _roots_tls()
    ),
    "a 2.5 MB ConfigMap": lambda: (
        _roots_config_map(_certifi_bundle() * 10) + "---\n" + _roots_tls()
    ),
    "certifi's bundle and a garbage source": lambda: (
        _roots_config_map(_certifi_bundle()) + "---\n" + _roots_tls({"inline": "garbage"})
    ),
}


def _bounded_render(*args: str) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    repo = pathlib.Path(__file__).resolve().parents[2]
    return subprocess.run(
        [sys.executable, "-m", "cobrowse_tls.cli", "render", *args],
        env={**os.environ, "PYTHONPATH": str(repo / "operator")},
        preexec_fn=limit,  # the child sets only its own limit
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("name", sorted(BIG_FILES))
def test_hostile_files_in_bounded_memory(name: str, tmp_path: pathlib.Path) -> None:
    source = tmp_path / "in.yaml"
    source.write_text(BIG_FILES[name]())
    result = _bounded_render("-f", str(source), "--output-dir", str(tmp_path / "out"))
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr.startswith(PREFIX)
    assert result.stderr.count("\n") == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.yaml"]


def test_dev_zero_in_bounded_memory(tmp_path: pathlib.Path) -> None:
    result = _bounded_render("-f", "/dev/zero", "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2
    assert (
        result.stderr == f"{PREFIX}/dev/zero: larger than the limit of {limits.FILE_BYTES} bytes\n"
    )


def test_certifi_bundle_in_bounded_memory_and_silent(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "in.yaml"
    source.write_text(_roots_config_map(_certifi_bundle()) + "---\n" + _roots_tls())
    result = _bounded_render("-f", str(source), "--output-dir", str(tmp_path / "out"))
    assert (result.returncode, result.stderr) == (0, "")


def test_the_nodes_of_all_documents_of_a_file_are_bounded(
    pki: pki_module.PKI,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same rule as the real limit (1,000,000), at a scale a unit test can afford.
    monkeypatch.setattr(limits, "FILE_NODES", 1000)
    filler = "---\napiVersion: v1\nkind: List\nmetadata: {}\nitems:\n" + "- a\n" * 300
    source = tmp_path / "in.yaml"
    source.write_text(pem_tls(pki) + filler * 3)
    assert run(["-f", str(source)], capsys)[0] == 0  # 3 x 300 nodes and the rest: within
    source.write_text(pem_tls(pki) + filler * 4)
    code, out, err = run(["-f", str(source), "--output-dir", str(tmp_path / "out")], capsys)
    assert (code, out) == (2, "")
    assert err.endswith(": the file holds more than 1000 nodes (aliases expanded)\n")
