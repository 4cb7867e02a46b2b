"""The inference pipeline on the tiny preset with real photos and clips from ../shared/data: FF and FT avatars
(paper sections 1 and 6), saving and loading, puppeteering to video, and bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from talking_heads.checkpoint import CheckpointError, read_config
from talking_heads.pipeline import INPUT_ERRORS, Avatar, PipelineError, TalkingHeadPipeline

PHOTO = "photos/avatarify_jobs.jpg"  # 624 px, one face
SHORT = "videos/test/lp_driving_d1_old.mp4"  # 16 frames, 30 fps, aac audio
TALKER = "videos/test/lp_driving_d2_old.mp4"  # 16 frames, 30 fps, aac audio, mouth opens
NO_FACE_FROM = "videos/test/lp_source_s18.mp4"  # 1280 x 720: its bottom-left corner holds no face


@pytest.fixture(scope="module")
def pipe(tiny_model_dir) -> TalkingHeadPipeline:
    return TalkingHeadPipeline.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def frames4(pipe, shared_data):
    """x, y (4,3,32,32) and landmarks of T=4 frames spread over a real clip."""
    crops = pipe.detect_and_crop(shared_data / TALKER, frames=4)
    x, y = pipe.crops_to_tensors(crops)
    return x, y, np.stack([c.landmarks for c in crops])


def _states(pipe) -> dict[str, dict[str, torch.Tensor]]:
    names = ("embedder", "generator", "discriminator")
    return {n: copy.deepcopy(getattr(pipe.networks, n).state_dict()) for n in names}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_detect_and_crop_photos_and_video(pipe, shared_data):
    crops = pipe.detect_and_crop(shared_data / SHORT, frames=5)
    assert len(crops) == 5 and all(c.image.shape == (32, 32, 3) and c.landmarks.shape == (68, 2) for c in crops)
    assert not np.allclose(crops[0].landmarks, crops[-1].landmarks)  # different frames, spread over the clip
    one = pipe.detect_and_crop(shared_data / PHOTO)
    assert len(one) == 1 and one[0].frame_size == (624, 624)
    with pytest.raises(PipelineError, match="has 16 frames: cannot pick T=20"):
        pipe.detect_and_crop(shared_data / SHORT, frames=20)
    with pytest.raises(PipelineError, match="T=3 frames asked for but only 1 photo"):
        pipe.detect_and_crop([shared_data / PHOTO], frames=3)
    with pytest.raises(PipelineError, match="either photos or one video"):
        pipe.detect_and_crop([shared_data / PHOTO, shared_data / SHORT])


def test_ff_avatar_is_the_mean_embedding_and_its_projection(pipe, frames4):
    x, y, lm = frames4
    before = _states(pipe)
    avatar = pipe.create_avatar_from_tensors(x, y, landmarks=lm)
    with torch.no_grad():
        e_new = pipe.networks.embedder(x, y).mean(0, keepdim=True)  # e_new = mean over T of E(x, y)
        psi = pipe.networks.generator.adain_params(e_new)  # psi' = P e_new
    assert avatar.kind == "ff" and avatar.generator is None and avatar.num_frames == 4
    torch.testing.assert_close(avatar.e_new, e_new, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(avatar.psi, psi, rtol=1e-5, atol=1e-6)
    assert all(_same(before[n], s) for n, s in _states(pipe).items())  # nothing trained, no buffer moved


def test_ft_starts_at_the_formulas_lowers_its_loss_and_changes_only_what_it_should(pipe, frames4):
    x, y, lm = frames4
    start = pipe.create_avatar_from_tensors(x, y, landmarks=lm, finetune=True, epochs=0, progress=False)
    ff = pipe.create_avatar_from_tensors(x, y)
    torch.testing.assert_close(start.psi, ff.psi)  # psi' starts at P e_new
    d = pipe.networks.discriminator
    torch.testing.assert_close(start.discriminator.w_prime.detach(), d.w0.detach() + ff.e_new[0])  # w' = w0 + e_new
    before = _states(pipe)
    cfg = pipe.cfg
    old_lr = cfg.finetune.lr_generator
    cfg.finetune.lr_generator = 5e-4  # a higher rate than the paper's so that a few epochs show progress
    try:
        avatar = pipe.create_avatar_from_tensors(x, y, landmarks=lm, finetune=True, epochs=12, progress=False)
    finally:
        cfg.finetune.lr_generator = old_lr
    assert avatar.kind == "ft" and avatar.epochs == 12
    assert len(avatar.history) == 12 * 2  # T=4 in batches of min(T, finetune.batch_size) = 2 (tiny preset)
    cnt = [h["g_cnt"] for h in avatar.history]
    assert np.mean(cnt[-3:]) < 0.85 * np.mean(cnt[:3]), cnt
    after = _states(pipe)
    assert all(_same(before[n], after[n]) for n in before)  # E (frozen), the generic G and D are untouched
    tuned, base = avatar.generator.state_dict(), before["generator"]
    changed = [k for k in tuned if not torch.equal(tuned[k], base[k])]
    assert changed and all(not k.startswith("projection.") for k in changed)  # generic G weights train, P unused
    assert not torch.allclose(avatar.psi, start.psi)  # psi' is free


def test_avatar_save_load_renders_identical_frames(pipe, frames4, shared_data, tmp_path):
    x, y, lm = frames4
    ff = pipe.create_avatar(shared_data / PHOTO, progress=False)
    ft = pipe.create_avatar_from_tensors(x, y, landmarks=lm, finetune=True, epochs=1, progress=False)
    y_drive = torch.cat([y, y.flip(0)])
    for name, avatar in (("ff", ff), ("ft", ft)):
        path = avatar.save(tmp_path / name, with_discriminator=name == "ft")
        cfg, meta = read_config(path)
        assert meta["stage"] == "avatar" and meta["kind"] == name and cfg.model == pipe.cfg.model
        loaded = Avatar.load(path, pipe)
        # the same batching on both sides: bitwise equality across batch sizes depends on the CPU's kernels
        torch.testing.assert_close(pipe.render(loaded, y_drive, batch_size=3), pipe.render(avatar, y_drive, batch_size=3),
                                   rtol=0, atol=0)
        np.testing.assert_array_equal(loaded.landmarks, avatar.landmarks)
    assert sum(f.stat().st_size for f in (tmp_path / "ff").iterdir()) < 40_000  # FF avatars are tiny
    assert {f.name for f in (tmp_path / "ft").iterdir()} == {"config.json", "avatar.safetensors",
                                                            "generator.safetensors", "discriminator.safetensors"}
    assert Avatar.load(tmp_path / "ft", pipe).discriminator is not None
    ft.save(tmp_path / "ff")  # an avatar directory is replaced ...
    assert Avatar.load(tmp_path / "ff", pipe).kind == "ft"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not an avatar directory: not overwriting"):
        ff.save(tmp_path / "notes")  # ... anything else is left alone
    assert (tmp_path / "notes" / "a.txt").read_text() == "mine"
    assert ff.thumbnail.shape == (64, 64, 3) and ff.sources == ["avatarify_jobs.jpg"]


def test_incompatible_avatars_are_refused(pipe, shared_data, tmp_path, tiny_model_dir):
    from talking_heads.checkpoint import save_model_dir
    from talking_heads.config import apply_overrides, preset
    from talking_heads.models import build_networks

    ff = pipe.create_avatar(shared_data / PHOTO, progress=False)
    ff.save(tmp_path / "ff")
    torch.manual_seed(1)  # same architecture, other weights
    cfg = preset("tiny")
    save_model_dir(tmp_path / "other", cfg, build_networks(cfg, 3), num_videos=3, content_loss="offline", step=0)
    other = TalkingHeadPipeline.from_pretrained(tmp_path / "other")
    with pytest.raises(CheckpointError, match="made with other model weights"):
        Avatar.load(tmp_path / "ff", other)
    wide = apply_overrides(cfg, ["model.embedding_dim=24", "model.embedder_channels=[8,16,24]"])
    save_model_dir(tmp_path / "wide", wide, build_networks(wide, 3), num_videos=3, content_loss="offline", step=0)
    with pytest.raises(CheckpointError, match="different model architecture.*embedding_dim: avatar 16 vs model 24"):
        Avatar.load(tmp_path / "ff", TalkingHeadPipeline.from_pretrained(tmp_path / "wide"))
    with pytest.raises(CheckpointError, match="not an avatar"):
        Avatar.load(tiny_model_dir, pipe)
    with pytest.raises(CheckpointError, match="no config.json"):
        Avatar.load(tmp_path, pipe)
    with pytest.raises(CheckpointError, match="not a meta-learned model"):
        TalkingHeadPipeline.from_pretrained(tmp_path / "ff")
    assert issubclass(CheckpointError, INPUT_ERRORS)


def _decode(path):
    import av

    with av.open(str(path)) as c:
        video = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video)]
        fps = float(video.average_rate)
        audio = [(s.codec_context.name, float(s.duration * s.time_base)) for s in c.streams.audio]
        return frames, fps, audio, video.codec_context.name, video.codec_context.pix_fmt


def test_animate_writes_h264_at_the_drivers_rate_with_its_audio(pipe, shared_data, tmp_path):
    from talking_heads.provenance import verify

    avatar = pipe.create_avatar(shared_data / PHOTO, progress=False)
    result = pipe.animate(avatar, shared_data / TALKER, tmp_path / "out.mp4", side_by_side=True, progress=False)
    frames, fps, audio, codec, pix_fmt = _decode(result.video)
    assert (result.frames, result.lost_frames, result.fps) == (16, 0, 30.0)
    assert len(frames) == 16 and fps == 30.0 and codec == "h264" and pix_fmt == "yuv420p"
    assert frames[0].shape == (256, 512, 3)  # driver | result, each at inference.output_size
    assert len(audio) == 1 and audio[0][0] == "aac" and abs(audio[0][1] - 16 / 30) < 0.1  # cut at the video's end
    assert result.contact_sheet == tmp_path / "out.contact.png" and result.contact_sheet.is_file()
    assert verify(result.video).synthetic and verify(result.contact_sheet).synthetic
    motion = pipe.animate(avatar, "nod", tmp_path / "nod.mp4", duration=0.4, contact_sheet=False, progress=False)
    frames, fps, audio, _, _ = _decode(motion.video)
    assert len(frames) == 10 and fps == 25.0 and audio == [] and frames[0].shape == (256, 256, 3)
    assert motion.contact_sheet is None and not (tmp_path / "nod.contact.png").exists()
    pasted = pipe.animate(avatar, "blink", tmp_path / "paste.mp4", duration=0.2, paste_back=True, progress=False)
    assert _decode(pasted.video)[0][0].shape == (624, 624, 3)  # the source photo's full frame


def test_driver_frames_without_a_face_hold_the_last_good_landmarks(pipe, shared_data, tmp_path):
    from PIL import Image

    from talking_heads.data import read_frames

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in read_frames(shared_data / SHORT, range(10)):
        frame = frame[::2, ::2]  # 256 px
        if i in (0, 4, 5):
            frame = np.full_like(frame, 90)  # no face: the first frame and two in the middle
        Image.fromarray(frame).save(folder / f"{i}.jpg")
    seq = pipe.driver_landmarks(folder)
    assert seq.kind == "frames" and len(seq) == 10 and seq.lost_frames == 3 and seq.fps == 25.0
    np.testing.assert_array_equal(seq.points[0], seq.points[1])  # before the first face: the first good one
    np.testing.assert_array_equal(seq.points[4], seq.points[3])
    np.testing.assert_array_equal(seq.points[5], seq.points[3])
    assert any("no face in 3 of 10" in w for w in seq.warnings)
    sound = tmp_path / "frames.mp3"  # a sound file beside a folder of frames is its audio (here PCM in a .mp3)
    sound.write_bytes((shared_data / "frames/pcavs_Mouth_Source_681600002.mp3").read_bytes())
    avatar = pipe.create_avatar(shared_data / PHOTO, progress=False)
    result = pipe.animate(avatar, folder, tmp_path / "held.mp4", contact_sheet=False, progress=False)
    assert result.frames == 10 and result.lost_frames == 3
    frames, fps, audio, _, _ = _decode(result.video)
    assert len(frames) == 10 and fps == 25.0 and audio[0][0] == "aac" and abs(audio[0][1] - 0.4) < 0.1


def test_bad_input_is_a_clear_error_and_leaves_no_output(pipe, shared_data, tmp_path, monkeypatch):
    from talking_heads.data import FaceNotFoundError, read_frames

    avatar = pipe.create_avatar(shared_data / PHOTO, progress=False)
    out = tmp_path / "out.mp4"
    wide = next(read_frames(shared_data / NO_FACE_FROM, [0]))[1]
    with pytest.raises(FaceNotFoundError, match="no face found"):
        pipe.create_avatar(wide[440:696, 0:256])
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00 ftypisom" + b"\x00" * 500)
    with pytest.raises(INPUT_ERRORS, match="not a readable video"):
        pipe.animate(avatar, tmp_path / "broken.mp4", out)
    with pytest.raises(INPUT_ERRORS, match="no such file or folder"):
        pipe.animate(avatar, tmp_path / "missing.mp4", out)
    np.save(tmp_path / "bad.npy", np.zeros((5, 10, 2)))
    with pytest.raises(INPUT_ERRORS, match=r"expected landmarks of shape \(frames, 68, 2\)"):
        pipe.animate(avatar, tmp_path / "bad.npy", out)
    with pytest.raises(PipelineError, match="must be an .mp4"):
        pipe.animate(avatar, "talk", tmp_path / "out.avi")
    calls = {"n": 0}
    real_render = pipe.render

    def failing(*args, **kwargs):  # dies after the first batch has been encoded
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("killed mid-way")
        return real_render(*args, **kwargs)

    monkeypatch.setattr(pipe, "render", failing)
    with pytest.raises(RuntimeError, match="killed mid-way"):
        pipe.animate(avatar, "talk", out, duration=1.0, progress=False)
    assert calls["n"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy", "broken.mp4"]  # nothing partial


def test_landmark_sequences_drive_too(pipe, shared_data, tmp_path):
    raw = pipe.load_driver(shared_data / SHORT)
    frame_px = raw.transform.to_frame(raw.driver_points)  # back to the driver's own pixels
    frame_px[3] = np.nan  # a lost frame
    np.save(tmp_path / "drive.npy", frame_px)
    seq = pipe.load_driver(tmp_path / "drive.npy")
    assert seq.kind == "landmarks" and len(seq) == 16 and seq.lost_frames == 1 and seq.audio is None
    panels = list(seq.panels(64))
    assert len(panels) == 16 and panels[0].shape == (64, 64, 3) and panels[0].max() > 0  # landmark images


def test_rendering_shows_a_progress_bar(pipe, capsys):
    avatar = pipe.create_avatar_from_tensors(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    points = pipe.load_driver("blink", duration=0.2).points
    frames = list(pipe.render_sequence(avatar, points, progress=True))
    assert len(frames) == 5 and frames[0].shape == (256, 256, 3) and frames[0].dtype == np.uint8
    assert "rendering" in capsys.readouterr().err
    with pytest.raises(PipelineError, match="no source landmarks"):
        pipe.driver_landmarks("blink", avatar=avatar)


def test_missing_sample_model_is_a_clear_error(monkeypatch, tmp_path):
    from talking_heads import pipeline

    monkeypatch.setattr(pipeline, "sample_model_dir", lambda: tmp_path / "sample_model")
    with pytest.raises(PipelineError, match="ships no sample model"):
        TalkingHeadPipeline.from_pretrained()
