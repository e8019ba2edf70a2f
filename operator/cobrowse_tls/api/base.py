"""Shared machinery of the API models: camelCase aliases and cross-field rules.

A cross-field rule is written once, as a :class:`Rule`, and serves twice: its CEL expression
goes into the CRD (so the API server rejects the object at ``kubectl apply``) and its Python
predicate runs in the model (so ``cobrowse-tls render`` rejects the same object offline), both
with the same message.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Self

import pydantic
from pydantic import alias_generators


@dataclasses.dataclass(frozen=True)
class Rule:
    cel: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None  # where the API server reports the failure
    # A message naming the values at hand: a CEL expression for the API server and the same
    # text from Python for the model; ``message`` stays the API server's fallback.
    message_expression: str | None = None
    describe: Callable[[Any], str] | None = None

    def schema(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.message_expression:
            out["messageExpression"] = self.message_expression
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out

    def error(self, obj: Any) -> str:
        return self.describe(obj) if self.describe is not None else self.message


class Model(pydantic.BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields rejected."""

    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
        json_schema_extra=lambda schema, cls: _add_rules(schema, cls),
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @pydantic.model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in self.rules:
            if not rule.check(self):
                raise ValueError(rule.error(self))
        return self

    def wire(self) -> dict[str, Any]:
        """The object as it appears in the API: camelCase, no unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _add_rules(schema: dict[str, Any], cls: type[Any]) -> None:
    rules: tuple[Rule, ...] = getattr(cls, "rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.schema() for r in rules]


# RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
HOSTNAME_RE = (
    r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)
_HOSTNAME = re.compile(HOSTNAME_RE)
HOST_MESSAGE = "must be an RFC 1123 host name or an IP address"


def _check_host(value: str) -> str:
    # fullmatch: `$` alone would let a trailing newline through. No IPv6 zone (`fe80::1%eth0`):
    # the API server's isIP() rejects zones, and a zone may hold any character.
    if len(value) <= 253 and _HOSTNAME.fullmatch(value):
        return value
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} {HOST_MESSAGE}") from None
    if "%" in value:
        raise ValueError(f"{value!r} {HOST_MESSAGE} (IPv6 zones are not allowed)")
    return value


Host = Annotated[
    str,
    pydantic.AfterValidator(_check_host),
    pydantic.WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": 253,
            "x-kubernetes-validations": [
                {"rule": f"self.matches(r'{HOSTNAME_RE}') || isIP(self)", "message": HOST_MESSAGE}
            ],
        }
    ),
]

# strict: as in the CRD (type integer), `true` or "8889" is not a port.
Port = Annotated[int, pydantic.Field(ge=1, le=65535, strict=True)]

# Kubernetes object names (DNS subdomain) and data keys.
DNS_SUBDOMAIN_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ObjectName = Annotated[str, pydantic.Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_RE)]
DataKey = Annotated[str, pydantic.Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
