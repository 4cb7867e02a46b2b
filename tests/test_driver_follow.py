"""A driver whose face moves across the frame (a dancing, full-body clip) is cut by a box per frame that
follows the face (`data.crop.follow_crop`), so the face stays centred in the driver's crop; an ordinary
talking head keeps its one stable box (`clip_crop`), bit for bit. The moving driver is made here from a real
clip of ../shared/data pasted into a larger canvas at a sliding position (never stored in the repository)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from talking_heads.config import DataConfig, preset
from talking_heads.data.crop import (CropTrack, CropTransform, clip_crop, face_extent, face_motion, follow_crop,
                                     smooth_track, smoothing_window)
from talking_heads.driver import load_driver

CLIP = "videos/test/lp_driving_d2_old.mp4"  # 16 frames, 512 px, frontal talking head (face ~270 px)
TALKER = "videos/test/lp_driving_d1_old.mp4"  # 16 frames, 512 px, frontal: blinks, hardly moves
SIZE = 128  # driver crop side
PASTE = 256  # the clip's frames are pasted at this side ...
CANVAS = 3 * PASTE  # ... into a canvas of 3x that side, sliding diagonally across 2/3 of it
BLANK = (13, 14)  # frames of the moving clip that show no face (the canvas only)


def _slide(frames: list[np.ndarray], blank: tuple[int, ...] = ()) -> list[np.ndarray]:
    """The clip played forward then backward (32 frames), each frame pasted into a grey canvas at a position
    sliding from the top-left corner to the bottom-right one, 2/3 of the canvas in x and in y, starting
    and stopping smoothly (cosine ease: fastest mid-clip: 26 px, 0.2 face sizes a frame)."""
    import cv2

    clip = frames + frames[::-1]
    grey = np.median(np.stack(frames).reshape(-1, 3), axis=0).astype(np.uint8)
    out = []
    for i, f in enumerate(clip):
        canvas = np.empty((CANVAS, CANVAS, 3), np.uint8)
        canvas[:] = grey
        if i not in blank:
            at = int(round((CANVAS - PASTE) * (1 - np.cos(np.pi * i / (len(clip) - 1))) / 2))
            canvas[at:at + PASTE, at:at + PASTE] = cv2.resize(f, (PASTE, PASTE), interpolation=cv2.INTER_AREA)
        out.append(canvas)
    return out


@pytest.fixture(scope="module")
def frames(shared_data):
    from talking_heads.data import read_frames

    return [f for _, f in read_frames(shared_data / CLIP)]


@pytest.fixture(scope="module")
def moving(frames, tmp_path_factory):
    """A 32-frame mp4 (768 px) whose real face slides diagonally across the frame."""
    from test_bad_input import write_mp4

    return write_mp4(tmp_path_factory.mktemp("follow") / "moving.mp4", _slide(frames))


def _load(path, **data):
    """The driver with the paper preset's data settings (following only past follow_threshold), or others."""
    cfg = preset("paper")
    return load_driver(path, size=SIZE, data_cfg=dataclasses.replace(cfg.data, **data), inference_cfg=cfg.inference)


def _centres_and_sizes(seq):
    centres, sizes = face_extent(seq.driver_points)
    return centres, sizes / (SIZE / DataConfig.crop_scale)  # face size relative to the crop rule's


def _face_stays_centred(seq, px: float = 0.06 * SIZE) -> bool:
    """Every frame's landmark-box centre within `px` of where the crop rule puts it (x at the middle, y
    crop_shift face sizes above it) and its face size within 15 % of the rule's."""
    centres, rel = _centres_and_sizes(seq)
    face = SIZE / DataConfig.crop_scale
    target = np.array([SIZE / 2 - 0.5, SIZE / 2 - 0.5 - DataConfig.crop_shift * face])
    return bool((np.abs(centres - target).max(axis=1) <= px).all() and ((rel > 0.85) & (rel < 1.15)).all())


def test_a_face_moving_across_the_frame_is_followed(moving, caplog):
    with caplog.at_level(logging.INFO, logger="talking_heads.driver"):
        seq = _load(moving)
    assert len(seq) == 32 and seq.lost_frames == 0
    assert seq.followed and isinstance(seq.transform, CropTrack) and len(seq.transform) == 32
    follows = [r for r in caplog.records if "follows" in r.getMessage()]
    assert len(follows) == 1 and follows[0].levelno == logging.INFO and "face sizes" in follows[0].getMessage()
    assert _face_stays_centred(seq)
    boxes = np.array([b.box for b in seq.transform])
    assert boxes[-1, 0] - boxes[0, 0] > 0.5 * CANVAS and boxes[-1, 1] - boxes[0, 1] > 0.5 * CANVAS  # it moved


