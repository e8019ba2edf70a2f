"""Property test of `cobrowse-tls render`'s contract over generated and mutated inputs.

Whatever the input (YAML structure, certificate bytes, base64, names) and whatever DIR holds,
a run ends either with exit 0 and valid outputs, or with exit 2, exactly one line on standard
error and DIR exactly as it was; never a traceback, and never much memory.

A fixed budget of examples, derandomized (the same examples on every run, so a failure
reproduces); hypothesis prints the failing example. COBROWSE_HYPOTHESIS_EXAMPLES raises the
budget and COBROWSE_HYPOTHESIS_RANDOM=1 explores new examples (hypothesis then prints the
seed or a reproduce_failure blob on failure).
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import pathlib
import tempfile
import tracemalloc
from typing import Any

import jks
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import pki as pki_module
from cobrowse_tls import render_cli, render_output
from cobrowse_tls.core import certs, render
from unit.strategies import PFX_PASSWORD, cert_bytes, known_material, mostly

EXAMPLES = int(os.environ.get("COBROWSE_HYPOTHESIS_EXAMPLES", "200"))
RANDOM = os.environ.get("COBROWSE_HYPOTHESIS_RANDOM") == "1"
# Python-level allocations of one run (tracemalloc peak); inputs here stay below 1 MB.
MEMORY_BUDGET = 64 * 1024 * 1024
PREFIX = "cobrowse-tls render: "
WARNING = "cobrowse-tls render: generated a new truststore password"


PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=not RANDOM,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---- objects --------------------------------------------------------------------------------


@st.composite
def encoded(draw: st.DrawFn, data: bytes) -> str:
    """``data`` as base64 the way people and tools write it, or broken."""
    plain = base64.b64encode(data).decode()
    style = draw(mostly("plain", "wrapped", "crlf", "space", "nopad", "junk"))
    if style == "wrapped":
        return base64.encodebytes(data).decode()
    if style == "crlf":
        return base64.encodebytes(data).decode().replace("\n", "\r\n")
    if style == "space":
        return plain[:4] + " " + plain[4:]
    if style == "nopad":
        return plain.rstrip("=")
    if style == "plain":
        return plain
    return plain + draw(st.sampled_from(["!", "==", "=A", "\u00e9"]))


@st.composite
def secret(draw: st.DrawFn, name: str, items: dict[str, bytes]) -> dict[str, Any]:
    doc: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}
    data: dict[str, Any] = {}
    string_data: dict[str, Any] = {}
    for key, value in items.items():
        as_text = draw(st.booleans())
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            as_text = False
        if as_text:
            string_data[key] = text
        else:
            data[key] = draw(encoded(value))
    if data:
        doc["data"] = data
    if string_data:
        doc["stringData"] = string_data
    if draw(st.booleans()):
        doc["metadata"]["labels"] = {
            "app.kubernetes.io/managed-by": "cobrowse-tls-operator",
            "tls.cobrowse.io/owner": "cobrowse",
        }
    return doc


@st.composite
def config_map(draw: st.DrawFn, name: str, items: dict[str, bytes]) -> dict[str, Any]:
    doc: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
    for key, value in items.items():
        try:
            doc.setdefault("data", {})[key] = value.decode("utf-8")
        except UnicodeDecodeError:
            doc.setdefault("binaryData", {})[key] = draw(encoded(value))
    return doc


@st.composite
def source(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One trustedCA source and the object it reads (None: inline, or missing on purpose)."""
    kind = draw(st.sampled_from(["secret", "configMap", "inline", "pfx", "secret"]))
    name = draw(mostly("genesys-ca", "corp-roots", "cobrowse-truststore", "cobrowse-security"))
    key = draw(mostly("ca.crt", "bundle.pem", "password", "pass"))
    data = draw(cert_bytes())
    if kind == "inline":
        return {"inline": data.decode("utf-8", errors="replace")}, None
    if kind == "pfx":
        material = known_material()
        pfx = material[draw(st.sampled_from(["modern.pfx", "3des.pfx", "open.pfx"]))]
        password = draw(mostly(PFX_PASSWORD, b"wrong", b"\xff\xfe", b"", PFX_PASSWORD + b"\n"))
        ref = {"secret": {"name": name, "key": "ca.pfx", "passwordKey": "pass"}}
        return ref, draw(secret(name, {"ca.pfx": pfx, "pass": password}))
    ref = {kind: {"name": name, "key": key}}
    obj = None
    if draw(st.integers(0, 19)) > 0:
        build = secret if kind == "secret" else config_map
        obj = draw(build(name, {key: data}))
    return ref, obj


