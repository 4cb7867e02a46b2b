"""Aligned face chips for the face-identity network, differentiable (dlib's `get_face_chip_details` in torch).

dlib aligns a face for its recognition ResNet with `get_face_chip_details(shape, size=150, padding=0.25)`
(`dlib/image_transforms/interpolation.h`): a least-squares similarity transform (Umeyama; the project's
`adaptation.fit_similarity`) from a template of
mean landmark positions to 51 of the 68 points (eyebrows and lower lip left out), then `extract_image_chip`,
which maps chip pixel (0, 0) to the rotated top-left corner of the chip rectangle and (size-1, size-1) to
its bottom-right, i.e.

    image = c + R(angle) * k * (chip - (size - 1) / 2),   k = (size * s - 1) / (size - 1)

with c the template centre's image (the transform of (size/2, size/2)) and s, angle the similarity's scale
and rotation. `chip_transform` returns that map as a (B, 2, 3) matrix; `crop_chips` samples a batch of images
with it by `F.grid_sample` (bilinear, zeros outside the image, as dlib), so a loss can flow back to the image.
When a chip shrinks the face by more than about 2x, dlib samples from a Gaussian image pyramid of the region
around the face (pyramid_down<2>, its odd point_down offsets included); `crop_chips` does the same in torch,
so large photos are antialiased exactly as dlib does (tests/test_face_identity.py checks the descriptors).

For losses, the transform of the *real* frame's landmarks crops both the real and the generated frame, so the
comparison is at the same place and a face drawn in the wrong place is penalised. Points are in the image's
pixel-centre coordinates (x right, y down), as everywhere in the project.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .adaptation import fit_similarity

CHIP_SIZE, CHIP_PADDING = 150, 0.25  # dlib's alignment for the face-recognition ResNet

# dlib's mean face shape for points 17-67, in [0, 1] template coordinates
_MEAN_X = (0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991, 0.98004,
           0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373, 0.121737,
           0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751,
           0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
           0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874, 0.553364, 0.490127,
           0.42689)
_MEAN_Y = (0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915,
           0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345, 0.587326,
           0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423,
           0.244077, 0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
           0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746, 0.784792, 0.824182,
           0.831803, 0.824182)
# the points dlib aligns on: 27-54 and 60-64 (no eyebrows 17-26, no lower lip 55-59 / 65-67)
ALIGN_POINTS = tuple(i for i in range(17, 68) if not (17 <= i <= 26 or 55 <= i <= 59 or 65 <= i <= 67))


def template(size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """(len(ALIGN_POINTS), 2) chip-pixel positions of the aligned points (dlib's from_points)."""
    xy = np.array([(_MEAN_X[i - 17], _MEAN_Y[i - 17]) for i in ALIGN_POINTS], np.float64)
    return (padding + xy) / (2 * padding + 1) * size


def chip_transform(points, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> Tensor:
    """(B,2,3) float64 maps chip pixel (x, y, 1) -> image pixel of dlib's aligned chip for 68-point landmarks
    `points` (B,68,2) or (68,2) (numpy or torch; not differentiated)."""
    p = points.detach().cpu().numpy() if isinstance(points, Tensor) else np.asarray(points)
    p = np.asarray(p, np.float64)
    if p.ndim == 2:
        p = p[None]
    if p.shape[1:] == (70, 2):  # with the iris centres (gaze): the face's own 68 align the chip
        p = p[:, :68]
    if p.shape[1:] != (68, 2):
        raise ValueError(f"expected 68-point landmarks (B,68,2), got {tuple(p.shape)}")
    if not np.isfinite(p).all():
        raise ValueError("landmarks contain NaN or inf; cannot align a face chip")
    # Umeyama chip -> image, as dlib's find_similarity_transform (same reflection rule for real faces)
    scale, rot, t = fit_similarity(np.broadcast_to(template(size, padding), (len(p), len(ALIGN_POINTS), 2)),
                                   p[:, list(ALIGN_POINTS)])
    centre = scale[:, None] * np.einsum("bij,j->bi", rot, np.full(2, size / 2.0)) + t  # image of (size/2, size/2)
    k = (size * scale - 1.0) / (size - 1.0)  # image px per chip px along the chip's axes
    lin = rot * k[:, None, None]
    offset = centre - np.einsum("bij,j->bi", lin, np.full(2, (size - 1) / 2.0))
    return torch.from_numpy(np.concatenate([lin, offset[:, :, None]], axis=2))  # B,2,3 float64


def pyramid_levels(transform: Tensor, size: int = CHIP_SIZE) -> Tensor:
    """(B,) int: how many times dlib halves the image before sampling each chip (0 unless the chip shrinks
    the face by more than about 2x): the number of pyramid_down<2> steps after which the chip rectangle
    (side w0 = size * scale, each step w -> (w - 1) / 2 + 1) still has more pixels than the chip."""
    k = torch.linalg.norm(transform[:, :, 0], dim=-1)  # image px per chip px
    side = k * (size - 1) + 1  # dlib's drectangle width (r - l + 1) of the chip rectangle
    levels = torch.zeros_like(k, dtype=torch.long)
    while True:
        side = (side - 1) / 2 + 1
        more = side > size
        if not more.any():
            return levels
        levels = levels + more.long()


def pyramid_down(images: Tensor) -> Tensor:
    """dlib's pyramid_down<2>: a 5x5 [1 4 6 4 1]^2 / 256 Gaussian, valid positions only, every other row and
    column; output pixel (i, j) is centred on input pixel (2i + 2, 2j + 2). (B,C,H,W) -> (B,C,(H-3)//2,(W-3)//2)."""
    g = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=images.dtype, device=images.device)
    kernel = (g[:, None] * g[None, :] / 256.0).expand(images.shape[1], 1, 5, 5)
    return F.conv2d(images, kernel, stride=2, groups=images.shape[1])


def _truncate(x: Tensor, enabled: bool) -> Tensor:
    """dlib's 8-bit truncation of [-1,1] images (pixel = floor(value)), straight-through for gradients."""
    if not enabled:
        return x
    p = (x + 1.0) * 127.5
    return x + ((torch.floor(p + 1e-3) - p) / 127.5).detach()


def _pyramid_source(image: Tensor, transform: Tensor, levels: int, size: int, truncate: bool = False
                    ) -> tuple[Tensor, Tensor]:
    """What dlib's extract_image_chip samples for a chip that needs `levels` pyramid steps: the sub-image
    around the chip (its rotated rectangle grown by a margin, rounded to whole pixels), halved `levels`
    times, and the chip transform re-expressed in that level's pixels with dlib's point_down
    (p -> p / 2 - (1.25, 0.75)). image (1,C,H,W), transform (2,3) float64."""
    corners = torch.tensor([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1], [size - 1, size - 1, 1]],
                           dtype=torch.float64)
    pts = corners @ transform.T  # 4,2 image px of the chip rectangle's corners
    grow = 2.0
    for _ in range(levels):
        grow = grow * 2 + 2
    h, w = image.shape[2:]
    lo = torch.maximum(pts.min(0).values - grow, torch.zeros(2, dtype=torch.float64))
    hi = torch.minimum(pts.max(0).values + grow, torch.tensor([w - 1.0, h - 1.0], dtype=torch.float64))
    (x0, y0), (x1, y1) = [[int(math.floor(float(v) + 0.5)) for v in p] for p in (lo, hi)]  # std::lround
    src = image[:, :, y0:y1 + 1, x0:x1 + 1]
    tf = transform.clone()
    tf[:, 2] -= torch.tensor([x0, y0], dtype=torch.float64)
    for _ in range(levels):
        if min(src.shape[2:]) <= 8:
            break
        src = _truncate(pyramid_down(src + 1.0) - 1.0, truncate)
        tf = tf / 2
        tf[:, 2] -= torch.tensor([1.25, 0.75], dtype=torch.float64)
    return src, tf


