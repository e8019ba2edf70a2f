"""A new JKS password for a CobrowseTLS whose spec names none (kept in its truststore Secret)."""

from __future__ import annotations

import secrets


def generate() -> str:
    # 32 random bytes, URL-safe: nothing a shell, cmd.exe or keytool would need quoted.
    return secrets.token_urlsafe(32)
