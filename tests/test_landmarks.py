"""Landmarks (paper.md section 2): detection on real photos and clips, tracking, filters, rasterisation, flip."""

from __future__ import annotations

import numpy as np
import pytest

from talking_heads.landmarks import (FLIP_PERMUTATION, SEGMENTS, Detection, FaceTracker, LandmarkBackend,
                                     fill_gaps, flip_landmarks, rasterize, rasterize_tensor, smooth_sequence)
from talking_heads.landmarks.backend import detect_faces, get_backend
from talking_heads.landmarks.raster import scaled_thickness

PHOTOS = ["avatarify_obama.jpg", "lia_vox_mona_lisa.png", "sadtalker_happy.png", "lp_source_s9.jpg",
          "gfpgan_Adele_crop.png", "pcavs_Input_741400163.jpg"]
CLIPS = ["videos/test/lp_driving_d1_old.mp4", "videos/test/pcavs_Audio_Source_00373.mp4",
         "frames/pcavs_Pose_Source_517600078"]


def template_face(size: int = 256) -> np.ndarray:
    """A synthetic, roughly frontal 68-point face in a size x size frame (no detector needed)."""
    s = size / 256.0
    pts = np.zeros((68, 2))
    pts[0:17] = np.c_[np.linspace(48, 208, 17), 110 + 100 * np.sin(np.linspace(0, np.pi, 17))]  # jaw: a U
    pts[17:22] = np.c_[np.linspace(60, 115, 5), [95, 88, 85, 86, 90]]
    pts[22:27] = np.c_[np.linspace(141, 196, 5), [90, 86, 85, 88, 95]]
    pts[27:31] = np.c_[[128] * 4, np.linspace(100, 145, 4)]
    pts[31:36] = np.c_[np.linspace(112, 144, 5), [155, 158, 160, 158, 155]]
    eye = np.array([[-18, 0], [-9, -6], [9, -6], [18, 0], [9, 6], [-9, 6]], float)
    pts[36:42] = eye + [92, 112]
    pts[42:48] = eye + [164, 112]
    ang = np.linspace(np.pi, -np.pi, 12, endpoint=False)
    pts[48:60] = np.c_[128 - 32 * np.cos(ang), 185 - 12 * np.sin(ang)]
    ang = np.linspace(np.pi, -np.pi, 8, endpoint=False)
    pts[60:68] = np.c_[128 - 20 * np.cos(ang), 185 - 4 * np.sin(ang)]
    return (pts * s).astype(np.float32)


# --- flip -------------------------------------------------------------------------------------------

def test_flip_permutation_is_an_involution_pairing_left_and_right():
    assert sorted(FLIP_PERMUTATION.tolist()) == list(range(68))
    assert (FLIP_PERMUTATION[FLIP_PERMUTATION] == np.arange(68)).all()
    for a, b in [(0, 16), (8, 8), (17, 26), (21, 22), (27, 27), (31, 35), (33, 33), (36, 45), (39, 42),
                 (40, 47), (48, 54), (51, 51), (57, 57), (60, 64), (62, 62), (66, 66)]:
        assert FLIP_PERMUTATION[a] == b and FLIP_PERMUTATION[b] == a


def test_flip_landmarks_mirrors_and_keeps_semantics():
    p = template_face()
    f = flip_landmarks(p, 256)
    np.testing.assert_allclose(flip_landmarks(f, 256), p, atol=1e-5)
    # a symmetric template maps (almost) onto itself: the subject's right eye is still on the image's left
    np.testing.assert_allclose(f, p, atol=1.0)
    assert f[36, 0] < f[45, 0] and f[0, 0] < f[16, 0]
    # point-wise: new point 36 is the mirror of old point 45
    assert f[36, 0] == pytest.approx(255 - p[45, 0]) and f[36, 1] == pytest.approx(p[45, 1])