@st.composite
def documents(draw: st.DrawFn) -> list[Any]:
    provider = draw(st.sampled_from(["PEM", "JKS", "MSCAPI", "Disabled"]))
    spec: dict[str, Any] = {
        "provider": provider,
        "application": {"type": "Node", "name": "CB_Node_1"},
        "configServer": {"host": "confserv.genesys.svc", "port": 8889},
    }
    objects: list[Any] = []
    if provider != "Disabled":
        pairs = draw(st.lists(source(), min_size=1, max_size=3))
        spec["trustedCA"] = {"sources": [ref for ref, _ in pairs]}
        objects += [obj for _, obj in pairs if obj is not None]
    if provider == "JKS" and draw(st.booleans()):
        name = draw(mostly("jks-password", "cobrowse-truststore"))
        spec["truststore"] = {"passwordSecretRef": {"name": name, "key": "password"}}
        password = draw(
            st.one_of(
                mostly(b"s3cret-Password", b"pw\n", b"", b"\xff", b"a\x00b"),
                st.text(max_size=20).map(str.encode),
            )
        )
        objects.append(draw(secret(name, {"password": password})))
    if draw(st.booleans()):
        spec["truststore"] = {**spec.get("truststore", {}), "secretName": "cobrowse-truststore"}
    cr = {
        "apiVersion": "tls.cobrowse.io/v1alpha1",
        "kind": "CobrowseTLS",
        "metadata": {"name": "cobrowse", "namespace": "genesys"},
        "spec": spec,
    }
    docs = [*objects, cr]
    return draw(st.permutations(docs))


# ---- YAML structure and text ----------------------------------------------------------------

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.text(max_size=12),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def structurally_mutated(draw: st.DrawFn) -> list[Any]:
    docs = draw(documents())
    for _ in range(draw(mostly(0, 1, 2))):
        target = draw(st.sampled_from(docs))
        path: list[Any] = []
        node = target
        while isinstance(node, dict | list) and node and draw(st.booleans()):
            key = draw(
                st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node)))
            )
            path.append((node, key))
            node = node[key]
        if path:
            parent, key = path[-1]
            parent[key] = draw(json_values)
    return docs


SNIPPETS = [
    "&a ", "*a", "*zz", "[", "]", "{", "}", ": ", "- ", "\n---\n", "\t", "!!binary ", "? ",
    "<<: *a\n", "%YAML 1.1\n", "\x00", "\ufeff", "'", '"', "\n  ", "2001-01-01", "0x1F", "1e3",
    "~", "null", "\r", "\u2028", "#", "|", ">", "!!python/object:os.system ",
]  # fmt: skip


@st.composite
def yaml_text(draw: st.DrawFn) -> str:
    docs = draw(structurally_mutated())
    text = yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=draw(st.booleans()))
    for _ in range(draw(mostly(0, 1, 2, 3))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 6))
        insert = draw(st.one_of(st.sampled_from(SNIPPETS), st.text(max_size=4)))
        text = text[:at] + insert + text[at + cut :]
    if draw(st.integers(0, 19)) == 0:
        # Alias expansion, beyond the limit or just within it.
        levels = draw(st.integers(2, 8))
        bomb = [
            "apiVersion: v1",
            "kind: ConfigMap",
            "metadata: {name: bomb}",
            "x:",
            "  a0: &a0 [x]",
        ]
        for i in range(1, levels):
            bomb.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
        text = "\n".join(bomb) + "\n---\n" + text
    return text


# Names of DIR and of the input file that end up in messages: one line, whatever they hold.
HOSTILE_NAMES = [
    "line\nbreak",
    "carriage\rreturn",
    "\x1b[31mred",
    "tab\there",
    "sp ace",
    "\u00e9t\u00e9",
    "\u2028sep",
    ".hidden",
    "-dash",
]

# ---- DIR --------------------------------------------------------------------------------------

DIR_STATES = (
    ["absent"] * 3
    + ["empty"] * 2
    + ["good"] * 3
    + ["good-jks"] * 2
    + [
        "dir-in-place",
        "a-file",
        "deep-absent",
    ]
)


