"""VoxCeleb-style head crops (paper.md section 2): one square box per clip, resized to the model resolution.

Box rule (measured on VoxCeleb2's own 224 px face tracks in ../shared/data: their frame side is 1.6-1.9x the
landmark extent and their centre lies about 0.1 landmark extents below the landmark centre):
    face size  s = max(width, height) of the 68 landmarks' bounding box   (brows to chin, ear to ear)
    side       = DataConfig.crop_scale (1.8) * s
    centre     = landmark-box centre + (0, DataConfig.crop_shift (0.1) * s)   (downward: hair above, neck below)
For a clip, s and the centre are the medians over its frames, so the box does not jitter. The box is then
shifted (never by more than needed) and, if the head moves a lot, grown up to `max_grow` x, so that every
frame's landmarks lie inside it with a small margin. Frames whose landmarks still fall outside are reported
by `clip_crop` and dropped by preprocessing.

A driver whose face moves across the frame (a dancing, full-body clip) would slide out of one box, so it may
follow the face instead (`follow_crop`, chosen by `driver.load_driver` when `face_motion` exceeds
DataConfig.follow_threshold): the same rule per frame on the landmark-box centre and face size smoothed over
DataConfig.follow_smoothing seconds (`smooth_track`: zero-phase moving average, frames without a face hold
the last one), giving a `CropTrack` of one `CropTransform` per frame.

A stream whose frames arrive one at a time (a camera, the telepresence sender, the live stage) cannot take
medians over the clip: `StreamCrop` applies the rule to its first frame with a face and keeps that box until
the head leaves it.

Parts of the box outside the frame are padded by edge replication (`pad="replicate"`, default: no hard
black edge for the generator to learn; VoxCeleb2's own crops contain no black bars) or with black
(`pad="black"`). Paste-back only writes inside the original frame, so padding never reaches an output.

Coordinates use the pixel-centre convention: crop pixel u has its centre at frame x = x0 + (u + 0.5) / scale
- 0.5 with scale = size / side. `CropTransform` holds the integer box and does every mapping.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..config import DataConfig

PAD_MODES = ("replicate", "black")


@dataclass(frozen=True)
class CropTransform:
    """Square box (x0, y0, side) in frame pixels (may extend past the frame) -> a size x size crop."""

    x0: int
    y0: int
    side: int
    size: int  # output resolution (px)
    frame_width: int
    frame_height: int

    @property
    def scale(self) -> float:
        return self.size / self.side

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) with x1 = x0 + side (exclusive)."""
        return self.x0, self.y0, self.x0 + self.side, self.y0 + self.side

    # --- points ---------------------------------------------------------------------------------------
    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Frame px -> crop px, any (...,2) array."""
        return _to_crop(np.asarray(points, dtype=np.float64), self.origin, self.scale)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """Crop px -> frame px, any (...,2) array."""
        return _to_frame(np.asarray(points, dtype=np.float64), self.origin, self.scale)

    @property
    def origin(self) -> np.ndarray:
        """(2,) float64 (x0, y0): the box's top-left corner in frame px."""
        return np.array([self.x0, self.y0], dtype=np.float64)

    @property
    def matrix(self) -> np.ndarray:
        """2x3 affine frame px -> crop px (for cv2.warpAffine)."""
        s = self.scale
        return np.array([[s, 0.0, (0.5 - self.x0) * s - 0.5], [0.0, s, (0.5 - self.y0) * s - 0.5]])

    @property
    def inverse_matrix(self) -> np.ndarray:
        """2x3 affine crop px -> frame px."""
        s = 1.0 / self.scale
        return np.array([[s, 0.0, 0.5 * s - 0.5 + self.x0], [0.0, s, 0.5 * s - 0.5 + self.y0]])

    def resized(self, size: int) -> "CropTransform":
        """The same box rendered at another resolution."""
        return CropTransform(self.x0, self.y0, self.side, int(size), self.frame_width, self.frame_height)

    # --- images ---------------------------------------------------------------------------------------
    def crop(self, frame: np.ndarray, pad: str = "replicate") -> np.ndarray:
        """The size x size crop of an (H,W,C) frame; outside parts padded by `pad` (module docstring)."""
        if pad not in PAD_MODES:
            raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
        h, w = frame.shape[:2]
        x0, y0, x1, y1 = self.box
        ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if ix0 >= ix1 or iy0 >= iy1:  # box entirely outside the frame
            return np.zeros((self.size, self.size) + frame.shape[2:], frame.dtype)
        region = frame[iy0:iy1, ix0:ix1]
        if (ix0, iy0, ix1, iy1) != (x0, y0, x1, y1):
            border = cv2.BORDER_REPLICATE if pad == "replicate" else cv2.BORDER_CONSTANT
            region = cv2.copyMakeBorder(region, iy0 - y0, y1 - iy1, ix0 - x0, x1 - ix1, border, value=0)
        interp = cv2.INTER_AREA if self.side > self.size else cv2.INTER_LINEAR
        return cv2.resize(region, (self.size, self.size), interpolation=interp)

    def paste_back(self, image: np.ndarray, frame: np.ndarray, mask: np.ndarray | None = None,
                   feather: float = 0.08) -> np.ndarray:
        """Blend a crop-space image (size x size, or any square resolution) back into a copy of `frame`.

        mask: optional crop-space weights in [0, 1] (H,W) or (H,W,1) (e.g. a head mask); default a square
        whose edges fade out over `feather` x side (0 = hard edges). Returns the new frame (same dtype).
        """
        out = frame.copy()
        h, w = frame.shape[:2]
        x0, y0, x1, y1 = self.box
        ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if ix0 >= ix1 or iy0 >= iy1:
            return out
        interp = cv2.INTER_LINEAR if self.side >= image.shape[0] else cv2.INTER_AREA
        big = cv2.resize(image, (self.side, self.side), interpolation=interp)
        if big.ndim == 2 and frame.ndim == 3:
            big = big[:, :, None]
        if mask is None:
            alpha = _feather_mask(self.side, feather)
        else:
            alpha = cv2.resize(np.asarray(mask, np.float32).squeeze(), (self.side, self.side),
                               interpolation=cv2.INTER_LINEAR)
        sl = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
        a = alpha[sl][..., None] if frame.ndim == 3 else alpha[sl]
        dst = out[iy0:iy1, ix0:ix1].astype(np.float32)
        blended = a * big[sl].astype(np.float32) + (1.0 - a) * dst
        if np.issubdtype(frame.dtype, np.integer):
            blended = np.clip(blended + 0.5, 0, np.iinfo(frame.dtype).max)
        out[iy0:iy1, ix0:ix1] = blended.astype(frame.dtype)
        return out

    # --- serialisation --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"x0": self.x0, "y0": self.y0, "side": self.side, "size": self.size,
                "frame_width": self.frame_width, "frame_height": self.frame_height}

    @classmethod
    def from_dict(cls, d: dict) -> "CropTransform":
        return cls(int(d["x0"]), int(d["y0"]), int(d["side"]), int(d["size"]), int(d["frame_width"]),
                   int(d["frame_height"]))