def test_flip_matches_mirrored_image_rasterisation():
    p = template_face()
    p[48:68, 0] += 20  # make it asymmetric
    y = rasterize(p, 256)
    y_flipped = rasterize(flip_landmarks(p, 256), 256)
    # mirrored image == rasterised mirrored landmarks, except colours of left/right parts swap
    mirrored = y[:, ::-1]
    lips_mask = (mirrored == [255, 255, 0]).all(-1)
    assert ((y_flipped == [255, 255, 0]).all(-1) & lips_mask).sum() > 0.8 * lips_mask.sum()
    assert (mirrored == [255, 0, 0]).all(-1).sum() > 0  # right brow (red) is mirrored ...
    red_after = (y_flipped == [255, 0, 0]).all(-1)
    green_mirror = (mirrored == [0, 255, 0]).all(-1)
    assert (red_after & green_mirror).sum() > 0.8 * green_mirror.sum()  # ... and re-indexed as red again


# --- rasterisation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [128, 256, 512])
def test_rasterize_colours_at_segments(size):
    p = template_face(size)
    y = rasterize(p, size)
    assert y.shape == (size, size, 3) and y.dtype == np.uint8
    assert (y[0, 0] == 0).all()  # black canvas
    for first, last, _closed, colour in SEGMENTS:
        mid = np.round((p[first] + p[first + 1]) / 2).astype(int)  # middle of the first segment of the part
        patch = y[mid[1] - 1:mid[1] + 2, mid[0] - 1:mid[0] + 2].reshape(-1, 3).astype(float)
        brightest = patch[patch.sum(1).argmax()]  # anti-aliased: the line centre is the brightest pixel
        assert brightest.max() > 150, (first, brightest)
        np.testing.assert_allclose(brightest / brightest.max() * 255, colour, atol=40, err_msg=str(first))
    if size >= 256:  # 2 px lines: the centre pixels carry the exact palette colour
        for first, last, _closed, colour in SEGMENTS:
            mid = np.round((p[first] + p[first + 1]) / 2).astype(int)
            assert tuple(y[mid[1], mid[0]]) == colour, (first, tuple(y[mid[1], mid[0]]), colour)


def test_rasterize_thickness_scales_with_resolution():
    assert scaled_thickness(256) == pytest.approx(2.0) and scaled_thickness(512) == pytest.approx(4.0)
    ink = {s: (rasterize(template_face(s), s).max(-1) > 0).mean() for s in (128, 256, 512)}
    # ink fraction stays about constant when the line width scales with the canvas
    assert 0.6 < ink[512] / ink[256] < 1.5 and 0.6 < ink[128] / ink[256] < 1.7
    thin = (rasterize(template_face(), 256, thickness=1.0).max(-1) > 0).sum()
    thick = (rasterize(template_face(), 256, thickness=4.0).max(-1) > 0).sum()
    assert thick > 2 * thin


def test_rasterize_nan_is_black_and_tensor_range():
    assert rasterize(np.full((68, 2), np.nan), 32).max() == 0
    with pytest.raises(ValueError):
        rasterize(np.zeros((5, 2)), 32)
    t = rasterize_tensor(template_face(64), 64)
    assert t.shape == (3, 64, 64) and t.min() == -1.0 and t.max() <= 1.0
    b = rasterize_tensor(np.stack([template_face(64)] * 2), 64)
    assert b.shape == (2, 3, 64, 64)


# --- filters ----------------------------------------------------------------------------------------

def test_one_euro_smooths_jitter_and_follows_motion():
    rng = np.random.default_rng(0)
    still = np.tile(template_face()[None], (60, 1, 1)) + rng.normal(0, 1.0, (60, 68, 2))
    smooth = smooth_sequence(still, fps=25)
    assert np.std(np.diff(smooth[10:], axis=0)) < 0.5 * np.std(np.diff(still[10:], axis=0))
    moving = np.tile(template_face()[None], (60, 1, 1)) + np.arange(60)[:, None, None] * [4.0, 0.0]
    lag = np.abs(smooth_sequence(moving, fps=25)[-1] - moving[-1]).max()
    assert lag < 8.0  # px, at 100 px/s


