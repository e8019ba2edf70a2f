"""What `cobrowse-tls render` reads: YAML files of Kubernetes objects, read as ``kubectl apply``
and the API server read them, within the limits of :mod:`cobrowse_tls.core.limits`.

Every problem is an :class:`InputError`: one line naming the file (and line) or the object and
field, never a traceback, never more memory than a few times the limits.

The rules (the README's render section documents them for users):

- A file is at most ``limits.FILE_BYTES`` (``/dev/zero`` stops there), UTF-8 text.
- YAML 1.1 as kubectl's go-yaml reads it: timestamps stay strings, ``1e3`` is a number.
  A mapping may not repeat a key. A document, aliases expanded, holds at most
  ``limits.DOCUMENT_NODES`` nodes and ``limits.DOCUMENT_BYTES`` bytes of scalars, nested at most
  ``limits.NESTING_DEPTH`` levels.
- Every document is empty or an object with string ``apiVersion`` and ``kind`` and a mapping
  ``metadata`` (kubectl refuses the whole file otherwise).
- Secret ``data`` and ConfigMap ``binaryData``: base64 (standard alphabet, padded) where line
  breaks are ignored, as Go's ``encoding/json`` decodes ``[]byte``. ``stringData`` and
  ConfigMap ``data``: strings. Keys are ``[-._a-zA-Z0-9]+`` up to 253 characters; a null
  value is an empty value, a list, mapping, number or boolean is refused, and all the data of
  one object is at most ``limits.OBJECT_DATA_BYTES`` (the API server's validation).
"""

from __future__ import annotations

import binascii
import dataclasses
import io
import re
import sys
from collections.abc import Collection, Mapping
from typing import Any, BinaryIO

import yaml

from cobrowse_tls.api import stamps
from cobrowse_tls.core import limits


class InputError(Exception):
    """Bad input: printed as one line, exit status 2."""


@dataclasses.dataclass(frozen=True)
class Document:
    label: str  # the file, for messages
    line: int
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def noun(self) -> str:
        """The kind as messages and source labels spell it: secret, configMap."""
        return self.kind[:1].lower() + self.kind[1:]

    @property
    def where(self) -> str:
        return self.label


# ---- files ----------------------------------------------------------------------------------


def read_file(path: str) -> tuple[str, str]:
    """(label, text) of one -f argument; '-' is standard input."""
    label = "<stdin>" if path == "-" else path
    try:
        if path == "-" and not hasattr(sys.stdin, "buffer"):
            # A text stream in place of stdin (embedding, tests): the same limit, in bytes.
            raw = sys.stdin.read(limits.FILE_BYTES + 1).encode("utf-8", "surrogateescape")
            raw = _read_at_most(io.BytesIO(raw), label)
        elif path == "-":
            raw = _read_at_most(sys.stdin.buffer, label)
        else:
            with open(path, "rb") as stream:
                raw = _read_at_most(stream, label)
    except OSError as exc:
        raise InputError(f"{label}: cannot read: {exc.strerror or exc}") from None
    try:
        return label, raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{label}: not UTF-8 text") from None


def _read_at_most(stream: BinaryIO, label: str) -> bytes:
    data = stream.read(limits.FILE_BYTES + 1)
    if len(data) > limits.FILE_BYTES:
        raise InputError(f"{label}: larger than the limit of {limits.FILE_BYTES} bytes")
    return data


# ---- YAML -----------------------------------------------------------------------------------

