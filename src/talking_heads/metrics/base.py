"""What every metric shares: input conversion, the two metric kinds, and the result record.

Inputs: images are uint8 RGB numpy arrays (N,H,W,3), i.e. what a saved frame holds. The project's float
tensors (N,3,H,W) in [-1,1] are accepted too and converted first by `as_uint8` (x -> round((x+1)*127.5),
clipped to [0,255]), so a metric gives the same number for a rendered tensor and for its saved PNG.
Landmarks are (N,68,2) float pixel coordinates of those images (pixel-centre convention).

Kinds:
- `PairedMetric`: one value per (generated, ground-truth) frame pair, `per_frame(fake, real, points)` ->
  (N,) float64 with NaN where the value cannot be computed (e.g. no face found); `summarize` averages the
  finite values and reports the NaN count as `failed` (never silently dropped). An evaluation comparing
  several methods with the same real frames calls `reference(real, points)` once and `compare(fake, ref,
  points)` per method (CSIM computes the real frames' descriptors only once).
- `SetMetric`: a distance between two sets of images (FID): `features(images, points)` -> (N,D) per set,
  then `distance(feats_fake, feats_real)`.
- kind "verification" (`identity.IdentityVerification`): a rate against per-video references built from the
  few-shot frames, calibrated on real frames; the evaluation feeds it video by video.
A metric whose weights or libraries are missing has `available = False` and a `reason`; its results are
`MetricValue(available=False)` and reports print "not available", never a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..config import EvalConfig
from ..images import to_uint8


def as_uint8(images) -> np.ndarray:
    """uint8 RGB (N,H,W,3) from uint8 (N,H,W,3) / (H,W,3) arrays or float tensors/arrays (N,3,H,W) / (3,H,W)
    in [-1,1]."""
    if hasattr(images, "detach"):  # torch tensor in [-1,1], channels first
        t = images.unsqueeze(0) if images.dim() == 3 else images
        if t.dim() != 4 or t.shape[1] != 3:
            raise ValueError(f"expected a (N,3,H,W) tensor in [-1,1], got shape {tuple(t.shape)}")
        return to_uint8(t)
    a = np.asarray(images)
    if a.dtype != np.uint8:
        raise ValueError(f"numpy images must be uint8 RGB (N,H,W,3); got dtype {a.dtype} (convert float "
                         "tensors in [-1,1] by passing the tensor itself)")
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N,H,W,3), got shape {a.shape}")
    return a


@dataclass
class MetricValue:
    """One aggregated metric value (over frames, videos or a set), with what it was computed on."""

    name: str
    value: float | None  # None when not available or nothing could be computed
    available: bool = True
    reason: str = ""  # why not available / why no value
    n: int = 0  # frames (or frames per set) the value is computed on
    failed: int = 0  # frames where it could not be computed (e.g. no face detected); not in `value`
    higher_is_better: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # metric-specific companions (e.g. dlib match rate)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.name, "value": self.value, "available": self.available, "reason": self.reason,
                "n": self.n, "failed": self.failed, "higher_is_better": self.higher_is_better, **self.extra}

    def format(self, digits: int = 3) -> str:
        """Table cell: the number, "not available", or "n/a (reason)"-style short text."""
        if not self.available:
            return "not available"
        if self.value is None:
            return f"no face (0/{self.n})" if self.n and self.failed == self.n else "n/a"
        if math.isinf(self.value):
            return "inf"
        text = f"{self.value:.{digits}f}"
        return f"{text} ({self.n - self.failed}/{self.n})" if self.failed else text


class Metric:
    """Base of all metrics. Subclasses set `name`, `higher_is_better`, `kind`, and may set
    `available = False` and `reason` in `__init__` (missing weight files, missing libraries)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""  # "paired" or "set"
    higher_is_better: ClassVar[bool] = True
    description: ClassVar[str] = ""  # one line for reports

    def __init__(self, cfg: EvalConfig | None = None, device: str = "cpu"):
        self.cfg = cfg or EvalConfig()
        self.device = device
        self.available = True
        self.reason = ""

    def unavailable(self, n: int = 0) -> MetricValue:
        return MetricValue(self.name, None, available=False, reason=self.reason, n=n,
                           higher_is_better=self.higher_is_better)

    def _check(self) -> None:
        if not self.available:
            raise RuntimeError(f"metric {self.name} is not available: {self.reason}")


