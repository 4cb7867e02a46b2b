"""Bad input (issue 3 item 6): every case gets a logged reason, the batch goes on, nothing written is lost,
the exit code tells whether anything failed; a single photo fails with a message that says what to do.

All bad files are made here, in tmp_path, from the real footage (never copied into the repository)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from talking_heads.data import FaceNotFoundError, VideoError, prepare_photo, probe
from talking_heads.data import preprocess as pp

GOOD = "videos/test/lp_driving_d1_old.mp4"  # 16 frames, 512 px, one face
WIDE = "videos/test/lp_source_s18.mp4"  # 1280 x 720, face at x 650-910, y 130-380


def decode(path: Path, n: int | None = None) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for i, f in zip(range(n or 10**9), c.decode(video=0))]


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 25, faststart: bool = False) -> Path:
    import av

    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"g": "4"}
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def make_unreadable(folder: Path, monkeypatch) -> None:
    """chmod 000; when running as root (permissions do not apply) listing it is made to fail the same way."""
    folder.chmod(0)
    if os.access(folder, os.R_OK):
        real_scandir, real_listdir = os.scandir, os.listdir

        def deny(path):
            if Path(os.fspath(path)).resolve() == folder.resolve():
                raise PermissionError(13, "Permission denied", os.fspath(path))

        monkeypatch.setattr(os, "scandir", lambda p=".": (deny(p), real_scandir(p))[1])
        monkeypatch.setattr(os, "listdir", lambda p=".": (deny(p), real_listdir(p))[1])


@pytest.fixture(scope="module")
def bad_inputs(shared_data, tmp_path_factory):
    """One good clip plus one file or folder per bad case."""
    root = tmp_path_factory.mktemp("bad") / "in"
    root.mkdir()
    good = root / "good.mp4"
    shutil.copy(shared_data / GOOD, good)
    data = good.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) * 2 // 5])  # index (moov) at the end: unreadable
    frames = decode(shared_data / GOOD)
    partial = write_mp4(root / "partial_src.mp4", frames, faststart=True).read_bytes()
    (root / "partial_src.mp4").unlink()
    (root / "partial.mp4").write_bytes(partial[: int(len(partial) * 0.6)])  # index first: some frames decode
    (root / "text.mp4").write_text("this is a text file, not a video\n")
    (root / "empty.mp4").write_bytes(b"")
    wide = decode(shared_data / WIDE, 4)
    write_mp4(root / "noface.mp4", [f[440:696, 0:256] for f in wide])  # bottom-left corner: no face
    write_mp4(root / "oneframe.mp4", frames[:1])
    (root / "locked").mkdir()
    shutil.copy(good, root / "locked" / "inside.mp4")
    return root


EXPECTED = {  # clip id -> (status, words in the reason)
    "good.mp4": ("ok", ""),
    "partial.mp4": ("ok", ""),
    "truncated.mp4": ("failed", "not a readable video"),
    "text.mp4": ("failed", "not a readable video"),
    "empty.mp4": ("failed", "empty file"),
    "noface.mp4": ("skipped", "no face"),
    "oneframe.mp4": ("skipped", "1 frame"),
    "locked": ("failed", "cannot read folder"),
}


def test_probe_errors_name_the_problem(bad_inputs):
    for name, words in [("truncated.mp4", "not a readable video"), ("text.mp4", "not a readable video"),
                        ("empty.mp4", "empty file"), ("missing.mp4", "no such file")]:
        with pytest.raises(VideoError, match=words) as err:
            probe(bad_inputs / name)
        assert name in str(err.value)
    assert issubclass(VideoError, ValueError)


def test_batch_goes_on_reports_reasons_and_keeps_what_was_written(bad_inputs, tmp_path, monkeypatch, caplog):
    from talking_heads.cli import main

    out = tmp_path / "out"
    only_good = tmp_path / "only_good"
    only_good.mkdir()
    (only_good / "good.mp4").symlink_to(bad_inputs / "good.mp4")
    assert main(["preprocess", str(only_good), str(out), "--size", "64", "--max-frames", "4", "--no-progress"]) == 0
    good_dir = out / "clips" / "good.mp4"
    before = {p: p.stat().st_mtime_ns for p in good_dir.rglob("*")}

    make_unreadable(bad_inputs / "locked", monkeypatch)
    try:
        code = main(["preprocess", str(bad_inputs), str(out), "--size", "64", "--max-frames", "4", "--no-progress"])
    finally:
        (bad_inputs / "locked").chmod(0o755)
    assert code == 1
    records = {r["clip_id"]: r for r in pp.read_manifest(out)}
    assert set(records) == set(EXPECTED)
    for clip_id, (status, words) in EXPECTED.items():
        assert records[clip_id]["status"] == status, records[clip_id]
        assert words in records[clip_id]["reason"], records[clip_id]
        if status != "ok":
            assert records[clip_id]["reason"] in caplog.text  # logged
            assert (out / "failed" / f"{clip_id}.json").is_file()
            assert not (out / "clips" / clip_id).exists()
    assert any("truncated or damaged" in w for w in records["partial.mp4"]["warnings"])
    meta = json.loads((out / "clips" / "partial.mp4" / "meta.json").read_text())
    assert meta["warnings"] and max(meta["frame_indices"]) < 16
    # the clip written by the first run is untouched
    assert {p: p.stat().st_mtime_ns for p in good_dir.rglob("*")} == before
    assert not list((out / "clips").glob(".*"))  # no temporary leftovers


def test_clip_with_frames_without_face_drops_them_and_reports(shared_data, tmp_path):
    frames = decode(shared_data / GOOD, 6)
    blank = [np.zeros_like(frames[0])] * 2
    (tmp_path / "in").mkdir()
    write_mp4(tmp_path / "in" / "gap.mp4", frames[:3] + blank + frames[3:])
    report = pp.preprocess(tmp_path / "in", tmp_path / "out", size=64, progress=False)
    assert report.all_ok
    meta = json.loads((tmp_path / "out" / "clips" / "gap.mp4" / "meta.json").read_text())
    assert meta["n_frames"] == 6 and 3 not in meta["frame_indices"] and 4 not in meta["frame_indices"]
    assert [s["frame"] for s in meta["skipped_frames"]] == [3, 4]
    assert all(s["reason"] == "no face found" for s in meta["skipped_frames"])


# --- single photos -----------------------------------------------------------------------------------

PHOTO = "photos/sadtalker_people_0.png"  # 474 px, one frontal face


def _load(shared_data, name=PHOTO) -> np.ndarray:
    from talking_heads.data import read_image

    return read_image(shared_data / name)


def test_photo_grayscale_rgba_16bit_and_arrays(shared_data, tmp_path):
    import cv2
    from PIL import Image

    rgb = _load(shared_data)
    gray = tmp_path / "gray.png"
    Image.fromarray(rgb).convert("L").save(gray)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])).save(rgba)
    deep = tmp_path / "deep16.png"
    cv2.imwrite(str(deep), (rgb[:, :, ::-1].astype(np.uint16) * 257))
    gray16 = tmp_path / "gray16.png"
    Image.fromarray((rgb.mean(-1) * 257).astype(np.uint16)).save(gray16)
    for source in (gray, rgba, deep, gray16, rgb, rgb.astype(np.float32) / 255.0, Image.open(gray)):
        fc = prepare_photo(source, size=128)
        assert fc.image.shape == (128, 128, 3) and fc.image.dtype == np.uint8
        assert fc.landmarks.shape == (68, 2) and (fc.landmarks >= 0).all() and (fc.landmarks < 128).all()
        assert fc.frame_size == (rgb.shape[1], rgb.shape[0])
    gray_crop = prepare_photo(gray, size=64).image
    assert (gray_crop[..., 0] == gray_crop[..., 1]).all()


def test_photo_crop_transform_pastes_back(shared_data):
    rgb = _load(shared_data)
    fc = prepare_photo(rgb, size=256)
    back = fc.transform.to_frame(fc.landmarks)
    x0, y0, x1, y1 = fc.transform.box
    assert (back[:, 0] > x0).all() and (back[:, 0] < x1).all()
    pasted = fc.transform.paste_back(fc.image, rgb)
    assert pasted.shape == rgb.shape
    inner = (slice(max(y0, 0) + 40, min(y1, rgb.shape[0]) - 40), slice(max(x0, 0) + 40, min(x1, rgb.shape[1]) - 40))
    assert np.abs(pasted[inner].astype(int) - rgb[inner].astype(int)).mean() < 6  # resampling error only


def test_photo_errors_say_what_to_do(shared_data, tmp_path):
    wide = decode(shared_data / WIDE, 1)[0]
    with pytest.raises(FaceNotFoundError, match="Use a photo where one face is clearly visible"):
        prepare_photo(wide[440:696, 0:256])  # background only
    with pytest.raises(FaceNotFoundError, match="closer or higher-resolution"):
        prepare_photo(shared_data / "photos/lia_ted_subject2.png", size=256)  # full body, small face
    with pytest.raises(FaceNotFoundError):
        prepare_photo(_load(shared_data)[::8, ::8])  # tiny: 60 px
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(FaceNotFoundError, match="not a readable image"):
        prepare_photo(tmp_path / "notes.jpg")
    with pytest.raises(FaceNotFoundError, match="no such file"):
        prepare_photo(tmp_path / "missing.png")
    assert issubclass(FaceNotFoundError, ValueError)


def test_photo_with_several_faces_uses_the_largest_and_warns(shared_data):
    import cv2

    big = _load(shared_data)
    small = cv2.resize(_load(shared_data, "photos/sadtalker_happy.png"), (200, 200))
    canvas = np.full((big.shape[0], big.shape[1] + 220, 3), 128, np.uint8)
    canvas[:, : big.shape[1]] = big
    canvas[20:220, big.shape[1] + 10: big.shape[1] + 210] = small
    fc = prepare_photo(canvas, size=128)
    assert any("2 faces" in w and "largest" in w for w in fc.warnings)
    assert fc.transform.to_frame(fc.landmarks)[:, 0].max() < big.shape[1]  # the big face was chosen


@pytest.mark.slow
def test_huge_photo_is_downscaled_for_detection(shared_data, tmp_path):
    import cv2

    rgb = _load(shared_data, "photos/lp_source_s9.jpg")  # 720 x 1280
    huge = cv2.resize(rgb, (5625, 10000), interpolation=cv2.INTER_LINEAR)
    path = tmp_path / "huge.jpg"
    cv2.imwrite(str(path), huge[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
    del huge
    fc = prepare_photo(path, size=256)
    assert fc.frame_size == (5625, 10000) and fc.image.shape == (256, 256, 3)
    assert any("searched on a" in w for w in fc.warnings)
    small = prepare_photo(rgb, size=256)
    np.testing.assert_allclose(fc.transform.to_frame(fc.landmarks) / (10000 / 1280),
                               small.transform.to_frame(small.landmarks), atol=6)
