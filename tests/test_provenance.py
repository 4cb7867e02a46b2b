"""Provenance and the writers (provenance.py, media.py): the synthetic marker and the invisible watermark are on
every output, survive H.264, and are not found on real footage from ../shared/data; videos are playable H.264."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from talking_heads import media, provenance

CLIP = "videos/test/pcavs_Audio_Source_00373.mp4"  # 224 px, real footage with audio
REAL_VIDEOS = ["videos/test/lp_driving_d1_old.mp4", "videos/test/pcavs_Audio_Source_00015.mp4",
               "videos/test/dreamtalk_mead_W011_front_happy_level3_001.mp4", "videos/train/dpe_s.mp4",
               "frames/pcavs_Pose_Source_517600078"]
REAL_PHOTOS = ["photos/avatarify_einstein.jpg", "photos/avatarify_mona.jpg", "photos/debian_skimage_astronaut.png",
               "photos/lia_vox_macron.png", "photos/gfpgan_Adele_crop.png", "photos/avatarify_obama.jpg"]


def _frames(path: Path, n: int, size: int = 256) -> list[np.ndarray]:
    import cv2

    from talking_heads.data import read_frames

    return [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for _, f in read_frames(path, range(n))]


def _reencode(src: Path, dst: Path) -> Path:
    """Decode and encode again with plain libx264 defaults (crf 23) and no metadata: only the pixels travel."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        source = inp.streams.video[0]
        stream.width, stream.height, stream.pix_fmt = source.width, source.height, "yuv420p"
        for frame in inp.decode(source):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dst


def test_embedding_matches_imwatermark_and_its_decoder_reads_it(shared_data):
    import cv2
    from imwatermark import WatermarkEncoder

    frame = _frames(shared_data / CLIP, 1)[0]
    ours = provenance.embed_watermark(frame)
    assert (provenance.read_watermark(ours) == provenance.PAYLOAD).all()  # imwatermark's own decoder
    assert cv2.PSNR(frame, ours) > 38  # invisible
    enc = WatermarkEncoder()
    enc.set_watermark("bits", provenance.PAYLOAD.tolist())
    theirs = enc.encode(frame[:, :, ::-1].copy(), "dwtDctSvd", scales=[0, provenance.STRENGTH, 0], block=4)
    theirs = np.ascontiguousarray(theirs[:, :, ::-1])
    assert np.abs(theirs.astype(int) - ours).mean() < 1.0  # the same method (up to the library's rounding)
    assert (provenance.read_watermark(theirs) == provenance.PAYLOAD).all()
    assert not (provenance.read_watermark(frame) == provenance.PAYLOAD).all()
    with pytest.raises(ValueError, match="256x256"):
        provenance.embed_watermark(frame[:200, :200])


def test_video_marker_and_watermark_survive_h264_twice(shared_data, tmp_path):
    frames = _frames(shared_data / CLIP, 12)
    out = tmp_path / "synthetic.mp4"
    with media.VideoWriter(out, 25.0) as writer:
        for f in frames:
            writer.write(f)
    report = provenance.verify(out)
    assert report.synthetic and report.marker is not None and report.watermark, report
    assert report.matching_bits == 32 and report.frames_checked == 8
    again = provenance.verify(_reencode(out, tmp_path / "reencoded.mp4"))  # metadata gone, pixels re-compressed
    assert again.marker is None and again.watermark and again.synthetic, again
    assert "SYNTHETIC" in str(again) and "watermark: present" in str(again)


def test_png_marker_and_watermark(tmp_path):
    from PIL import Image

    from talking_heads.landmarks.motions import neutral_face
    from talking_heads.landmarks.raster import rasterize

    image = rasterize(neutral_face(320), 320)
    path = media.write_png(tmp_path / "sheet.png", image)
    with Image.open(path) as img:
        assert img.text["DigitalSourceType"] == provenance.IPTC_SOURCE_TYPE and "Synthetic" in img.text
    report = provenance.verify(path)
    assert report.kind == "image" and report.marker and report.watermark
    small = media.write_png(tmp_path / "small.png", image[:100, :100])
    report = provenance.verify(small)
    assert report.synthetic and report.matching_bits is None and "not checked" in str(report)
    Image.fromarray(image).save(tmp_path / "plain.png")  # the same picture without our writer
    assert not provenance.verify(tmp_path / "plain.png").synthetic


def test_true_negatives_on_real_footage(shared_data):
    checked = 0
    for name in REAL_VIDEOS + REAL_PHOTOS:
        report = provenance.verify(shared_data / name)
        assert not report.synthetic and report.marker is None, report
        if report.matching_bits is not None:  # 224 px footage is below the watermark's 256x256 minimum
            assert report.matching_bits <= 24, report
            checked += 1
    assert checked >= len(REAL_VIDEOS + REAL_PHOTOS) - 2


def test_unreadable_files_are_errors(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video")
    (tmp_path / "notes.png").write_text("not an image")
    for name, words in (("notes.mp4", "not a readable video"), ("notes.png", "not a readable image"),
                        ("missing.mp4", "no such file")):
        with pytest.raises(provenance.VerifyError, match=words):
            provenance.verify(tmp_path / name)


def test_writer_pads_odd_sizes_keeps_ntsc_rates_and_leaves_nothing_on_error(tmp_path):
    from fractions import Fraction

    import av

    frame = np.full((259, 257, 3), 120, np.uint8)
    with media.VideoWriter(tmp_path / "odd.mp4", 30000 / 1001) as writer:
        for _ in range(3):
            writer.write(frame)
    with av.open(str(tmp_path / "odd.mp4")) as c:
        s = c.streams.video[0]
        assert (s.width, s.height, s.average_rate, s.codec_context.pix_fmt) == (258, 260, Fraction(30000, 1001), "yuv420p")
    with pytest.raises(ValueError, match="the video is 258x260"):
        with media.VideoWriter(tmp_path / "bad.mp4", 25) as writer:
            writer.write(frame)
            writer.write(frame[:100])
    with pytest.raises(ValueError, match="no frame was written"):
        with media.VideoWriter(tmp_path / "empty.mp4", 25):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]
