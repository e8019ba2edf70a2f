"""The `cobrowse-tls` command: dispatches each verb to the module that implements it.

Each verb module exposes ``main(argv: list[str]) -> int`` and is imported lazily, so
`cobrowse-tls render` never pays for importing kopf and the agent never imports the
Kubernetes client.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "render": ("cobrowse_tls.render_cli", "render the operator's outputs offline, no cluster"),
    "crd": ("cobrowse_tls.api.crd", "print the CRD generated from the model"),
    "run": ("cobrowse_tls.engine.runner", "run the operator (kopf)"),
    "agent": ("cobrowse_tls.agent", "run the Windows certificate-store agent"),
    "dev-cluster": ("cobrowse_tls.devcluster.cli", "a local control plane: up | down | status"),
}


def _usage() -> str:
    lines = ["usage: cobrowse-tls VERB [options]", "", "verbs:"]
    lines += [f"  {verb:<12} {text}" for verb, (_, text) in VERBS.items()]
    lines += ["", "`cobrowse-tls VERB --help` describes a verb."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] == "--version":
        from cobrowse_tls import __version__

        print(__version__)
        return 0
    verb, rest = args[0], args[1:]
    if verb not in VERBS:
        print(f"cobrowse-tls: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if verb == "run":
        # The operator talks to the API through engine/kube.py alone. kopf imports the
        # kubernetes client's models whenever it is installed (kopf/_cogs/helpers/
        # thirdparty.py, to recognise them as handler results, which we never return): about
        # 20 MB of resident memory for nothing. It stays installed for the tests and hack/
        # scripts; None in sys.modules makes each import of it raise ImportError, which kopf
        # expects when the package is absent.
        sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]  # None blocks
    module = importlib.import_module(VERBS[verb][0])
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
