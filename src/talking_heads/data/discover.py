"""Finding the clips of a preprocessing input (paper.md section 2): every video file and folder of frames
under INPUT, each with a stable clip id, an identity and a shard.

INPUT: a video file, a folder of frames, or a folder tree holding videos (mp4, mov, avi, webm, mkv, ...)
and/or folders of frames, e.g. the VoxCeleb2 layout `id/video/clip.mp4`. Symbolic links are followed
(each real folder once). Hidden files and folders are ignored; files that are neither videos nor images
are ignored (a folder holding images is one clip of frames: do not point INPUT at a folder of stills).

- Identity: the `path,identity` CSV given as `manifest` (paths relative to the CSV's folder or to INPUT),
  else the VoxCeleb2 folder name (`id/video/clip.mp4` -> `id`), else the file (or frames folder) name.
- Clip ids: the path relative to INPUT with "/" replaced by "__" (characters outside [A-Za-z0-9._-] become
  "_", plus a short hash of the path when anything had to be replaced), so ids are stable and unique.
- Sharding: clip i belongs to shard int(sha1(clip_id)) % num_shards: stable when files are added, no
  coordination between shards.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import InputError
from ..paths import input_file
from ..paths import input_path as input_path_checked
from .video import VideoError, is_image_file, is_video_file


@dataclass
class ClipSource:
    """One input clip found by `discover`."""

    clip_id: str
    path: str  # absolute path of the video file or frames folder
    rel: str  # path relative to INPUT (posix)
    kind: str  # "video", "frames" or "unreadable" (a folder the walk could not enter)
    identity: str
    error: str = ""  # why it is unreadable


_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def make_clip_id(rel: str) -> str:
    """Stable, unique, file-system-safe id from a path relative to INPUT (module docstring)."""
    joined = "__".join(p for p in rel.strip("/").split("/") if p)
    safe = _SAFE.sub("_", joined)
    if safe != joined or safe.startswith("."):
        safe = safe.lstrip(".") + "-" + hashlib.sha1(rel.encode()).hexdigest()[:8]
    return safe


def shard_of(clip_id: str, num_shards: int) -> int:
    return int(hashlib.sha1(clip_id.encode()).hexdigest(), 16) % num_shards


class IdentityTable:
    """path -> identity from a CSV with columns path,identity (paths relative to the CSV or to INPUT)."""

    def __init__(self, csv_path: str | os.PathLike | None):
        self.by_abs: dict[str, str] = {}
        self.by_rel: dict[str, str] = {}
        if csv_path is None:
            return
        csv_path = input_file(csv_path, "manifest")
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "path" not in reader.fieldnames or "identity" not in reader.fieldnames:
                raise InputError(f"{csv_path}: needs the columns path,identity (found {reader.fieldnames})")
            for row in reader:
                path, ident = (row.get("path") or "").strip().rstrip("/"), (row.get("identity") or "").strip()
                if not path or not ident:
                    continue
                self.by_rel[path] = ident
                self.by_abs[os.path.normpath(os.path.join(csv_path.parent.resolve(), path))] = ident

    def lookup(self, abs_path: str, rel: str) -> str | None:
        hit = self.by_abs.get(os.path.normpath(abs_path)) or self.by_rel.get(rel)
        if hit:
            return hit
        for path, ident in self.by_rel.items():  # the CSV may list paths from a parent folder of INPUT
            if path.endswith("/" + rel):
                return ident
        return None


def identity_of(rel: str, table: IdentityTable, abs_path: str) -> str:
    """CSV identity, else the VoxCeleb2 id folder (id/video/clip), else the clip's own name."""
    hit = table.lookup(abs_path, rel)
    if hit:
        return hit
    parts = [p for p in rel.split("/") if p]
    if len(parts) >= 3:
        return parts[-3]
    name = parts[-1] if parts else rel
    return Path(name).stem if is_video_file(name) else name


def discover(input_path: str | os.PathLike, manifest: str | os.PathLike | None = None,
             exclude: Iterable[str | os.PathLike] = ()) -> list[ClipSource]:
    """Every clip under INPUT, sorted by clip id (module docstring). Folders that cannot be read are
    returned as kind "unreadable" so they are reported, not silently lost."""
    root = input_path_checked(input_path, "input_path").resolve()
    table = IdentityTable(manifest)
    excluded = {Path(e).resolve() for e in exclude}
    found: list[ClipSource] = []

    def add(abs_path: Path, rel: str, kind: str, error: str = "") -> None:
        found.append(ClipSource(make_clip_id(rel), str(abs_path), rel, kind,
                                identity_of(rel, table, str(abs_path)), error))

    if root.is_file():
        add(root, root.name, "video")
        return found

    def onerror(err: OSError) -> None:
        p = Path(err.filename).resolve()
        rel = p.relative_to(root).as_posix() if p != root else root.name
        if p == root:
            raise VideoError(f"{input_path}: cannot read folder ({err.strerror})")
        add(p, rel, "unreadable", f"cannot read folder: {err.strerror or err}")

    visited: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
        d = Path(dirpath)
        real = d.resolve()
        if real in visited:  # a symlink loop or a second link to the same folder
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and (d / n).resolve() not in excluded)
        rel_dir = d.relative_to(root).as_posix() if d != root else ""
        visible = [n for n in filenames if not n.startswith(".")]
        if any(is_image_file(n) for n in visible):
            add(d, rel_dir or root.name, "frames")
        for n in sorted(visible):
            if is_video_file(n):
                add(d / n, f"{rel_dir}/{n}" if rel_dir else n, "video")
    found.sort(key=lambda s: s.clip_id)
    seen: dict[str, ClipSource] = {}
    for s in found:  # ids are unique by construction; guard against pathological names anyway
        if s.clip_id in seen:
            s.clip_id = f"{s.clip_id}-{hashlib.sha1(s.rel.encode()).hexdigest()[:8]}"
        seen[s.clip_id] = s
    return found


__all__ = ["ClipSource", "IdentityTable", "discover", "identity_of", "make_clip_id", "shard_of"]
