"""Built-in driving motions (puppeteering without a driver file, paper.md section 1 stage 3).

A procedural 68-point face (iBUG 300-W order) with a depth per point, a handful of expression controls
and a head pose, animated by closed-form curves of time: every motion is deterministic (no randomness, no
data files) and starts from the neutral frontal face at frame 0, which is the natural reference frame for
landmark adaptation (`adaptation.py`: the motion is then applied to the avatar's own face).

Template units: the face's landmark box is about 1 wide and 1 high (brow top -0.5 to chin 0.5), centred
at the origin; x right, y down, z towards the camera. Controls (0 = neutral):
    mouth_open [0,1]   jaw and lower lip drop       smile [0,1]     mouth corners out and up
    blink_right/left [0,1] upper lids close         brows [-1,1]    brows raise (+) or frown (-)
    yaw, pitch, roll (radians)                      head turn, nod, tilt (orthographic projection)
    gaze_x, gaze_y (eye widths)                     where the eyes look (`motion_gaze`; 0 = the camera)
`motion_landmarks(name, seconds, fps, size)` places the face in a `size` px crop by the crop rule of
`data/crop.py` (face size = size / crop_scale, centre shifted up by crop_shift face sizes), so that a motion
used without adaptation sits where a real driver's crop would put it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..config import DataConfig


@dataclass(frozen=True)
class FaceControls:
    """One frame of a motion (see the module docstring)."""

    mouth_open: float = 0.0
    smile: float = 0.0
    blink_right: float = 0.0
    blink_left: float = 0.0
    brows: float = 0.0
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    gaze_x: float = 0.0  # iris offset from the eye's middle, eye widths, towards the image's right (iris.relative_gaze)
    gaze_y: float = 0.0  # the same, downwards


def _arc(x0: float, x1: float, y: float, height: float, n: int) -> np.ndarray:
    """n points from x0 to x1 along an arch that rises `height` above y in the middle (y down)."""
    u = np.linspace(0.0, 1.0, n)
    return np.stack([x0 + (x1 - x0) * u, y - height * np.sin(np.pi * u)], -1)


def _eye(cx: float, cy: float) -> np.ndarray:
    """6 points in iBUG order: image-left corner, two upper lid points, image-right corner, two lower lid
    points (the right eye starts at its outer corner, the left eye at its inner one: both image-left)."""
    w, h = 0.09, 0.035
    xs = np.array([-w, -w / 3, w / 3, w, w / 3, -w / 3])
    ys = np.array([0.0, -h, -h, 0.0, h * 0.9, h * 0.9])
    return np.stack([cx + xs, cy + ys], -1)


def _template() -> tuple[np.ndarray, np.ndarray]:
    """Neutral frontal face: points (68,2) and depths (68,)."""
    phi = np.linspace(0.0, np.pi, 17)
    c = np.cos(phi)
    jaw = np.stack([-0.5 * np.sign(c) * np.abs(c) ** 0.85, -0.12 + 0.62 * np.sin(phi) ** 1.15], -1)
    brow_r = _arc(-0.42, -0.08, -0.36, 0.07, 5)
    brow_l = _arc(0.08, 0.42, -0.36, 0.07, 5)
    bridge = np.stack([np.zeros(4), np.linspace(-0.22, 0.06, 4)], -1)
    nostrils = np.stack([np.linspace(-0.09, 0.09, 5), 0.12 + 0.025 * (1 - np.abs(np.linspace(-1, 1, 5)))], -1)
    eye_r = _eye(-0.2, -0.2)
    eye_l = _eye(0.2, -0.2)
    ux = np.array([-0.17, -0.11, -0.04, 0.0, 0.04, 0.11, 0.17])  # outer upper lip, corner to corner
    uy = np.array([0.30, 0.265, 0.25, 0.258, 0.25, 0.265, 0.30])
    lx = np.array([0.11, 0.05, 0.0, -0.05, -0.11])  # outer lower lip 55-59, right to left
    ly = np.array([0.345, 0.37, 0.375, 0.37, 0.345])
    outer = np.concatenate([np.stack([ux, uy], -1), np.stack([lx, ly], -1)])
    inner = np.array([[-0.13, 0.30], [-0.05, 0.29], [0.0, 0.292], [0.05, 0.29],
                      [0.13, 0.30], [0.05, 0.305], [0.0, 0.307], [-0.05, 0.305]])
    points = np.concatenate([jaw, brow_r, brow_l, bridge, nostrils, eye_r, eye_l, outer, inner])
    depth = np.concatenate([
        -0.35 * np.abs(c) ** 1.5,  # jaw: the sides lie behind the face plane
        np.full(10, 0.05),  # brows
        np.linspace(0.08, 0.3, 4),  # nose bridge to tip
        np.full(5, 0.18),  # nostrils
        np.full(12, 0.0),  # eyes
        0.12 - 0.1 * np.abs(outer[:, 0]) / 0.17,  # lips: corners further back
        0.1 - 0.08 * np.abs(inner[:, 0]) / 0.13,
    ])
    assert points.shape == (68, 2) and depth.shape == (68,)
    return points, depth


_POINTS, _DEPTH = _template()
_LOWER_LIP = np.array([55, 56, 57, 58, 59, 65, 66, 67])
_UPPER_INNER = np.array([61, 62, 63])
_CORNERS = np.array([48, 54, 60, 64])
_NEAR_CORNERS = np.array([49, 53, 59, 55, 61, 63, 67, 65])
_UPPER_LIDS = ((37, 41), (38, 40), (43, 47), (44, 46))  # (upper, lower)
_PIVOT = np.array([0.0, 0.1, -0.45])  # rotation centre: behind the face, about the neck's top


def face_landmarks(c: FaceControls) -> np.ndarray:
    """(68,2) template-unit landmarks for one set of controls (module docstring)."""
    p = _POINTS.copy()
    # expression, in the frontal face plane
    drop = 0.14 * c.mouth_open
    p[_LOWER_LIP, 1] += drop
    p[_UPPER_INNER, 1] -= 0.15 * drop
    jaw_weight = np.sin(np.linspace(0.0, np.pi, 17)) ** 4  # the chin moves most, the temples not at all
    p[0:17, 1] += drop * jaw_weight
    side = np.sign(p[:, 0])
    p[_CORNERS, 0] += 0.05 * c.smile * side[_CORNERS]
    p[_CORNERS, 1] -= 0.045 * c.smile
    p[_NEAR_CORNERS, 0] += 0.025 * c.smile * side[_NEAR_CORNERS]
    p[_NEAR_CORNERS, 1] -= 0.02 * c.smile
    p[_CORNERS, 0] -= 0.03 * c.mouth_open * side[_CORNERS]  # an open mouth narrows a little
    for (upper, lower), amount in zip(_UPPER_LIDS, (c.blink_right,) * 2 + (c.blink_left,) * 2):
        p[upper, 1] += float(np.clip(amount, 0, 1)) * 0.92 * (p[lower, 1] - p[upper, 1])
    p[17:27, 1] -= 0.08 * c.brows
    p[[21, 22], 0] -= 0.015 * min(c.brows, 0.0) * np.sign(p[[21, 22], 0])  # a frown pulls the inner ends in
    # head pose: rotate the 3-D points about the pivot, project orthographically
    xyz = np.concatenate([p, _DEPTH[:, None]], 1) - _PIVOT
    cy, sy = math.cos(c.yaw), math.sin(c.yaw)
    cp, sp = math.cos(c.pitch), math.sin(c.pitch)
    cr, sr = math.cos(c.roll), math.sin(c.roll)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    xyz = xyz @ (r_roll @ r_pitch @ r_yaw).T + _PIVOT
    return xyz[:, :2]


# --- motions: time (s) -> controls ------------------------------------------------------------------

def _pulse(t: float, centre: float, width: float) -> float:
    """Smooth bump in [0,1] of full width `width` around `centre`."""
    u = (t - centre) / (0.5 * width)
    return 0.0 if abs(u) >= 1 else 0.5 * (1 + math.cos(math.pi * u))


def _blinks(t: float, every: float = 2.7, first: float = 1.2) -> float:
    """A 0.25 s blink every `every` seconds from `first`."""
    if t < first - 0.2:
        return 0.0
    k = round((t - first) / every)
    return _pulse(t, first + k * every, 0.25)


def _ease(t: float, seconds: float, ramp: float = 0.4) -> float:
    """0 at both ends, 1 in between, smooth ramps of `ramp` s (motions start and end neutral)."""
    a = min(1.0, t / ramp, max(0.0, seconds - t) / ramp)
    return 0.5 - 0.5 * math.cos(math.pi * max(0.0, a))


def _talk(t: float, seconds: float) -> FaceControls:
    syllables = 0.5 + 0.5 * (0.6 * math.sin(2 * math.pi * 3.7 * t) + 0.4 * math.sin(2 * math.pi * 5.3 * t + 1.0))
    envelope = 0.6 + 0.4 * math.sin(2 * math.pi * 0.45 * t) ** 2  # phrases
    e = _ease(t, seconds, 0.15)
    b = _blinks(t)
    return FaceControls(mouth_open=e * envelope * syllables ** 1.5, smile=0.15 * e, blink_right=b, blink_left=b,
                        brows=0.25 * e * math.sin(2 * math.pi * 0.3 * t),
                        yaw=e * 0.08 * math.sin(2 * math.pi * 0.23 * t),
                        pitch=e * 0.05 * math.sin(2 * math.pi * 0.5 * t),
                        roll=e * 0.03 * math.sin(2 * math.pi * 0.17 * t))


def _blink(t: float, seconds: float) -> FaceControls:
    b = _blinks(t, every=1.0, first=0.5)
    return FaceControls(blink_right=b, blink_left=b)


def _nod(t: float, seconds: float) -> FaceControls:
    return FaceControls(pitch=0.22 * _ease(t, seconds) * math.sin(2 * math.pi * 1.0 * t))


def _turn(t: float, seconds: float) -> FaceControls:
    return FaceControls(yaw=0.45 * math.sin(2 * math.pi * t / max(seconds, 1e-6)), blink_right=_blinks(t),
                        blink_left=_blinks(t))


def _tilt(t: float, seconds: float) -> FaceControls:
    return FaceControls(roll=0.2 * math.sin(2 * math.pi * t / max(seconds, 1e-6)))


def _smile(t: float, seconds: float) -> FaceControls:
    e = _ease(t, seconds, ramp=min(1.0, seconds / 4))
    return FaceControls(smile=e, mouth_open=0.15 * e, brows=0.2 * e, blink_right=_blinks(t), blink_left=_blinks(t))


def _surprise(t: float, seconds: float) -> FaceControls:
    e = _ease(t, seconds, ramp=min(0.6, seconds / 4))
    return FaceControls(mouth_open=0.8 * e, brows=1.0 * e, pitch=-0.06 * e)


# (fraction of the motion, gaze_x, gaze_y): the camera, left, right, up, down, back to the camera
_LOOK_KEYS = ((0.0, 0, 0), (0.1, -1, 0), (0.26, -1, 0), (0.38, 1, 0), (0.54, 1, 0), (0.64, 0, -1), (0.72, 0, -1),
              (0.82, 0, 1), (0.9, 0, 1), (1.0, 0, 0))
LOOK_RANGE = (0.16, 0.07)  # eye widths: how far `look` turns the eyes sideways and up / down


def _look(t: float, seconds: float) -> FaceControls:
    u = t / max(seconds, 1e-6)
    gx = gy = 0.0
    for (u0, x0, y0), (u1, x1, y1) in zip(_LOOK_KEYS, _LOOK_KEYS[1:]):
        if u0 <= u <= u1:
            a = (u - u0) / max(u1 - u0, 1e-9)
            a = a * a * (3 - 2 * a)
            gx, gy = x0 + a * (x1 - x0), y0 + a * (y1 - y0)
            break
    down = max(gy, 0.0)  # looking down lowers the upper lids a little, as on a face
    b = _blinks(t, every=3.1, first=1.6)
    return FaceControls(gaze_x=LOOK_RANGE[0] * gx, gaze_y=LOOK_RANGE[1] * gy, blink_right=max(b, 0.3 * down),
                        blink_left=max(b, 0.3 * down))


def _idle(t: float, seconds: float) -> FaceControls:
    """A listener's (or a speaker's) head: slow small turns, nods and tilts on incommensurate periods, blinks every
    few seconds, brows that lift now and then; the mouth closed (speech-driven avatars add it: `speech/`)."""
    e = _ease(t, seconds, 0.5)
    b = _blinks(t, every=3.3, first=1.4)
    return FaceControls(blink_right=b, blink_left=b, brows=0.15 * e * math.sin(2 * math.pi * 0.21 * t) ** 3,
                        yaw=e * (0.06 * math.sin(2 * math.pi * 0.13 * t) + 0.02 * math.sin(2 * math.pi * 0.37 * t)),
                        pitch=e * (0.035 * math.sin(2 * math.pi * 0.29 * t + 0.7) + 0.015 * math.sin(2 * math.pi * 0.83 * t)),
                        roll=e * 0.025 * math.sin(2 * math.pi * 0.11 * t + 1.3))


def _wink(t: float, seconds: float) -> FaceControls:
    return FaceControls(blink_left=_pulse(t, 0.5 * seconds, min(0.8, seconds / 2)), smile=0.4 * _ease(t, seconds))


MOTIONS: dict[str, tuple[Callable[[float, float], FaceControls], str]] = {
    "talk": (_talk, "speech-like mouth movement with small head motion and blinks"),
    "blink": (_blink, "a blink every second, head still"),
    "nod": (_nod, "nodding (pitch), one per second"),
    "turn": (_turn, "head turns right then left (yaw)"),
    "tilt": (_tilt, "head tilts to one side and the other (roll)"),
    "smile": (_smile, "a smile builds, holds and fades"),
    "surprise": (_surprise, "brows up, mouth open"),
    "wink": (_wink, "a left-eye wink with a slight smile"),
    "look": (_look, "the eyes look left, right, up, down and back to the camera (gaze)"),
    "idle": (_idle, "small slow head movements and blinks, mouth closed (the head of speech-driven avatars)"),
}


def motion_controls(name: str, seconds: float, fps: float) -> list[FaceControls]:
    """The controls of every frame of a built-in motion."""
    if name not in MOTIONS:
        raise ValueError(f"unknown motion {name!r}; built-in motions: {', '.join(MOTIONS)}")
    if seconds <= 0 or fps <= 0:
        raise ValueError(f"motion length and frame rate must be positive, got {seconds} s at {fps} fps")
    fn = MOTIONS[name][0]
    n = max(1, int(round(seconds * fps)))
    return [fn(i / fps, seconds) for i in range(n)]


def motion_landmarks(name: str, seconds: float, fps: float, size: int, data_cfg: DataConfig | None = None
                     ) -> np.ndarray:
    """(F,68,2) float32 landmarks of a built-in motion in a `size` px crop (module docstring); frame 0 is the
    neutral frontal face."""
    cfg = data_cfg or DataConfig()
    frames = np.stack([face_landmarks(c) for c in motion_controls(name, seconds, fps)])  # F,68,2
    neutral = face_landmarks(FaceControls())
    lo, hi = neutral.min(0), neutral.max(0)
    face = float((hi - lo).max())
    scale = size / (cfg.crop_scale * face)  # px per template unit
    centre_px = np.array([size / 2.0 - 0.5, size / 2.0 - 0.5 - cfg.crop_shift * face * scale])
    return ((frames - (lo + hi) / 2.0) * scale + centre_px).astype(np.float32)


def motion_gaze(name: str, seconds: float, fps: float) -> np.ndarray:
    """(F,2,2) the gaze of a built-in motion's frames, both eyes alike (eye widths; `iris.relative_gaze`)."""
    g = np.array([[c.gaze_x, c.gaze_y] for c in motion_controls(name, seconds, fps)], np.float64)
    return np.repeat(g[:, None], 2, axis=1)


def neutral_face(size: int, data_cfg: DataConfig | None = None) -> np.ndarray:
    """(68,2) the neutral template placed in a `size` px crop (frame 0 of every motion)."""
    return motion_landmarks("blink", 1.0 / 25.0, 25.0, size, data_cfg)[0]


__all__ = ["FaceControls", "MOTIONS", "face_landmarks", "motion_controls", "motion_gaze", "motion_landmarks",
           "neutral_face"]