def test_one_stable_box_lets_the_same_face_slide_out(moving):
    """What following fixes: with one box for the clip (threshold never reached) the face slides across
    (and out of) the crop, and the same check fails."""
    seq = _load(moving, follow_threshold=1e9)
    assert not seq.followed and isinstance(seq.transform, CropTransform)
    assert not _face_stays_centred(seq)
    centres, _ = _centres_and_sizes(seq)
    assert np.ptp(centres, axis=0).min() > 0.5 * SIZE  # slides by more than half the crop in x and in y


def test_panels_cut_each_frame_by_its_own_box(moving):
    """The side-by-side panels of a followed driver show the face centred in every frame: landmarks found
    again on the panels lie where the crop points say."""
    from talking_heads.data import read_frames
    from talking_heads.data.faces import track_video

    seq = _load(moving)
    panels = list(seq.panels(256))
    assert len(panels) == len(seq) and all(p.shape == (256, 256, 3) for p in panels)
    picks = [0, 10, 20, 31]
    track = track_video([panels[i] for i in picks], max_frames=0)
    assert track.found.all()
    found_centres, _ = face_extent(track.points)
    want, _ = face_extent(seq.driver_points[picks] * (256 / SIZE))
    assert np.abs(found_centres - want).max() < 0.04 * 256
    frame = next(read_frames(seq.source, [20]))[1]
    np.testing.assert_array_equal(panels[20], seq.transform[20].resized(256).crop(frame))


def test_followed_driver_maps_back_to_frame_pixels_and_cuts(moving, tmp_path):
    from talking_heads.data.faces import track_video

    seq = _load(moving)
    raw = track_video(moving, max_frames=0).points
    np.testing.assert_allclose(seq.transform.to_frame(seq.driver_points), raw, atol=0.01)  # all frames found
    head = seq.head(5)
    assert len(head) == 5 and len(head.transform) == 5 and head.transform[4] == seq.transform[4]
    np.testing.assert_allclose(head.transform.to_frame(head.driver_points), raw[:5], atol=0.01)
    np.save(tmp_path / "moving.npy", raw)  # the same landmarks as a saved sequence: followed too (no panels)
    landmarks = _load(tmp_path / "moving.npy")
    assert landmarks.kind == "landmarks" and landmarks.followed and landmarks.transform is None
    assert _face_stays_centred(landmarks)


def test_frames_without_a_face_hold_the_box_while_following(frames, tmp_path):
    from test_bad_input import write_mp4

    seq = _load(write_mp4(tmp_path / "gap.mp4", _slide(frames, BLANK)))
    assert seq.followed and seq.lost_frames == len(BLANK)
    for i in BLANK:  # the last good landmarks in the last good box: the avatar holds still
        np.testing.assert_array_equal(seq.driver_points[i], seq.driver_points[BLANK[0] - 1])
        assert seq.transform[i] == seq.transform[BLANK[0] - 1]
    shown = [i for i in range(len(seq)) if i not in BLANK]
    assert _face_stays_centred(dataclasses.replace(seq, driver_points=seq.driver_points[shown]))


def test_an_ordinary_talking_head_keeps_its_stable_box_exactly(shared_data):
    """The default settings give a talking head the one stable box of `clip_crop`, bit for bit."""
    from talking_heads.data.faces import track_video

    path = shared_data / TALKER
    seq = _load(path)
    track = track_video(path, max_frames=0, data_cfg=DataConfig())
    assert track.found.all() and seq.lost_frames == 0 and seq.held_frames == 0
    assert face_motion(track.points, smoothing_window(DataConfig.follow_smoothing, seq.fps)) < 0.05
    stable = clip_crop(track.points, track.frame_size, SIZE, DataConfig.crop_scale, DataConfig.crop_shift).transform
    assert not seq.followed and seq.transform == stable
    np.testing.assert_array_equal(seq.driver_points, stable.to_crop(track.points))
    # following it anyway (threshold 0) applies the same rule per frame: boxes within a few px of the stable one
    followed = _load(path, follow_threshold=0.0)
    assert followed.followed
    boxes = np.array([b.box for b in followed.transform])
    assert np.abs(boxes - np.array(stable.box)).max() <= 0.03 * stable.side


