"""`cobrowse-tls render`: the operator's outputs, offline, from YAML files.

For GitOps pipelines and hosts outside Kubernetes. Any invalid input ends with exit status 2,
one line on standard error naming the field or source, and nothing written.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import pydantic
import yaml

from cobrowse_tls import passwords
from cobrowse_tls.api import models
from cobrowse_tls.core import agent_manifest, certs, render

_PRIVATE_FILES = {render.TRUSTSTORE_JKS, render.TRUSTSTORE_PASSWORD, render.SECURITY_OPTIONS_CFG}


class UsageError(Exception):
    """Bad input: printed as one line, exit status 2."""


def _read_documents(paths: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in paths:
        label = "<stdin>" if path == "-" else path
        try:
            text = sys.stdin.read() if path == "-" else pathlib.Path(path).read_text("utf-8")
        except OSError as exc:
            raise UsageError(f"{label}: cannot read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{label}: not UTF-8 text") from None
        try:
            loaded = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "syntax error"
            raise UsageError(f"{label}:{where}: invalid YAML: {problem}") from None
        for index, doc in enumerate(loaded):
            if doc is None:
                continue
            if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
                raise UsageError(f"{label}: document {index + 1} is not a Kubernetes object")
            docs.append((label, doc))
    return docs


def _object_name(label: str, doc: dict[str, Any]) -> str:
    name = (doc.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise UsageError(f"{label}: a {doc['kind']} without metadata.name")
    return name


def _secret_data(label: str, name: str, doc: dict[str, Any]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in (doc.get("data") or {}).items():
        try:
            out[str(key)] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise UsageError(f"{label}: secret {name} key {key}: data is not base64") from None
    # As the API server does, stringData wins over data for the same key.
    for key, value in (doc.get("stringData") or {}).items():
        out[str(key)] = str(value).encode()
    return out


def _config_map_data(label: str, name: str, doc: dict[str, Any]) -> dict[str, bytes]:
    out = {str(k): str(v).encode() for k, v in (doc.get("data") or {}).items()}
    for key, value in (doc.get("binaryData") or {}).items():
        try:
            out[str(key)] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise UsageError(
                f"{label}: configMap {name} key {key}: binaryData is not base64"
            ) from None
    return out


def validation_message(exc: pydantic.ValidationError, prefix: str = "") -> str:
    """One line for the first error, naming the field in its camelCase API spelling."""
    errors = exc.errors()
    first = errors[0]
    # kubectl's spelling: spec.trustedCA.sources[0].secret, not spec.trustedCA.sources.0.secret
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
    field = field.removeprefix(".") or "object"
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{prefix}{field}: {msg}{more}"


def load_inputs(paths: Sequence[str]) -> tuple[models.CobrowseTLS, render.ObjectData]:
    tls_docs: list[tuple[str, dict[str, Any]]] = []
    secrets_: dict[str, dict[str, bytes]] = {}
    config_maps: dict[str, dict[str, bytes]] = {}
    for label, doc in _read_documents(paths):
        kind = doc["kind"]
        if kind == models.KIND:
            tls_docs.append((label, doc))
        elif kind == "Secret" and doc.get("apiVersion", "v1") == "v1":
            name = _object_name(label, doc)
            secrets_[name] = _secret_data(label, name, doc)
        elif kind == "ConfigMap" and doc.get("apiVersion", "v1") == "v1":
            name = _object_name(label, doc)
            config_maps[name] = _config_map_data(label, name, doc)
        # Other kinds (the workloads, a Namespace) may share the file; they do not matter here.
    if len(tls_docs) != 1:
        raise UsageError(f"expected exactly one {models.KIND} in the input, found {len(tls_docs)}")
    label, doc = tls_docs[0]
    try:
        tls = models.parse(doc)
    except pydantic.ValidationError as exc:
        raise UsageError(validation_message(exc, f"{label}: {models.KIND} ")) from None
    return tls, render.ObjectData(secrets=secrets_, config_maps=config_maps)


def _jks_password(tls: models.CobrowseTLS, found: render.ObjectData) -> str | None:
    password = render.resolve_password(tls, found)
    if password is not None or tls.spec.provider is not models.Provider.JKS:
        return password
    # Like the operator: keep the password already in the truststore Secret, if given.
    existing = found.secrets.get(tls.truststore_secret_name, {})
    if render.TRUSTSTORE_PASSWORD in existing:
        return render.check_password(
            existing[render.TRUSTSTORE_PASSWORD],
            f"secret {tls.truststore_secret_name} key {render.TRUSTSTORE_PASSWORD}",
        )
    print(
        "cobrowse-tls render: generated a new truststore password; set"
        " spec.truststore.passwordSecretRef (or pass the existing truststore Secret) to keep one",
        file=sys.stderr,
    )
    return passwords.generate()


def render_inputs(
    paths: Sequence[str], now: datetime, agent: agent_manifest.AgentConfig | None = None
) -> render.Rendered:
    tls, found = load_inputs(paths)
    try:
        sources = render.resolve_sources(tls, found)
        password = _jks_password(tls, found)
        return render.render(tls, sources, password=password, now=now, agent=agent)
    except render.InvalidInput as exc:
        raise UsageError(f"{exc.where}: {exc.detail} ({exc.reason})") from None
    except certs.CertificateError as exc:
        raise UsageError(f"{exc.source}: {exc.detail} ({exc.reason})") from None


class _Dumper(yaml.SafeDumper):
    """Multi-line values (setenv.sh, security.cfg) as literal blocks, as a person writes them."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Literal blocks cannot hold CR or trailing spaces; those stay quoted (setenv.bat's CRLF).
    if (
        "\n" in value
        and "\r" not in value
        and not any(line != line.rstrip() for line in value.splitlines())
    ):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def manifests_yaml(rendered: render.Rendered) -> str:
    objects = [
        o for o in (rendered.secret, rendered.config_map, rendered.daemon_set) if o is not None
    ]
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, width=1000)


