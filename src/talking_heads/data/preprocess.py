"""`talking-heads preprocess INPUT OUT`: footage -> head crops + 68-point landmarks, computed once (paper.md section 2).

Landmarks are detected here, once per frame, and stored; the episode dataset only rasterises them (the
earlier public reimplementations ran a landmark network inside the data loader, paper.md section 9).

What INPUT may hold, clip ids, identities and shards: `discover.py`. What OUT holds and how it is read
back: `layout.py`. Here: the per-clip work (`process_clip`: track, choose the crop and the frames, write the
clip folder) and the job over a shard (`preprocess`: resume, worker processes, manifests).

Guarantees:
- A clip folder is written under a temporary name and renamed into place when complete (`atomic_dir`), so a
  killed run never leaves a finished-looking clip; leftovers (`clips/.<id>.*.tmp`) are removed when that
  clip is processed again.
- Resumable: a clip with meta.json is never redone; a recorded failure is not retried while its source file
  is unchanged (size and mtime), unless `retry_failed`. A second run over the same INPUT does no work.
- Frames where no face is found, or whose landmarks leave the clip's crop box, are dropped and listed in
  meta.json["skipped_frames"]. Clips with fewer than 2 usable frames are skipped with a reason.
"""

from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np
from tqdm import tqdm

from ..atomic import atomic_dir, atomic_path, write_text
from ..config import DataConfig, ModelConfig
from ..errors import InputError
from ..landmarks.backend import get_backend
from ..landmarks.iris import get_iris_locator
from ..landmarks.plausibility import MIN_CONFIDENCE
from ..landmarks.tracking import LandmarkTrack
from ..paths import input_file
from .crop import clip_crop
from .discover import ClipSource, discover, make_clip_id, shard_of
from .faces import track_file
from .layout import (CLIPS_DIR, FAILED_DIR, FRAME_NAME, FRAMES_DIR, IRIS_FILE, LAYOUT_VERSION, MERGED_MANIFEST, SETTINGS_FILE,
                     SHARD_MANIFEST, merge_manifests, read_jsonl, read_manifest, rebuild_manifest, write_manifest)
from .video import VideoError, VideoInfo, read_frames

log = logging.getLogger(__name__)

FRAME_CACHE_BYTES = 2**30  # decoded frames kept per clip between the landmark and crop passes (else decoded twice)
MAX_WORKERS = max(64, 4 * (os.cpu_count() or 1))


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


class _FrameCache:
    """The decoded frames of a clip while they fit in `limit` bytes (`frames` None past it: decode again)."""

    def __init__(self, limit: int):
        self.frames: dict[int, np.ndarray] | None = {}
        self.limit, self.used = limit, 0

    def __call__(self, i: int, frame: np.ndarray) -> None:
        self.used += frame.nbytes
        if self.frames is not None and self.used > self.limit:
            self.frames = None
        if self.frames is not None:
            self.frames[i] = frame


def _track_clip(src: ClipSource, opts: ClipOptions) -> _Tracked:
    """Decode the frames to keep and track landmarks over them (raises VideoError)."""
    cache = _FrameCache(opts.cache_bytes)
    track, info = track_file(src.path, max_frames=opts.max_frames, backend=opts.backend,
                             redetect_every=opts.data.redetect_every, threads=opts.decode_threads, on_frame=cache)
    return _Tracked(info, track, track.frame_indices, cache.frames, track.warnings)