def _grid(transform: Tensor, size: int, height: int, width: int, dtype, device) -> Tensor:
    """grid_sample grid (B,size,size,2) in align_corners=False normalised coordinates."""
    j = torch.arange(size, dtype=torch.float64)
    yy, xx = torch.meshgrid(j, j, indexing="ij")
    chip = torch.stack([xx, yy, torch.ones_like(xx)], -1).reshape(-1, 3)  # S*S,3
    img = torch.einsum("bij,pj->bpi", transform, chip)  # B,S*S,2 image px
    norm = torch.stack([(2 * img[..., 0] + 1) / width - 1, (2 * img[..., 1] + 1) / height - 1], -1)
    return norm.reshape(-1, size, size, 2).to(device=device, dtype=dtype)


def crop_chips(images: Tensor, transform: Tensor, size: int = CHIP_SIZE, antialias: bool = True,
               fill: float = -1.0, dlib_rounding: bool = False) -> Tensor:
    """Aligned chips (B,3,size,size) of images (B,3,H,W) with `chip_transform`s (B,2,3); differentiable with
    respect to the images. Outside the image the chip is `fill` (-1: black for the project's [-1,1] images,
    as dlib's chips). `dlib_rounding` truncates pyramid levels and the chip to 8 bits as dlib does (for
    descriptors that match dlib's own; straight-through, so gradients still flow); losses leave it off."""
    if images.dim() != 4 or transform.shape != (images.shape[0], 2, 3):
        raise ValueError(f"images (B,3,H,W) and transforms (B,2,3) expected, got {tuple(images.shape)} and "
                         f"{tuple(transform.shape)}")
    transform = transform.to(torch.float64).cpu()
    levels = pyramid_levels(transform, size) if antialias else torch.zeros(len(transform), dtype=torch.long)
    def sample(src: Tensor, tf: Tensor) -> Tensor:
        grid = _grid(tf, size, src.shape[2], src.shape[3], src.dtype, src.device)
        chip = F.grid_sample(src - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
        return _truncate(chip, dlib_rounding)

    direct = (levels == 0).nonzero().flatten().tolist()
    chips: dict[int, Tensor] = {}
    if direct:  # every chip that needs no pyramid: one batched call (the losses' case)
        chips.update(zip(direct, sample(images[direct], transform[direct]).unbind(0)))
    for b in (levels > 0).nonzero().flatten().tolist():  # large faces: each its own cropped pyramid
        src, tf = _pyramid_source(images[b:b + 1], transform[b], int(levels[b]), size, dlib_rounding)
        chips[b] = sample(src, tf[None])[0]
    out = torch.stack([chips[b] for b in range(images.shape[0])])
    return out
