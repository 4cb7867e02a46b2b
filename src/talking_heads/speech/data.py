"""Pairs of sound and mouth motion for training and evaluating the speech model.

A `SpeechClip` is one speaker's sound (16 kHz) and the motion of their mouth (`speech.motion`) at the feature
rate (100 frames/s), with a mask of the frames where the face was tracked well enough on both sides. Motion at
a feature frame is interpolated between the two video frames around its time (frame i at i / fps); a feature
frame between frames that were not both tracked and trusted (confidence and shape: `landmarks.plausibility`),
or that are not neighbours in the source, is masked out. The neutral face the motion is measured from is the
clip's most neutral trusted frame (`landmarks.masks.neutral_frame`).

Which clips teach speech (`usable_for_training`): about a tenth of the sample videos carry a silent sound track
and others carry music or a voice that is not the one on screen (dubbed demos, stock clips); a model trained on
them learns that the mouth moves whatever the sound. A clip is used when its sound is audible (95th percentile of
the loudness above `AUDIBLE_DB`) and moves with its mouth: the loudness envelope and the inner-lip opening
correlate by at least `SpeechConfig.min_sync` at their best relative shift within +-0.2 s (the role SyncNet's confidence plays
in the curation of lip-reading data sets). This uses the training clips only; the evaluation's choice of test
clips (`speech.evaluate`) never looks at how any method does.

Sources: a `preprocess`ed folder (its clips' landmarks and the sound of the videos they were cut from:
`preprocessed_clips`), or any video tracked now (`clip_from_track`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..landmarks.masks import neutral_frame
from ..landmarks.plausibility import trusted
from .audio import FEATURE_RATE, AudioError, frame_count, load_audio, loudness_db
from .baseline import LoudnessBaseline
from .motion import motion_opening, speech_motion

log = logging.getLogger(__name__)


@dataclass
class SpeechClip:
    name: str
    identity: str
    samples: np.ndarray  # (N,) float32 at audio.RATE
    motion: np.ndarray  # (T,P,2) float32 at FEATURE_RATE, T = frame_count(N)
    valid: np.ndarray  # (T,) bool
    reference: np.ndarray  # (68,2) the neutral face the motion is measured from (landmark px)

    @property
    def seconds(self) -> float:
        return float(self.valid.sum()) / FEATURE_RATE


AUDIBLE_DB = -50.0  # dBFS: the 95th percentile of a clip's loudness must be above this (else: a silent track)
SYNC_LAG_S = 0.2


def audible(samples: np.ndarray) -> bool:
    return bool(np.percentile(loudness_db(samples), 95) > AUDIBLE_DB)


def best_lag(a: np.ndarray, b: np.ndarray, valid: np.ndarray, max_lag: int, min_frames: int = 20
             ) -> tuple[float, int]:
    """(the highest correlation of a[t + lag] with b[t] over |lag| <= max_lag on the frames with `valid`, that lag);
    (-1, 0) when no lag has `min_frames` frames and some spread. A positive lag: `a` comes late."""
    best, best_lag, n = -1.0, 0, len(b)
    for lag in range(-max_lag, max_lag + 1):
        src = np.arange(n) + lag
        m = valid & (src >= 0) & (src < n)
        if m.sum() < min_frames or a[src[m]].std() < 1e-9 or b[m].std() < 1e-9:
            continue
        r = float(np.corrcoef(a[src[m]], b[m])[0, 1])
        if r > best:
            best, best_lag = r, lag
    return best, best_lag


def sync_score(clip: "SpeechClip") -> float:
    """How well the clip's loudness envelope and mouth opening move together (module docstring)."""

    env = LoudnessBaseline.envelope(clip.samples)[:len(clip.valid)]
    return best_lag(env, motion_opening(clip.motion), clip.valid, int(SYNC_LAG_S * FEATURE_RATE))[0]


def usable_for_training(clips: list["SpeechClip"], min_sync: float
                        ) -> tuple[list["SpeechClip"], dict[str, str]]:
    """(clips kept, {name: why left out}) by the rule of the module docstring (`SpeechConfig.min_sync`)."""
    kept, left = [], {}
    for c in clips:
        if not audible(c.samples):
            left[c.name] = "silent sound track"
            continue
        score = sync_score(c)
        if score < min_sync:
            left[c.name] = f"sound and mouth do not move together (r = {score:.2f})"
            continue
        kept.append(c)
    return kept, left


