"""`talking-heads preprocess INPUT OUT`: footage -> head crops + 68-point landmarks, computed once (paper.md section 2).

Landmarks are detected here, once per frame, and stored; the episode dataset only rasterises them (the
earlier public reimplementations ran a landmark network inside the data loader, paper.md section 9).

INPUT: a video file, a folder of frames, or a folder tree holding videos (mp4, mov, avi, webm, mkv, ...)
and/or folders of frames, e.g. the VoxCeleb2 layout `id/video/clip.mp4`. Symbolic links are followed
(each real folder once). Hidden files and folders are ignored; files that are neither videos nor images
are ignored (a folder holding images is one clip of frames: do not point INPUT at a folder of stills).

Output layout (one folder per clip; any number of processes and nodes can write disjoint shards at once):

    OUT/preprocess.json                 settings of this folder (size, max_frames, crop rule); a later run
                                        with other settings is refused
    OUT/clips/<clip_id>/frames/000000.jpg ...   the kept frames, cropped, size x size RGB JPEG
    OUT/clips/<clip_id>/landmarks.npy   (F,68,2) float32, crop pixel coordinates (pixel-centre convention)
    OUT/clips/<clip_id>/confidence.npy  (F,) float32 in [0,1], detector confidence per kept frame
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

Readers call `read_manifest(OUT)`: it merges every shard manifest (the newest file wins for a clip id), else
reads manifest.jsonl, else rebuilds the list from clips/*/meta.json and failed/*.json (`rebuild_manifest`),
so a killed run or a missing manifest never hides finished clips.

Guarantees:
- A clip folder is written under a temporary name and renamed into place when complete (`atomic_dir`), so a
  killed run never leaves a finished-looking clip; leftovers (`clips/.<id>.*.tmp`) are removed when that
  clip is processed again.
- Resumable: a clip with meta.json is never redone; a recorded failure is not retried while its source file
  is unchanged (size and mtime), unless `retry_failed`. A second run over the same INPUT does no work.
- Frames where no face is found, or whose landmarks leave the clip's crop box, are dropped and listed in
  meta.json["skipped_frames"]. Clips with fewer than 2 usable frames are skipped with a reason.
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
import json
import logging
import os
import re
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..atomic import atomic_dir, atomic_path, write_text
from ..config import DataConfig, ModelConfig
from ..landmarks.tracking import LandmarkTrack
from .video import VideoError, VideoInfo, even_indices, is_image_file, is_video_file, probe, read_frames

log = logging.getLogger(__name__)

LAYOUT_VERSION = 1
CLIPS_DIR = "clips"
FAILED_DIR = "failed"
SETTINGS_FILE = "preprocess.json"
MERGED_MANIFEST = "manifest.jsonl"
SHARD_MANIFEST = "manifest-shard-{index:05d}-of-{count:05d}.jsonl"
FRAMES_DIR = "frames"
FRAME_NAME = "{:06d}.jpg"
FRAME_CACHE_BYTES = 2**30  # decoded frames kept per clip between the landmark and crop passes (else decoded twice)


@dataclass
class ClipSource:
    """One input clip found by `discover`."""

    clip_id: str
    path: str  # absolute path of the video file or frames folder
    rel: str  # path relative to INPUT (posix)
    kind: str  # "video", "frames" or "unreadable" (a folder the walk could not enter)
    identity: str
    error: str = ""  # why it is unreadable


@dataclass
class PreprocessReport:
    """What a `preprocess` call did: every clip record of its shard, and counts."""

    records: list[dict[str, Any]]
    processed: int  # clips worked on in this run (the rest were already done)
    manifest_path: Path
    elapsed_s: float = 0.0
    frames_written: int = 0

    @property
    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "skipped": 0, "failed": 0}
        for r in self.records:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    @property
    def all_ok(self) -> bool:
        return all(r["status"] == "ok" for r in self.records)


# --- discovery ---------------------------------------------------------------------------------------

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
        csv_path = Path(csv_path)
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "path" not in reader.fieldnames or "identity" not in reader.fieldnames:
                raise ValueError(f"{csv_path}: needs the columns path,identity (found {reader.fieldnames})")
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
    root = Path(input_path).resolve()
    if not root.exists():
        raise FileNotFoundError(f"{input_path}: no such file or folder")
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


# --- one clip ----------------------------------------------------------------------------------------

@dataclass
class ClipOptions:
    """Per-clip settings (picklable; sent to worker processes)."""

    size: int = ModelConfig.image_size
    max_frames: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    backend: str = "dlib"
    decode_threads: int = 0
    pad: str = "replicate"
    cache_bytes: int = FRAME_CACHE_BYTES


def _source_fingerprint(path: str) -> dict[str, int]:
    try:
        st = os.stat(path)
        return {"source_bytes": int(st.st_size), "source_mtime_ns": int(st.st_mtime_ns)}
    except OSError:
        return {"source_bytes": -1, "source_mtime_ns": -1}


def _record(src: ClipSource, status: str, reason: str = "", n_frames: int = 0, **extra) -> dict[str, Any]:
    return {"clip_id": src.clip_id, "identity": src.identity, "n_frames": int(n_frames), "source": src.rel,
            "source_path": src.path, "kind": src.kind, "status": status, "reason": reason, **extra}


@dataclass
class _Tracked:
    """Stage 1 output: what the source is, its landmarks, and the decoded frames when they fit in memory."""

    info: VideoInfo
    track: LandmarkTrack
    kept: np.ndarray  # (F,) source index of every decoded frame (the track's frames)
    cache: dict[int, np.ndarray] | None
    warnings: list[str]


def _track_clip(src: ClipSource, opts: ClipOptions) -> _Tracked:
    """Decode the frames to keep and track landmarks over them (raises VideoError)."""
    from ..landmarks.tracking import track_frames

    info = probe(src.path)
    keep = even_indices(info.num_frames, opts.max_frames) if opts.max_frames and info.num_frames else None
    warnings = list(info.warnings)
    kept: list[int] = []
    cache: dict[int, np.ndarray] | None = {}

    def frames():
        nonlocal cache
        used = 0
        for i, frame in read_frames(src.path, keep, threads=opts.decode_threads, warnings=warnings):
            kept.append(i)
            used += frame.nbytes
            if cache is not None:
                cache = None if used > opts.cache_bytes else cache  # too big: decode again when writing
            if cache is not None:
                cache[i] = frame
            yield frame

    gap = 1 if keep is None or len(keep) < 2 else (keep[-1] - keep[0]) / (len(keep) - 1)
    track = track_frames(frames(), backend=opts.backend, redetect_every=opts.data.redetect_every,
                         roi_scale=2.2 if gap <= 2 else 3.0, fps=info.fps, frame_size=(info.width, info.height))
    return _Tracked(info, track, np.asarray(kept, np.int64), cache, warnings)


def _choose_frames(t: _Tracked, opts: ClipOptions) -> tuple[Any, np.ndarray, list[dict[str, Any]], str]:
    """The clip's crop box and the frames to store: (ClipCrop or None, track indices, skipped, reason)."""
    from .crop import clip_crop

    skipped = [{"frame": int(t.kept[j]), "reason": "no face found"} for j in np.flatnonzero(~t.track.found)]
    found_idx = np.flatnonzero(t.track.found)
    if len(found_idx) < 2:
        why = "no face found in any frame" if len(found_idx) == 0 else "only 1 frame with a face"
        return None, found_idx, skipped, f"{why} ({len(t.kept)} frames read); a clip needs at least 2"
    cc = clip_crop(t.track.points[found_idx], (t.info.width, t.info.height), opts.size, opts.data.crop_scale,
                   opts.data.crop_shift)
    for j in found_idx[~cc.inside]:
        skipped.append({"frame": int(t.kept[j]), "reason": "face outside the clip's crop box (large head motion)"})
    skipped.sort(key=lambda x: x["frame"])
    use = found_idx[cc.inside]
    if len(use) < 2:
        return None, use, skipped, "fewer than 2 frames with the face inside one stable crop box"
    from ..landmarks.plausibility import MIN_CONFIDENCE

    conf = float(np.median(t.track.confidence[use]))
    if conf < MIN_CONFIDENCE:  # e.g. a sideways video without a rotation tag (measured 0.33-0.43)
        t.warnings.append(f"low landmark confidence (median {conf:.2f} < {MIN_CONFIDENCE}): a sideways video "
                          "without a rotation tag, a profile or an occluded face? check the crops before training")
    return cc, use, skipped, ""


