"""Writing `cobrowse-tls render --output-dir DIR`: every file or none.

Every target path is checked before anything is replaced (a directory where a file goes
stops the run with DIR untouched). New files are written into a scratch directory on DIR's
own filesystem (inside DIR when it exists, so a mount point works; beside it when it does
not, then renamed into place), and each moved in with an atomic rename after a hard-link
backup of the file it replaces: if a move fails, the files already replaced are put back.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import tempfile
from collections.abc import Collection, Mapping

SCRATCH_PREFIX = ".cobrowse-tls-render-"


class OutputError(Exception):
    """DIR cannot take the files: one line, exit status 2, DIR as it was."""


def _cannot(path: pathlib.Path, exc: OSError) -> OutputError:
    return OutputError(f"{path}: cannot write: {exc.strerror or exc}")


def check_targets(out_dir: pathlib.Path, names: Collection[str]) -> None:
    """Refuse before writing anything: DIR not a directory, or a target not a plain file."""
    try:
        if not out_dir.exists():
            if out_dir.is_symlink():
                raise OutputError(f"{out_dir}: a symbolic link to nothing")
            return
        if not out_dir.is_dir():
            raise OutputError(f"{out_dir}: not a directory")
        for name in sorted(names):
            path = out_dir / name
            try:
                mode = path.lstat().st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(mode):
                raise OutputError(f"{path}: is a directory, where render writes a file")
            if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                raise OutputError(f"{path}: not a regular file, where render writes a file")
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot read: {exc.strerror or exc}") from None


def _fill(scratch: pathlib.Path, files: Mapping[str, bytes], private: Collection[str]) -> None:
    for name, data in files.items():
        path = scratch / name
        path.write_bytes(data)
        path.chmod(0o600 if name in private else 0o644)


def _backup(target: pathlib.Path, backup: pathlib.Path) -> None:
    try:
        os.link(target, backup, follow_symlinks=False)
    except OSError:
        # Filesystems without hard links: a copy serves the same purpose.
        shutil.copy2(target, backup, follow_symlinks=False)


def write_files(
    files: Mapping[str, bytes],
    out_dir: pathlib.Path,
    *,
    stale: Collection[str] = (),
    private: Collection[str] = (),
) -> None:
    """Write ``files`` into ``out_dir`` and remove the ``stale`` ones, all or nothing."""
    out_dir = out_dir.absolute()
    check_targets(out_dir, set(files) | set(stale))
    if not out_dir.exists():
        _write_new(files, out_dir, private)
        return
    try:
        scratch = pathlib.Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=out_dir))
    except OSError as exc:
        raise _cannot(out_dir, exc) from None
    try:
        new, old = scratch / "new", scratch / "old"
        new.mkdir()
        old.mkdir()
        _fill(new, files, private)
        _swap(new, old, out_dir, files, stale)
    except OSError as exc:
        raise _cannot(out_dir, exc) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_new(files: Mapping[str, bytes], out_dir: pathlib.Path, private: Collection[str]) -> None:
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        scratch = pathlib.Path(
            tempfile.mkdtemp(prefix=SCRATCH_PREFIX + out_dir.name + ".", dir=out_dir.parent)
        )
    except OSError as exc:
        raise _cannot(out_dir.parent, exc) from None
    try:
        _fill(scratch, files, private)
        scratch.chmod(0o755)  # mkdtemp's 0700 would hide the public files
        scratch.rename(out_dir)
    except OSError as exc:
        raise _cannot(out_dir, exc) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _swap(
    new: pathlib.Path,
    old: pathlib.Path,
    out_dir: pathlib.Path,
    files: Collection[str],
    stale: Collection[str],
) -> None:
    done: list[tuple[str, bool]] = []  # (name, whether a previous file is in old/)
    try:
        for name in files:
            target = out_dir / name
            existed = os.path.lexists(target)
            if existed:
                _backup(target, old / name)
            os.replace(new / name, target)
            done.append((name, existed))
        for name in stale:
            target = out_dir / name
            if os.path.lexists(target):
                os.replace(target, old / name)
                done.append((name, True))
    except OSError:
        for name, existed in reversed(done):
            target = out_dir / name
            try:
                if existed:
                    os.replace(old / name, target)
                else:
                    target.unlink()
            except OSError:
                pass  # best effort: the first error is the one to report
        raise