def _choose_frames(t: _Tracked, opts: ClipOptions) -> tuple[Any, np.ndarray, list[dict[str, Any]], str]:
    """The clip's crop box and the frames to store: (ClipCrop or None, track indices, skipped, reason)."""
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
    conf = float(np.median(t.track.confidence[use]))
    if conf < MIN_CONFIDENCE:  # e.g. a sideways video without a rotation tag
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
        with_iris = opts.data.iris != "none"
        iris = np.zeros((len(use), 2, 4), np.float32) if with_iris else None
        written = _write_frames(tmp / FRAMES_DIR, src.path, use_frames, t.cache, tf, opts, t.warnings,
                                points=t.track.points[use] if with_iris else None, iris_out=iris)
        if written != len(use_frames):
            raise VideoError(f"{src.path}: {len(use_frames) - written} frames could not be decoded again")
        np.save(tmp / "landmarks.npy", tf.to_crop(t.track.points[use]).astype(np.float32))
        if iris is not None:  # (F,2,4) x, y, radius, confidence in crop pixels (layout.py)
            iris[..., :2] = tf.to_crop(iris[..., :2])
            iris[..., 2] *= tf.scale
            np.save(tmp / IRIS_FILE, iris)
        np.save(tmp / "confidence.npy", t.track.confidence[use].astype(np.float32))
        meta = {
            "layout_version": LAYOUT_VERSION, "clip_id": src.clip_id, "identity": src.identity,
            "source": src.rel, "source_path": src.path, "kind": src.kind, **_source_fingerprint(src.path),
            "fps": info.fps, "width": info.width, "height": info.height,
            "num_source_frames": max(info.num_frames, int(t.kept[-1]) + 1), "has_audio": info.has_audio,
            "size": opts.size, "n_frames": int(len(use)), "frame_indices": [int(i) for i in use_frames],
            "frames_read": int(len(t.kept)), "crop": tf.to_dict(), "crop_grown": round(float(cc.grown), 4),
            "padded": bool(x0 < 0 or y0 < 0 or x1 > info.width or y1 > info.height), "pad": opts.pad,
            "landmark_backend": opts.backend,
            "iris_locator": get_iris_locator(opts.data.iris).name if opts.data.iris != "none" else "none",
            "skipped_frames": skipped, "warnings": t.warnings,
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
                  opts: ClipOptions, warnings: list[str], points: np.ndarray | None = None,
                  iris_out: np.ndarray | None = None) -> int:
    """Write the crops of frames `indices`; with `points` (F,68,2, original pixels) and `iris_out` (F,2,4),
    also locate the irises on the original frame (its full resolution) into `iris_out` (original pixels)."""
    locator = get_iris_locator(opts.data.iris) if points is not None and iris_out is not None else None
    folder.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(opts.data.jpeg_quality)]
    order = {int(i): n for n, i in enumerate(indices)}
    source = ((i, cache[i]) for i in indices) if cache is not None else \
        read_frames(path, [int(i) for i in indices], threads=opts.decode_threads, warnings=warnings)
    written = 0
    for i, frame in source:
        if locator is not None:
            iris_out[order[int(i)]] = locator.locate(frame, points[order[int(i)]])
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
            raise InputError(f"{out} was preprocessed with other settings "
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
    if sys.platform.startswith("linux"):
        try:
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
    if parent_pid is not None:
        die_with_parent(parent_pid)
    cv2.setNumThreads(1)
    _WORKER_OPTS = opts
    get_backend(opts.backend)


def _run_task(src: ClipSource, out: str) -> dict[str, Any]:
    try:
        return process_clip(src, out, _WORKER_OPTS)
    except Exception as err:  # a bug or an unexpected library error: report it, keep the batch going
        log.exception("clip %s", src.clip_id)
        return _record(src, "failed", f"internal error: {type(err).__name__}: {err}")


def check_job(*, size: int, max_frames: int | None, workers: int, shard_index: int, num_shards: int,
              manifest: str | os.PathLike | None = None, names: Mapping[str, str] | None = None) -> None:
    """The job's options (`preprocess`'s arguments), refused before any work. names: what messages call each
    argument (a command's flags, e.g. {"size": "--size"}; default: the argument's own name)."""
    called = {k: k for k in ("size", "max_frames", "workers", "shard_index", "num_shards", "manifest")}
    called.update(names or {})
    if not 1 <= workers <= MAX_WORKERS:
        raise InputError(f"{called['workers']} {workers}: give 1 to {MAX_WORKERS} processes")
    if not 16 <= size <= 4096:
        raise InputError(f"{called['size']} {size}: give a crop size from 16 to 4096 px")
    if max_frames is not None and max_frames < 0:
        raise InputError(f"{called['max_frames']} {max_frames}: give 0 (all frames) or more")
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise InputError(f"{called['shard_index']} {shard_index} {called['num_shards']} {num_shards}: need 0 <= index "
                         "< shards")
    if manifest is not None:
        input_file(manifest, called["manifest"])


def preprocess(input_path: str | os.PathLike, out: str | os.PathLike, *, size: int = ModelConfig.image_size,
               data_cfg: DataConfig | None = None, max_frames: int | None = None, workers: int = 1,
               shard_index: int = 0, num_shards: int = 1, manifest: str | os.PathLike | None = None,
               retry_failed: bool = False, progress: bool = True, backend: str = "dlib",
               pad: str = "replicate") -> PreprocessReport:
    """Preprocess this shard of INPUT into OUT (module docstring). Returns the shard's records."""
    check_job(size=size, max_frames=max_frames, workers=workers, shard_index=shard_index, num_shards=num_shards,
              manifest=manifest)
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
    earlier = [r for r in (read_jsonl(manifest_path) if manifest_path.exists() else [])
               if r["clip_id"] not in this_run
               and ((out / CLIPS_DIR / r["clip_id"]).is_dir() or r.get("status") != "ok")]
    write_manifest(manifest_path, sorted(earlier + ordered, key=lambda r: r["clip_id"]))
    if num_shards == 1:
        merge_manifests(out)
    return PreprocessReport(ordered, len(todo), manifest_path, time.perf_counter() - t0, frames_written)


def _run(todo: list[ClipSource], out: Path, opts: ClipOptions, workers: int, progress: bool):
    """Yield records as clips finish: in this process (workers <= 1) or in a spawn-safe process pool."""
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


def summary(report: PreprocessReport) -> str:
    c = report.counts
    return (f"{len(report.records)} clips: {c['ok']} ok, {c['skipped']} skipped, {c['failed']} failed; "
            f"{report.processed} processed in {report.elapsed_s:.1f} s, {report.frames_written} frames written; "
            f"manifest {report.manifest_path}")


__all__ = ["CLIPS_DIR", "ClipSource", "ClipOptions", "FAILED_DIR", "FRAMES_DIR", "FRAME_NAME", "LAYOUT_VERSION",
           "MERGED_MANIFEST", "PreprocessReport", "SETTINGS_FILE", "SHARD_MANIFEST", "check_job", "discover",
           "make_clip_id", "merge_manifests", "preprocess", "process_clip", "read_manifest", "rebuild_manifest",
           "shard_of", "summary"]
