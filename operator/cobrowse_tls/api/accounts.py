"""The one rule for ``windows.account``: the model, the CRD (CEL) and the agent all use it.

Plain Python without pydantic, so the agent (which must start fast for its readiness probe)
can import it. The CRD carries the same rule as a pattern, a length and CEL expressions built
from the constants below (see :class:`cobrowse_tls.api.models.Windows`).
"""

from __future__ import annotations

import re

MAX_LENGTH = 256
# A service name or a SID: nothing a store name, a path or a shell would treat specially. No
# slash or backslash (which would shift the store name ``<account>\\Root``).
PATTERN = r"^[A-Za-z0-9_.$ -]*$"
SID_PATTERN = r"^S-1-[0-9]+(-[0-9]+)+$"
# Path components, not accounts: the agent keys its records and file store by account.
RESERVED = (".", "..")

LOCAL_MACHINE = "LocalMachine"
USER = "User"

MESSAGE_REQUIRED = (
    "account is required for location Service or User and must be empty for LocalMachine"
)
MESSAGE_SID = "for location User, account is the user's SID (S-1-5-21-...)"
MESSAGE_RESERVED = "account must not be '.' or '..'"
MESSAGE_PATTERN = (
    f"account: at most {MAX_LENGTH} letters, digits, spaces and the characters _ . $ -"
)

_PATTERN = re.compile(PATTERN)
_SID = re.compile(SID_PATTERN)


def is_sid(value: str) -> bool:
    return _SID.fullmatch(value) is not None


def problem(location: str, account: str | None) -> str | None:
    """Why ``account`` cannot go with ``location`` (None: it can). ``""`` means no account."""
    account = account or ""
    if (location != LOCAL_MACHINE) != (account != ""):
        return MESSAGE_REQUIRED
    if len(account) > MAX_LENGTH or not _PATTERN.fullmatch(account):
        return MESSAGE_PATTERN
    if account in RESERVED:
        return MESSAGE_RESERVED
    if location == USER and not is_sid(account):
        return MESSAGE_SID
    return None
