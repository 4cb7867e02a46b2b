"""Identity metrics that can tell people apart: calibrated verification at dlib's 0.6, and FID on descriptors.

Why: the cosine of dlib descriptors (our CSIM) is about 0.75-0.9 even for two different people, so a CSIM
of 0.87 does not say whether identity is kept. dlib's own rule is calibrated: two faces are the same person
when their descriptors are closer than 0.6 (99.38 % on LFW). So:

`identity` (registry kind "verification"), per test video v and few-shot size T:
    reference r_v,T = mean of the descriptors of v's T few-shot frames (raw descriptors, not normalised)
    rate(T, method) = fraction of generated hold-out frames x with |d(x) - r_v,T| < 0.6, over all videos
  reported beside two calibrations computed on real frames only:
    ceiling(T) = the same rate for v's own real hold-out frames (what a perfect generator would get);
    chance(T)  = the rate for real hold-out frames of *other people* (videos of a different identity) against
                 r_v,T, over all such pairs (what a generator that draws a random person would get).
  A generator keeps identity when its rate is near the ceiling and far above chance. Frames whose face
  cannot be aligned or described count as not verified (and are reported in `failed`).

`fid_face` (kind "set"): the Frechet distance between the descriptor distributions of real and generated
hold-out frames ("FID on face descriptors", 128-D, dlib's network: NOT Inception FID, not comparable with
the paper's FID; an offline stand-in when no Inception weights are given). Lower is better.

Descriptors are aligned with the landmarks each frame was driven with (the real frame's own), as CSIM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .base import Metric, MetricValue, SetMetric, as_uint8
from .csim import FaceDescriptor, face_descriptor
from .fid import fid_from_features


def distances(desc: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(N,) Euclidean distances of descriptors (N,128) to one reference (128,); NaN rows stay NaN."""
    return np.linalg.norm(np.asarray(desc, np.float64) - np.asarray(reference, np.float64), axis=-1)


def verified(desc: np.ndarray, reference: np.ndarray, threshold: float = 0.6) -> np.ndarray:
    """(N,) float: 1 where a descriptor is within `threshold` of the reference, 0 where not, NaN where the
    descriptor (or the reference) could not be computed."""
    d = distances(desc, reference)
    return np.where(np.isnan(d), np.nan, (d < threshold).astype(np.float64))


def reference_descriptor(desc: np.ndarray) -> np.ndarray:
    """(128,) mean of the finite descriptors (N,128) of one person's few-shot frames; NaN if none."""
    d = np.asarray(desc, np.float64)
    d = d[np.isfinite(d).all(axis=1)]
    return d.mean(0) if len(d) else np.full(np.asarray(desc).shape[-1], np.nan)


def rate_value(name: str, values: list[np.ndarray], **extra) -> MetricValue:
    """Fraction verified over all frames; frames without a descriptor count as failures *and* not verified."""
    v = np.concatenate(values) if values else np.zeros(0)
    n, failed = int(v.size), int(np.isnan(v).sum())
    value = float(np.nan_to_num(v, nan=0.0).mean()) if n else None
    return MetricValue(name, value, n=n, failed=failed, higher_is_better=True,
                       reason="" if n else "no frames", extra=extra)


@dataclass
class _Video:
    identity: str
    references: dict[int, np.ndarray]  # T -> r_v,T
    real: np.ndarray  # (H,128) real hold-out descriptors
    fake: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)  # (T, method) -> verified (H,)


class IdentityVerification(Metric):
    """Registry entry "identity" (see the module docstring). Accumulates over videos:
    `add_video(video, identity, shots, shot_points, real, real_points, shots_sizes)` then
    `add_fake(video, T, method, fake, points)`; `value(T, method)` and `calibration(T)` at the end."""

    name = "identity"
    kind = "verification"
    higher_is_better = True
    description = ("fraction of generated frames verified as the person at dlib's 0.6 descriptor distance from "
                   "the mean descriptor of the few-shot frames (chance: other people's real frames; ceiling: "
                   "the person's own real hold-out frames)")

    def __init__(self, cfg=None, device: str = "cpu"):
        super().__init__(cfg, device)
        self.threshold = float(self.cfg.identity_threshold)
        self.net = face_descriptor(self.cfg, device)
        if isinstance(self.net, str):
            self.available, self.reason = False, self.net
        self.videos: dict[str, _Video] = {}

    def add_video(self, video: str, identity: str, shots, shot_points: np.ndarray, real, real_points: np.ndarray,
                  sizes) -> None:
        """One test video: its few-shot frames in draw order (the T-set is the first T), real hold-out frames."""
        self._check()
        shot_desc = self.net.describe_all(as_uint8(shots), shot_points)
        refs = {int(t): reference_descriptor(shot_desc[:int(t)]) for t in sizes}
        self.videos[video] = _Video(identity, refs, self.net.describe_all(as_uint8(real), real_points))

    def add_fake(self, video: str, t: int, method: str, fake, points: np.ndarray) -> np.ndarray:
        """Score one method's generated hold-out frames of a video; returns the per-frame verdicts (H,)."""
        self._check()
        v = self.videos[video]
        out = verified(self.net.describe_all(as_uint8(fake), points), v.references[int(t)], self.threshold)
        v.fake[(int(t), method)] = out
        return out

    def summarize_video(self, values: np.ndarray) -> MetricValue:
        """One video's verdicts (H,) as a MetricValue (for the per-video records)."""
        return rate_value(self.name, [np.asarray(values, np.float64)], threshold=self.threshold)

    def calibration(self, t: int) -> dict[str, MetricValue]:
        """{"ceiling": own real frames vs own reference, "chance": other people's real frames} at T = t."""
        own, other = [], []
        for v in self.videos.values():
            ref = v.references[int(t)]
            own.append(verified(v.real, ref, self.threshold))
            other += [verified(w.real, ref, self.threshold) for w in self.videos.values() if w.identity != v.identity]
        pairs = sum(1 for v in self.videos.values() for w in self.videos.values() if w.identity != v.identity)
        return {"ceiling": rate_value("identity_ceiling", own, videos=len(self.videos)),
                "chance": rate_value("identity_chance", other, pairs=pairs)}

    def value(self, t: int, method: str) -> MetricValue:
        """The rate of (T, method) over all videos, with the calibration of that T in `extra`."""
        if not self.available:
            return self.unavailable()
        got = [v.fake[(int(t), method)] for v in self.videos.values() if (int(t), method) in v.fake]
        cal = self.calibration(t)
        return rate_value(self.name, got, threshold=self.threshold,
                          ceiling=cal["ceiling"].value, chance=cal["chance"].value,
                          chance_frames=cal["chance"].n, chance_pairs=cal["chance"].extra.get("pairs", 0))


class DescriptorFID(SetMetric):
    """Registry entry "fid_face": Frechet distance of dlib face descriptors (module docstring)."""

    name = "fid_face"
    higher_is_better = False
    description = ("Frechet distance between the dlib face-descriptor distributions of real and generated frames "
                   "(128-D; not Inception FID)")

    def __init__(self, cfg=None, device: str = "cpu"):
        super().__init__(cfg, device)
        self.net = face_descriptor(self.cfg, device)
        if isinstance(self.net, str):
            self.available, self.reason = False, self.net

    def _features(self, images: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
        d = self.net.describe_all(images, points)
        return d[np.isfinite(d).all(axis=1)]

    def _distance(self, feats_fake: np.ndarray, feats_real: np.ndarray) -> float:
        return fid_from_features(feats_fake, feats_real)


__all__ = ["IdentityVerification", "DescriptorFID", "FaceDescriptor", "verified", "distances", "reference_descriptor"]
