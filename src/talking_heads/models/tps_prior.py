"""The landmark-driven warp prior of the TPS renderer (`model.generator = "tps"`; not in the paper).

../shared/design/warp_renderer.md section 2: a thin-plate spline (TPS) that maps every pixel of the driven
frame back to where it is in the person's photo, solved from the 68 landmarks (driver -> photo) plus anchors
that make the rest of the picture behave:

- the crop border: `BORDER_POINTS` per side, fixed (background and clothes stay exactly still);
- a ring of `RING_POINTS` points at `RING_SCALE` x the face's size around its centre, each moving like the
  nearest point of the jaw / brow outline (hair follows the head), below the chin at `CHIN_FOLLOW` of that
  motion (the neck moves less than the jaw);
- a point between each upper lid point and the brow above it (`LID_PAIRS`), half-way in both frames, so a
  blink stretches the lid skin instead of dragging the brow down.

Backward warp: for the driven frame's pixel q, `grid(q)` is where to sample the photo (grid_sample's
normalised coordinates, align_corners=False). The map is solved once per frame (an (N+3)^2 system in float64,
N = 68 + anchors; regularised by `REGULARISER` so that coinciding driver points, e.g. closed inner lips, stay
solvable), evaluated on a coarse grid and upsampled as a displacement (which is 0 on the border, so the
border stays exactly still), then applied to the photo at any resolution.

With `model.tps_iris` (gaze), `iris_shift` adds to the prior a shift of what the photo shows inside each eye's
lid opening, so that the photo's own iris lands where the driver's gaze puts it (landmarks/iris.py). (The
iris centres are not control points of the spline: surrounded by the lid points half an eye width away, a
control point there bends the iris instead of moving it, and a 64 px grid undersamples the bump.)

Also here, the landmark geometry the renderer composites with: `mouth_interior` (a feathered mask of the inner
lip polygon, what the photo cannot show when the mouth opens) and `mouth_box` (the square the mouth view is
cropped from).

Glossary: points (B,68,2) in normalised coordinates [-1, 1] (x right, y down; `normalise_points` from crop
px); grid (B,H,W,2) grid_sample coordinates; displacement (B,2,h,w) = grid - identity.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

OUTLINE = tuple(range(27))  # jaw 0-16, brows 17-26: what the ring follows
LID_PAIRS = ((36, 18), (37, 19), (38, 20), (39, 21), (42, 22), (43, 23), (44, 24), (45, 25))  # (lid, brow)
INNER_LIP = tuple(range(60, 68))  # the inner lip polygon, in order
MOUTH = tuple(range(48, 68))
RING_POINTS = 16
RING_SCALE = 1.45
RING_LIMIT = 0.92  # ring points are kept inside the crop (|x|, |y| <= this) so they never cross the border
CHIN_FOLLOW = 0.5
BORDER_POINTS = 9  # per side, corners included
BORDER_MARGIN = 0.08  # the displacement fades to 0 over this much (normalised) at the crop border
AT_LIDS = 0.15  # iris_shift: the shift fades to 0 over this much of an eye opening's half height at the lids
IRIS_DISC = 0.21  # iris radius in eye widths (landmarks/iris.py IRIS_RADIUS; models import no landmark code)
REGULARISER = 1e-5  # lambda of the regularised TPS (normalised units)


def normalise_points(points: Tensor, size: int) -> Tensor:
    """Crop px (pixel centres 0 .. size-1) -> grid_sample's normalised coordinates (align_corners=False)."""
    return (points + 0.5) * (2.0 / size) - 1.0


def pixel_points(points: Tensor, size: int) -> Tensor:
    """The inverse of `normalise_points`."""
    return (points + 1.0) * (size / 2.0) - 0.5


def identity_grid(b: int, h: int, w: int, like: Tensor) -> Tensor:
    """(B,H,W,2) grid_sample coordinates of every pixel centre (align_corners=False)."""
    ys = (torch.arange(h, device=like.device, dtype=like.dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=like.device, dtype=like.dtype) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).expand(b, h, w, 2)


def _border(like: Tensor) -> Tensor:
    """(4*(BORDER_POINTS-1), 2) points on the crop's border (normalised +-1), corners included once."""
    t = torch.linspace(-1.0, 1.0, BORDER_POINTS, dtype=like.dtype, device=like.device)
    one = torch.ones_like(t[:-1])
    sides = [torch.stack([t[:-1], -one], 1), torch.stack([one, t[:-1]], 1),
             torch.stack([-t[:-1], one], 1), torch.stack([-one, -t[:-1]], 1)]
    return torch.cat(sides)


