"""The fake crypt32 of ``tests/native/fake_crypt32.c``: built with gcc, loaded with ctypes.

:func:`build` compiles it into a shared library (the ``crypt32`` session fixture does that
once, into a temporary directory). :class:`FakeCrypt32` loads it the way
:func:`cobrowse_tls.agent.winstore.load_crypt32` loads the real one: ``CDLL`` instead of
``WinDLL`` (ctypes has no WinDLL off Windows; on 64-bit Windows both use the one x64 calling
convention), ``use_errno``/``get_errno`` instead of ``use_last_error``/``get_last_error``, and
then the same :func:`~cobrowse_tls.agent.winstore.bind`. Its ``fake_*`` functions let a test
create stores, look into them, count handles and contexts, and inject failures.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
from pathlib import Path

from cobrowse_tls.agent import winstore
from cobrowse_tls.agent.stores import Target

SOURCE = Path(__file__).resolve().parent / "native" / "fake_crypt32.c"

# winerror.h
E_ACCESSDENIED = 0x80070005
E_INVALIDARG = 0x80070057
ERROR_NOT_READY = 0x80070015  # HRESULT_FROM_WIN32(ERROR_NOT_READY): a store that went away
ERROR_FILE_NOT_FOUND = 0x00000002
CRYPT_E_NOT_FOUND = 0x80092004
ERROR_NO_MORE_FILES = 0x00000012
NAMES = {
    E_ACCESSDENIED: "E_ACCESSDENIED",
    E_INVALIDARG: "E_INVALIDARG",
    ERROR_NOT_READY: "ERROR_NOT_READY",
    ERROR_FILE_NOT_FOUND: "ERROR_FILE_NOT_FOUND",
    CRYPT_E_NOT_FOUND: "CRYPT_E_NOT_FOUND",
    ERROR_NO_MORE_FILES: "ERROR_NO_MORE_FILES",
}


def build(out_dir: Path) -> Path:
    """Compile the fake into ``out_dir``; fails loudly without gcc (hack/setup.sh installs it)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is not installed: run hack/setup.sh (it installs gcc)")
    out = out_dir / "fake_crypt32.so"
    subprocess.run(
        [
            gcc,
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O1",
            "-shared",
            "-fPIC",
            "-fvisibility=hidden",
            "-o",
            str(out),
            str(SOURCE),
        ],
        check=True,
    )
    return out


def _describe(code: int) -> str:
    return NAMES.get(code, "error")


class FakeCrypt32:
    def __init__(self, library: Path) -> None:
        self.lib = ctypes.CDLL(str(library), use_errno=True)
        self.crypt32 = winstore.bind(self.lib, ctypes.get_errno, _describe)
        u32 = ctypes.c_uint32
        for name, restype, argtypes in (
            ("fake_reset", None, []),
            ("fake_create_store", ctypes.c_int, [u32, ctypes.c_char_p]),
            ("fake_store_exists", ctypes.c_int, [u32, ctypes.c_char_p]),
            ("fake_store_count", ctypes.c_int, [u32, ctypes.c_char_p]),
            ("fake_store_cert", u32, [u32, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, u32]),
            ("fake_open_handles", ctypes.c_int, []),
            ("fake_live_contexts", ctypes.c_int, []),
            ("fake_misuse", ctypes.c_int, []),
            ("fake_last_open_flags", u32, []),
            ("fake_inject", ctypes.c_int, [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, u32]),
        ):
            func = getattr(self.lib, name)
            func.restype = restype
            func.argtypes = argtypes

    @staticmethod
    def _where(target: Target) -> tuple[int, bytes]:
        flags, name = winstore.open_args(target)
        return flags & 0x00FF0000, name.encode("ascii")

    def reset(self) -> None:
        self.lib.fake_reset()

    def create_store(self, target: Target) -> None:
        assert self.lib.fake_create_store(*self._where(target))

    def exists(self, target: Target) -> bool:
        return bool(self.lib.fake_store_exists(*self._where(target)))

    def certificates(self, target: Target) -> list[bytes]:
        """The DER of every certificate in the store, read by the fake itself."""
        where = self._where(target)
        count = self.lib.fake_store_count(*where)
        assert count >= 0, f"no store {target.key}"
        out = []
        for index in range(count):
            buf = ctypes.create_string_buffer(65536)
            size = self.lib.fake_store_cert(*where, index, buf, len(buf))
            out.append(buf.raw[:size])
        return out

    def thumbprints(self, target: Target) -> set[str]:
        return {
            hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
            for der in self.certificates(target)
        }

    @property
    def open_handles(self) -> int:
        return int(self.lib.fake_open_handles())

    @property
    def live_contexts(self) -> int:
        return int(self.lib.fake_live_contexts())

    @property
    def misuse(self) -> int:
        return int(self.lib.fake_misuse())

    @property
    def last_open_flags(self) -> int:
        return int(self.lib.fake_last_open_flags())

    def inject(self, function: str, error: int, *, skip: int = 0, times: int = 1) -> None:
        """After ``skip`` more calls of ``function`` that succeed, ``times`` calls fail."""
        assert self.lib.fake_inject(function.encode("ascii"), skip, times, error)

    def assert_no_leaks(self) -> None:
        assert (self.open_handles, self.live_contexts, self.misuse) == (0, 0, 0)
