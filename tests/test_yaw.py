"""Yaw estimate and limit (landmarks/yaw.py) on the motion template and on a real face, and the live stage's
use of `inference.max_yaw`."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from talking_heads.landmarks.motions import FaceControls, face_landmarks, motion_landmarks
from talking_heads.landmarks.yaw import clamp_yaw, estimate_yaw


def _template(deg: float, mouth: float = 0.0) -> np.ndarray:
    return face_landmarks(FaceControls(yaw=math.radians(deg), mouth_open=mouth)) * 120 + 128


@pytest.mark.parametrize("deg", [-45, -20, -5, 0, 12, 30])
def test_estimate_reads_the_templates_turn(deg):
    assert estimate_yaw(_template(deg, 0.6)) == pytest.approx(deg, abs=1.0)


def test_clamp_holds_the_turn_at_the_limit_and_keeps_the_mouth():
    ref = _template(0)
    for deg in (-40, 35):
        turned = _template(deg, mouth=0.8)
        out = clamp_yaw(turned, ref, 15)
        assert estimate_yaw(out) == pytest.approx(math.copysign(15, deg), abs=1.0)
        gap = lambda p: np.linalg.norm(p[66] - p[62])
        assert gap(out) == pytest.approx(gap(turned), rel=0.05)  # still talking
    within = _template(10, mouth=0.3)
    assert np.array_equal(clamp_yaw(within, ref, 15), within.astype(np.float32))  # nothing changes within it
    assert np.array_equal(clamp_yaw(_template(60), ref, 0), _template(60).astype(np.float32))  # 0 = no limit


def test_live_stage_limits_a_real_faces_turn(shared_data):
    from talking_heads.config import preset
    from talking_heads.data.crop import CropTransform
    from talking_heads.data.faces import prepare_photo
    from talking_heads.data.video import read_frames
    from talking_heads.live import LiveStage

    frame = next(iter(read_frames(shared_data / "videos" / "test" / "lp_source_s18.mp4", [0])))[1]
    own = prepare_photo(frame, 128).landmarks
    cfg = preset("sample")

    class _Renderer:  # what LiveStage reads of a renderer before it renders
        image_size = 128

        def __init__(self, limit):
            self.cfg = dataclasses.replace(cfg, inference=dataclasses.replace(cfg.inference, max_yaw=limit))

    class _Avatar:  # what LiveStage reads of an avatar: its landmarks
        landmarks = own[None]
        face = own

    avatar = _Avatar()
    drive = motion_landmarks("turn", 4.0, 25.0, 128)  # turns about 26 degrees each way
    turns = {}
    for limit in (0.0, 10.0):
        stage = LiveStage(_Renderer(limit), avatar, reference=drive[0], crop=CropTransform(0, 0, 128, 128, 128, 128))
        turns[limit] = np.array([estimate_yaw(stage.landmarks(p)) for p in drive]) - estimate_yaw(own)
    assert np.abs(turns[0.0]).max() > 20  # unlimited: the real face is driven far round
    assert np.abs(turns[10.0]).max() <= 10.5  # limited: held at 10 degrees from the photo's own yaw
    small = np.abs(turns[0.0]) < 9
    assert np.allclose(turns[10.0][small], turns[0.0][small], atol=1e-3)  # small turns untouched