def _ring(driver: Tensor, source: Tensor) -> tuple[Tensor, Tensor]:
    """The head ring (module docstring): (driver (B,R,2), source (B,R,2))."""
    outline_s, outline_d = source[:, OUTLINE], driver[:, OUTLINE]  # B,27,2
    centre = outline_s.mean(1, keepdim=True)  # B,1,2
    radius = (outline_s - centre).norm(dim=-1).mean(1, keepdim=True)  # B,1
    angles = torch.arange(RING_POINTS, dtype=source.dtype, device=source.device) * (2 * math.pi / RING_POINTS)
    unit = torch.stack([angles.cos(), angles.sin()], -1)  # R,2
    ring_s = (centre + RING_SCALE * radius[..., None] * unit).clamp(-RING_LIMIT, RING_LIMIT)  # B,R,2
    nearest = torch.cdist(ring_s, outline_s).argmin(-1)  # B,R
    motion = torch.gather(outline_d - outline_s, 1, nearest[..., None].expand(-1, -1, 2))  # B,R,2
    below_chin = (unit[:, 1] > 0.5).to(source.dtype)[None, :, None]  # pointing down (image y grows down)
    motion = motion * (1 - below_chin * (1 - CHIN_FOLLOW))
    return (ring_s + motion).clamp(-RING_LIMIT, RING_LIMIT), ring_s


def control_points(driver: Tensor, source: Tensor) -> tuple[Tensor, Tensor]:
    """The TPS's control points: (in the driven frame (B,N,2), in the photo (B,N,2)), N = 68 + 8 lid points +
    RING_POINTS + the border's."""
    lids = list(zip(*LID_PAIRS))
    lid_d = 0.5 * (driver[:, list(lids[0])] + driver[:, list(lids[1])])
    lid_s = 0.5 * (source[:, list(lids[0])] + source[:, list(lids[1])])
    ring_d, ring_s = _ring(driver, source)
    border = _border(source)[None].expand(source.shape[0], -1, -1)
    return torch.cat([driver, lid_d, ring_d, border], 1), torch.cat([source, lid_s, ring_s, border], 1)


def _kernel(a: Tensor, b: Tensor) -> Tensor:
    """TPS radial basis U(r) = r^2 log r^2 between point sets a (B,M,2) and b (B,N,2) -> (B,M,N)
    (|a|^2 + |b|^2 - 2 a.b: one matrix product instead of an (M,N,2) difference)."""
    r2 = ((a * a).sum(-1)[:, :, None] + (b * b).sum(-1)[:, None] - 2 * a @ b.transpose(1, 2)).clamp_min(0)
    return r2 * torch.log(r2.clamp_min(1e-20))


def solve_tps(ctrl_driver: Tensor, ctrl_source: Tensor) -> Tensor:
    """The TPS coefficients (B,N+3,2) (radial weights, then the affine part [1, x, y]) of the map
    ctrl_driver -> ctrl_source, solved in float64."""
    d = ctrl_driver.double()
    b, n, _ = d.shape
    k = _kernel(d, d) + REGULARISER * torch.eye(n, dtype=d.dtype, device=d.device)
    p = torch.cat([torch.ones_like(d[..., :1]), d], -1)  # B,N,3
    top = torch.cat([k, p], 2)
    bottom = torch.cat([p.transpose(1, 2), torch.zeros(b, 3, 3, dtype=d.dtype, device=d.device)], 2)
    rhs = torch.cat([ctrl_source.double(), torch.zeros(b, 3, 2, dtype=d.dtype, device=d.device)], 1)
    return torch.linalg.solve(torch.cat([top, bottom], 1), rhs)


def evaluate_tps(coef: Tensor, ctrl_driver: Tensor, query: Tensor) -> Tensor:
    """The map at `query` (B,M,2) -> (B,M,2), in float32 (the solve needs float64, the sums do not)."""
    q, d, c = query.float(), ctrl_driver.float(), coef.float()
    n = d.shape[1]
    p = torch.cat([torch.ones_like(q[..., :1]), q], -1)  # B,M,3
    return (_kernel(q, d) @ c[:, :n] + p @ c[:, n:]).float()


