"""Gaze agreement (issue 28): where the eyes of rendered frames look, against where the driver's looked.

The iris locator (`landmarks/iris.py`) runs on every frame (dlib's 68 points first, on the whole frame), and
the gaze is each iris centre relative to its eye's corners in eye widths (`iris.relative_gaze`), the quantity
adaptation moves from the driver to the avatar. `gaze_agreement(rendered, driver)` compares two (F,2,2) series
over the frames where both show a seen iris: mean error (eye widths, both axes), and the correlation of the
horizontal and vertical gaze over the clip (eyes averaged). A model that ignores gaze holds its photo's gaze:
its correlation is near 0 and its error the driver's spread around that.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..landmarks.backend import detect_faces, get_backend
from ..landmarks.iris import conjugate, get_iris_locator, iris_points, relative_gaze
from .base import PairedMetric, as_uint8


def frame_gaze(frames: Iterable[np.ndarray], locator: str = "auto") -> np.ndarray:
    """(F,2,2) relative gaze of the largest face of each RGB frame (NaN: no face, or the iris not seen)."""
    backend, loc = get_backend("dlib"), get_iris_locator(locator)
    out = []
    for frame in frames:
        faces = detect_faces(frame, backend, max_side=512, robust=False)
        if not faces:
            out.append(np.full((2, 2), np.nan))
            continue
        points, _ = backend.landmarks(frame, faces[0].box)
        out.append(relative_gaze(points, iris_points(loc.locate(frame, points))))
    return np.asarray(out, np.float64).reshape(-1, 2, 2)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or a.std() < 1e-9 or b.std() < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def gaze_agreement(rendered: np.ndarray, driver: np.ndarray) -> dict[str, float]:
    """Mean gaze error (eye widths) and horizontal / vertical correlation of two (F,2,2) gaze series, on the
    frames where both are seen (`frames` says how many); both eyes averaged per frame (`iris.conjugate` first,
    so one seen eye counts). `error_centred`: the same after removing each series' median (two people's neutral
    gazes differ by their eye shapes: what transfers is the change), the measure for cross-identity."""
    r = np.stack([conjugate(g) for g in rendered]).mean(1)
    d = np.stack([conjugate(g) for g in driver]).mean(1)
    ok = np.isfinite(r).all(1) & np.isfinite(d).all(1)
    r, d = r[ok], d[ok]
    if not len(r):
        return {"frames": 0, "error": float("nan"), "error_centred": float("nan"), "corr_x": float("nan"),
                "corr_y": float("nan"), "driver_std_x": float("nan")}
    centred = (r - np.median(r, 0)) - (d - np.median(d, 0))  # each person's own neutral gaze removed
    return {"frames": int(ok.sum()), "error": float(np.linalg.norm(r - d, axis=1).mean()),
            "error_centred": float(np.linalg.norm(centred, axis=1).mean()),
            "corr_x": _corr(r[:, 0], d[:, 0]), "corr_y": _corr(r[:, 1], d[:, 1]),
            "driver_std_x": float(d[:, 0].std())}


class GazeError(PairedMetric):
    """Registry entry "gaze_error": per frame pair, the distance (eye widths, both eyes averaged) between the
    gaze measured on the generated frame and on the real one (in self-reenactment: the driver); NaN where
    either shows no seen iris (counted as failed). Its summary adds the horizontal and vertical correlation
    over the frames (`gaze_agreement`)."""

    name = "gaze_error"
    higher_is_better = False
    description = "gaze (iris centre relative to the eye corners, eye widths) of the generated vs the real frame"

    def __init__(self, cfg=None, device: str = "cpu"):
        super().__init__(cfg, device)
        try:
            get_backend("dlib")
            get_iris_locator("auto")
        except (ImportError, RuntimeError) as err:
            self.available, self.reason = False, f"iris locator unavailable: {err}"
        self._last: tuple[np.ndarray, np.ndarray] | None = None

    def reference(self, real, points=None) -> np.ndarray:
        return frame_gaze(as_uint8(real))

    def _per_frame(self, fake, reference, points):
        got = frame_gaze(fake)
        self._last = (got, reference)
        g = np.stack([conjugate(x) for x in got]).mean(1)
        r = np.stack([conjugate(x) for x in reference]).mean(1)
        return np.linalg.norm(g - r, axis=1)

    def extra_summary(self, values: np.ndarray) -> dict:
        if self._last is None:
            return {}
        agree = gaze_agreement(*self._last)
        return {"corr_x": agree["corr_x"], "corr_y": agree["corr_y"], "seen": agree["frames"]}
