"""The Co-browse manual's table of releases and application objects, as test data.

Written from the manual (DESIGN.md section 3), not from the model: the [security] options go
on the Server object (8.5.000), the Node object (8.5.001+) or the Cluster object (8.5.003+),
on the Node object when Solution Control Server is used; connections go on the Server object
(8.5.000) or the Cluster object (8.5.001+). A release that is not set means 8.5.000 for the
Server object (the only release that has one reading the options) and a current one otherwise.
The model tests (tests/unit) and the API server's CEL tests (tests/e2e) both check every row.
"""

from __future__ import annotations

import dataclasses

SECURITY_OBJECTS = "(Server: 8.5.000; Node: 8.5.001+; Cluster: 8.5.003+)"
DEFAULT = "8.5.003 or later (application.version not set)"

# release: (objects that read [security], the same with Solution Control Server, the object
# that reads connections)
RELEASES: dict[str | None, tuple[set[str], set[str], str]] = {
    "8.5.000": ({"Server"}, {"Server"}, "Server"),
    "8.5.000.12": ({"Server"}, {"Server"}, "Server"),
    "8.5.001": ({"Node"}, {"Node"}, "Cluster"),
    "8.5.002.07": ({"Node"}, {"Node"}, "Cluster"),
    "8.5.003": ({"Node", "Cluster"}, {"Node"}, "Cluster"),
    "8.5.104.03": ({"Node", "Cluster"}, {"Node"}, "Cluster"),
    "9.0.005": ({"Node", "Cluster"}, {"Node"}, "Cluster"),
    None: ({"Node", "Cluster"}, {"Node"}, "Cluster"),
}
TYPES = ("Server", "Node", "Cluster")


def release(version: str | None, type_: str) -> str | None:
    """The release a row is for (the key of RELEASES)."""
    return "8.5.000" if version is None and type_ == "Server" else version


@dataclasses.dataclass(frozen=True)
class Row:
    version: str | None
    type: str
    scs: bool
    refusal: str | None  # the message, or None when the manual allows it
    connections_object: str

    @property
    def id(self) -> str:
        return f"{self.version or 'default'}-{self.type}{'-SCS' if self.scs else ''}"

    def application(self) -> dict[str, object]:
        app: dict[str, object] = {"type": self.type, "name": f"CB_{self.type}"}
        if self.version is not None:
            app["version"] = self.version
        if self.scs:
            app["solutionControlServer"] = True
        return app


def _refusal(version: str | None, type_: str, scs: bool) -> str | None:
    security, with_scs, _ = RELEASES[release(version, type_)]
    label = f"Co-browse {version or DEFAULT}"
    if type_ not in security:
        return (
            f"{label} does not read the [security] options from the {type_} object"
            f" {SECURITY_OBJECTS}"
        )
    if scs and type_ not in with_scs:
        return (
            f"solutionControlServer: with Solution Control Server, {label} reads the"
            f" [security] options from the Node object, not the {type_} object"
        )
    return None


ROWS = [
    Row(version, type_, scs, _refusal(version, type_, scs), RELEASES[release(version, type_)][2])
    for version in RELEASES
    for type_ in TYPES
    for scs in (False, True)
]