def _write_clip(src: ClipSource, out: Path, opts: ClipOptions, t: _Tracked, cc, use: np.ndarray,
                skipped: list[dict[str, Any]], seconds: float) -> None:
    """Frames, landmarks, confidence and meta.json of one clip, renamed into place when complete."""
    tf, info = cc.transform, t.info
    x0, y0, x1, y1 = tf.box
    use_frames = t.kept[use]
    for stale in (out / CLIPS_DIR).glob(f".{src.clip_id}.*.tmp"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    with atomic_dir(out / CLIPS_DIR / src.clip_id) as tmp:
        written = _write_frames(tmp / FRAMES_DIR, src.path, use_frames, t.cache, tf, opts, t.warnings)
        if written != len(use_frames):
            raise VideoError(f"{src.path}: {len(use_frames) - written} frames could not be decoded again")
        np.save(tmp / "landmarks.npy", tf.to_crop(t.track.points[use]).astype(np.float32))
        np.save(tmp / "confidence.npy", t.track.confidence[use].astype(np.float32))
        meta = {
            "layout_version": LAYOUT_VERSION, "clip_id": src.clip_id, "identity": src.identity,
            "source": src.rel, "source_path": src.path, "kind": src.kind, **_source_fingerprint(src.path),
            "fps": info.fps, "width": info.width, "height": info.height,
            "num_source_frames": max(info.num_frames, int(t.kept[-1]) + 1), "has_audio": info.has_audio,
            "size": opts.size, "n_frames": int(len(use)), "frame_indices": [int(i) for i in use_frames],
            "frames_read": int(len(t.kept)), "crop": tf.to_dict(), "crop_grown": round(float(cc.grown), 4),
            "padded": bool(x0 < 0 or y0 < 0 or x1 > info.width or y1 > info.height), "pad": opts.pad,
            "landmark_backend": opts.backend, "skipped_frames": skipped, "warnings": t.warnings,
            "seconds": round(seconds, 3), "status": "ok", "reason": "",
        }
        (tmp / "meta.json").write_text(json.dumps(meta))


def process_clip(src: ClipSource, out: str | os.PathLike, opts: ClipOptions) -> dict[str, Any]:
    """Detect, crop and store one clip; returns its manifest record (never raises for bad input)."""
    t0 = time.perf_counter()
    if src.kind == "unreadable":
        return _record(src, "failed", src.error or "unreadable")
    try:
        tracked = _track_clip(src, opts)
    except VideoError as err:
        return _record(src, "failed", str(err))
    info = tracked.info
    common = {"fps": info.fps, "width": info.width, "height": info.height, "frames_read": len(tracked.kept),
              "warnings": tracked.warnings}
    cc, use, skipped, reason = _choose_frames(tracked, opts)
    if cc is None:
        return _record(src, "skipped", reason, **common)
    try:
        _write_clip(src, Path(out), opts, tracked, cc, use, skipped, time.perf_counter() - t0)
    except VideoError as err:
        return _record(src, "failed", str(err), **common)
    return _record(src, "ok", "", len(use), skipped_frames=len(skipped), **common)


def _write_frames(folder: Path, path: str, indices: np.ndarray, cache: dict[int, np.ndarray] | None, tf,
                  opts: ClipOptions, warnings: list[str]) -> int:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(opts.data.jpeg_quality)]
    order = {int(i): n for n, i in enumerate(indices)}
    source = ((i, cache[i]) for i in indices) if cache is not None else \
        read_frames(path, [int(i) for i in indices], threads=opts.decode_threads, warnings=warnings)
    written = 0
    for i, frame in source:
        crop = tf.crop(frame, pad=opts.pad)
        ok = cv2.imwrite(str(folder / FRAME_NAME.format(order[int(i)])), crop[:, :, ::-1], params)
        if not ok:
            raise OSError(f"could not write a JPEG into {folder}")
        written += 1
    return written


