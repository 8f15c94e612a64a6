"""Atomic file output: every file is written under a temporary name and renamed when complete.

A crash can leave a ``.tmp-*`` file behind, never a final path holding a partial file. Also the one
file checksum (`sha256_file`) that checkpoints, training provenance and exports record, and the one
PNG writer of the pictures in reports (`write_png`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "HOST",
    "TMP_PREFIX",
    "atomic_path",
    "write_json_atomic",
    "save_npy_atomic",
    "atomic_dir",
    "sha256_file",
    "write_png",
]

logger = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
"""The prefix of every temporary file (`atomic_path`) and directory (`atomic_dir`): what readers pass over."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, streamed (checkpoints and tile arrays can be larger than memory)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the final suffix (``suffix`` overrides it), so drivers that pick
    a format from the extension (GDAL, NumPy) still work.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f"{TMP_PREFIX}{final.name}.", suffix=suffix if suffix is not None else final.suffix, dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; products are meant to be shared like any other file
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


#: This machine, as it appears in the names of temporary directories (`atomic_dir`).
HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "localhost"


def _tmp_dir_name(final: Path, kind: str) -> str:
    """A sibling of ``final`` this process builds (``new``) or sets aside (``old``) a directory in."""
    return f"{TMP_PREFIX}{final.name}.{kind}.{HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's counts)."""
    if pid == os.getpid():
        return False  # a leftover of an earlier process that had this pid: this one builds after cleaning
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_stale_dirs(final: Path) -> None:
    """Delete the temporary directories of ``final`` that a killed process left on this host; log those
    of processes that may still run (alive here, or on another host)."""
    if not final.parent.is_dir():
        return
    pattern = re.compile(
        rf"{re.escape(TMP_PREFIX)}{re.escape(final.name)}\.(?:new|old)\.(?P<host>.+)\.(?P<pid>\d+)\.[0-9a-f]{{8}}"
    )
    for path in sorted(final.parent.iterdir()):
        m = pattern.fullmatch(path.name)
        if m is None or not path.is_dir() or path.is_symlink():
            continue
        host, pid = m["host"], int(m["pid"])
        if host == HOST and not _running(pid):
            logger.info("deleting %s, left by an interrupted run (process %d)", path, pid)
            _rmtree(path)
        else:
            logger.warning(
                "%s belongs to a run that may still go on (process %d on %s); delete it if that run is over",
                path, pid, host,
            )  # fmt: skip


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``path``; when the block succeeds, swap it onto ``path``.

    The temporary directory (``.tmp-<name>.new.<host>.<pid>.<token>``, same filesystem) takes the
    place of ``path`` by a rename; a previous directory there is first renamed aside and deleted after,
    so ``path`` is only ever absent, the previous complete directory or the new one. If the block
    raises, the temporary directory is deleted and ``path`` is untouched. Temporary directories of
    ``path`` that a killed process left on this host are deleted first.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_dirs(final)
    work = final.parent / _tmp_dir_name(final, "new")
    work.mkdir()
    try:
        yield work
        if not final.exists():
            os.replace(work, final)
            return
        old = final.parent / _tmp_dir_name(final, "old")
        os.replace(final, old)
        try:
            os.replace(work, final)
        except BaseException:
            os.replace(old, final)
            raise
        try:
            _rmtree(old)
        except OSError as e:  # the new directory is in place; the next run deletes what is left
            logger.warning("could not delete the previous %s: %s", old, e)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _rmtree(path: Path) -> None:
    shutil.rmtree(path)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_npy_atomic(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically (dtype and shape preserved)."""
    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write a ``(bands, height, width)`` uint8 picture as a PNG, atomically.

    A plain picture: no georeferencing, no ``.aux.xml`` sidecar and no `NotGeoreferencedWarning` in
    the job's log.
    """
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    bands, height, width = image.shape
    profile = {"driver": "PNG", "height": height, "width": width, "count": bands, "dtype": "uint8"}
    with atomic_path(path, suffix=".png") as tmp, warnings.catch_warnings(), rasterio.Env(GDAL_PAM_ENABLED="NO"):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(image.astype(np.uint8, copy=False))
