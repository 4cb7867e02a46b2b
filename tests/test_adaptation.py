"""Landmark adaptation (landmarks/adaptation.py): the avatar keeps its face shape, the driver's motion follows.

Synthetic checks on built-in motions, then the real test through the pipeline: a photo of one person driven
by a test-split clip of another (different eye-distance / jaw-width proportions, a mouth that opens)."""

from __future__ import annotations

import numpy as np
import pytest

from talking_heads.landmarks.adaptation import adapt_landmarks, eye_jaw_ratio, fit_similarity, mouth_opening
from talking_heads.landmarks.motions import motion_landmarks

PHOTO = "photos/avatarify_jobs.jpg"  # eye/jaw ratio about 0.565, mouth closed
DRIVER = "videos/test/lp_driving_d2_old.mp4"  # another person: ratio about 0.63, the mouth opens; 16 frames


def _similarity(points, scale=2.3, degrees=20.0, shift=(40.0, -15.0)):
    a = np.radians(degrees)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (scale * points @ rot.T + np.array(shift)).astype(np.float32)


def _wide_jaw(face):
    """The same face with a 25 % wider jaw (another person's proportions)."""
    out = face.copy()
    centre = face[:17, 0].mean()
    out[:17, 0] = centre + 1.25 * (face[:17, 0] - centre)
    return out


def test_fit_similarity_recovers_a_known_transform():
    src = motion_landmarks("talk", 0.04, 25.0, 128)[0]
    s, r, t = fit_similarity(src, _similarity(src))
    assert s == pytest.approx(2.3, rel=1e-5)
    assert np.degrees(np.arctan2(r[1, 0], r[0, 0])) == pytest.approx(20.0, abs=1e-4)
    np.testing.assert_allclose(s * src @ r.T + t, _similarity(src), atol=1e-3)


def test_a_driver_adapted_to_its_own_reference_frame_is_unchanged():
    driver = motion_landmarks("talk", 2.0, 25.0, 128)
    np.testing.assert_allclose(adapt_landmarks(driver, driver[0]), driver, atol=1e-3)


def test_only_relative_motion_counts_not_the_drivers_size_position_or_rotation():
    driver = motion_landmarks("nod", 1.0, 25.0, 128)
    avatar = _wide_jaw(driver[0])
    plain = adapt_landmarks(driver, avatar)
    moved = adapt_landmarks(_similarity(driver), avatar)  # the whole clip bigger, rotated, shifted
    np.testing.assert_allclose(moved, plain, atol=1e-3)


def test_avatar_keeps_its_proportions_while_expression_and_pose_follow():
    driver = motion_landmarks("surprise", 2.0, 25.0, 128)  # mouth opens wide, brows rise
    avatar = _wide_jaw(driver[0])
    out = adapt_landmarks(driver, avatar)
    np.testing.assert_allclose(eye_jaw_ratio(out), eye_jaw_ratio(avatar), atol=0.01)  # not the driver's
    assert abs(eye_jaw_ratio(driver[0]) - eye_jaw_ratio(avatar)) > 0.1
    np.testing.assert_allclose(mouth_opening(out), mouth_opening(driver), atol=0.01)  # same opening
    tilt = motion_landmarks("tilt", 2.0, 25.0, 128)
    out = adapt_landmarks(tilt, avatar)

    def angle(p):
        d = p[:, 45] - p[:, 36]
        return np.degrees(np.arctan2(d[:, 1], d[:, 0]))

    np.testing.assert_allclose(angle(out), angle(tilt), atol=0.5)  # the head rolls with the driver


def test_lips_and_lids_never_cross_when_the_reference_is_open():
    driver = motion_landmarks("surprise", 2.0, 25.0, 128)
    peak = int(np.argmax(mouth_opening(driver)))
    avatar = driver[0]  # mouth closed; the driver's reference has it wide open, then it closes
    out = adapt_landmarks(driver, avatar, reference_frame=peak)
    for upper, lower in ((61, 67), (62, 66), (63, 65), (37, 41), (38, 40), (43, 47), (44, 46)):
        assert (out[:, lower, 1] - out[:, upper, 1] >= -1e-4).all(), (upper, lower)


