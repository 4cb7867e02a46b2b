"""Landmark adaptation between people (paper.md section 8: the paper has none, a stated limitation).

Driving person A's avatar with person B's raw landmarks (the paper's puppeteering) carries B's face shape
over: A gets B's eye distance, jaw width and nose, a visible "personality mismatch". Here only B's *motion*
is transferred, relative to a reference frame r of the driving sequence:

1. Pose. A similarity transform M_t (scale s_t, rotation R_t, translation), least-squares fitted (Umeyama)
   on `STABLE_POINTS` (eye corners and nose, which expressions barely move), maps the reference frame's
   stable points onto frame t's: the head's rigid motion since frame r.
2. Expression. Frame t mapped back into the reference pose, M_t^-1(D_t), minus the reference frame D_r is
   the non-rigid motion delta_t (mouth opening, blinks, brows, smile) in the driver's reference pixels.
3. Transfer. The similarity Q from the driver's reference stable points to the avatar's own (A) converts
   delta_t into the avatar's scale and orientation: E_t = A + Q_lin delta_t keeps A's shape and adds B's
   expression change. Then the pose change is applied about A's stable-point centre c_A:
       out_t = c_A + s_t R_t (E_t - c_A) + Q_lin u_t,   u_t = M_t(c_r) - c_r (driver head translation)
   Upper and lower lids and lips are kept from crossing (a driver whose reference frame has an open mouth
   can otherwise push the avatar's lips through each other).

With A = D_r (the driver drives its own first frame) the output equals the driver exactly (tested).
Off (`adapt=False` in the pipeline) is the paper's behaviour: the driver's landmarks, placed into the
avatar's crop by the shared crop rule.

`MotionTransfer(D_r, A)` computes what depends on the reference frame and the avatar alone (Q, the centres,
the lids' axis) once; its `apply` adapts one frame (the live stage) or a sequence (`adapt_landmarks`, which
is exactly that), with the same floats either way.

All arrays are (..., 68, 2) float pixels in one image's coordinates (x right, y down); sequences (F,68,2).
"""

from __future__ import annotations

import numpy as np

# eye corners (36, 39, 42, 45) and nose bridge + nostrils (27-35): rigid under expressions
STABLE_POINTS = np.array([27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45])
# (upper, lower) point pairs that must not cross: eyelids and inner lips
_LID_PAIRS = ((37, 41), (38, 40), (43, 47), (44, 46))
_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares similarity dst ~ s R src + t (Umeyama 1991, no reflection), batched.

    src, dst (...,P,2) -> scale (...,), R (...,2,2), t (...,2).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(-2), dst.mean(-2)  # ...,2
    a, b = src - mu_s[..., None, :], dst - mu_d[..., None, :]  # ...,P,2
    cov = np.einsum("...pi,...pj->...ij", b, a) / src.shape[-2]  # ...,2,2
    u, sig, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))  # -1 would be a reflection
    d = np.where(d == 0, 1.0, d)
    fix = np.stack([np.ones_like(d), d], -1)  # ...,2
    rot = u @ (fix[..., :, None] * vt)  # ...,2,2
    var_s = (a ** 2).sum((-2, -1)) / src.shape[-2]
    scale = (sig * fix).sum(-1) / np.maximum(var_s, 1e-12)
    t = mu_d - scale[..., None] * np.einsum("...ij,...j->...i", rot, mu_s)
    return scale, rot, t


def _apply(scale, rot, t, points):
    """s R p + t for points (...,P,2) with per-leading-index transforms."""
    return scale[..., None, None] * np.einsum("...ij,...pj->...pi", rot, points) + t[..., None, :]