def full_precision(fn):
    """Run `fn` with autocast off: the spline's sums cancel badly in bf16 (a training step's autocast would
    otherwise put its matrix products in bf16: pixels of error, hundreds at outliers)."""
    @functools.wraps(fn)
    def inner(*args, **kwargs):
        devices = {a.device.type for a in args if isinstance(a, Tensor)} or {"cpu"}
        with contextlib.ExitStack() as stack:
            for device in devices:
                stack.enter_context(torch.autocast(device_type=device, enabled=False))
            return fn(*args, **kwargs)
    return inner


@full_precision
def prior_displacement(driver: Tensor, source: Tensor, size: int) -> Tensor:
    """The TPS map from driver (B,68,2) to source (B,68,2) landmarks (normalised) as a displacement
    (B,2,size,size) from the identity grid, evaluated at `size` px pixel centres. Upsample it (bilinear,
    align_corners=False) and add the identity grid to sample a photo at a higher resolution. fp32 / fp64
    whatever autocast is on."""
    ctrl_d, ctrl_s = control_points(driver.float(), source.float())
    coef = solve_tps(ctrl_d, ctrl_s)
    ident = identity_grid(1, size, size, driver.float())[0].reshape(1, -1, 2).expand(driver.shape[0], -1, -1)
    mapped = evaluate_tps(coef, ctrl_d, ident)  # B,size*size,2
    disp = (mapped - ident).reshape(-1, size, size, 2).permute(0, 3, 1, 2)
    return disp * border_taper(size, disp)


def border_taper(size: int, like: Tensor) -> Tensor:
    """(size, size) weights: 0 on the outermost pixels, rising smoothly to 1 at `BORDER_MARGIN` of the crop
    inside (between the border anchors a spline bends a little; this keeps the border exactly still)."""
    c = (torch.arange(size, device=like.device, dtype=like.dtype) * 2 + 1) / size - 1
    ramp = ((1 - c.abs() - 1.0 / size) / BORDER_MARGIN).clamp(0, 1)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
    return ramp[:, None] * ramp[None, :]


def grid_from_displacement(displacement: Tensor, size: int) -> Tensor:
    """grid_sample coordinates (B,size,size,2) from a displacement (B,2,h,w) at any h, w (upsampled)."""
    if displacement.shape[-1] != size or displacement.shape[-2] != size:
        displacement = F.interpolate(displacement, size=(size, size), mode="bilinear", align_corners=False)
    return identity_grid(displacement.shape[0], size, size, displacement) + displacement.permute(0, 2, 3, 1)


@full_precision
def mouth_interior(points: Tensor, size: int, feather: float = 0.2) -> Tensor:
    """(B,1,size,size) in [0,1]: 1 inside the inner lip polygon of `points` (B,68,2, normalised), fading to 0
    at the lips over `feather` x the mouth's width; 0 everywhere for a closed mouth. The polygon is treated as
    convex (the distance inside is the smallest signed distance to its edges' lines)."""
    width = (points[:, 54] - points[:, 48]).float().norm(dim=-1).clamp_min(1e-3)[:, None]
    inside = _inside_distance(points[:, list(INNER_LIP)].float(), size)
    return (inside / (feather * width)).clamp(0, 1).reshape(-1, 1, size, size)


def _inside_distance(poly: Tensor, size: int, query: Tensor | None = None) -> Tensor:
    """(B,M): how far each query point (1,M,2 normalised; default: the size x size pixel centres) lies inside the
    convex polygon poly (B,P,2, in order, normalised); negative outside."""
    nxt = poly.roll(-1, dims=1)
    edge = nxt - poly
    area = (poly[..., 0] * nxt[..., 1] - nxt[..., 0] * poly[..., 1]).sum(1)  # 2x signed area
    orient = torch.where(area >= 0, 1.0, -1.0)[:, None, None]
    normal = torch.stack([-edge[..., 1], edge[..., 0]], -1) * orient  # inward for either orientation
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    q = identity_grid(1, size, size, poly)[0].reshape(1, -1, 2) if query is None else query
    return ((q[:, :, None] - poly[:, None]) * normal[:, None]).sum(-1).amin(-1)


