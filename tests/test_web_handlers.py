"""The web app's handlers as plain functions (no browser, no server): limits, previews, FF / FT avatars, driving,
per-job and per-session folders, private saved avatars, verification. Real photos and videos from
../shared/data, the shipped sample model."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from talking_heads.web import handlers
from talking_heads.web.handlers import USER_ERRORS, WebInputError
from talking_heads.web.settings import WebSettings

PHOTO = "photos/lp_source_s9.jpg"  # Mona Lisa
LONG_DRIVER = "videos/test/pcavs_Audio_Source_00015.mp4"  # 7 s, 25 fps, with audio
SPEECH = "videos/test/styletalk_feifeili_clip3.mp4"  # 7 s of Fei-Fei Li speaking, 30 fps


@pytest.fixture(scope="module")
def pipe():
    from talking_heads.pipeline import TalkingHeadPipeline

    return TalkingHeadPipeline.from_pretrained()  # the shipped sample model


@pytest.fixture
def settings(tmp_path) -> WebSettings:
    return WebSettings(avatars_dir=str(tmp_path / "avatars"), work_dir=str(tmp_path / "work"))


@pytest.fixture(scope="module")
def ff_avatar(pipe, shared_data):
    return pipe.create_avatar([str(shared_data / PHOTO)], progress=False)


def _gradient(path: Path, w: int = 400, h: int = 300) -> Path:
    from PIL import Image

    ramp = np.linspace(0, 255, w, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(ramp, (h, 1))] * 3, axis=-1)).save(path)
    return path


# --- limits -----------------------------------------------------------------------------------------------

def test_sources_limits_are_readable(shared_data, tmp_path, settings):
    photos = sorted((shared_data / "photos").glob("*.jpg"))[:9]
    with pytest.raises(WebInputError, match="from 1 to 8"):
        handlers.check_sources(photos, settings)
    assert handlers.check_sources(photos[:8], settings) == photos[:8]
    with pytest.raises(WebInputError, match="no photo given"):
        handlers.check_sources([], settings)
    with pytest.raises(WebInputError, match="either photos or one video"):
        handlers.check_sources([photos[0], shared_data / LONG_DRIVER], settings)
    with pytest.raises(WebInputError, match="accepts files up to 0.1 MB"):
        handlers.check_sources([shared_data / PHOTO], settings.replace(max_upload_mb=0.1))
    with pytest.raises(WebInputError, match="megapixels"):
        handlers.check_sources([shared_data / PHOTO], settings.replace(max_image_megapixels=0.05))
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    with pytest.raises(WebInputError, match="not a photo or a video"):
        handlers.check_sources([text], settings)
    empty = tmp_path / "empty.jpg"
    empty.touch()
    with pytest.raises(WebInputError, match="empty"):
        handlers.check_sources([empty], settings)
    with pytest.raises(WebInputError, match="between 1 and 200"):
        handlers.check_epochs(0, settings)
    assert handlers.check_epochs("12", settings) == 12


# --- avatar tab -------------------------------------------------------------------------------------------

def test_preview_draws_the_landmarks_on_the_crop_the_model_uses(pipe, shared_data, settings):
    from talking_heads import media

    preview = handlers.preview_faces(pipe, [str(shared_data / PHOTO)], settings)
    (image, caption), = preview.images
    assert caption == "lp_source_s9.jpg" and image.shape == (256, 256, 3) and not preview.warnings
    crop = pipe.detect_and_crop(str(shared_data / PHOTO))[0]
    plain = media.resize(crop.image, 256, 256)
    drawn = (image != plain).any(axis=2)
    assert 0.01 < drawn.mean() < 0.3  # the 68-point lines, not the whole picture
    ys, xs = np.nonzero(drawn)  # ... and where the landmarks are (the face, inside the crop)
    lo, hi = crop.landmarks.min(0) * 2, crop.landmarks.max(0) * 2
    assert lo[0] - 4 <= xs.min() and xs.max() <= hi[0] + 4 and lo[1] - 4 <= ys.min() and ys.max() <= hi[1] + 4


def test_several_faces_say_which_one_is_used(pipe, shared_data, tmp_path, settings):
    from PIL import Image

    big = np.asarray(Image.open(shared_data / "photos/debian_skimage_astronaut.png").convert("RGB"))
    mona = Image.open(shared_data / PHOTO).convert("RGB")
    small = np.asarray(mona.resize((200, round(200 * mona.height / mona.width))))  # a smaller face beside it
    canvas = np.zeros((max(big.shape[0], small.shape[0]), big.shape[1] + small.shape[1], 3), np.uint8)
    canvas[:big.shape[0], :big.shape[1]] = big
    canvas[:small.shape[0], big.shape[1]:] = small
    Image.fromarray(canvas).save(tmp_path / "two_people.png")
    preview = handlers.preview_faces(pipe, [str(tmp_path / "two_people.png")], settings)
    assert any(re.match(r"\d faces found in two_people.png; using the largest \(\d+ px, next \d+ px\)", w)
               for w in preview.warnings), preview.warnings
    used = pipe.detect_and_crop(str(tmp_path / "two_people.png"))[0].transform
    assert used.x0 + used.side / 2 < big.shape[1]  # the one shown is the astronaut's, the largest


def test_no_face_and_unreadable_photo_are_one_readable_line(pipe, tmp_path, settings):
    with pytest.raises(USER_ERRORS, match="no face found in gradient.png") as err:
        handlers.preview_faces(pipe, [str(_gradient(tmp_path / "gradient.png"))], settings)
    assert "\n" not in str(err.value)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a JPEG")
    with pytest.raises(USER_ERRORS, match="not a readable image"):
        handlers.preview_faces(pipe, [str(broken)], settings)


def test_ff_avatar_and_its_labelled_first_frame(pipe, shared_data, tmp_path, settings):
    from talking_heads.provenance import verify

    result = handlers.create_avatar(pipe, [str(shared_data / PHOTO)], settings, tmp_path, finetune=False)
    assert result.avatar.kind == "ff" and result.avatar.sources == ["lp_source_s9.jpg"]
    assert result.summary.startswith("feed-forward (FF), made from 1 frame of lp_source_s9.jpg")
    report = verify(result.first_frame)
    assert result.first_frame.parent == tmp_path and report.marker is not None and report.watermark


def test_ft_avatar_uses_the_epochs_asked_for(pipe, shared_data, tmp_path, settings):
    result = handlers.create_avatar(pipe, [str(shared_data / PHOTO)], settings, tmp_path, finetune=True, epochs=2,
                                    progress=False)
    assert result.avatar.kind == "ft" and result.avatar.epochs == 2 and len(result.avatar.history) == 2
    assert "fine-tuned (FT, 2 epochs)" in result.summary and result.first_frame.is_file()


# --- animate tab ------------------------------------------------------------------------------------------

def _decode(path: Path) -> tuple[int, bool]:
    import av

    with av.open(str(path)) as c:
        has_audio = bool(c.streams.audio)
        return sum(1 for _ in c.decode(video=0)), has_audio


def test_animate_a_motion_in_a_job_whose_temp_folder_goes(pipe, ff_avatar, settings):
    from talking_heads.provenance import verify

    workspace = handlers.Workspace(settings.work_dir, 3600)
    with workspace.job("session-a") as job:
        out = handlers.animate(pipe, ff_avatar, settings, job, motion="nod", duration=2, side_by_side=True,
                               progress=False)
        assert job.temp.is_dir()
    assert not job.temp.exists() and out.result.video.parent == job.results
    assert [p.suffix for p in out.downloads] == [".mp4", ".png"]
    assert _decode(out.result.video)[0] == out.result.frames == 50
    assert verify(out.result.video).synthetic and verify(out.result.contact_sheet).synthetic
    assert "50 frames at 25 fps (2.0 s" in out.summary and "nod" in out.summary


def test_long_driver_is_cut_with_a_warning(pipe, ff_avatar, shared_data, settings):
    workspace = handlers.Workspace(settings.work_dir, 3600)
    short = settings.replace(max_driver_seconds=1.0)
    with workspace.job("session-a") as job:
        out = handlers.animate(pipe, ff_avatar, short, job, video=str(shared_data / LONG_DRIVER), progress=False)
        assert (job.temp / "driver.mp4").is_file()  # the cut copy lives in the job's temp folder ...
    assert not job.temp.exists()  # ... and goes with it
    assert any("only its first 1 s are used" in w for w in out.warnings), out.warnings
    assert out.result.frames == 25 and _decode(out.result.video) == (25, True)  # the driver's sound, cut too


def test_speech_drives_the_mouth_with_its_sound_cut_to_the_limit(pipe, ff_avatar, shared_data, settings):
    """A voice recording on the Animate tab: the video as long as the server's limit, carrying the sound."""
    workspace = handlers.Workspace(settings.work_dir, 3600)
    short = settings.replace(max_driver_seconds=2.0)
    with workspace.job("session-a") as job:
        out = handlers.animate(pipe, ff_avatar, short, job, speech=str(shared_data / SPEECH), progress=False)
    assert any("only its first 2 s are used" in w for w in out.warnings), out.warnings
    assert out.result.frames == 50 and _decode(out.result.video) == (50, True)
    assert "speech" in out.summary and out.result.video.name.endswith("_speaking.mp4")
    with pytest.raises(handlers.WebInputError, match="no speech"):
        handlers.check_animate(ff_avatar, settings, speech=None, driven_by_speech=True)