_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _Loader(yaml.CSafeLoader):
    """SafeLoader (libyaml) with go-yaml's scalar types, as kubectl converts YAML to JSON."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # JSON keys are strings: kubectl writes integer and boolean keys as their text (and
        # Python would merge the keys 1 and true). Merged (<<) pairs come first and may be
        # overridden; other keys may not repeat, whatever their spelling.
        merges = any(k.tag == "tag:yaml.org,2002:merge" for k, _ in node.value)
        self.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _json_key(self.construct_object(key_node, deep=deep), key_node)
            if key in mapping and not merges:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} in a mapping", key_node.start_mark
                )
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


def _json_key(key: Any, node: yaml.Node) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    raise yaml.constructor.ConstructorError(
        None, None, "a mapping key that is not a string, integer or boolean", node.start_mark
    )


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
}
# go-yaml reads 1e3 and .5e-1 as numbers; PyYAML only when there is a dot before the exponent.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


@dataclasses.dataclass
class _Frame:
    """An open collection during the scan: what it holds once aliases are expanded."""

    mapping: bool
    anchor: str | None
    line: int
    nodes: int = 1
    size: int = 0
    keys: set[str] = dataclasses.field(default_factory=set)
    next_is_key: bool = True


class _Scan:
    """Checks one YAML stream from its events before anything is built (libyaml's parser keeps
    no nesting on the C stack; composing does, so depth is checked first)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[int, int]] = {}
        self.doc_nodes = 0
        self.file_nodes = 0
        self.doc_size = 0

    def fail(self, line: int, message: str) -> InputError:
        return InputError(f"{self.label}: line {line}: {message}")

    def start_document(self) -> None:
        self.anchors.clear()
        self.doc_nodes = self.doc_size = 0

    def open(self, event: yaml.CollectionStartEvent) -> None:
        line = _line(event)
        if len(self.stack) >= limits.NESTING_DEPTH:
            raise self.fail(line, f"nested deeper than {limits.NESTING_DEPTH} levels")
        self.count(1, 0, line)
        self.stack.append(_Frame(isinstance(event, yaml.MappingStartEvent), event.anchor, line))

    def close(self) -> None:
        frame = self.stack.pop()
        if frame.anchor is not None:
            self.anchors[frame.anchor] = (frame.nodes, frame.size)
        self.child(frame.nodes, frame.size, None, frame.line)

    def scalar(self, event: yaml.ScalarEvent) -> None:
        line = _line(event)
        size = len(event.value)
        self.count(1, size, line)
        if event.anchor is not None:
            self.anchors[event.anchor] = (1, size)
        self.child(1, size, event.value, line)

    def alias(self, event: yaml.AliasEvent) -> None:
        line = _line(event)
        if event.anchor not in self.anchors:
            raise self.fail(line, f"invalid YAML: undefined alias {event.anchor!r}")
        nodes, size = self.anchors[event.anchor]
        self.count(nodes, size, line)
        self.child(nodes, size, None, line)

    def count(self, nodes: int, size: int, line: int) -> None:
        self.doc_nodes += nodes
        self.file_nodes += nodes
        if self.file_nodes > limits.FILE_NODES:
            raise self.fail(
                line, f"the file holds more than {limits.FILE_NODES} nodes (aliases expanded)"
            )
        self.doc_size += size
        if self.doc_nodes > limits.DOCUMENT_NODES:
            raise self.fail(
                line,
                f"the document holds more than {limits.DOCUMENT_NODES} nodes (aliases expanded)",
            )
        if self.doc_size > limits.DOCUMENT_BYTES:
            raise self.fail(
                line,
                f"the document holds more than {limits.DOCUMENT_BYTES} bytes (aliases expanded)",
            )

    def child(self, nodes: int, size: int, key: str | None, line: int) -> None:
        if not self.stack:
            return
        parent = self.stack[-1]
        parent.nodes += nodes
        parent.size += size
        if not parent.mapping:
            return
        if parent.next_is_key and key is not None:
            if key in parent.keys:
                raise self.fail(line, f"invalid YAML: duplicate key {key!r} in a mapping")
            parent.keys.add(key)
        parent.next_is_key = not parent.next_is_key


def _line(item: yaml.Event | yaml.Node) -> int:
    return item.start_mark.line + 1 if item.start_mark is not None else 0


def _scan(label: str, text: str) -> None:
    scan = _Scan(label)
    parser = yaml.CSafeLoader(text)
    try:
        while parser.check_event():
            event = parser.get_event()
            if isinstance(event, yaml.DocumentStartEvent):
                scan.start_document()
            elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                scan.open(event)
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                scan.close()
            elif isinstance(event, yaml.ScalarEvent):
                scan.scalar(event)
            elif isinstance(event, yaml.AliasEvent):
                scan.alias(event)
    finally:
        parser.dispose()


def _yaml_error(label: str, exc: yaml.YAMLError) -> InputError:
    mark = getattr(exc, "problem_mark", None)
    where = f" line {mark.line + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or "syntax error"
    return InputError(f"{label}:{where}: invalid YAML: {_one_line(str(problem))}")


def load_documents(label: str, text: str, kinds: Collection[str] | None = None) -> list[Document]:
    """The objects of one file; empty documents are skipped, and so are objects of other
    ``kinds`` once checked (the workloads of a GitOps repository need no memory here)."""
    try:
        _scan(label, text)
        loader = _Loader(text)
        docs: list[Document] = []
        try:
            index = 0
            while loader.check_node():
                index += 1
                node = loader.get_node()
                if node is None:
                    continue
                body = loader.construct_document(node)
                if body is not None:
                    doc = _document(label, index, _line(node), body)
                    if kinds is None or doc.kind in kinds:
                        docs.append(doc)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _yaml_error(label, exc) from None
    except (ValueError, OverflowError) as exc:
        # A scalar the resolver took for a number or a base64 binary that does not convert.
        raise InputError(f"{label}: invalid YAML: {_one_line(str(exc))}") from None
    return docs


