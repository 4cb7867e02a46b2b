"""Head masks and neutral reference frames from landmarks (landmarks/masks.py), on real photos and videos."""

from __future__ import annotations

import numpy as np
import pytest

from talking_heads.landmarks.masks import head_mask, neutral_frame, neutrality


def test_head_mask_covers_the_head_and_not_the_corners(shared_data):
    from talking_heads.data.faces import prepare_photo

    crop = prepare_photo(shared_data / "photos" / "lp_source_s9.jpg", 128)
    mask = head_mask(crop.landmarks, 128)
    assert mask.shape == (128, 128) and mask.dtype == np.float32 and 0 <= mask.min() and mask.max() <= 1
    px = np.round(crop.landmarks).astype(int).clip(0, 127)
    assert (mask[px[:, 1], px[:, 0]] > 0.95).all()  # every landmark is inside (the edge is feathered)
    brow_top = crop.landmarks[17:27, 1].min()
    forehead = int(brow_top - 0.25 * (crop.landmarks[8, 1] - crop.landmarks[27, 1]))
    assert mask[max(forehead, 0), int(crop.landmarks[27, 0])] > 0.9  # hair / forehead above the brows
    assert max(mask[0, 0], mask[0, -1]) < 0.05  # the top corners are background
    with pytest.raises(ValueError):
        head_mask(np.full((68, 2), np.nan), 64)


def test_neutral_frame_of_the_talk_motion_has_the_mouth_closed():
    from talking_heads.landmarks.motions import motion_landmarks

    points = motion_landmarks("talk", seconds=4.0, fps=25.0, size=128)
    i = neutral_frame(points)
    gap = np.linalg.norm(points[:, 66] - points[:, 62], axis=-1)
    assert gap[i] <= np.percentile(gap, 10) + 1e-6
    assert neutrality(np.full((2, 68, 2), np.nan)).tolist() == [np.inf, np.inf] and neutral_frame(np.full((2, 68, 2), np.nan)) == 0


def test_neutral_frame_of_an_expressive_real_driver(shared_data):
    from talking_heads.data.faces import track_video

    track = track_video(shared_data / "videos" / "test" / "xportrait_driving_video.mp4", max_frames=40)
    points = track.points[track.found]
    i = neutral_frame(points)
    gap = np.linalg.norm(points[:, 66] - points[:, 62], axis=-1) / np.linalg.norm(points[:, 45] - points[:, 36], axis=-1)
    assert gap[i] <= np.median(gap)  # a closed-mouth frame, not frame 0 by default
    assert neutrality(points)[i] == neutrality(points).min()
