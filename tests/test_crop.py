"""Head crops (paper.md section 2): transform algebra, padding, paste-back, stable clip boxes on real footage."""

from __future__ import annotations

import numpy as np
import pytest

from talking_heads.data.crop import CropTransform, clip_crop, face_extent


def frame_with_marker(w=320, h=240, at=(200, 60)):
    frame = np.zeros((h, w, 3), np.uint8)
    frame[:, :, 1] = np.arange(w)[None, :] % 256  # a horizontal ramp so padding is visible
    x, y = at
    frame[y - 2:y + 3, x - 2:x + 3] = (255, 0, 255)
    return frame


def test_transform_round_trip_and_matrix():
    tf = CropTransform(x0=-30, y0=15, side=180, size=256, frame_width=320, frame_height=240)
    pts = np.random.default_rng(0).uniform(0, 300, (68, 2)).astype(np.float32)
    np.testing.assert_allclose(tf.to_frame(tf.to_crop(pts)), pts, atol=1e-3)
    homog = np.c_[pts, np.ones(len(pts))]
    np.testing.assert_allclose(homog @ tf.matrix.T, tf.to_crop(pts), atol=1e-3)
    np.testing.assert_allclose(np.c_[tf.to_crop(pts), np.ones(len(pts))] @ tf.inverse_matrix.T, pts, atol=1e-3)
    assert CropTransform.from_dict(tf.to_dict()) == tf
    assert tf.resized(64).scale == pytest.approx(64 / 180)


def test_crop_puts_a_marker_where_the_transform_says():
    frame = frame_with_marker(at=(200, 60))
    tf = CropTransform(150, 20, 120, 240, 320, 240)  # 2x upscale
    crop = tf.crop(frame)
    u, v = np.round(tf.to_crop([[200, 60]])[0]).astype(int)
    assert tuple(crop[v, u]) == (255, 0, 255)
    ys, xs = np.nonzero((crop == (255, 0, 255)).all(-1))
    assert abs(xs.mean() - u) < 1.0 and abs(ys.mean() - v) < 1.0


def test_padding_outside_the_frame_replicate_or_black():
    frame = frame_with_marker()
    tf = CropTransform(-100, -50, 200, 100, 320, 240)  # the left half of the box is outside
    rep, black = tf.crop(frame, pad="replicate"), tf.crop(frame, pad="black")
    assert rep.shape == black.shape == (100, 100, 3)
    assert black[:, :45].max() == 0 and rep[:, :45, 1].max() == frame[0, 0, 1]  # edge column repeated
    np.testing.assert_array_equal(rep[40:, 55:], black[40:, 55:])  # identical inside the frame
    nowhere = CropTransform(1000, 1000, 50, 32, 320, 240)
    assert nowhere.crop(frame).shape == (32, 32, 3) and nowhere.crop(frame).max() == 0
    with pytest.raises(ValueError):
        tf.crop(frame, pad="mirror")


def test_paste_back_restores_the_frame_and_only_touches_the_box():
    frame = frame_with_marker()
    tf = CropTransform(100, 20, 160, 160, 320, 240)  # scale 1: exact
    crop = tf.crop(frame)
    out = tf.paste_back(np.zeros_like(crop), frame, feather=0.0)
    assert out[20:180, 100:260].max() == 0
    np.testing.assert_array_equal(out[:, :100], frame[:, :100])
    np.testing.assert_array_equal(tf.paste_back(crop, frame, feather=0.1), frame)
    # a box partly outside the frame: only the inside is written, shapes are kept
    tf2 = CropTransform(250, -40, 128, 64, 320, 240)
    out2 = tf2.paste_back(np.full((64, 64, 3), 255, np.uint8), frame, feather=0.0)
    assert out2.shape == frame.shape and (out2[:88, 250:] == 255).all() and (out2[:, :250] == frame[:, :250]).all()
    # feathering: soft edges, full weight in the middle
    soft = tf.paste_back(np.zeros_like(crop), np.full_like(frame, 200), feather=0.2)
    assert soft[100, 180].max() == 0 and 0 < soft[21, 180, 0] < 200