# --- the job -----------------------------------------------------------------------------------------

def _settings(opts: ClipOptions) -> dict[str, Any]:
    return {"layout_version": LAYOUT_VERSION, "size": opts.size, "max_frames": opts.max_frames,
            "crop_scale": opts.data.crop_scale, "crop_shift": opts.data.crop_shift, "pad": opts.pad,
            "landmark_backend": opts.backend, "jpeg_quality": opts.data.jpeg_quality}


def _check_settings(out: Path, opts: ClipOptions) -> None:
    path = out / SETTINGS_FILE
    want = _settings(opts)
    if path.is_file():
        have = json.loads(path.read_text())
        diff = {k: (have.get(k), v) for k, v in want.items() if k != "jpeg_quality" and have.get(k) != v}
        if diff:
            raise ValueError(f"{out} was preprocessed with other settings "
                             f"({', '.join(f'{k}: {a} != {b}' for k, (a, b) in diff.items())}); "
                             "use another output folder or the same settings")
        return
    write_text(path, json.dumps(want, indent=1) + "\n")


def _existing_record(src: ClipSource, out: Path, retry_failed: bool) -> dict[str, Any] | None:
    meta_path = out / CLIPS_DIR / src.clip_id / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            return _record(src, "ok", "", meta["n_frames"], fps=meta.get("fps"), width=meta.get("width"),
                           height=meta.get("height"), warnings=meta.get("warnings", []))
        except (OSError, ValueError, KeyError):
            return None
    failed = out / FAILED_DIR / f"{src.clip_id}.json"
    if failed.is_file() and not retry_failed:
        try:
            rec = json.loads(failed.read_text())
        except (OSError, ValueError):
            return None
        fp = _source_fingerprint(src.path)
        if all(rec.get(k) == v for k, v in fp.items()):
            return rec
    return None