class MotionTransfer:
    """The driver's motion since its reference frame, applied to the avatar's own landmarks (module docstring).

    Built once from the reference frame D_r (68,2) and the avatar's face A (68,2), both finite: everything that
    depends on them alone (the similarity Q, the stable-point centres, the lids' "down" axis) is computed here;
    `apply` then adapts frames (F,68,2) or one frame (68,2). `adapt_landmarks` is this over a whole sequence.
    """

    def __init__(self, reference: np.ndarray, face: np.ndarray):
        ref = np.asarray(reference, np.float64)
        a = np.asarray(face, np.float64)
        if ref.shape != (68, 2) or a.shape != (68, 2):
            raise ValueError(f"expected a reference frame (68,2) and avatar (68,2), got {ref.shape} and {a.shape}")
        if not (np.isfinite(ref).all() and np.isfinite(a).all()):
            raise ValueError("adapt_landmarks needs finite landmarks (fill lost frames first)")
        self.reference, self.face = ref, a
        s_q, r_q, _ = fit_similarity(ref[STABLE_POINTS], a[STABLE_POINTS])  # driver ref -> avatar
        self.q_lin = s_q * r_q  # 2,2
        self.c_r, self.c_a = ref[STABLE_POINTS].mean(0), a[STABLE_POINTS].mean(0)
        self.down = _down(a)

    def apply(self, driver: np.ndarray) -> np.ndarray:
        """Finite driver landmarks (F,68,2) or (68,2), in the reference frame's pixels -> the same shape, float32,
        in the avatar's crop coordinates."""
        d = np.asarray(driver, np.float64)
        if d.ndim == 2:
            return self.apply(d[None])[0]
        ref = self.reference
        s_t, r_t, t_t = fit_similarity(np.broadcast_to(ref[STABLE_POINTS], (len(d), len(STABLE_POINTS), 2)),
                                       d[:, STABLE_POINTS])  # reference -> frame t (pose), F
        inv_r = np.swapaxes(r_t, -1, -2)
        normalised = np.einsum("fij,fpj->fpi", inv_r, d - t_t[:, None]) / s_t[:, None, None]  # F,68,2 in ref pose
        delta = normalised - ref  # F,68,2 expression change
        expressed = self.face + delta @ self.q_lin.T  # F,68,2 avatar shape + driver expression
        expressed = _uncross(expressed, self.down)
        moved_c = _apply(s_t, r_t, t_t, np.broadcast_to(self.c_r, (len(d), 1, 2)))[:, 0]  # F,2
        shift = (moved_c - self.c_r) @ self.q_lin.T  # F,2 head translation in avatar pixels
        out = self.c_a + s_t[:, None, None] * np.einsum("fij,fpj->fpi", r_t, expressed - self.c_a) + shift[:, None]
        return out.astype(np.float32)


def adapt_landmarks(driver: np.ndarray, avatar: np.ndarray, reference_frame: int = 0) -> np.ndarray:
    """The driver's motion relative to `reference_frame`, applied to the avatar's own landmarks.

    driver (F,68,2) finite points of the driving sequence (any pixel frame); avatar (68,2) the avatar's
    landmarks in its crop. Returns (F,68,2) float32 in the avatar's crop coordinates (module docstring).
    """
    d = np.asarray(driver, np.float64)
    a = np.asarray(avatar, np.float64)
    if d.ndim != 3 or d.shape[1:] != (68, 2) or a.shape != (68, 2):
        raise ValueError(f"expected driver (F,68,2) and avatar (68,2), got {d.shape} and {a.shape}")
    if not (0 <= reference_frame < len(d)):
        raise ValueError(f"reference frame {reference_frame} is outside the driving sequence (0..{len(d) - 1})")
    if not (np.isfinite(d).all() and np.isfinite(a).all()):
        raise ValueError("adapt_landmarks needs finite landmarks (fill lost frames first)")
    return MotionTransfer(d[reference_frame], a).apply(d)


def _down(face: np.ndarray) -> np.ndarray:
    """(2,) the face's "down": unit vector perpendicular to its eye line (36 -> 45)."""
    eye_line = face[45] - face[36]
    return np.array([-eye_line[1], eye_line[0]]) / max(np.linalg.norm(eye_line), 1e-9)


def _uncross(points: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Where an upper lid / inner-lip point (F,68,2) went below its lower partner along the face's vertical
    axis `down` (`_down`), put both at their midpoint along that axis."""
    out = points.copy()
    for upper, lower in _LID_PAIRS + _LIP_PAIRS:
        gap = (out[:, lower] - out[:, upper]) @ down  # F, >= 0 when not crossed
        crossed = gap < 0
        if crossed.any():
            move = 0.5 * gap[crossed, None] * down  # F',2
            out[crossed, upper] += move
            out[crossed, lower] -= move
    return out


# --- measurements (tests, evaluation) ---------------------------------------------------------------

def eye_jaw_ratio(points: np.ndarray) -> np.ndarray:
    """Outer eye-corner distance (36-45) / jaw width (0-16): a face-shape proportion, (...,)."""
    p = np.asarray(points, np.float64)
    eyes = np.linalg.norm(p[..., 45, :] - p[..., 36, :], axis=-1)
    return eyes / np.linalg.norm(p[..., 16, :] - p[..., 0, :], axis=-1)


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """Inner-lip gap (mean of 61-67, 62-66, 63-65) / outer eye-corner distance, (...,)."""
    p = np.asarray(points, np.float64)
    gap = np.mean([np.linalg.norm(p[..., lo, :] - p[..., up, :], axis=-1) for up, lo in _LIP_PAIRS], axis=0)
    return gap / np.linalg.norm(p[..., 45, :] - p[..., 36, :], axis=-1)


def eye_opening(points: np.ndarray) -> np.ndarray:
    """Mean lid gap of both eyes / outer eye-corner distance, (...,)."""
    p = np.asarray(points, np.float64)
    gap = np.mean([np.linalg.norm(p[..., lo, :] - p[..., up, :], axis=-1) for up, lo in _LID_PAIRS], axis=0)
    return gap / np.linalg.norm(p[..., 45, :] - p[..., 36, :], axis=-1)
