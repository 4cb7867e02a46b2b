"""Built-in motions (landmarks/motions.py): deterministic, start neutral, and each does what its name says."""

from __future__ import annotations

import numpy as np
import pytest

from talking_heads.landmarks.adaptation import eye_opening, mouth_opening
from talking_heads.landmarks.motions import MOTIONS, motion_landmarks, neutral_face

SIZE, FPS, SECONDS = 128, 25.0, 2.0


@pytest.fixture(scope="module")
def motions() -> dict[str, np.ndarray]:
    return {name: motion_landmarks(name, SECONDS, FPS, SIZE) for name in MOTIONS}


def test_every_motion_is_deterministic_starts_neutral_and_stays_in_the_crop(motions):
    neutral = neutral_face(SIZE)
    for name, points in motions.items():
        assert points.shape == (int(SECONDS * FPS), 68, 2) and points.dtype == np.float32, name
        np.testing.assert_array_equal(points, motion_landmarks(name, SECONDS, FPS, SIZE))  # no randomness
        np.testing.assert_allclose(points[0], neutral, atol=1e-4, err_msg=name)  # frame 0 = reference
        assert np.isfinite(points).all() and points.min() > 0 and points.max() < SIZE - 1, name


def test_neutral_face_sits_where_the_crop_rule_puts_a_face():
    from talking_heads.config import DataConfig

    p = neutral_face(SIZE)
    lo, hi = p.min(0), p.max(0)
    face = (hi - lo).max()
    assert face == pytest.approx(SIZE / DataConfig.crop_scale, rel=1e-3)
    centre = (lo + hi) / 2
    assert centre[0] == pytest.approx(SIZE / 2 - 0.5, abs=0.5)
    assert centre[1] == pytest.approx(SIZE / 2 - 0.5 - DataConfig.crop_shift * face, abs=0.5)  # shifted up


def test_motions_do_what_their_names_say(motions):
    rest = neutral_face(SIZE)
    mouth = {k: mouth_opening(v) for k, v in motions.items()}
    eyes = {k: eye_opening(v) for k, v in motions.items()}
    assert mouth["talk"].max() > mouth["talk"][0] + 0.15  # the mouth opens ...
    assert np.sum(np.abs(np.diff(mouth["talk"])) > 0.01) > 10  # ... and closes, many times
    assert eyes["blink"].min() < 0.2 * eyes["blink"][0] and np.ptp(mouth["blink"]) < 1e-6
    left = np.linalg.norm(motions["wink"][:, 43] - motions["wink"][:, 47], axis=1)
    right = np.linalg.norm(motions["wink"][:, 37] - motions["wink"][:, 41], axis=1)
    assert left.min() < 0.2 * left[0] and right.min() > 0.9 * right[0]  # one eye only
    width = np.linalg.norm(motions["smile"][:, 54] - motions["smile"][:, 48], axis=1)
    assert width.max() > 1.2 * width[0]  # mouth corners go out
    corners_up = (rest[[48, 54], 1].mean() - motions["smile"][:, [48, 54], 1].mean(1)).max()
    assert corners_up > 2  # ... and up (px)
    nose_y = motions["nod"][:, 30, 1] - motions["nod"][:, [0, 16], 1].mean(1)  # nose tip vs temples
    assert np.ptp(nose_y) > 3
    nose_x = motions["turn"][:, 30, 0] - motions["turn"][:, [0, 16], 0].mean(1)  # nose tip vs face centre
    assert nose_x.max() > 5 and nose_x.min() < -5  # turns both ways
    eye_line = motions["tilt"][:, 45] - motions["tilt"][:, 36]
    angle = np.degrees(np.arctan2(eye_line[:, 1], eye_line[:, 0]))
    assert angle.max() > 8 and angle.min() < -8
    brow_to_eye = motions["surprise"][:, 36:48, 1].mean(1) - motions["surprise"][:, 17:27, 1].mean(1)
    assert mouth["surprise"].max() > 0.15 and brow_to_eye.max() > brow_to_eye[0] + 4


def test_unknown_motion_and_bad_length_are_errors():
    with pytest.raises(ValueError, match="built-in motions: talk"):
        motion_landmarks("dance", 1.0, 25.0, SIZE)
    with pytest.raises(ValueError, match="positive"):
        motion_landmarks("talk", 0.0, 25.0, SIZE)
