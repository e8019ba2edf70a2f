"""Random values kept in a CobrowseTLS's truststore Secret: generated once, then read back.

The core never draws them (it is pure): the operator does, here (``cobrowse-tls render`` only a
password, never the hash key, so that its output stays the same for the same inputs).
"""

from __future__ import annotations

import secrets

from cobrowse_tls.core import render


def generate() -> str:
    # 32 random bytes, URL-safe: nothing a shell, cmd.exe or keytool would need quoted.
    return secrets.token_urlsafe(32)


def generate_hash_key() -> bytes:
    """The key of the password's part of the published hashes (render.HASH_KEY)."""
    return secrets.token_bytes(render.HASH_KEY_MIN_BYTES)