def _document(label: str, index: int, line: int, body: Any) -> Document:
    doc = Document(label, line, body)
    if not isinstance(body, dict):
        raise InputError(f"{doc.where}: document {index} is not a Kubernetes object")
    for field in ("apiVersion", "kind"):
        if not isinstance(body.get(field), str) or not body[field]:
            raise InputError(f"{doc.where}: document {index}: {field} is not set")
    if not isinstance(body.get("metadata"), dict):
        raise InputError(f"{doc.where}: a {body['kind']}: metadata is not a mapping")
    return doc


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---- Secrets and ConfigMaps -----------------------------------------------------------------

_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def object_name(doc: Document) -> str:
    name = doc.body["metadata"].get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"{doc.where}: a {doc.kind} without metadata.name")
    return name


def namespace(doc: Document) -> str | None:
    value = doc.body["metadata"].get("namespace")
    return value if isinstance(value, str) and value else None


def _field(doc: Document, name: str, field: str) -> dict[str, Any]:
    value = doc.body.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{doc.where}: {doc.noun} {name}: {field} is not a mapping")
    out: dict[str, Any] = {}
    for key, item in value.items():
        text = str(key)  # the loader made every key a string
        if len(text) > 253 or not _KEY.match(text):
            raise InputError(
                f"{doc.where}: {doc.noun} {name}: {field} key {_one_line(repr(text))[:80]}"
                " is not a valid key (letters, digits, '-', '_', '.'; at most 253)"
            )
        if text in (".", "..") or text.startswith(".."):
            raise InputError(f"{doc.where}: {doc.noun} {name}: {field} key {text!r} is not allowed")
        if item is not None and not isinstance(item, str):
            raise InputError(
                f"{doc.where}: {doc.noun} {name}: {field}.{text} is a"
                f" {_yaml_type(item)}, not a string"
            )
        out[text] = item or ""
    return out


def _yaml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def decode_base64(value: str) -> bytes:
    """Base64 as the API server decodes ``[]byte`` (Go's base64.StdEncoding): standard
    alphabet, padding required, CR and LF ignored, nothing after the padding."""
    cleaned = value.replace("\r", "").replace("\n", "")
    return binascii.a2b_base64(cleaned.encode("ascii"), strict_mode=True)


def _decoded(doc: Document, name: str, field: str, data: Mapping[str, str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in data.items():
        try:
            out[key] = decode_base64(value)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise InputError(
                f"{doc.where}: {doc.noun} {name} key {key}: {field} is not base64"
            ) from None
    return out


def _check_size(doc: Document, name: str, data: Mapping[str, bytes]) -> None:
    total = sum(len(v) for v in data.values())
    if total > limits.OBJECT_DATA_BYTES:
        raise InputError(
            f"{doc.where}: {doc.noun} {name}: {total} bytes of data, more than the"
            f" API server's limit of {limits.OBJECT_DATA_BYTES}"
        )


def secret_data(doc: Document) -> tuple[str, dict[str, bytes]]:
    name = object_name(doc)
    out = _decoded(doc, name, "data", _field(doc, name, "data"))
    # As the API server does, stringData wins over data for the same key.
    out.update({k: v.encode() for k, v in _field(doc, name, "stringData").items()})
    _check_size(doc, name, out)
    return name, out


def config_map_data(doc: Document) -> tuple[str, dict[str, bytes]]:
    name = object_name(doc)
    out = {k: v.encode() for k, v in _field(doc, name, "data").items()}
    binary = _decoded(doc, name, "binaryData", _field(doc, name, "binaryData"))
    for key in binary.keys() & out.keys():
        raise InputError(f"{doc.where}: configMap {name}: key {key} is in both data and binaryData")
    out.update(binary)
    _check_size(doc, name, out)
    return name, out


def owned_by(doc: Document, owner: str) -> bool:
    """Whether ``doc`` is an output of the CobrowseTLS named ``owner`` (the operator's labels)."""
    labels = doc.body["metadata"].get("labels")
    if not isinstance(labels, dict):
        return False
    return bool(
        labels.get(stamps.LABEL_MANAGED_BY) == stamps.MANAGER
        and labels.get(stamps.LABEL_OWNER) == owner
    )


__all__ = [
    "Document",
    "InputError",
    "config_map_data",
    "decode_base64",
    "load_documents",
    "owned_by",
    "read_file",
    "secret_data",
]