def test_bad_arguments():
    driver = motion_landmarks("blink", 0.2, 25.0, 64)
    with pytest.raises(ValueError, match="reference frame 9"):
        adapt_landmarks(driver, driver[0], reference_frame=9)
    with pytest.raises(ValueError, match="finite"):
        adapt_landmarks(np.full_like(driver, np.nan), driver[0])


@pytest.fixture(scope="module")
def puppeteering(shared_data, tiny_model_dir):
    """(pipeline, avatar of PHOTO, driver's own landmarks, adapted, not adapted)."""
    from talking_heads.pipeline import TalkingHeadPipeline

    pipe = TalkingHeadPipeline.from_pretrained(tiny_model_dir)
    avatar = pipe.create_avatar(shared_data / PHOTO, progress=False)
    raw = pipe.load_driver(shared_data / DRIVER)
    adapted = pipe.driver_landmarks(raw, avatar=avatar)
    plain = pipe.driver_landmarks(raw, avatar=avatar, adapt=False)
    return pipe, avatar, raw, adapted, plain


def test_real_puppeteering_keeps_the_avatars_face_shape_and_follows_the_mouth(puppeteering):
    _, avatar, raw, adapted, plain = puppeteering
    own, drv = eye_jaw_ratio(avatar.face), eye_jaw_ratio(raw.driver_points)
    assert abs(drv.mean() - own) > 0.04  # the two people really differ
    assert adapted.adapted and not plain.adapted and len(adapted) == len(raw) == 16
    ratio = eye_jaw_ratio(adapted.points)
    assert abs(ratio.mean() - own) < 0.015, (ratio.mean(), own, drv.mean())  # the avatar's proportions ...
    assert abs(eye_jaw_ratio(plain.points).mean() - drv.mean()) < 1e-3  # ... off: the driver's (paper)
    np.testing.assert_allclose(plain.points, raw.driver_points)
    m_drv, m_out = mouth_opening(raw.driver_points), mouth_opening(adapted.points)
    assert m_drv.max() - m_drv.min() > 0.08  # the driver opens its mouth
    assert np.corrcoef(m_drv, m_out)[0, 1] > 0.95  # and so does the avatar, frame by frame
    assert m_out.max() > mouth_opening(avatar.face) + 0.06


def test_reference_frame_is_checked_and_picks_the_neutral_frame(puppeteering):
    from talking_heads.pipeline import PipelineError

    pipe, avatar, raw, adapted, _ = puppeteering
    with pytest.raises(PipelineError, match="reference frame 16 is outside the driver's 16 frames"):
        pipe.driver_landmarks(raw, avatar=avatar, reference_frame=16)
    last = pipe.driver_landmarks(raw, avatar=avatar, reference_frame=15)
    np.testing.assert_allclose(last.points[15], avatar.face, atol=0.01)  # the reference frame is the avatar itself
    assert not np.allclose(last.points, adapted.points, atol=0.5)


def test_one_frame_at_a_time_is_bit_identical_to_the_sequence(puppeteering):
    """`MotionTransfer` built once from (reference, face) and applied frame by frame (the live stage) gives
    exactly the floats of `adapt_landmarks` over two stacked frames (what the live stage computed before) and
    over the whole clip, on a real driver's landmarks."""
    from talking_heads.landmarks.adaptation import MotionTransfer

    _, avatar, raw, _, _ = puppeteering
    driver = raw.driver_points
    for ref in (0, 7, 15):
        transfer = MotionTransfer(driver[ref], avatar.face)
        whole = adapt_landmarks(driver, avatar.face, ref)
        for i, p in enumerate(driver):
            one = transfer.apply(p)
            assert one.shape == (68, 2) and one.dtype == np.float32
            assert np.array_equal(one, adapt_landmarks(np.stack([driver[ref], p]), avatar.face, 0)[1]), (ref, i)
            assert np.array_equal(one, whole[i]), (ref, i)
        assert np.array_equal(transfer.apply(driver), whole)
    with pytest.raises(ValueError, match="finite"):
        MotionTransfer(np.full((68, 2), np.nan), avatar.face)