def test_filters_keep_missing_frames_missing_and_fill_gaps_on_request():
    seq = np.tile(template_face()[None], (10, 1, 1))
    seq[4:6] = np.nan
    out = smooth_sequence(seq, fps=25)
    assert np.isnan(out[4:6]).all() and np.isfinite(out[[0, 3, 6, 9]]).all()
    moving = np.tile(template_face()[None], (10, 1, 1)) + np.arange(10)[:, None, None]
    moving[3:5] = np.nan
    filled = fill_gaps(moving)
    np.testing.assert_allclose(filled[3], template_face() + 3, atol=1e-4)
    assert np.isnan(fill_gaps(moving, max_gap=1)[3:5]).all()


# --- backend interface ------------------------------------------------------------------------------

class FakeBackend(LandmarkBackend):
    """A second backend: 'detects' a fixed box on bright frames; shows the interface is enough to track."""

    name = "fake"
    min_face_px = 10

    def detect(self, image, threshold=0.0, upsample=0):
        if image.mean() < 50:
            return []
        h, w = image.shape[:2]
        return [Detection((w * 0.25, h * 0.25, w * 0.75, h * 0.75), 2.0)]

    def landmarks(self, image, box):
        x0, y0, x1, y1 = box
        return (template_face() / 256.0 * (x1 - x0) + [x0, y0]).astype(np.float32), 1.0


def test_tracker_with_a_second_backend_marks_frames_without_face():
    frames = [np.full((200, 300, 3), 200 if i not in (3, 4) else 0, np.uint8) for i in range(8)]
    tracker = FaceTracker(FakeBackend(), redetect_every=3)
    found = []
    for f in frames:
        points, conf, _ = tracker.update(f)
        found.append(points is not None)
        assert (conf > 0.5) == (points is not None)
    assert found == [True, True, True, False, False, True, True, True]


# --- real photos and clips (dlib) ------------------------------------------------------------------

def check_plausible_face(points: np.ndarray, box=None, frontal: bool = True) -> None:
    """Landmarks on a face: eyes inside the box, jaw/mouth below the eyes, subject's right eye on the left;
    for frontal faces also the nose tip between the eyes (a profile turns it past the far eye)."""
    right_eye, left_eye = points[36:42].mean(0), points[42:48].mean(0)
    assert right_eye[0] < left_eye[0]  # left/right order (subject's right = image left)
    eye_y = max(right_eye[1], left_eye[1])
    assert points[8, 1] > eye_y and points[48:68, 1].min() > eye_y  # chin and mouth below the eyes
    if frontal:
        assert right_eye[0] < points[30, 0] < left_eye[0]  # nose tip between the eyes
    assert points[17:27, 1].max() < points[48:68, 1].min()  # brows above the mouth
    if box is not None:
        x0, y0, x1, y1 = box
        for e in (right_eye, left_eye):
            assert x0 <= e[0] <= x1 and y0 <= e[1] <= y1


@pytest.mark.parametrize("name", PHOTOS)
def test_landmarks_fall_on_the_face_in_photos(shared_data, name):
    from talking_heads.data.video import read_image

    image = read_image(shared_data / "photos" / name)
    backend = get_backend("dlib")
    faces = detect_faces(image, backend)
    assert len(faces) >= 1
    points, _ = backend.landmarks(image, faces[0].box)
    assert points.shape == (68, 2) and points.dtype == np.float32
    check_plausible_face(points, faces[0].box)


@pytest.mark.parametrize("clip", CLIPS)
def test_track_video_on_real_clips(shared_data, clip):
    from talking_heads.data import track_video

    track = track_video(shared_data / clip, max_frames=12)
    n = len(track)
    assert 2 <= n <= 12 and track.points.shape == (n, 68, 2)
    assert track.found.mean() > 0.9 and track.fps > 0 and track.frame_size[0] > 0
    assert (track.confidence[track.found] > 0.3).all() and (track.confidence[~track.found] == 0).all()
    assert (np.diff(track.frame_indices) > 0).all()
    for p, box in zip(track.points[track.found], track.boxes[track.found]):
        check_plausible_face(p, box, frontal=False)  # these clips include profile views
    w, h = track.frame_size
    assert (track.points[track.found] > -0.1 * w).all() and (track.points[track.found][..., 0] < 1.1 * w).all()
