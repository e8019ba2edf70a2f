"""`cobrowse-tls render`: the operator's outputs, offline, from YAML files.

For GitOps pipelines and hosts outside Kubernetes. Any invalid input ends with exit status 2,
one line on standard error naming the field or source, and nothing written.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import warnings
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import cryptography.utils
import pydantic
import yaml

from cobrowse_tls import passwords, render_input, render_output
from cobrowse_tls.api import models
from cobrowse_tls.core import agent_manifest, certs, render

_PRIVATE_FILES = {render.TRUSTSTORE_JKS, render.TRUSTSTORE_PASSWORD, render.SECURITY_OPTIONS_CFG}


# The kinds render reads; the others in its files are checked and dropped.
_KINDS = (models.KIND, "Secret", "ConfigMap")


class UsageError(Exception):
    """Bad input: printed as one line, exit status 2."""


def _read_documents(paths: Sequence[str]) -> list[render_input.Document]:
    docs: list[render_input.Document] = []
    for path in paths:
        try:
            label, text = render_input.read_file(path)
            docs += render_input.load_documents(label, text, _KINDS)
        except render_input.InputError as exc:
            raise UsageError(str(exc)) from None
    return docs


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
    docs = _read_documents(paths)
    tls_docs = [d for d in docs if d.kind == models.KIND]
    if len(tls_docs) != 1:
        raise UsageError(f"expected exactly one {models.KIND} in the input, found {len(tls_docs)}")
    doc = tls_docs[0]
    try:
        tls = models.parse(doc.body)
    except pydantic.ValidationError as exc:
        raise UsageError(validation_message(exc, f"{doc.label}: {models.KIND} ")) from None
    return tls, _object_data(tls, docs)


def _object_data(
    tls: models.CobrowseTLS, docs: Sequence[render_input.Document]
) -> render.ObjectData:
    """The Secrets and ConfigMaps the operator could read for ``tls``, refusing objects that
    applying the output would overwrite (the operator's OutputConflict)."""
    secrets_: dict[str, dict[str, bytes]] = {}
    config_maps: dict[str, dict[str, bytes]] = {}
    try:
        for doc in docs:
            if doc.body["apiVersion"] != "v1" or doc.kind not in ("Secret", "ConfigMap"):
                continue  # other kinds (the workloads, a Namespace) may share the file
            name, data = (
                render_input.secret_data(doc)
                if doc.kind == "Secret"
                else render_input.config_map_data(doc)
            )
            _check_not_an_output(tls, doc, name)
            ns = render_input.namespace(doc)
            if ns is not None and tls.metadata.namespace and ns != tls.metadata.namespace:
                continue  # the operator reads sources only in the CobrowseTLS's namespace
            (secrets_ if doc.kind == "Secret" else config_maps)[name] = data
    except render_input.InputError as exc:
        raise UsageError(str(exc)) from None
    return render.ObjectData(secrets=secrets_, config_maps=config_maps)


def _check_not_an_output(tls: models.CobrowseTLS, doc: render_input.Document, name: str) -> None:
    ns = render_input.namespace(doc)
    if ns is not None and tls.metadata.namespace and ns != tls.metadata.namespace:
        return  # another namespace's object: neither an input nor an output of this one
    outputs = {("ConfigMap", tls.security_config_map_name)}
    if tls.spec.provider is not models.Provider.DISABLED:
        outputs.add(("Secret", tls.truststore_secret_name))
    if (doc.kind, name) in outputs and not render_input.owned_by(doc, tls.metadata.name):
        raise UsageError(
            f"{doc.where}: {doc.noun} {name} exists and is not managed by this"
            f" {models.KIND}: its output would overwrite it; rename it or set"
            f" spec.truststore.secretName ({render.OUTPUT_CONFLICT})"
        )


_GENERATED_PASSWORD = (
    "generated a new truststore password; set spec.truststore.passwordSecretRef (or pass the"
    " existing truststore Secret) to keep one"
)


def _jks_password(
    tls: models.CobrowseTLS, found: render.ObjectData, notes: list[str]
) -> str | None:
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
    # Said only once everything is written: a failed run prints its one line and nothing else.
    notes.append(_GENERATED_PASSWORD)
    return passwords.generate()


def _hash_key(
    tls: models.CobrowseTLS, password: str | None, found: render.ObjectData
) -> bytes | None:
    """The operator's key, from the truststore Secret when given; never a new random one.

    A key drawn here would make every run print other hashes; one derived from the inputs
    would let anyone holding the other inputs (the spec, the CAs) test password guesses
    against the hashes. Without the Secret the published hashes leave the password out.
    """
    if password is None:
        return None
    return render.kept_hash_key(dict(found.secrets.get(tls.truststore_secret_name, {})))


def render_inputs(
    paths: Sequence[str],
    now: datetime,
    agent: agent_manifest.AgentConfig | None = None,
    notes: list[str] | None = None,
) -> render.Rendered:
    """Render; ``notes`` collects the warnings to print once the outputs are out."""
    tls, found = load_inputs(paths)
    try:
        sources = render.resolve_sources(tls, found)
        password = _jks_password(tls, found, notes if notes is not None else [])
        key = _hash_key(tls, password, found)
        return render.render(tls, sources, password=password, now=now, agent=agent, hash_key=key)
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
    """Write all files or none (see render_output)."""
    render_output.write_files(
        files, out_dir, stale=set(render.ALL_FILES) - set(files), private=_PRIVATE_FILES
    )


def _fail(message: str) -> NoReturn:
    print(f"cobrowse-tls render: {one_line(message)}", file=sys.stderr)
    raise SystemExit(2)


def one_line(message: str) -> str:
    """The message as one printable line: a path or name from the input may hold a line break
    or a terminal escape; those are written as Python escapes."""
    if message.isprintable():
        return message
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in message
    )


def _quiet_library_warnings() -> None:
    # Standard error carries one line per failure and nothing else: cryptography warns about
    # certificates it still reads (negative serial numbers, as in certifi's bundle) in
    # several lines of its own.
    warnings.filterwarnings("ignore", category=cryptography.utils.CryptographyDeprecationWarning)


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
    _quiet_library_warnings()
    notes: list[str] = []
    try:
        rendered = render_inputs(
            args.files,
            datetime.now(UTC),
            agent_manifest.AgentConfig(image=args.agent_image),
            notes,
        )
    except UsageError as exc:
        _fail(str(exc))
    if args.output_dir is None:
        sys.stdout.write(manifests_yaml(rendered))
    else:
        try:
            write_files(rendered.files, args.output_dir)
        except render_output.OutputError as exc:
            _fail(str(exc))
        for name in rendered.files:
            print(args.output_dir / name)
    for note in notes:
        print(f"cobrowse-tls render: {note}", file=sys.stderr)
    return 0