@full_precision
def iris_shift(driver: Tensor, source: Tensor, size: int, feather: float = 0.35, prior: Tensor | None = None) -> Tensor:
    """Gaze (model.tps_iris; landmarks/iris.py): a displacement (B,2,size,size) to add to the prior's, which
    moves what the photo shows inside each eye's lid opening so that the photo's iris lands on the driven one.
    The shift is the photo's iris centre minus where the prior maps the driven iris centre. It applies in full
    over the driven iris (a disc of 1.25 iris radii, `IRIS_DISC` eye widths: the iris moves whole) and over the
    opening's middle (from `feather` x its half height inside the lids), and fades to 0 at the lids, which stay
    where the prior puts them; the white of the eye stretches in between. Computed in each eye's bounding box
    only (0 elsewhere). driver, source (B,70,2) normalised, rows 68-69 the iris centres; prior: the prior's
    displacement (`prior_displacement`, B,2,g,g) when already computed (read at the irises instead of solving
    the spline again)."""
    d, src = driver.float(), source.float()
    if prior is None:
        ctrl_d, ctrl_s = control_points(d[:, :68], src[:, :68])
        mapped = evaluate_tps(solve_tps(ctrl_d, ctrl_s), ctrl_d, d[:, 68:70])  # B,2,2: the driven irises in the photo
    else:
        at = F.grid_sample(prior.float(), d[:, 68:70, None], mode="bilinear", align_corners=False)  # B,2,2,1
        mapped = d[:, 68:70] + at[..., 0].transpose(1, 2)
    delta = src[:, 68:70] - mapped
    out = d.new_zeros(d.shape[0], 2, size, size)
    for eye, idx in enumerate((range(36, 42), range(42, 48))):
        poly = d[:, list(idx)]  # B,6,2
        half = 0.25 * ((poly[:, 1] - poly[:, 5]).norm(dim=-1) + (poly[:, 2] - poly[:, 4]).norm(dim=-1))  # B
        r = IRIS_DISC * (poly[:, 3] - poly[:, 0]).norm(dim=-1)  # B
        lo = ((poly.amin(1) + 1) * size / 2 - 1).floor().clamp(0, size - 1).long().tolist()  # the eye's box, px
        hi = ((poly.amax(1) + 1) * size / 2 + 1).ceil().clamp(0, size - 1).long().tolist()
        for i, ((x0, y0), (x1, y1)) in enumerate(zip(lo, hi)):
            if x1 <= x0 or y1 <= y0:
                continue
            ys = (torch.arange(y0, y1 + 1, dtype=d.dtype, device=d.device) + 0.5) * 2 / size - 1
            xs = (torch.arange(x0, x1 + 1, dtype=d.dtype, device=d.device) + 0.5) * 2 / size - 1
            q = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(1, -1, 2)
            inside = _inside_distance(poly[i:i + 1], size, q)[0]  # M
            hh = half[i].clamp_min(1e-4)
            middle = (inside / (feather * hh)).clamp(0, 1)
            at_lids = (inside / (AT_LIDS * hh)).clamp(0, 1)
            disc = ((1.25 * r[i] - (q[0] - d[i, 68 + eye]).norm(dim=-1)) / (0.35 * r[i]).clamp_min(1e-6)).clamp(0, 1)
            w = (at_lids * torch.maximum(middle, disc)).reshape(y1 - y0 + 1, x1 - x0 + 1)
            out[i, :, y0:y1 + 1, x0:x1 + 1] += w * delta[i, eye, :, None, None]
    return out


def mouth_box(points: Tensor, scale: float = 1.7, minimum: float = 0.2) -> Tensor:
    """The square the mouth view is cropped from, (B,3): centre x, centre y and half side (normalised): centred
    on the 20 mouth points, `scale` x the larger of the mouth's width and height, at least `minimum` wide."""
    mouth = points[:, list(MOUTH)].float()
    lo, hi = mouth.amin(1), mouth.amax(1)
    side = ((hi - lo).amax(-1) * scale).clamp_min(minimum)
    centre = 0.5 * (lo + hi)
    return torch.cat([centre, 0.5 * side[:, None]], 1)


def box_to_view(box: Tensor, size: int, like: Tensor) -> Tensor:
    """grid_sample coordinates (B,size,size,2) that read the square `box` (B,3) of a frame as a size px view."""
    ident = identity_grid(box.shape[0], size, size, like)
    return box[:, None, None, :2].to(like.dtype) + ident * box[:, None, None, 2:].to(like.dtype)


def view_to_frame(box: Tensor, size: int, like: Tensor) -> Tensor:
    """The inverse of `box_to_view`: coordinates (B,size,size,2) at which a frame of `size` px reads the mouth
    view (outside [-1, 1] where the frame lies outside the box)."""
    ident = identity_grid(box.shape[0], size, size, like)
    return (ident - box[:, None, None, :2].to(like.dtype)) / box[:, None, None, 2:].to(like.dtype)
