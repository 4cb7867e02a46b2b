"""Checks of input and output paths at the boundary (CLI, web app, library entry points).

Inputs must be regular files or folders (a FIFO named `.jpg` would block a reader for ever, a device never
ends); outputs must have a writable parent folder, must not be a folder when a file is asked for (or a file
when a folder is), and must not be one of the command's inputs (writing would destroy it) or hold them.
Every refusal is an `InputError` naming the path and saying what to do.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable

from .errors import InputError


def input_file(path: str | os.PathLike, what: str = "input", *, max_bytes: int | None = None) -> Path:
    """An existing regular file (symbolic links followed)."""
    p = _nonempty(path, what)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"{what} {p}: no such file") from None
    except OSError as err:
        raise InputError(f"{what} {p}: cannot be read ({err.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} {p} is a folder; give a file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {p} is not a regular file (a FIFO, socket or device, which could block "
                         "for ever); give a file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise InputError(f"{what} {p} is {st.st_size} bytes, more than the {max_bytes} this input can be")
    return p


def input_path(path: str | os.PathLike, what: str = "input") -> Path:
    """An existing folder, or an existing regular file (`input_file`)."""
    p = _nonempty(path, what)
    if p.is_dir():
        return p
    if not p.exists() and not p.is_symlink():
        raise InputError(f"{what} {p}: no such file or folder")
    return input_file(p, what)


def is_special(path: str | os.PathLike) -> bool:
    """True for something that exists and is neither a regular file nor a folder (FIFO, socket, device)."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _nonempty(path: str | os.PathLike, what: str) -> Path:
    text = os.fspath(path)
    if not str(text).strip():
        raise InputError(f"{what}: empty path; give a file name")
    return Path(text)


def _writable_parent(p: Path, what: str) -> None:
    """The nearest existing ancestor of `p` must be a folder this process can write into."""
    parent = p.parent if str(p.parent) else Path(".")
    probe = parent
    while not probe.exists():
        if probe == probe.parent:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError(f"{what} {p}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{what} {p}: cannot write into {probe} (read-only or no permission); choose another "
                         "location")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def output_file(path: str | os.PathLike, what: str = "-o", *, suffixes: Iterable[str] = (),
                inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """A file path that can be written: not empty, not a folder, the right suffix, a writable parent, and
    not one of `inputs`."""
    p = _nonempty(path, what)
    text = os.fspath(path)
    if p.is_dir() or text.endswith(("/", os.sep)) or p.name in ("", ".", ".."):
        raise InputError(f"{what} {text}: is a folder; give the path of the file to write")
    suffixes = [s.lower() for s in suffixes]
    if suffixes and p.suffix.lower() not in suffixes:
        raise InputError(f"{what} {text}: the output must be an {' or '.join(suffixes)} file")
    if is_special(p):
        raise InputError(f"{what} {text}: not a regular file (a FIFO, socket or device); choose another file")
    for given in inputs:
        if given is not None and _same(Path(given), p):
            raise InputError(f"{what} {text} is also an input of this command: writing it would destroy the "
                             "input; choose another output file")
    _writable_parent(p, what)
    return p


def output_dir(path: str | os.PathLike, what: str = "--out", *,
               inputs: Iterable[str | os.PathLike | None] = (), inside_input_ok: bool = False) -> Path:
    """A folder path that can be created or written into: not a file, a writable location, not one of
    `inputs`, not holding one, and not inside one unless `inside_input_ok` (a reader that skips it)."""
    p = _nonempty(path, what)
    if p.exists() and not p.is_dir():
        raise InputError(f"{what} {p} is a file; give a folder (it is created when missing)")
    for given in inputs:
        if given is None or not Path(given).exists():
            continue
        g = Path(given)
        if _same(g, p) or (g.is_dir() and not inside_input_ok and _inside(p, g)) or _inside(g, p):
            raise InputError(f"{what} {p} overlaps the input {g} (the same folder, inside it, or holding it): "
                             "the output would be read back as input; choose a folder outside it")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise InputError(f"{what} {p}: cannot write into it (read-only or no permission)")
    else:
        _writable_parent(p, what)
    return p


__all__ = ["input_file", "input_path", "is_special", "output_file", "output_dir"]