def test_clip_crop_is_one_box_containing_all_landmarks():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 100, (68, 2)) + [300, 200]
    pts = np.stack([base + rng.normal(0, 1.5, (68, 2)) + [3 * t, 0] for t in range(20)])  # slow drift right
    cc = clip_crop(pts, (1280, 720), 256, crop_scale=1.8, crop_shift=0.1)
    x0, y0, x1, y1 = cc.transform.box
    assert cc.inside.all()
    assert (pts[..., 0] >= x0).all() and (pts[..., 0] < x1).all()
    assert (pts[..., 1] >= y0).all() and (pts[..., 1] < y1).all()
    centre, size = face_extent(pts)
    assert cc.transform.side == pytest.approx(1.8 * np.median(size), rel=0.35)
    assert (y0 + y1) / 2 > np.median(centre[:, 1])  # shifted down: neck below
    # a head that jumps far away: the box grows at most max_grow and reports the frames it cannot hold
    pts2 = pts.copy()
    pts2[-1] += [600, 0]
    cc2 = clip_crop(pts2, (1280, 720), 256, max_grow=1.3)
    assert not cc2.inside[-1] and cc2.inside[:-1].sum() >= 15 and cc2.grown <= 1.3 + 1e-6
    with pytest.raises(ValueError):
        clip_crop(np.full((2, 68, 2), np.nan), (100, 100), 64)


def _track_and_crop(path, size=256, max_frames=10):
    from talking_heads.config import DataConfig
    from talking_heads.data import track_video

    track = track_video(path, max_frames=max_frames)
    cfg = DataConfig()
    found = track.points[track.found]
    cc = clip_crop(found, track.frame_size, size, cfg.crop_scale, cfg.crop_shift)
    return track, found, cc


def test_raw_wide_clip_is_cropped_to_the_face(shared_data):
    track, found, cc = _track_and_crop(shared_data / "videos/test/lp_source_s18.mp4")
    tf = cc.transform
    w, h = track.frame_size
    assert (w, h) == (1280, 720) and track.found.all() and cc.inside.all()
    assert tf.side < 0.8 * h  # much smaller than the frame
    centre, size = face_extent(found)
    cx, cy = tf.x0 + tf.side / 2, tf.y0 + tf.side / 2
    assert abs(cx - np.median(centre[:, 0])) < 0.1 * tf.side
    crop_pts = tf.to_crop(found)
    assert (crop_pts >= 0).all() and (crop_pts < 256).all()
    # the face spans roughly 1/1.8 of the crop, as in VoxCeleb2
    _, crop_size = face_extent(crop_pts)
    assert 0.4 * 256 < np.median(crop_size) < 0.65 * 256
    img = tf.crop(np.zeros((h, w, 3), np.uint8))
    assert img.shape == (256, 256, 3)


@pytest.mark.parametrize("clip", ["videos/test/pcavs_Audio_Source_00015.mp4", "videos/test/lp_driving_d2_old.mp4"])
def test_tight_clip_box_is_stable_and_frame_sized(shared_data, clip):
    track, found, cc = _track_and_crop(shared_data / clip)
    w, h = track.frame_size
    assert cc.inside.all()
    # a VoxCeleb2-style 224 crop already is the head crop: the box is about the frame
    if w == 224:
        assert 0.75 * w < cc.transform.side < 1.3 * w
    # one box per clip: every frame's landmarks are inside it; per-frame boxes would move
    crop_pts = cc.transform.to_crop(found)
    assert (crop_pts > -1).all() and (crop_pts < 257).all()


@pytest.mark.slow
def test_1080p_clip_crop(shared_data):
    track, found, cc = _track_and_crop(shared_data / "videos/train/spectre_MEAD_M030_level_3_angry_016.mp4",
                                       max_frames=6)
    assert track.frame_size == (1920, 1080) and track.found.all() and cc.inside.all()
    assert cc.transform.side < 1080
