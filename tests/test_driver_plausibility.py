"""Driver frames in profile, occluded or sideways are not trusted (issue 15, real footage): the tracker's
confidence and the 68-point shape decide; untrusted frames hold the last good landmarks and are counted, a
driver never seen clearly is refused, and preprocessing warns about a sideways clip. Videos are made here
from ../shared/data (never stored in the repository)."""

from __future__ import annotations

import numpy as np
import pytest

from talking_heads.config import DataConfig, InferenceConfig
from talking_heads.driver import DriverError, load_driver
from talking_heads.landmarks.plausibility import MAX_SHAPE_RESIDUAL, shape_residual, trusted

CLIP = "videos/test/lp_driving_d1_old.mp4"  # 16 frames, 512 px, frontal


@pytest.fixture(scope="module")
def frames(shared_data):
    from talking_heads.data import read_frames

    return [f for _, f in read_frames(shared_data / CLIP)]


def _write(path, frames):
    from test_bad_input import write_mp4

    return write_mp4(path, frames)


def _cover_lower_half(frame: np.ndarray) -> np.ndarray:
    from talking_heads.data.faces import track_video

    g = frame.copy()
    box = track_video([frame], max_frames=0).boxes[0]
    g[int(box[1] + 0.45 * (box[3] - box[1])):, :] = 128  # mouth and chin hidden
    return g


def _load(path):
    return load_driver(path, size=64, data_cfg=DataConfig(), inference_cfg=InferenceConfig())


def test_occluded_frames_are_held_and_counted(frames, tmp_path):
    clip = frames[:4] + [_cover_lower_half(f) for f in frames[4:8]] + frames[8:]
    seq = _load(_write(tmp_path / "occluded.mp4", clip))
    assert seq.held_frames == 4 and seq.lost_frames == 0 and len(seq) == 16
    assert any("4 of 16 driver frames" in w for w in seq.warnings)
    for i in range(4, 8):  # held: the last good frame's landmarks
        np.testing.assert_array_equal(seq.driver_points[i], seq.driver_points[3])
    assert not np.array_equal(seq.driver_points[8], seq.driver_points[3])


def test_sideways_driver_is_refused_with_a_reason(frames, tmp_path):
    sideways = [np.ascontiguousarray(np.rot90(f)) for f in frames]  # rotated, no rotation tag
    with pytest.raises(DriverError, match="never clearly enough.*sideways"):
        _load(_write(tmp_path / "sideways.mp4", sideways))


def test_preprocessing_warns_about_a_sideways_clip(frames, tmp_path):
    from talking_heads.data import preprocess as pp

    (tmp_path / "in").mkdir()
    _write(tmp_path / "in" / "sideways.mp4", [np.ascontiguousarray(np.rot90(f)) for f in frames[:6]])
    report = pp.preprocess(tmp_path / "in", tmp_path / "out", size=64, progress=False)
    (rec,) = report.records
    assert rec["status"] == "ok" and any("low landmark confidence" in w for w in rec["warnings"])


def test_shape_residual_separates_faces_from_non_faces(frames):
    from talking_heads.data.faces import track_video

    points = track_video(frames[:4], max_frames=0).points
    assert (shape_residual(points) < 0.07).all() and trusted(points, None).all()
    rng = np.random.default_rng(0)
    scrambled = points[:, rng.permutation(68)]  # the same points, not a face's order
    assert (shape_residual(scrambled) > MAX_SHAPE_RESIDUAL).all()
    assert not trusted(points, np.full(4, 0.3)).any()  # confident shapes, unconfident tracker