def _prepare(state: str, base: pathlib.Path, name: str, dir_name: str) -> pathlib.Path:
    if len(dir_name) > 255 and state not in ("absent", "deep-absent"):
        dir_name = "out"  # no such directory can exist: only render's own attempt is of interest
    out_dir = base / dir_name
    if state == "empty":
        out_dir.mkdir()
    elif state in ("good", "good-jks", "dir-in-place"):
        pki = pki_module.pki()
        provider = "JKS" if state == "good-jks" else "PEM"
        spec: dict[str, Any] = {
            "provider": provider,
            "application": {"type": "Node", "name": "CB"},
            "trustedCA": {"sources": [{"inline": pki_module.pem(pki.root).decode()}]},
        }
        cr = {
            "apiVersion": "tls.cobrowse.io/v1alpha1",
            "kind": "CobrowseTLS",
            "metadata": {"name": "cobrowse"},
            "spec": spec,
        }
        good = base / "good.yaml"
        good.write_text(yaml.safe_dump(cr))
        code, _, _ = _run(["-f", str(good), "--output-dir", str(out_dir)])
        assert code == 0
        (out_dir / "notes.txt").write_text("not render's")
        if state == "dir-in-place":
            target = out_dir / name
            if target.exists():
                target.unlink()
            target.mkdir()
    elif state == "a-file":
        out_dir.write_text("a file")
    elif state == "deep-absent":
        out_dir = base / "a" / "b" / dir_name
    return out_dir


def _snapshot(base: pathlib.Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(base)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mode)
        for p in sorted(base.rglob("*"))
        if not p.name.startswith("in-")
    }


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = render_cli.main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def _check_outputs(out_dir: pathlib.Path, printed: str, before: set[str]) -> None:
    # The path of each file written, one per line (DIR's own name may hold a line break).
    present = {p.name for p in out_dir.iterdir()}
    names = present & set(render.ALL_FILES)
    assert all(f"{out_dir / n}\n" in printed for n in names)
    assert len(printed) == sum(len(f"{out_dir / n}\n") for n in names)
    assert not [n for n in present if n.startswith(render_output.SCRATCH_PREFIX)]
    assert present - names <= before - set(render.ALL_FILES)  # stale files of render removed
    assert (out_dir / render.SECURITY_CFG).read_text().startswith("[security]\n")
    if render.CA_PEM in names:
        bundle = (out_dir / render.CA_PEM).read_bytes()
        parsed = certs.parse_source(bundle, source="ca.pem")  # the agent's reader
        assert parsed
        assert all(b"-----" not in line for line in bundle.splitlines() if line.startswith(b"#"))
    if render.TRUSTSTORE_JKS in names:
        password = (out_dir / render.TRUSTSTORE_PASSWORD).read_text()
        store = jks.KeyStore.loads((out_dir / render.TRUSTSTORE_JKS).read_bytes(), password)
        assert len(store.certs) == len(parsed)


@PROPERTY_SETTINGS
@given(
    text=yaml_text(),
    state=st.one_of(st.sampled_from(DIR_STATES), mostly("good", "dir-in-place", "a-file")),
    in_place=st.sampled_from(["setenv.sh", "ca.pem", "truststore.jks", "security.cfg"]),
    names=st.tuples(mostly("out", *HOSTILE_NAMES, "x" * 300), mostly("in.yaml", *HOSTILE_NAMES)),
)
def test_render_contract(text: str, state: str, in_place: str, names: tuple[str, str]) -> None:
    dir_name, in_name = names
    with tempfile.TemporaryDirectory(prefix="render-prop-") as tmp:
        base = pathlib.Path(tmp)
        out_dir = _prepare(state, base, in_place, dir_name)
        source = base / ("in-" + in_name)
        source.write_text(text, encoding="utf-8", errors="surrogatepass")
        before = _snapshot(base)
        before_names = {p.name for p in out_dir.iterdir()} if out_dir.is_dir() else set()
        tracemalloc.start()
        try:
            code, out, err = _run(["-f", str(source), "--output-dir", str(out_dir)])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < MEMORY_BUDGET, f"{peak} bytes at peak"
        assert code in (0, 2), (code, err)
        event(f"exit {code}")
        if code == 2:
            event(err.split(": ", 2)[-1][:50])
        if code == 2:
            assert out == ""
            assert err.startswith(PREFIX)
            assert err.endswith("\n")
            assert err.count("\n") == 1, err
            assert "Traceback" not in err
            assert _snapshot(base) == before
        else:
            assert err in ("", f"{WARNING}; set spec.truststore.passwordSecretRef (or pass the"
                           " existing truststore Secret) to keep one\n"), err  # fmt: skip
            _check_outputs(out_dir, out, before_names)