def _store_result(out: Path, rec: dict[str, Any]) -> None:
    """Failure records are files of their own (readable without any manifest); success removes them."""
    failed = out / FAILED_DIR / f"{rec['clip_id']}.json"
    if rec["status"] == "ok":
        failed.unlink(missing_ok=True)
    elif not rec.get("transient"):
        rec = {**rec, **_source_fingerprint(rec["source_path"])}
        with atomic_path(failed) as tmp:
            tmp.write_text(json.dumps(rec, indent=1))


_WORKER_OPTS: ClipOptions | None = None


def die_with_parent(parent_pid: int) -> None:
    """Make this (worker) process end when its parent does, however the parent ends (SIGKILL included):
    Linux's PR_SET_PDEATHSIG, and everywhere a daemon thread that watches the parent's pid."""
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _init_worker(opts: ClipOptions, parent_pid: int | None = None) -> None:
    """Per worker process: dies with its parent, one thread per library (the pool provides the parallelism),
    models loaded once."""
    global _WORKER_OPTS
    import cv2

    if parent_pid is not None:
        die_with_parent(parent_pid)

    cv2.setNumThreads(1)
    _WORKER_OPTS = opts
    from ..landmarks.backend import get_backend

    get_backend(opts.backend)


def _run_task(src: ClipSource, out: str) -> dict[str, Any]:
    try:
        return process_clip(src, out, _WORKER_OPTS)
    except Exception as err:  # a bug or an unexpected library error: report it, keep the batch going
        log.exception("clip %s", src.clip_id)
        return _record(src, "failed", f"internal error: {type(err).__name__}: {err}")