def test_cut_video_keeps_every_frame_decodable(shared_data, tmp_path):
    import av

    cut = handlers.cut_video(shared_data / LONG_DRIVER, tmp_path / "cut.mp4", 2.0)
    with av.open(str(shared_data / LONG_DRIVER)) as c:
        original = [f.to_ndarray(format="rgb24") for _, f in zip(range(50), c.decode(video=0))]
    with av.open(str(cut)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert 50 <= len(frames) <= 60  # packets copied up to 2 s of decoding time (no re-encoding)
    assert all(np.array_equal(a, b) for a, b in zip(original, frames[:50]))


def test_driver_without_a_face_and_no_avatar_are_readable(pipe, ff_avatar, tmp_path, settings):
    import av

    path = tmp_path / "no_face.mp4"
    with av.open(str(path), "w") as c:
        stream = c.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        ramp = np.linspace(0, 255, 256, dtype=np.uint8)
        for i in range(25):
            frame = np.stack([np.tile(np.roll(ramp, 8 * i), (256, 1))] * 3, axis=-1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    workspace = handlers.Workspace(settings.work_dir, 3600)
    with pytest.raises(USER_ERRORS, match="no face found in any of its 25 frames"):
        with workspace.job("session-a") as job:
            handlers.animate(pipe, ff_avatar, settings, job, video=str(path), progress=False)
    assert not job.temp.exists() and not job.results.exists()  # a failed job leaves nothing
    with workspace.job("session-a") as job, pytest.raises(WebInputError, match="no avatar yet"):
        handlers.animate(pipe, None, settings, job, motion="nod", progress=False)
    with workspace.job("session-a") as job, pytest.raises(USER_ERRORS, match="reference frame 99 is outside"):
        handlers.animate(pipe, ff_avatar, settings, job, motion="nod", duration=1, reference_frame=99, progress=False)
    with workspace.job("session-a") as job, pytest.raises(WebInputError, match="unknown motion"):
        handlers.animate(pipe, ff_avatar, settings, job, motion="dance", progress=False)


# --- sessions and saved avatars ---------------------------------------------------------------------------

def test_sessions_have_their_own_folders(settings):
    workspace = handlers.Workspace(settings.work_dir, 3600)
    with workspace.job("alice") as a, workspace.job("bob") as b:
        (a.results / "alice.mp4").write_bytes(b"x")
        assert workspace.session_dir("alice") != workspace.session_dir("bob")
        assert a.results.is_relative_to(workspace.session_dir("alice"))
        assert not any(workspace.session_dir("bob").rglob("alice.mp4"))
    workspace.end_session("alice")
    assert not workspace.session_dir("alice").exists() and workspace.session_dir("bob").is_dir()
    old = handlers.Workspace(settings.work_dir, 0.0)  # results older than keep_seconds are swept
    old.sweep()
    assert not any((Path(settings.work_dir) / "sessions").glob("*/results/*"))


def test_saved_avatars_are_private_to_a_browser(pipe, ff_avatar, tmp_path, settings):
    alice, bob = handlers.new_browser_key(), handlers.new_browser_key()
    path, replaced = handlers.save_avatar(ff_avatar, settings, alice, "mona_ff")
    assert path == Path(settings.avatars_dir) / alice / "mona_ff" and not replaced
    assert handlers.save_avatar(ff_avatar, settings, alice, "mona_ff")[1]  # saving again replaces it
    assert handlers.avatar_choices(settings, alice) == [("mona_ff", "mine/mona_ff")]
    assert handlers.avatar_choices(settings, bob) == []
    with pytest.raises(WebInputError, match="no longer there"):
        handlers.load_avatar(pipe, settings, bob, "mine/mona_ff")
    loaded = handlers.load_avatar(pipe, settings, alice, "mine/mona_ff")
    assert loaded.kind == "ff" and np.allclose(loaded.psi.cpu(), ff_avatar.psi.cpu())
    assert handlers.render_first_frame(pipe, loaded, tmp_path / "first.png").is_file()
    for bad in ("mine/../" + alice + "/mona_ff", "mine/..", "elsewhere/mona_ff", "mine/a/b"):
        with pytest.raises(WebInputError):
            handlers.load_avatar(pipe, settings, alice, bad)
    assert handlers.avatar_choices(settings, "not-a-key") == []
    with pytest.raises(WebInputError, match="reload the page"):
        handlers.private_dir(settings, "../" + alice)
    with pytest.raises(WebInputError, match="avatar name"):
        handlers.save_avatar(ff_avatar, settings, alice, "../escape")
    shared = tmp_path / "shared"
    shutil.copytree(path, shared / "mona_shared")
    with_share = settings.replace(share_dir=str(shared))
    assert handlers.avatar_choices(with_share, bob) == [("mona_shared (shared)", "shared/mona_shared")]
    assert handlers.load_avatar(pipe, with_share, bob, "shared/mona_shared").kind == "ff"


# --- verify tab -------------------------------------------------------------------------------------------

def test_verify_report_in_words(pipe, ff_avatar, shared_data, settings):
    workspace = handlers.Workspace(settings.work_dir, 3600)
    with workspace.job("session-a") as job:
        out = handlers.animate(pipe, ff_avatar, settings, job, motion="blink", duration=1, progress=False)
    synthetic = handlers.report_markdown(handlers.verify_file(out.result.video, settings), "result.mp4")
    assert "result.mp4: SYNTHETIC" in synthetic and "metadata marker: present" in synthetic
    real = handlers.report_markdown(handlers.verify_file(shared_data / PHOTO, settings), "mona.jpg")
    assert "no synthetic label found" in real and "metadata marker: absent" in real


def test_cli_refuses_bad_settings_in_one_line(capsys):
    from talking_heads.cli import main

    assert main(["web", "--max-jobs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "talking-heads web: error: --max-jobs must be at least 1, got 0"
    assert main(["web", "--share-dir", "/no/such/folder"]) == 2
    assert "--share-dir /no/such/folder: no such folder" in capsys.readouterr().err


def test_a_tiny_image_says_it_is_too_small(pipe, tmp_path, settings):
    """A 1 x 1 px upload gave dlib's internal C++ error ("Filter windows must be small enough..."); a 3 x 40 px
    one an alias_tensor error."""
    from PIL import Image

    for w, h in ((1, 1), (3, 40)):
        path = tmp_path / f"tiny_{w}x{h}.png"
        Image.new("RGB", (w, h), (200, 120, 90)).save(path)
        with pytest.raises(USER_ERRORS, match=rf"tiny_{w}x{h}.png is only {w}x{h} px: too small to hold a face"):
            handlers.preview_faces(pipe, [path], settings)


def test_instant_checks_need_no_pipeline_work(tmp_path, settings, ff_avatar):
    """What the page checks in its light event before an animation joins the jobs' line: no avatar, no video,
    a file that is not a video, a bad reference frame number."""
    text = tmp_path / "notes.mp4.txt"
    text.write_text("not a video")
    cases = [(dict(), None, "no avatar yet"), (dict(driven_by_video=True), None, "no driving video"),
             (dict(driven_by_video=True), ff_avatar, "no driving video"),
             (dict(driven_by_video=True, video=str(text)), ff_avatar, "notes.mp4.txt: not a video"),
             (dict(reference_frame="-3"), ff_avatar, "give a frame number >= 0"),
             (dict(reference_frame="abc"), ff_avatar, "reference frame")]
    for kwargs, avatar, message in cases:
        with pytest.raises(USER_ERRORS, match=message):
            handlers.check_animate(avatar, settings, **kwargs)
    handlers.check_animate(ff_avatar, settings, reference_frame="")  # blank: auto


def test_page_messages_name_files_not_server_paths():
    from talking_heads.web.app import _one_line

    upload = "/tmp/talking-heads-web-x1/gradio/" + "ab" * 32 + "/holiday.jpg"
    assert _one_line(f"no face found in {upload} (1x1 px).\nUse a photo") == \
        "no face found in holiday.jpg (1x1 px). Use a photo"
    assert _one_line("reference frame 9 is outside the driver's 5 frames (0..4)") == \
        "reference frame 9 is outside the driver's 5 frames (0..4)"