# --- the maths ---------------------------------------------------------------------------------------

def test_smooth_track_holds_through_frames_without_a_face():
    v = np.array([9.0, 0.0, 1.0, 2.0, 99.0, 99.0, 5.0, 6.0])
    found = np.array([False, True, True, True, False, False, True, True])
    np.testing.assert_array_equal(smooth_track(v, 1, found), [0, 0, 1, 2, 2, 2, 5, 6])  # held, first frame too
    # a 3-frame average of the held values (the 99s never count); the ends point-reflected (0 | 0 1 ..., ... 5 6 | 7)
    np.testing.assert_allclose(smooth_track(v, 3, found), [0, 1 / 3, 1, 5 / 3, 2, 3, 13 / 3, 6])
    with pytest.raises(ValueError, match="at least one found frame"):
        smooth_track(v, 3, np.zeros(len(v), bool))


def test_smooth_track_is_zero_phase_and_removes_jitter():
    t = np.arange(40, dtype=np.float64)
    ramp = np.stack([3.0 * t + 1, -2.0 * t], axis=1)  # (F,2) a steady motion: followed without lag, ends too
    np.testing.assert_allclose(smooth_track(ramp, 13), ramp, atol=1e-9)
    np.testing.assert_allclose(smooth_track(ramp[:4], 51), ramp[:4], atol=1e-9)  # window shortened to the clip
    jitter = 10.0 + np.where(t % 2 == 0, 1.0, -1.0)
    assert np.abs(smooth_track(jitter, 13)[6:-6] - 10.0).max() < 0.1
    assert smooth_track(ramp, 4).shape == ramp.shape  # even windows are made odd


def test_smoothing_window_and_face_motion():
    assert smoothing_window(0.5, 25.0) == 13 and smoothing_window(0.5, 30.0) == 15
    assert smoothing_window(0.0, 25.0) == 1 and smoothing_window(0.5, float("nan")) == 1
    face = np.stack([np.linspace(0, 100, 68), np.linspace(0, 100, 68)], axis=1)  # a 100 px "face"
    still = np.repeat(face[None], 20, axis=0)
    assert face_motion(still) == 0.0
    glitch = still.copy()
    glitch[10] += 80.0  # one frame 0.8 face sizes off: counted raw, smoothed away over 13 frames
    assert face_motion(glitch) == pytest.approx(np.hypot(80, 80) / 100)
    assert face_motion(glitch, 13) < 0.1
    moving = still + np.linspace(0, 300, 20)[:, None, None]
    assert face_motion(moving, 13) == pytest.approx(np.hypot(150, 150) / 100, rel=0.01)


def test_crop_track_maps_each_frame_by_its_own_box():
    rng = np.random.default_rng(0)
    boxes = tuple(CropTransform(int(x), int(y), int(s), 64, 640, 480)
                  for x, y, s in zip(rng.integers(-50, 300, 5), rng.integers(-50, 200, 5), rng.integers(80, 300, 5)))
    track = CropTrack(boxes)
    points = rng.uniform(0, 640, (5, 68, 2))
    crop = track.to_crop(points)
    for i, b in enumerate(boxes):
        np.testing.assert_array_equal(crop[i], b.to_crop(points[i]))
        np.testing.assert_array_equal(track.to_frame(crop)[i], b.to_frame(crop[i]))
    assert track.resized(256)[3] == boxes[3].resized(256) and len(track[1:3]) == 2
    with pytest.raises(ValueError, match="5 frames"):
        track.to_crop(points[:4])


def test_follow_crop_reuses_the_stable_rule_per_frame():
    """For a still face the followed boxes are the stable box; for a moving face each box is the rule's box
    around that frame's face."""
    face = np.stack([np.linspace(0, 100, 68), np.linspace(0, 100, 68)], axis=1) + 200.0
    still = np.repeat(face[None], 9, axis=0)
    stable = clip_crop(still, (640, 480), 64).transform
    assert all(b == stable for b in follow_crop(still, (640, 480), 64, 5))
    moving = still + np.linspace(0, 160, 9)[:, None, None] * [1.0, 0.0]  # steady: the smoothing keeps it
    for b, p in zip(follow_crop(moving, (640, 480), 64, 5), moving):
        assert b == clip_crop(p, (640, 480), 64).transform
