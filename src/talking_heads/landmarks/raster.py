"""Landmark images y: 68 points drawn as coloured polylines on a black canvas (paper.md section 2, [LAB] palette).

jaw 0-16 white (open) · right brow 17-21 red · left brow 22-26 green · nose bridge 27-30 blue ·
nostrils 31-35 blue · right eye 36-41 magenta (closed) · left eye 42-47 cyan (closed) ·
outer lips 48-59 yellow (closed) · inner lips 60-67 yellow (closed).
With gaze (not in the paper; `data.pupils`), points may have 70 rows: rows 68 and 69 are the iris centres of
the subject's right (36-41) and left (42-47) eye (`landmarks/iris.py`), drawn as orange discs of radius
`IRIS_RADIUS` eye widths clipped to the lid opening, under the lid lines: lids closing cover them, as on a face.
("right"/"left" are the subject's; on an unflipped image the subject's right side is the image's left.)

Thickness is `DataConfig.line_thickness` (2 px) at 256 px, scaled linearly with the canvas size and drawn
anti-aliased with sub-pixel vertices (cv2.polylines, shift=4): cheap enough to run in the data loader and
per frame at inference. Points use the pixel-centre
convention (pixel (i, j) has its centre at x=j, y=i). Also here: `flip_landmarks`, the horizontal mirror
with the iBUG-68 left/right re-indexing, used by flip augmentation.
"""

from __future__ import annotations

import numpy as np

from ..config import DataConfig

RGB = tuple[int, int, int]
WHITE, RED, GREEN, BLUE = (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255)
MAGENTA, CYAN, YELLOW = (255, 0, 255), (0, 255, 255), (255, 255, 0)
ORANGE = (255, 128, 0)  # the pupils (gaze)
NUM_WITH_IRIS = 70  # 68 iBUG points + the two iris centres

# (first index, last index inclusive, closed, colour RGB)
SEGMENTS: tuple[tuple[int, int, bool, RGB], ...] = (
    (0, 16, False, WHITE),  # jaw
    (17, 21, False, RED),  # right brow
    (22, 26, False, GREEN),  # left brow
    (27, 30, False, BLUE),  # nose bridge
    (31, 35, False, BLUE),  # nostrils
    (36, 41, True, MAGENTA),  # right eye
    (42, 47, True, CYAN),  # left eye
    (48, 59, True, YELLOW),  # outer lips
    (60, 67, True, YELLOW),  # inner lips
)

REFERENCE_SIZE = 256  # resolution at which DataConfig.line_thickness is given
_SHIFT = 4  # sub-pixel bits for cv2 drawing

# iBUG-68 mirror permutation: point i of the mirrored face is point FLIP_PERMUTATION[i] of the original
FLIP_PERMUTATION = np.array(
    list(range(16, -1, -1))  # jaw 0..16 reversed
    + list(range(26, 21, -1)) + list(range(21, 16, -1))  # brows 17-21 <-> 26-22
    + [27, 28, 29, 30]  # nose bridge stays
    + [35, 34, 33, 32, 31]  # nostrils mirrored
    + [45, 44, 43, 42, 47, 46]  # right eye 36-41 <-> left eye
    + [39, 38, 37, 36, 41, 40]  # left eye 42-47 <-> right eye
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65],  # inner lips
    dtype=np.int64)
FLIP_PERMUTATION_IRIS = np.concatenate([FLIP_PERMUTATION, [69, 68]])  # the iris rows swap eyes too


def scaled_thickness(size: int, thickness: float | None = None) -> float:
    """Line thickness in px for a canvas of `size` px: `thickness` (px at 256; None = DataConfig's) scaled."""
    base = DataConfig.line_thickness if thickness is None else float(thickness)
    return base * size / REFERENCE_SIZE


