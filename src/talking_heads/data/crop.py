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

Parts of the box outside the frame are padded by edge replication (`pad="replicate"`, default: no hard
black edge for the generator to learn; VoxCeleb2's own crops contain no black bars) or with black
(`pad="black"`). Paste-back only writes inside the original frame, so padding never reaches an output.

Coordinates use the pixel-centre convention: crop pixel u has its centre at frame x = x0 + (u + 0.5) / scale
- 0.5 with scale = size / side. `CropTransform` holds the integer box and does every mapping.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        p = np.asarray(points, dtype=np.float64)
        origin = np.array([self.x0, self.y0], dtype=np.float64)
        return ((p - origin + 0.5) * self.scale - 0.5).astype(np.float32)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """Crop px -> frame px, any (...,2) array."""
        p = np.asarray(points, dtype=np.float64)
        origin = np.array([self.x0, self.y0], dtype=np.float64)
        return ((p + 0.5) / self.scale - 0.5 + origin).astype(np.float32)

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
        import cv2

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
        import cv2

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

    def fit(sel: np.ndarray) -> tuple[float, np.ndarray, bool]:
        """Smallest allowed side and least-moved centre holding the landmarks of frames `sel`."""
        lo, hi = pts[sel].reshape(-1, 2).min(axis=0), pts[sel].reshape(-1, 2).max(axis=0)
        side = float(np.clip(float((hi - lo).max()) / (1.0 - 2.0 * margin), base, base * max_grow))
        m = margin * side
        c_min, c_max = hi + m - side / 2.0, lo - m + side / 2.0
        feasible = bool((c_min <= c_max).all())
        return side, np.where(c_min <= c_max, np.clip(want, c_min, c_max), want), feasible

    side, centre, feasible = fit(np.ones(len(pts), bool))
    if not feasible:  # the head moves further than the largest box: keep the frames near the typical place
        half = base * max_grow / 2.0 * (1.0 - 2.0 * margin)
        near = (np.abs(pts - want) <= half).all(axis=(1, 2))
        if near.any():
            side, centre, _ = fit(near)
    side_i = max(2, int(round(side)))
    x0, y0 = int(round(centre[0] - side_i / 2.0)), int(round(centre[1] - side_i / 2.0))
    tf = CropTransform(x0, y0, side_i, int(size), int(frame_size[0]), int(frame_size[1]))
    inside = ((pts >= [x0, y0]) & (pts <= [x0 + side_i - 1, y0 + side_i - 1])).all(axis=(1, 2))
    return ClipCrop(tf, inside, side_i / base)