def write_files(files: dict[str, bytes], out_dir: pathlib.Path) -> None:
    """Write all files or none: into a scratch directory first, then moved into place."""
    out_dir = out_dir.absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for name, data in files.items():
            path = scratch / name
            path.write_bytes(data)
            path.chmod(0o600 if name in _PRIVATE_FILES else 0o644)
        if not out_dir.exists():
            scratch.rename(out_dir)
            return
        for name in files:
            os.replace(scratch / name, out_dir / name)
        # Files of another provider from an earlier render would mislead whoever reads DIR.
        for stale in set(render.ALL_FILES) - set(files):
            (out_dir / stale).unlink(missing_ok=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fail(message: str) -> NoReturn:
    print(f"cobrowse-tls render: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: Iterable[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="cobrowse-tls render",
        description="Render the trust store, the option files, the setenv files and"
        " connections.yaml offline, from YAML files holding one CobrowseTLS and the"
        " Secrets/ConfigMaps its sources reference.",
    )
    parser.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        required=True,
        metavar="FILE",
        help="YAML file (several documents allowed); '-' reads standard input; repeatable",
    )
    parser.add_argument(
        "--output-dir",
        type=pathlib.Path,
        metavar="DIR",
        help="write ca.pem, truststore.jks, truststore-password, security-options.cfg,"
        " security.cfg, setenv.sh, setenv.bat, connections.yaml (those that apply) here instead"
        " of printing manifests",
    )
    parser.add_argument(
        "--agent-image",
        default=agent_manifest.DEFAULT_IMAGE,
        metavar="IMAGE",
        help="MSCAPI: the Windows agent image in the printed DaemonSet (as the operator's"
        " --agent-image)",
    )
    args = parser.parse_args(list(argv))
    try:
        rendered = render_inputs(
            args.files, datetime.now(UTC), agent_manifest.AgentConfig(image=args.agent_image)
        )
    except UsageError as exc:
        _fail(str(exc))
    if args.output_dir is None:
        sys.stdout.write(manifests_yaml(rendered))
        return 0
    try:
        write_files(rendered.files, args.output_dir)
    except OSError as exc:
        _fail(f"{args.output_dir}: cannot write: {exc.strerror}")
    for name in rendered.files:
        print(args.output_dir / name)
    return 0