def preprocess(input_path: str | os.PathLike, out: str | os.PathLike, *, size: int = ModelConfig.image_size,
               data_cfg: DataConfig | None = None, max_frames: int | None = None, workers: int = 1,
               shard_index: int = 0, num_shards: int = 1, manifest: str | os.PathLike | None = None,
               retry_failed: bool = False, progress: bool = True, backend: str = "dlib",
               pad: str = "replicate") -> PreprocessReport:
    """Preprocess this shard of INPUT into OUT (module docstring). Returns the shard's records."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard index {shard_index} is not in [0, {num_shards})")
    if size < 16:
        raise ValueError(f"size {size} is too small")
    cfg = data_cfg or DataConfig()
    opts = ClipOptions(size=int(size), max_frames=int(cfg.max_frames if max_frames is None else max_frames),
                       data=cfg, backend=backend, decode_threads=1, pad=pad)
    out = Path(out)
    t0 = time.perf_counter()
    sources = [s for s in discover(input_path, manifest, exclude=[out])
               if shard_of(s.clip_id, num_shards) == shard_index]
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, opts)
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for s in sources:
        rec = _existing_record(s, out, retry_failed)
        if rec is None:
            todo.append(s)
        else:
            records[s.clip_id] = rec
    log.info("shard %d/%d: %d clips, %d already done, %d to process", shard_index, num_shards, len(sources),
             len(records), len(todo))
    frames_written = 0
    for rec in _run(todo, out, opts, workers, progress):
        _store_result(out, rec)
        records[rec["clip_id"]] = rec
        frames_written += rec["n_frames"] if rec["status"] == "ok" else 0
        if rec["status"] != "ok":
            log.warning("%s %s: %s", rec["status"], rec["clip_id"], rec["reason"])
        elif rec.get("warnings"):
            log.warning("%s: %s", rec["clip_id"], "; ".join(rec["warnings"]))
    ordered = [records[s.clip_id] for s in sources]
    manifest_path = out / SHARD_MANIFEST.format(index=shard_index, count=num_shards)
    # OUT may collect several inputs (e.g. a folder of videos, then folders of frames): keep the records of
    # clips this input does not list, so the manifest always describes every clip in OUT.
    this_run = {r["clip_id"] for r in ordered}
    earlier = [r for r in (_read_jsonl(manifest_path) if manifest_path.exists() else [])
               if r["clip_id"] not in this_run
               and ((out / CLIPS_DIR / r["clip_id"]).is_dir() or r.get("status") != "ok")]
    _write_jsonl(manifest_path, sorted(earlier + ordered, key=lambda r: r["clip_id"]))
    if num_shards == 1:
        merge_manifests(out)
    return PreprocessReport(ordered, len(todo), manifest_path, time.perf_counter() - t0, frames_written)


def _run(todo: list[ClipSource], out: Path, opts: ClipOptions, workers: int, progress: bool):
    """Yield records as clips finish: in this process (workers <= 1) or in a spawn-safe process pool."""
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="clip", disable=not progress or not todo, dynamic_ncols=True,
               desc="preprocess", smoothing=0.05)
    frames = 0
    t0 = time.perf_counter()

    def tick(rec):
        nonlocal frames
        frames += rec.get("frames_read", 0) or 0
        bar.update(1)
        bar.set_postfix(frames_per_s=f"{frames / max(1e-9, time.perf_counter() - t0):.1f}", refresh=False)

    try:
        if workers <= 1:
            global _WORKER_OPTS
            _WORKER_OPTS = opts
            for src in todo:
                rec = _run_task(src, str(out))
                tick(rec)
                yield rec
            return
        yield from _pool(todo, out, opts, workers, tick)
    finally:
        bar.close()


def _pool(todo: list[ClipSource], out: Path, opts: ClipOptions, workers: int, tick):
    import multiprocessing as mp

    pending = list(reversed(todo))
    while pending:
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(opts, os.getpid())) as pool:
            running: dict = {}
            broken = False
            while (pending or running) and not broken:
                while pending and len(running) < 2 * workers:
                    src = pending.pop()
                    running[pool.submit(_run_task, src, str(out))] = src
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    src = running.pop(fut)
                    try:
                        rec = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        rec = _record(src, "failed", "a worker process died (crash or out of memory) while this "
                                                     "clip was in flight; it is retried on the next run",
                                      transient=True)
                    tick(rec)
                    yield rec
            if broken:  # the remaining in-flight clips were lost with the pool: report them, start a new one
                for fut, src in running.items():
                    rec = _record(src, "failed", "a worker process died while this clip was in flight; "
                                                 "it is retried on the next run", transient=True)
                    tick(rec)
                    yield rec
                running.clear()


# --- manifests ---------------------------------------------------------------------------------------

def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            for r in records:
                f.write(json.dumps(_manifest_line(r)) + "\n")


MANIFEST_KEYS = ("clip_id", "identity", "n_frames", "source", "status", "reason", "warnings")


def _manifest_line(r: dict[str, Any]) -> dict[str, Any]:
    line = {k: r.get(k) for k in MANIFEST_KEYS}
    line["reason"] = line["reason"] or ""
    line["warnings"] = list(line["warnings"] or [])
    return line


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
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
                records[r["clip_id"]] = _manifest_line(r)
            except (OSError, ValueError, KeyError):
                continue
    clips = out / CLIPS_DIR
    if clips.is_dir():
        for d in sorted(clips.iterdir()):
            if d.name.startswith(".") or not (d / "meta.json").is_file():
                continue
            m = json.loads((d / "meta.json").read_text())
            records[m["clip_id"]] = _manifest_line({**m, "status": "ok", "reason": ""})
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
            for r in _read_jsonl(p):
                merged[r["clip_id"]] = r
        return [merged[k] for k in sorted(merged)]
    if (out / MERGED_MANIFEST).is_file():
        return sorted(_read_jsonl(out / MERGED_MANIFEST), key=lambda r: r["clip_id"])
    return rebuild_manifest(out)


def merge_manifests(out: str | os.PathLike, rebuild: bool = False) -> Path:
    """Write OUT/manifest.jsonl from the shard manifests (or from a scan of the folders when `rebuild`)."""
    out = Path(out)
    records = rebuild_manifest(out) if rebuild else read_manifest(out)
    _write_jsonl(out / MERGED_MANIFEST, records)
    return out / MERGED_MANIFEST


def summary(report: PreprocessReport) -> str:
    c = report.counts
    return (f"{len(report.records)} clips: {c['ok']} ok, {c['skipped']} skipped, {c['failed']} failed; "
            f"{report.processed} processed in {report.elapsed_s:.1f} s, {report.frames_written} frames written; "
            f"manifest {report.manifest_path}")


__all__ = ["ClipSource", "ClipOptions", "PreprocessReport", "discover", "make_clip_id", "shard_of", "process_clip",
           "preprocess", "read_manifest", "rebuild_manifest", "merge_manifests", "summary", "LAYOUT_VERSION"]