def _to_crop(p: np.ndarray, origin, scale) -> np.ndarray:
    """Frame px -> crop px (the pixel-centre convention of the module docstring): float64 points (...,2),
    box origin (...,2) and scale = size / side (...,1) or a float -> float32."""
    return ((p - origin + 0.5) * scale - 0.5).astype(np.float32)


def _to_frame(p: np.ndarray, origin, scale) -> np.ndarray:
    """Crop px -> frame px, the inverse of `_to_crop` (same arguments)."""
    return ((p + 0.5) / scale - 0.5 + origin).astype(np.float32)


def _feather_mask(side: int, feather: float) -> np.ndarray:
    ramp_px = max(1.0, feather * side)
    if feather <= 0:
        return np.ones((side, side), np.float32)
    d = np.minimum(np.arange(side), np.arange(side)[::-1]).astype(np.float32) + 0.5
    r = np.clip(d / ramp_px, 0.0, 1.0)
    r = r * r * (3 - 2 * r)  # smoothstep
    return np.minimum(r[:, None], r[None, :])


def face_extent(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame landmark box centre (...,2) and face size (...,) = max(box width, box height)."""
    p = np.asarray(points, dtype=np.float64)
    lo, hi = p.min(axis=-2), p.max(axis=-2)
    return (lo + hi) / 2.0, (hi - lo).max(axis=-1)


@dataclass
class ClipCrop:
    """Result of `clip_crop`: the transform and which frames' landmarks lie inside the box."""

    transform: CropTransform
    inside: np.ndarray  # (F,) bool
    grown: float  # side / (crop_scale * median face size), >= 1


def _fit(pts: np.ndarray, want: np.ndarray, base: float, max_grow: float, margin: float
         ) -> tuple[float, np.ndarray, bool]:
    """Smallest allowed side (base .. base * max_grow) and least-moved centre (from `want`) holding the
    landmarks `pts` (...,2) with `margin` x side to spare; feasible: whether they fit at all."""
    lo, hi = pts.reshape(-1, 2).min(axis=0), pts.reshape(-1, 2).max(axis=0)
    side = float(np.clip(float((hi - lo).max()) / (1.0 - 2.0 * margin), base, base * max_grow))
    m = margin * side
    c_min, c_max = hi + m - side / 2.0, lo - m + side / 2.0
    feasible = bool((c_min <= c_max).all())
    return side, np.where(c_min <= c_max, np.clip(want, c_min, c_max), want), feasible


def _box(side: float, centre: np.ndarray, size: int, frame_size: tuple[int, int]) -> CropTransform:
    """The integer box of side `side` around `centre` (frame px)."""
    side_i = max(2, int(round(side)))
    x0, y0 = int(round(centre[0] - side_i / 2.0)), int(round(centre[1] - side_i / 2.0))
    return CropTransform(x0, y0, side_i, int(size), int(frame_size[0]), int(frame_size[1]))


def clip_crop(points: np.ndarray, frame_size: tuple[int, int], size: int,
              crop_scale: float = DataConfig.crop_scale, crop_shift: float = DataConfig.crop_shift,
              max_grow: float = 1.3, margin: float = 0.02) -> ClipCrop:
    """One stable box for landmarks (F,68,2) in frame px of frames `frame_size` = (width, height)."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 2:
        pts = pts[None]
    if len(pts) == 0 or not np.isfinite(pts).all():
        raise ValueError("clip_crop needs finite landmarks for at least one frame (drop not-found frames first)")
    centres, sizes = face_extent(pts)
    s = float(np.median(sizes))
    if s <= 1:
        raise ValueError(f"degenerate landmarks (face size {s:.1f} px)")
    base = crop_scale * s
    want = np.median(centres, axis=0) + np.array([0.0, crop_shift * s])
    side, centre, feasible = _fit(pts, want, base, max_grow, margin)
    if not feasible:  # the head moves further than the largest box: keep the frames near the typical place
        half = base * max_grow / 2.0 * (1.0 - 2.0 * margin)
        near = (np.abs(pts - want) <= half).all(axis=(1, 2))
        if near.any():
            side, centre, _ = _fit(pts[near], want, base, max_grow, margin)
    tf = _box(side, centre, size, frame_size)
    x0, y0, side_i = tf.x0, tf.y0, tf.side
    inside = ((pts >= [x0, y0]) & (pts <= [x0 + side_i - 1, y0 + side_i - 1])).all(axis=(1, 2))
    return ClipCrop(tf, inside, side_i / base)


# --- following a moving face ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CropTrack:
    """One `CropTransform` per frame (`follow_crop`): maps (F,...,2) points frame by frame; `track[i]` is
    frame i's transform (its `crop(frame)` cuts that frame), `track[a:b]` a shorter track."""

    boxes: tuple[CropTransform, ...]

    def __post_init__(self):
        if not self.boxes:
            raise ValueError("a CropTrack needs at least one box")

    def __len__(self) -> int:
        return len(self.boxes)

    def __iter__(self):
        return iter(self.boxes)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return CropTrack(self.boxes[index])
        return self.boxes[index]

    @property
    def size(self) -> int:
        return self.boxes[0].size

    @property
    def frame_width(self) -> int:
        return self.boxes[0].frame_width

    @property
    def frame_height(self) -> int:
        return self.boxes[0].frame_height

    def resized(self, size: int) -> "CropTrack":
        """The same boxes rendered at another resolution."""
        return CropTrack(tuple(b.resized(size) for b in self.boxes))

    def _per_frame(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = np.asarray(points, dtype=np.float64)
        if p.ndim < 2 or p.shape[0] != len(self) or p.shape[-1] != 2:
            raise ValueError(f"a CropTrack of {len(self)} frames maps (F={len(self)},...,2) points, got {p.shape}")
        lead = (len(self),) + (1,) * (p.ndim - 2)
        origin = np.stack([b.origin for b in self.boxes]).reshape(lead + (2,))
        scale = np.array([b.scale for b in self.boxes], dtype=np.float64).reshape(lead + (1,))
        return p, origin, scale

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Frame px -> crop px, (F,...,2): frame i's points through box i (as `self[i].to_crop`)."""
        return _to_crop(*self._per_frame(points))

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """Crop px -> frame px, (F,...,2): frame i's points through box i (as `self[i].to_frame`)."""
        return _to_frame(*self._per_frame(points))


def smoothing_window(seconds: float, fps: float) -> int:
    """Frames (odd, >= 1) of a moving average `seconds` long at `fps`."""
    n = float(seconds) * float(fps)
    n = int(round(n)) if np.isfinite(n) and n > 1 else 1
    return n if n % 2 else n + 1


def hold_index(found: np.ndarray) -> np.ndarray:
    """(F,) int: for each frame the last frame at or before it where `found` is True (the first found frame
    for those before it; frame 0 when none is found)."""
    found = np.asarray(found, bool)
    idx = np.maximum.accumulate(np.where(found, np.arange(len(found)), -1))
    idx[idx < 0] = int(np.argmax(found))
    return idx


def smooth_track(values: np.ndarray, window: int, found: np.ndarray | None = None) -> np.ndarray:
    """(F,...) float64: a zero-phase moving average of `window` frames (made odd; shortened to fit the clip)
    over the first axis. Frames where `found` is False first hold the last found value (frames before the
    first found one take it). The ends are padded by point reflection (2 x[0] - x[k]), so a steady motion is
    followed without lag up to the last frame."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return v.copy()
    if found is not None:
        if not np.any(found):
            raise ValueError("smooth_track needs at least one found frame")
        v = v[hold_index(found)]
    half = min(max(0, int(window) // 2), len(v) - 1)
    if half == 0:
        return v.copy()
    head = 2.0 * v[:1] - v[half:0:-1]
    tail = 2.0 * v[-1:] - v[-2:-half - 2:-1]
    padded = np.concatenate([head, v, tail])
    csum = np.concatenate([np.zeros((1,) + v.shape[1:]), np.cumsum(padded, axis=0)])
    return (csum[2 * half + 1:] - csum[:-2 * half - 1]) / (2 * half + 1)


def _face_track(points: np.ndarray, found: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """(points float64, found, per-frame centres, face sizes, median face size) of landmarks (F,68,2) whose
    frames `found` (default: the finite ones) show a face; the others' centres and sizes are 0."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[-1] != 2:
        raise ValueError(f"expected landmarks (F,68,2), got {pts.shape}")
    found = np.isfinite(pts).all(axis=(1, 2)) if found is None else np.asarray(found, bool)
    if not found.any():
        raise ValueError("no frame with a face")
    centres, sizes = face_extent(np.where(found[:, None, None], pts, 0.0))
    s = float(np.median(sizes[found]))
    if s <= 1:
        raise ValueError(f"degenerate landmarks (face size {s:.1f} px)")
    return pts, found, centres, sizes, s


def face_motion(points: np.ndarray, window: int = 1, found: np.ndarray | None = None) -> float:
    """How far the face moves over a clip: the largest distance of its landmark-box centre (smoothed over
    `window` frames by `smooth_track`, so one-frame glitches do not count) from the median centre, in median
    face sizes. points (F,68,2); frames where `found` is False (default: the non-finite ones) hold the last
    found centre. Talking heads: 0.01-0.2, up to 0.5 with strong head tilts; a face crossing the frame moves
    several face sizes."""
    _, found, centres, _, s = _face_track(points, found)
    path = smooth_track(centres, window, found)
    return float(np.linalg.norm(path - np.median(path[found], axis=0), axis=1).max() / s)


def follow_crop(points: np.ndarray, frame_size: tuple[int, int], size: int, window: int,
                crop_scale: float = DataConfig.crop_scale, crop_shift: float = DataConfig.crop_shift,
                found: np.ndarray | None = None, max_grow: float = 1.3, margin: float = 0.02) -> CropTrack:
    """A box per frame that follows the face: `clip_crop`'s rule on each frame's landmark-box centre and face
    size, smoothed over `window` frames (`smooth_track`), then shifted / grown (as `clip_crop`) so that
    the frame's landmarks lie inside. points (F,68,2) frame px; frames where `found` is False (default: the
    non-finite ones) hold the box of the last found frame (the first one for those before it): with the
    held landmarks of `driver.hold_last_good` their crop points are those of that frame."""
    pts, found, centres, sizes, _ = _face_track(points, found)
    centres, sizes = smooth_track(centres, window, found), smooth_track(sizes, window, found)
    boxes = {}
    for t in np.flatnonzero(found):
        base = crop_scale * sizes[t]
        want = centres[t] + np.array([0.0, crop_shift * sizes[t]])
        side, centre, _ = _fit(pts[t], want, base, max_grow, margin)
        boxes[t] = _box(side, centre, size, frame_size)
    return CropTrack(tuple(boxes[t] for t in hold_index(found)))


# --- a stream's crop -----------------------------------------------------------------------------------

class StreamCrop:
    """The crop of a stream whose frames arrive one by one: `clip_crop`'s rule on the first frame with a face
    (instead of the median over a whole clip). The box then stays put, so that the points' coordinates only
    move with the head; it is refitted on the current frame when a landmark leaves the box by more than
    `refit` x its side (the person moved away), and `changed` says so."""

    def __init__(self, size: int, data_cfg: DataConfig | None = None, refit: float = 0.25):
        self.size, self.cfg, self.refit = int(size), data_cfg or DataConfig(), refit
        self.transform: CropTransform | None = None
        self.changed = False  # the last update fitted a new box

    def update(self, points: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
        """(68,2) frame px (finite) -> crop px at `size`; fits or refits the box as needed."""
        tf = self.transform
        self.changed = tf is None
        if tf is not None:
            x0, y0, x1, y1 = tf.box
            m = self.refit * tf.side
            self.changed = bool((points < [x0 - m, y0 - m]).any() or (points > [x1 + m, y1 + m]).any())
        if self.changed:
            self.transform = clip_crop(points[None], frame_size, self.size, self.cfg.crop_scale,
                                       self.cfg.crop_shift).transform
        return self.transform.to_crop(points)
