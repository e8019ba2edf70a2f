"""The layers of DESIGN.md section 6, checked on the source rather than only intended.

Every ``import`` in the package is read from the syntax tree, including imports inside
functions and under ``TYPE_CHECKING``, relative ones resolved. A second test builds a small
package with bad imports in a temporary folder and checks that each one is reported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

OPERATOR = Path(__file__).resolve().parents[2] / "operator"
PACKAGE = "cobrowse_tls"


@dataclass(frozen=True)
class Contract:
    """Modules under ``layers`` import nothing under ``forbidden``; optionally read no clock."""

    name: str
    layers: tuple[str, ...]
    forbidden: tuple[str, ...]
    clock_free: bool = False


# The pure core may use the clock only through a ``now`` its callers pass, and no randomness.
_IMPURE = (
    "kubernetes", "kopf", "socket", "urllib3", "http", "subprocess", "threading", "asyncio",
    "time", "random", "secrets", "uuid",
)  # fmt: skip
_EDGES = tuple(
    f"{PACKAGE}.{name}"
    for name in ("engine", "agent", "devcluster", "cli", "render_cli", "passwords")
)

CONTRACTS = (
    Contract(
        "pure modules (api, core) use neither the engine, the edges, the API client nor I/O",
        (f"{PACKAGE}.api", f"{PACKAGE}.core"),
        _EDGES + _IMPURE,
        clock_free=True,
    ),
    Contract("api is the bottom layer", (f"{PACKAGE}.api",), (f"{PACKAGE}.core",)),
    Contract(
        "the engine never imports the command lines or the agent",
        (f"{PACKAGE}.engine",),
        (f"{PACKAGE}.cli", f"{PACKAGE}.render_cli", f"{PACKAGE}.agent"),
    ),
    Contract("the agent never imports the engine", (f"{PACKAGE}.agent",), (f"{PACKAGE}.engine",)),
)

# Calls that read the clock or the random source, by their last attribute names.
# (fromtimestamp: without a tz it reads the local time zone, and the core has no use for it.)
_CLOCK_CALLS = {
    ("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
    ("datetime", "fromtimestamp"), ("os", "urandom"),
}  # fmt: skip


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


def modules(root: Path, package: str) -> Iterator[Module]:
    """Every module of ``package`` found under ``root`` (a folder on the import path)."""
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        yield Module(".".join(parts[:-1] if is_package else parts), path, is_package)


def imported(module: Module, tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything ``module`` imports, anywhere in its body."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # ``from . import x`` in a package is relative to the package itself.
                here = module.name.split(".")
                anchor = here if module.is_package else here[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            yield node.lineno, base
            # ``from pkg import name`` may import the submodule ``pkg.name``.
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def clock_calls(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, call) of each ``datetime.now()``-like call: reading the clock or random bytes."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Attribute):
                owner_name = owner.attr
            else:
                owner_name = owner.id if isinstance(owner, ast.Name) else ""
            if (owner_name, node.func.attr) in _CLOCK_CALLS:
                yield node.lineno, f"{owner_name}.{node.func.attr}()"


def _under(name: str, prefixes: tuple[str, ...]) -> str | None:
    return next((p for p in prefixes if name == p or name.startswith(p + ".")), None)


def violations(root: Path, package: str, contracts: tuple[Contract, ...]) -> list[str]:
    """One line per broken rule: ``path:line: imports name (contract)``."""
    found: list[str] = []
    for module in modules(root, package):
        rules = [c for c in contracts if _under(module.name, c.layers)]
        if not rules:
            continue
        tree = ast.parse(module.path.read_text(), str(module.path))
        where = module.path.relative_to(root)
        for contract in rules:
            seen: set[tuple[int, str]] = set()
            for line, name in imported(module, tree):
                bad = _under(name, contract.forbidden)
                if bad and (line, bad) not in seen:
                    seen.add((line, bad))
                    found.append(f"{where}:{line}: imports {bad} ({contract.name})")
            if contract.clock_free:
                for line, call in clock_calls(tree):
                    found.append(f"{where}:{line}: calls {call} ({contract.name})")
    return found


def test_layers_hold() -> None:
    assert violations(OPERATOR, PACKAGE, CONTRACTS) == []


def test_every_layer_named_in_a_contract_exists() -> None:
    names = {m.name for m in modules(OPERATOR, PACKAGE)}
    for contract in CONTRACTS:
        for layer in contract.layers:
            assert layer in names, f"{layer} is in a contract but not in the package"


def test_bad_imports_are_reported(tmp_path: Path) -> None:
    """The checker fails on each kind of bad import, wherever it hides."""
    files = {
        "__init__.py": "",
        "cli.py": "",
        "api/__init__.py": "",
        "api/models.py": "from cobrowse_tls.core import certs\n",
        "core/__init__.py": "",
        "core/certs.py": "import socket\n",
        "core/render.py": (
            "from datetime import UTC, datetime\n"
            "from . import certs\n"
            "def later():\n"
            "    from cobrowse_tls.engine import kube\n"
            "    from ..engine.kube import Client\n"
            "    import kubernetes.client\n"
            "    datetime.today()\n"
            "    datetime.fromtimestamp(0)\n"
            "    return datetime.now(UTC)\n"
        ),
        "engine/__init__.py": "",
        "engine/kube.py": "from cobrowse_tls import cli\n",
        "agent/__init__.py": "def main():\n    import cobrowse_tls.engine.kube\n",
    }
    for name, text in files.items():
        path = tmp_path / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    pure, bottom, engine, agent = (c.name for c in CONTRACTS)
    assert violations(tmp_path, PACKAGE, CONTRACTS) == [
        f"cobrowse_tls/agent/__init__.py:2: imports cobrowse_tls.engine ({agent})",
        f"cobrowse_tls/api/models.py:1: imports cobrowse_tls.core ({bottom})",
        f"cobrowse_tls/core/certs.py:1: imports socket ({pure})",
        f"cobrowse_tls/core/render.py:4: imports cobrowse_tls.engine ({pure})",
        f"cobrowse_tls/core/render.py:5: imports cobrowse_tls.engine ({pure})",
        f"cobrowse_tls/core/render.py:6: imports kubernetes ({pure})",
        f"cobrowse_tls/core/render.py:7: calls datetime.today() ({pure})",
        f"cobrowse_tls/core/render.py:8: calls datetime.fromtimestamp() ({pure})",
        f"cobrowse_tls/core/render.py:9: calls datetime.now() ({pure})",
        f"cobrowse_tls/engine/kube.py:1: imports cobrowse_tls.cli ({engine})",
    ]
