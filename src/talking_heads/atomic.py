"""Write files and directories so that a killed process never leaves a half-written output behind.

Everything the project writes (checkpoints, preprocessed clips, avatars, videos, reports) goes through
these helpers: the data is written under a temporary name in the same directory, then renamed into place
(rename is atomic on POSIX within one file system).

- Modes follow the umask, like any file the user creates (0666 / 0777 & ~umask): tempfile's private 0600 /
  0700 would otherwise survive the rename, and a team could not share datasets or models.
- Temporary names carry the writer's process id (`.NAME.<pid>.<random>.tmp...`), so `sweep_temporaries`
  can remove what a killed process left behind without touching the files of one still running.
- `durable=True` also fsyncs the data and the folder before the rename (checkpoints: a power cut leaves the
  previous complete checkpoint).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def fault_point(what: str) -> None:
    """Called after every write and rename of a checkpoint (`what` names it). A no-op; the kill tests replace
    it (`atomic.fault_point = ...`) in a child process with one that SIGKILLs the process at the N-th call.
    Callers look it up at call time (`atomic.fault_point(...)`, never `from .atomic import fault_point`), so
    the replacement is seen everywhere."""


def umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux: /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _public(path: Path, directory: bool) -> None:
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a folder (its entries), ignoring systems that cannot (some network file systems)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync every file and folder under `path` (and `path`)."""
    path = Path(path)
    for root, dirs, files in os.walk(path):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(root)


def _prefix(name: str) -> str:
    return f".{name}.{os.getpid()}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on error delete it.

    The temporary name keeps the suffix of `path` (encoders that pick a format by suffix still work).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path.stem), suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        _public(tmp_path, directory=False)
        yield tmp_path
        if durable:
            fsync_path(tmp_path)
        os.replace(tmp_path, path)
        if durable:
            fsync_path(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it replaces `path` (old contents removed).

    If `path` already exists it is first renamed aside, so at every instant either the old or the new
    complete directory is at `path` or aside (the aside copy is deleted afterwards). Training checkpoints
    do not use this (two renames): they switch a symbolic link (`checkpoint.commit_run_checkpoint`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(path.name), suffix=".tmp", dir=path.parent))
    try:
        _public(tmp, directory=True)
        yield tmp
        aside = None
        if path.exists():
            aside = path.parent / f".{path.name}.{os.getpid()}.old.tmp"
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(path, aside)
        os.replace(tmp, path)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def make_dir(path: str | os.PathLike) -> Path:
    """mkdir -p with the umask's mode (what a plain mkdir gives; here for symmetry with the writers)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


_TEMP = re.compile(r"^\..+\.(\d+)\.(?:[A-Za-z0-9_]+\.)?(?:old\.)?tmp(?:[.-].*)?$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries (files or folders) that killed writers left in `folder`: names made by
    `atomic_path` / `atomic_dir` whose process id is no longer running on this machine. Returns them."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP.match(p.name)
        if not m or _alive(int(m.group(1))):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            continue
    return removed


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
