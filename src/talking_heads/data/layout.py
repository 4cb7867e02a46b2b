"""The on-disk layout that `talking-heads preprocess` writes and the episode dataset reads (paper.md section 2).

One folder per clip; any number of processes and nodes can write disjoint shards at once:

    OUT/preprocess.json                 settings of this folder (size, max_frames, crop rule); a later run
                                        with other settings is refused
    OUT/clips/<clip_id>/frames/000000.jpg ...   the kept frames, cropped, size x size RGB JPEG
    OUT/clips/<clip_id>/landmarks.npy   (F,68,2) float32, crop pixel coordinates (pixel-centre convention)
    OUT/clips/<clip_id>/confidence.npy  (F,) float32 in [0,1], detector confidence per kept frame
    OUT/clips/<clip_id>/iris.npy        (F,2,4) float32 per eye (subject's right, left): iris centre x, y and
                                        radius in crop pixels, confidence (landmarks/iris.py); absent when
                                        preprocessed without iris points (data.iris = "none", or before gaze)
    OUT/clips/<clip_id>/meta.json       identity, source (relative and absolute), original fps / size / frame
                                        count, audio, crop transform (box in original pixels; "padded" when
                                        it reaches past the frame, "crop_grown" when widened for head
                                        motion), the source index of every stored frame, skipped frames with
                                        reasons, warnings (e.g. a truncated file)
    OUT/failed/<clip_id>.json           one record per clip that failed or was skipped, with the reason
    OUT/manifest-shard-SSSSS-of-NNNNN.jsonl   one JSON line per clip of that shard (written at the end of
                                        a shard's run): clip_id, identity, n_frames, source, status
                                        ("ok" | "skipped" | "failed"), reason
    OUT/manifest.jsonl                  the merged view (written by single-shard runs and `merge_manifests`)

Readers call `read_manifest(OUT)` (or `usable_clips(OUT)`, the clips episodes can use): it merges every shard manifest (the newest file wins for a clip id), else
reads manifest.jsonl, else rebuilds the list from clips/*/meta.json and failed/*.json (`rebuild_manifest`),
so a killed run or a missing manifest never hides finished clips.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable

from ..atomic import atomic_path
from ..errors import InputError

log = logging.getLogger(__name__)

LAYOUT_VERSION = 1
CLIPS_DIR = "clips"
FAILED_DIR = "failed"
SETTINGS_FILE = "preprocess.json"
MERGED_MANIFEST = "manifest.jsonl"
SHARD_MANIFEST = "manifest-shard-{index:05d}-of-{count:05d}.jsonl"
FRAMES_DIR = "frames"
FRAME_NAME = "{:06d}.jpg"
IRIS_FILE = "iris.npy"
MANIFEST_KEYS = ("clip_id", "identity", "n_frames", "source", "status", "reason", "warnings")


class DatasetError(InputError):
    """A preprocessed folder that cannot be trained or evaluated on; the message names the folder or clip."""


def usable_clips(root: str | os.PathLike, what: str = "data folder") -> list[dict[str, Any]]:
    """The manifest records of the clips episodes can be drawn from (status ok, at least 2 frames), sorted by
    clip id; DatasetError (naming the folder as `what`) when there is none, or no preprocessed folder."""
    path = Path(root)
    redo = f"run `talking-heads preprocess VIDEOS {root}` first"
    if not path.exists():
        raise DatasetError(f"{what} {root}: no such folder ({redo})")
    if not path.is_dir():
        raise DatasetError(f"{what} {root}: not a folder (give the output folder of `talking-heads preprocess`)")
    if not (path / SETTINGS_FILE).is_file() and not (path / CLIPS_DIR).is_dir():
        raise DatasetError(f"{what} {root}: not a preprocessed folder (no {SETTINGS_FILE} or {CLIPS_DIR}/), so no "
                           f"preprocessed clips; {redo}")
    records = [r for r in read_manifest(path) if r.get("status") == "ok" and int(r.get("n_frames", 0)) >= 2]
    if not records:
        raise DatasetError(f"{what} {root}: no preprocessed clips with at least 2 frames (every clip failed or was "
                           f"skipped, or the folder is empty); see its manifest and {FAILED_DIR}/ folder")
    return records


def write_manifest(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """One JSON line per record (its `MANIFEST_KEYS`), written atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            for r in records:
                f.write(json.dumps(manifest_line(r)) + "\n")


def manifest_line(r: dict[str, Any]) -> dict[str, Any]:
    """The manifest's view of a clip record."""
    line = {k: r.get(k) for k in MANIFEST_KEYS}
    line["reason"] = line["reason"] or ""
    line["warnings"] = list(line["warnings"] or [])
    return line


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def rebuild_manifest(out: str | os.PathLike) -> list[dict[str, Any]]:
    """Manifest records from the clip folders and failure records on disk (no manifest file needed)."""
    out = Path(out)
    records: dict[str, dict[str, Any]] = {}
    failed_dir = out / FAILED_DIR
    if failed_dir.is_dir():
        for p in sorted(failed_dir.glob("*.json")):
            try:
                r = json.loads(p.read_text())
                records[r["clip_id"]] = manifest_line(r)
            except (OSError, ValueError, KeyError):
                continue
    clips = out / CLIPS_DIR
    if clips.is_dir():
        for d in sorted(clips.iterdir()):
            if d.name.startswith(".") or not (d / "meta.json").is_file():
                continue
            m = json.loads((d / "meta.json").read_text())
            records[m["clip_id"]] = manifest_line({**m, "status": "ok", "reason": ""})
    return [records[k] for k in sorted(records)]


def read_manifest(out: str | os.PathLike) -> list[dict[str, Any]]:
    """All clip records of OUT, sorted by clip id: merged shard manifests, else manifest.jsonl, else a scan."""
    out = Path(out)
    shards = sorted(out.glob("manifest-shard-*.jsonl"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    groups: dict[int, set[int]] = {}
    for p in shards:
        m = re.fullmatch(r"manifest-shard-(\d+)-of-(\d+)\.jsonl", p.name)
        if m:
            groups.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    missing = {n: sorted(set(range(n)) - got) for n, got in groups.items() if len(got) < n}
    if missing:
        log.warning("%s: shard manifests missing (%s); listing the clip folders instead", out,
                    ", ".join(f"{len(v)} of {n}" for n, v in missing.items()))
        return rebuild_manifest(out)
    if shards:
        merged: dict[str, dict[str, Any]] = {}
        for p in shards:  # oldest first: newer files overwrite
            for r in read_jsonl(p):
                merged[r["clip_id"]] = r
        return [merged[k] for k in sorted(merged)]
    if (out / MERGED_MANIFEST).is_file():
        return sorted(read_jsonl(out / MERGED_MANIFEST), key=lambda r: r["clip_id"])
    return rebuild_manifest(out)


def merge_manifests(out: str | os.PathLike, rebuild: bool = False) -> Path:
    """Write OUT/manifest.jsonl from the shard manifests (or from a scan of the folders when `rebuild`)."""
    out = Path(out)
    records = rebuild_manifest(out) if rebuild else read_manifest(out)
    write_manifest(out / MERGED_MANIFEST, records)
    return out / MERGED_MANIFEST


__all__ = ["CLIPS_DIR", "DatasetError", "FAILED_DIR", "FRAMES_DIR", "FRAME_NAME", "LAYOUT_VERSION", "MANIFEST_KEYS",
           "MERGED_MANIFEST", "SETTINGS_FILE", "SHARD_MANIFEST", "manifest_line", "merge_manifests", "read_jsonl",
           "read_manifest", "rebuild_manifest", "usable_clips", "write_manifest"]