def clip_motion(points: np.ndarray, ok: np.ndarray, indices: np.ndarray, fps: float, n_features: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(motion (T,P,2), valid (T,), reference (68,2)) at the feature frames from landmarks (F,68,2) of source
    frames `indices` at `fps`, `ok` (F,) marking the trusted ones (module docstring)."""
    pts = np.asarray(points, np.float64).copy()
    ok = np.asarray(ok, bool) & np.isfinite(pts).all(axis=(1, 2))
    pts[~ok] = np.nan
    ref = pts[neutral_frame(pts)]
    filled = np.where(ok[:, None, None], pts, ref)
    motion_f = speech_motion(filled, ref)  # F,P,2
    t = np.arange(n_features) / FEATURE_RATE
    src = np.asarray(indices, np.float64) / fps  # source time of each landmark frame
    j = np.clip(np.searchsorted(src, t, side="right") - 1, 0, len(src) - 1)  # frame at or before t
    k = np.minimum(j + 1, len(src) - 1)
    span = np.where(k > j, src[k] - src[j], 1.0)
    w = np.clip((t - src[j]) / span, 0.0, 1.0)
    motion = motion_f[j] * (1 - w)[:, None, None] + motion_f[k] * w[:, None, None]
    idx = np.asarray(indices)
    valid = ok[j] & ok[k] & (idx[k] - idx[j] <= 1) & (t >= src[0]) & (t <= src[-1] + 0.5 / fps)
    return motion.astype(np.float32), valid, ref.astype(np.float32)


def clip_from_landmarks(name: str, identity: str, audio_path: str | Path, points: np.ndarray, ok: np.ndarray,
                        indices: np.ndarray, fps: float) -> SpeechClip | None:
    """A `SpeechClip` of a video's sound and its tracked landmarks; None when it has no usable sound or too few
    trusted frames (logged)."""
    if ok.sum() < 10:
        log.info("%s: fewer than 10 trusted face frames, skipped", name)
        return None
    try:
        audio = load_audio(audio_path)
    except AudioError as err:
        log.info("%s: skipped (%s)", name, err)
        return None
    motion, valid, ref = clip_motion(points, ok, indices, fps, frame_count(len(audio.samples)))
    if valid.sum() < FEATURE_RATE:
        log.info("%s: less than a second of tracked frames with sound, skipped", name)
        return None
    return SpeechClip(name, identity, audio.samples, motion, valid, ref)


def clip_from_track(path: str | Path, track, identity: str = "") -> SpeechClip | None:
    """A `SpeechClip` of a video file and its `LandmarkTrack` (frame pixels)."""
    ok = track.found & trusted(track.points, track.confidence)
    return clip_from_landmarks(Path(path).name, identity or Path(path).stem, path, track.points, ok,
                               track.frame_indices, track.fps)


def preprocessed_clips(data_dir: str | Path, progress: bool = True) -> list[SpeechClip]:
    """The clips of a `preprocess`ed folder whose source video has sound (meta.json `has_audio`)."""
    from tqdm import tqdm

    metas = []
    for meta_path in sorted(Path(data_dir).glob("clips/*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("has_audio") and meta.get("status", "ok") == "ok" and meta.get("kind", "video") == "video":
            metas.append((meta_path.parent, meta))
    clips = []
    for folder, meta in tqdm(metas, desc="speech clips", unit="clip", disable=not progress):
        points = np.load(folder / "landmarks.npy")
        conf_path = folder / "confidence.npy"
        confidence = np.load(conf_path) if conf_path.exists() else None
        ok = np.isfinite(points).all(axis=(1, 2)) & trusted(points, confidence)
        clip = clip_from_landmarks(meta["clip_id"], meta.get("identity", meta["clip_id"]), meta["source_path"],
                                   points, ok, np.asarray(meta["frame_indices"]), float(meta["fps"]))
        if clip is not None:
            clips.append(clip)
    return clips