class PairedMetric(Metric):
    """One value per frame pair (see the module docstring)."""

    kind = "paired"

    def per_frame(self, fake, real, points: np.ndarray | None = None) -> np.ndarray:
        """(N,) float64 values for N frame pairs; NaN where not computable."""
        self._check()
        fake, real = as_uint8(fake), as_uint8(real)
        if fake.shape != real.shape:
            raise ValueError(f"{self.name}: fake {fake.shape} and real {real.shape} differ in shape")
        return self.compare(fake, self.reference(real, points), points)

    def reference(self, real, points: np.ndarray | None = None) -> Any:
        """What the comparison needs of the real frames, computed once and reused for every method compared
        with them (CSIM: their descriptors). Default: the uint8 frames themselves."""
        return as_uint8(real)

    def compare(self, fake, reference: Any, points: np.ndarray | None = None) -> np.ndarray:
        """(N,) values of generated frames against a `reference(real, points)`."""
        self._check()
        fake = as_uint8(fake)
        if points is not None:
            points = np.asarray(points, dtype=np.float64).reshape(len(fake), 68, 2)
        return np.asarray(self._per_frame(fake, reference, points), dtype=np.float64)

    def _per_frame(self, fake: np.ndarray, reference: Any, points: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover - interface

    def summarize(self, values: np.ndarray) -> MetricValue:
        """Mean over the finite values; NaNs (failures) are counted, not averaged."""
        if not self.available:
            return self.unavailable()
        v = np.asarray(values, dtype=np.float64).ravel()
        ok = ~np.isnan(v)
        value = float(np.mean(v[ok])) if ok.any() else None
        reason = "" if ok.any() else ("no frames" if v.size == 0 else "could not be computed on any frame")
        return MetricValue(self.name, value, n=int(v.size), failed=int((~ok).sum()), reason=reason,
                           higher_is_better=self.higher_is_better, extra=self.extra_summary(v))

    def extra_summary(self, values: np.ndarray) -> dict[str, Any]:
        """Metric-specific companions of the aggregate (override)."""
        return {}

    def __call__(self, fake, real, points: np.ndarray | None = None) -> MetricValue:
        if not self.available:
            return self.unavailable()
        return self.summarize(self.per_frame(fake, real, points))


class SetMetric(Metric):
    """A distance between two image sets (see the module docstring)."""

    kind = "set"
    min_items: ClassVar[int] = 2

    def features(self, images, points: np.ndarray | None = None) -> np.ndarray:
        """(N,D) float64 features of uint8 images / [-1,1] tensors; `points` (N,68,2) for metrics that align
        faces (the others ignore them)."""
        self._check()
        return self._features(as_uint8(images), points)

    def _features(self, images: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover - interface

    def distance(self, feats_fake: np.ndarray, feats_real: np.ndarray) -> MetricValue:
        if not self.available:
            return self.unavailable(len(feats_fake))
        n = min(len(feats_fake), len(feats_real))
        if n < self.min_items:
            return MetricValue(self.name, None, n=n, reason=f"needs at least {self.min_items} images per set",
                               higher_is_better=self.higher_is_better)
        return MetricValue(self.name, float(self._distance(feats_fake, feats_real)), n=n,
                           higher_is_better=self.higher_is_better)

    def _distance(self, feats_fake: np.ndarray, feats_real: np.ndarray) -> float:
        raise NotImplementedError  # pragma: no cover - interface

    def __call__(self, fake, real) -> MetricValue:
        if not self.available:
            return self.unavailable()
        return self.distance(self.features(fake), self.features(real))