def rasterize(points: np.ndarray, size: int, thickness: float | None = None, pupils: bool = False) -> np.ndarray:
    """Landmark image uint8 (size,size,3) RGB from points (68,2) or (70,2) float px in the size x size frame.

    thickness: line thickness in px *at 256 px* (None = DataConfig.line_thickness); scaled with `size` and
    rounded to whole pixels (at least 1). NaN among the 68 points gives an all-black image (no face); with 70
    rows and `pupils`, the iris centres (rows 68-69; NaN = not seen, not drawn) are drawn as pupils.
    """
    import cv2  # lazy: start-up time of every command (landmarks/__init__.py)

    canvas = np.zeros((size, size, 3), np.uint8)
    points = np.asarray(points, dtype=np.float64)
    if points.shape not in ((68, 2), (NUM_WITH_IRIS, 2)):
        raise ValueError(f"expected landmarks of shape (68, 2) or (70, 2), got {points.shape}")
    if not np.isfinite(points[:68]).all():
        return canvas
    if pupils and len(points) == NUM_WITH_IRIS:
        draw_pupils(canvas, points)
    points = points[:68]
    t = max(1, int(round(scaled_thickness(size, thickness))))
    fixed = np.round(points * (1 << _SHIFT)).astype(np.int32)
    for first, last, closed, colour in SEGMENTS:
        cv2.polylines(canvas, [fixed[first:last + 1].reshape(-1, 1, 2)], closed, colour, thickness=t,
                      lineType=cv2.LINE_AA, shift=_SHIFT)
    return canvas


def draw_pupils(canvas: np.ndarray, points: np.ndarray) -> None:
    """Orange iris discs (rows 68-69 of `points`, radius IRIS_RADIUS eye widths) inside each eye's lid polygon,
    anti-aliased, into `canvas` in place (module docstring). NaN centres are skipped."""
    import cv2

    from .iris import CORNERS, EYES, IRIS_RADIUS

    for eye in range(2):
        c = points[68 + eye]
        if not np.isfinite(c).all():
            continue
        a, b = CORNERS[eye]
        r = IRIS_RADIUS * float(np.hypot(*(points[b] - points[a])))
        poly = points[EYES[eye]]
        x0, y0 = np.floor(np.minimum(poly.min(0), c - r)).astype(int) - 2
        x1, y1 = np.ceil(np.maximum(poly.max(0), c + r)).astype(int) + 3
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, canvas.shape[1]), min(y1, canvas.shape[0])
        if x1 <= x0 or y1 <= y0:
            continue
        lid = np.zeros((y1 - y0, x1 - x0), np.uint8)
        disc = np.zeros_like(lid)
        off = np.array([x0, y0], np.float64)
        cv2.fillPoly(lid, [np.round((poly - off) * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)], 255,
                     cv2.LINE_AA, shift=_SHIFT)
        centre = tuple(int(v) for v in np.round((c - off) * (1 << _SHIFT)))
        cv2.circle(disc, centre, int(round(r * (1 << _SHIFT))), 255, -1, cv2.LINE_AA, shift=_SHIFT)
        alpha = (lid.astype(np.float32) * disc.astype(np.float32) / 255.0**2)[..., None]
        region = canvas[y0:y1, x0:x1].astype(np.float32)
        canvas[y0:y1, x0:x1] = np.round(region * (1 - alpha) + np.array(ORANGE, np.float32) * alpha).astype(np.uint8)


def rasterize_tensor(points, size: int, thickness: float | None = None, pupils: bool = False):
    """Landmark image(s) as float tensors in [-1, 1]: points (68|70,2) -> (3,S,S); (B,68|70,2) -> (B,3,S,S)."""
    # lazy: torch (also behind `images`) is the slowest import of all, and every command, `--help` included,
    # imports this package without needing tensors (landmarks/__init__.py)
    import torch

    from ..images import to_tensor

    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    points = np.asarray(points)
    if points.ndim == 2:
        return to_tensor(rasterize(points, size, thickness, pupils))
    return torch.stack([to_tensor(rasterize(p, size, thickness, pupils)) for p in points])


def flip_landmarks(points: np.ndarray, width: int) -> np.ndarray:
    """Mirror landmarks (...,68,2) or (...,70,2) of an image `width` px wide: x -> width-1-x, left/right indices
    swapped (the iris rows too), so that point i is again point i of the mirrored face (flip(flip(p)) == p)."""
    points = np.asarray(points)
    perm = FLIP_PERMUTATION_IRIS if points.shape[-2] == NUM_WITH_IRIS else FLIP_PERMUTATION
    out = points[..., perm, :].copy()
    out[..., 0] = (width - 1) - out[..., 0]
    return out


def flip_image(image: np.ndarray) -> np.ndarray:
    """Mirror an (H,W,C) image left-right (contiguous copy)."""
    return np.ascontiguousarray(image[:, ::-1])
