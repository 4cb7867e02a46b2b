"""What the web page's buttons do, as plain functions over `TalkingHeadPipeline` (no Gradio here).

Every function takes the pipeline, the `WebSettings` and plain values (file paths, strings, numbers) and
returns plain values or dataclasses, so the tests call them directly; `app.py` only wires them to the page.
None of them re-implements a pipeline stage: detection and cropping, FF / FT, rendering, driving, adaptation,
video writing and provenance labels are the pipeline's (`pipeline.py`, `provenance.py`).

What is added here is what a server needs and a command line does not:
- limits checked before any work (`check_sources`, `check_file`): file size, photo count, megapixels;
- driving videos longer than `max_driver_seconds` are cut (`cut_video`: a stream copy of their first seconds,
  no re-encoding, so the driver is not relabelled) and the user is warned;
- `Workspace`: one folder per session and a temporary folder per job, removed when the job ends or fails;
- saved avatars (`avatar_choices`, `save_avatar`, `load_avatar`): one private folder per browser (a random key
  the browser keeps), plus an optional read-only folder of avatars shared with every visitor.

Input the page refuses is a `WebInputError`. Every input error of the library is an `InputError`
(`talking_heads.errors`), and so is `WebInputError`: `USER_ERRORS`, whose messages are shown to the user as
they are (one readable line). Values the library checks (epochs, the driver's reference frame) go through
the library's own checks (`limits`, `driver`); the page adds only its server limits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import re
import secrets
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np
from PIL import Image

from .. import limits, media
from ..avatar import Avatar
from ..data.faces import FaceCrop
from ..data.video import is_image_file, is_video_file, probe
from ..driver import DriverSequence, check_reference_frame, check_reference_index
from ..errors import InputError
from ..landmarks.motions import MOTIONS
from ..landmarks.raster import rasterize
from ..pipeline import AnimationResult, TalkingHeadPipeline
from ..provenance import VerifyReport, verify
from .settings import WebSettings

log = logging.getLogger(__name__)

PREVIEW_SIZE = 256  # px of the face previews (crop upscaled, landmarks drawn at this size)
BROWSER_KEY = re.compile(r"^[0-9a-f]{32}$")  # the random key a browser keeps for its private avatar folder
AVATAR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MINE, SHARED = "mine", "shared"  # prefixes of the saved-avatar dropdown's values


class WebInputError(InputError):
    """Input the web app refuses before the pipeline sees it; the message says what to do instead."""


USER_ERRORS = (InputError,)  # the project's error policy: every input error, whichever module raised it


def time_left(n: float, total: float, elapsed: float) -> str:
    """'about 12 s left' from a progress bar's steps done, total and seconds elapsed."""
    if not total or n <= 0 or elapsed <= 0:
        return "estimating the time left"
    seconds = max(0.0, (total - n) * elapsed / n)
    if seconds >= 90:
        return f"about {seconds / 60:.0f} min left"
    return f"about {seconds:.0f} s left"


# --- per-session and per-job folders -------------------------------------------------------------------

@dataclass
class Job:
    """The folders of one job: `temp` (removed when the job ends, whatever happens) and `results` (what the page
    shows and offers for download; removed when the job fails, else at the session's end or after
    `keep_results_minutes`)."""

    temp: Path
    results: Path


class Workspace:
    """`root/sessions/<session>/` per browser session (named by a hash of Gradio's session id), holding
    `jobs/<id>/` (temporary) and `results/<id>/` per job. Nothing is shared between sessions."""

    def __init__(self, root: str | Path, keep_seconds: float):
        self.root = Path(root)
        self.keep_seconds = float(keep_seconds)

    def session_dir(self, session_id: str | None) -> Path:
        name = hashlib.sha256(str(session_id or "local").encode()).hexdigest()[:24]
        return self.root / "sessions" / name

    @contextlib.contextmanager
    def job(self, session_id: str | None) -> Iterator[Job]:
        self.sweep()
        session = self.session_dir(session_id)
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
        job = Job(session / "jobs" / job_id, session / "results" / job_id)
        job.temp.mkdir(parents=True)
        job.results.mkdir(parents=True)
        try:
            yield job
        except BaseException:
            shutil.rmtree(job.results, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(job.temp, ignore_errors=True)

    def end_session(self, session_id: str | None) -> None:
        """Remove everything the session left (called when its page is closed)."""
        shutil.rmtree(self.session_dir(session_id), ignore_errors=True)

    def sweep(self) -> None:
        """Remove the results of every session older than `keep_seconds`."""
        cutoff = time.time() - self.keep_seconds
        for results in (self.root / "sessions").glob("*/results/*"):
            with contextlib.suppress(OSError):
                if results.stat().st_mtime < cutoff:
                    shutil.rmtree(results, ignore_errors=True)


# --- input checks ---------------------------------------------------------------------------------------

def check_file(path: str | Path | None, settings: WebSettings, what: str = "file") -> Path:
    """The path of an uploaded file that exists, is not empty and is within the upload limit."""
    if not path:
        raise WebInputError(f"no {what} given")
    path = Path(path)
    if not path.is_file():
        raise WebInputError(f"{path.name}: the upload is gone (it may have expired): upload it again")
    size = path.stat().st_size
    if size == 0:
        raise WebInputError(f"{path.name} is empty (0 bytes)")
    if size > settings.max_upload_bytes:
        raise WebInputError(f"{path.name} is {size / 2 ** 20:.0f} MB; this server accepts files up to "
                            f"{settings.max_upload_mb:g} MB")
    return path


def check_sources(sources: Sequence[str | Path] | str | Path | None, settings: WebSettings) -> list[Path]:
    """1 to `max_photos` photos or one video, each within the limits (size, megapixels)."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    paths = [Path(p) for p in (sources or []) if p]
    if not paths:
        raise WebInputError(f"no photo given: upload 1 to {settings.max_photos} photos of one person, or one "
                            "video, or click an example")
    videos = [p for p in paths if is_video_file(p)]
    if videos and len(paths) > 1:
        raise WebInputError("give either photos or one video, not both or several videos")
    if len(paths) > settings.max_photos:
        raise WebInputError(f"{len(paths)} photos given; an avatar is made from 1 to {settings.max_photos}: "
                            "keep the best ones")
    for path in paths:
        check_file(path, settings, "photo")
        if not (is_image_file(path) or is_video_file(path)):
            raise WebInputError(f"{path.name}: not a photo or a video (use JPEG, PNG or WebP photos, or an MP4, "
                                "MOV or WebM video)")
        if is_image_file(path):
            _check_megapixels(path, settings)
    return paths


def _check_megapixels(path: Path, settings: WebSettings) -> None:
    try:
        with Image.open(path) as img:  # reads the header only
            w, h = img.size
    except Exception:  # unreadable: the pipeline says so in its own words
        return
    if w * h > settings.max_image_megapixels * 1e6:
        raise WebInputError(f"{path.name} is {w}x{h} px ({w * h / 1e6:.0f} megapixels); this server accepts "
                            f"photos up to {settings.max_image_megapixels:g} megapixels: downscale it first")


def _unique(messages: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(m for m in messages if m))


# --- avatar tab -----------------------------------------------------------------------------------------

@dataclass
class FacePreview:
    """The faces the pipeline found: the crop it will use with its 68 landmarks drawn, per source frame."""

    images: list[tuple[np.ndarray, str]]  # (RGB uint8 PREVIEW_SIZE px, caption)
    warnings: list[str] = field(default_factory=list)


def landmark_overlay(crop: FaceCrop, size: int = PREVIEW_SIZE) -> np.ndarray:
    """The crop upscaled to `size` px with its landmarks drawn on it (RGB uint8)."""
    image = media.resize(crop.image, size, size)
    lines = rasterize(crop.landmarks * (size / crop.image.shape[0]), size)
    return np.where(lines.any(axis=2, keepdims=True), lines, image)


def preview_faces(pipe: TalkingHeadPipeline, sources, settings: WebSettings) -> FacePreview:
    """Detect and crop the sources as avatar creation will (`pipe.detect_and_crop`) and show the result."""
    paths = check_sources(sources, settings)
    crops = pipe.detect_and_crop([str(p) for p in paths])
    if len(paths) == 1 and is_video_file(paths[0]):
        captions = [f"{paths[0].name}, frame {i + 1} of {len(crops)}" for i in range(len(crops))]
    else:
        captions = [p.name for p in paths]
    return FacePreview([(landmark_overlay(c), name) for c, name in zip(crops, captions)],
                       _unique([w for c in crops for w in c.warnings]))


def describe_avatar(avatar: Avatar) -> str:
    kind = f"fine-tuned (FT, {avatar.epochs} epochs)" if avatar.kind == "ft" else "feed-forward (FF)"
    frames = f"{avatar.num_frames} frame{'s' if avatar.num_frames != 1 else ''}"
    return f"{kind}, made from {frames} of {', '.join(avatar.sources) or 'tensors'}"


@dataclass
class AvatarResult:
    avatar: Avatar
    first_frame: Path  # labelled PNG: the avatar rendered at its own first source landmarks
    summary: str
    warnings: list[str] = field(default_factory=list)


def check_epochs(epochs, settings: WebSettings) -> int:
    """The epochs field (a number or its text): `limits.check_epochs` within the server's 1..max_epochs."""
    try:
        return limits.check_epochs(epochs, "epochs", at_least=1, at_most=settings.max_epochs)
    except InputError as err:
        raise WebInputError(str(err)) from None


def create_avatar(pipe: TalkingHeadPipeline, sources, settings: WebSettings, results_dir: Path, *,
                  finetune: bool, epochs: int | None = None, progress: bool = True) -> AvatarResult:
    """`pipe.create_avatar` (FF, or FT for `epochs`) and the avatar's first rendered frame."""
    paths = check_sources(sources, settings)
    epochs = check_epochs(epochs if epochs is not None else pipe.cfg.finetune.epochs, settings) if finetune else None
    avatar = pipe.create_avatar([str(p) for p in paths], finetune=finetune, epochs=epochs, progress=progress)
    frame = render_first_frame(pipe, avatar, Path(results_dir) / "avatar_first_frame.png")
    return AvatarResult(avatar, frame, describe_avatar(avatar), _unique(avatar.warnings))


def render_first_frame(pipe: TalkingHeadPipeline, avatar: Avatar, path: Path) -> Path:
    """The avatar rendered at its first source frame's landmarks, written as a labelled PNG (`media.write_png`)."""
    if avatar.landmarks is None:
        raise WebInputError("this avatar has no source landmarks, so it has no first frame to show")
    frame = next(iter(pipe.render_sequence(avatar, avatar.landmarks[:1], progress=False)))
    return media.write_png(path, frame)


# --- saved avatars --------------------------------------------------------------------------------------

def new_browser_key() -> str:
    return secrets.token_hex(16)


def private_dir(settings: WebSettings, browser_key: str | None) -> Path:
    """This browser's own avatar folder (only it knows the key)."""
    if not browser_key or not BROWSER_KEY.match(str(browser_key)):
        raise WebInputError("this page has no avatar folder yet: reload the page")
    return Path(settings.avatars_dir).expanduser() / str(browser_key)


def _avatar_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if p.is_dir() and AVATAR_NAME.match(p.name) and (p / "config.json").is_file())


def avatar_choices(settings: WebSettings, browser_key: str | None) -> list[tuple[str, str]]:
    """(label, value) of the avatars this browser saved, then those of the shared folder."""
    choices: list[tuple[str, str]] = []
    if browser_key and BROWSER_KEY.match(str(browser_key)):
        choices += [(name, f"{MINE}/{name}") for name in _avatar_names(private_dir(settings, browser_key))]
    if settings.share_dir:
        choices += [(f"{name} (shared)", f"{SHARED}/{name}") for name in _avatar_names(Path(settings.share_dir))]
    return choices


def check_avatar_name(name: str | None) -> str:
    name = (name or "").strip()
    if not AVATAR_NAME.match(name):
        raise WebInputError(f"avatar name {name!r}: use 1 to 64 letters, digits, '-' or '_' (e.g. mona_ft)")
    return name


def save_avatar(avatar: Avatar | None, settings: WebSettings, browser_key: str | None, name: str | None
                ) -> tuple[Path, bool]:
    """Write the avatar into this browser's folder as NAME; returns (directory, replaced an older one)."""
    if avatar is None:
        raise WebInputError("no avatar to save yet: create one first")
    folder = private_dir(settings, browser_key) / check_avatar_name(name)
    replaced = folder.exists()
    return avatar.save(folder), replaced


def avatar_path(settings: WebSettings, browser_key: str | None, choice: str | None) -> Path:
    """The directory behind a dropdown value ('mine/NAME' or 'shared/NAME'); nothing else can be reached."""
    where, _, name = str(choice or "").partition("/")
    if not choice:
        raise WebInputError("choose a saved avatar first")
    name = check_avatar_name(name)
    if where == MINE:
        path = private_dir(settings, browser_key) / name
    elif where == SHARED and settings.share_dir:
        path = Path(settings.share_dir) / name
    else:
        raise WebInputError(f"unknown saved avatar {choice!r}")
    if not (path / "config.json").is_file():
        raise WebInputError(f"the saved avatar {name!r} is no longer there")
    return path


def load_avatar(pipe: TalkingHeadPipeline, settings: WebSettings, browser_key: str | None, choice: str | None
                ) -> Avatar:
    """`Avatar.load` of a saved avatar (CheckpointError when it was made with another model)."""
    return Avatar.load(avatar_path(settings, browser_key, choice), pipe)


# --- animate tab ----------------------------------------------------------------------------------------

def cut_video(src: Path, dst: Path, seconds: float) -> Path:
    """Copy the first `seconds` of a video's video and audio streams into `dst` (same container, no
    re-encoding: packets are copied up to that decoding time, so every kept frame still decodes)."""
    try:
        with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
            streams = [s for s in inp.streams if s.type in ("video", "audio")]
            mapping = {s.index: out.add_stream_from_template(s) for s in streams}
            done: set[int] = set()
            for packet in inp.demux(streams):
                if packet.dts is None:
                    continue
                if packet.time_base is not None and float(packet.dts * packet.time_base) > seconds:
                    done.add(packet.stream.index)
                    if len(done) == len(streams):
                        break
                    continue
                packet.stream = mapping[packet.stream.index]
                out.mux(packet)
    except (av.FFmpegError, ValueError, OSError) as err:
        dst.unlink(missing_ok=True)
        raise WebInputError(f"{src.name}: could not cut the driving video to {seconds:g} s ({err}); trim it "
                            "yourself and upload it again") from None
    return dst


def prepare_driver(pipe: TalkingHeadPipeline, settings: WebSettings, temp_dir: Path, *, video: str | Path | None = None,
                   motion: str | None = None, duration: float | None = None, smooth: bool = False,
                   speech: str | Path | None = None) -> tuple[DriverSequence, list[str]]:
    """The driver's landmarks (`pipe.load_driver`) from an uploaded / recorded video, cut to
    `max_driver_seconds` with a warning, from a built-in motion of `duration` seconds, or from speech
    (`pipe.speech_driver`, its first `max_driver_seconds`: the video and its sound end there)."""
    warnings: list[str] = []
    if speech:
        from ..speech.audio import load_audio

        limit = settings.max_driver_seconds
        sound = load_audio(check_file(speech, settings, "speech recording"), what="speech recording")
        if sound.seconds > limit:
            warnings.append(f"the speech is {sound.seconds:.1f} s long: only its first {limit:g} s are used (this "
                            "server's limit)")
            sound = dataclasses.replace(sound, samples=sound.samples[:int(limit * sound.rate)])
        seq = pipe.speech_driver(sound, smooth=smooth)
    elif video:
        path = check_file(video, settings, "driving video")
        if not is_video_file(path):
            raise WebInputError(f"{path.name}: not a video (use MP4, MOV or WebM)")
        limit = settings.max_driver_seconds
        info = probe(path)
        cut = f"only its first {limit:g} s are used (this server's limit)"
        if info.duration > limit + 0.5 / info.fps:  # cut before the landmarks of every frame are tracked
            warnings.append(f"the driving video is {info.duration:.1f} s long: {cut}")
            path = cut_video(path, Path(temp_dir) / f"driver{path.suffix.lower()}", limit)
        seq = pipe.load_driver(str(path), smooth=smooth)
        most = max(1, int(round(limit * seq.fps)))
        if len(seq) > most:  # the last frames of a cut copy, or a container that did not tell its duration
            if not warnings:
                warnings.append(f"the driving video is longer than {limit:g} s: {cut}")
            seq = seq.head(most)
    else:
        if motion not in MOTIONS:
            raise WebInputError(f"unknown motion {motion!r}; built-in motions: {', '.join(MOTIONS)}")
        seconds = pipe.cfg.inference.motion_seconds if duration is None else float(duration)
        if not 0 < seconds <= settings.max_motion_seconds:
            raise WebInputError(f"motion length must be between 0 and {settings.max_motion_seconds:g} s, "
                                f"got {seconds:g}")
        seq = pipe.load_driver(motion, smooth=smooth, duration=seconds)
    return seq, _unique(warnings + list(seq.warnings))


@dataclass
class AnimateResult:
    result: AnimationResult
    summary: str
    warnings: list[str] = field(default_factory=list)

    @property
    def downloads(self) -> list[Path]:
        return [p for p in (self.result.video, self.result.contact_sheet) if p is not None]


def check_animate(avatar: Avatar | None, settings: WebSettings, *, video: str | Path | None = None,
                  driven_by_video: bool = False, reference_frame=None, speech: str | Path | None = None,
                  driven_by_speech: bool = False) -> None:
    """The instant checks of an animation request (no avatar, no video, a file that is not a video, a bad
    reference frame number): the page runs them as a light event, so they never wait in line behind another
    visitor's fine-tuning; `animate` repeats them."""
    if driven_by_video and not video:
        raise WebInputError("no driving video: upload one or record one with the webcam, or choose a built-in "
                            "motion")
    if driven_by_speech and not speech:
        raise WebInputError("no speech: upload a recording or record one with the microphone, or choose a built-in "
                            "motion")
    if avatar is None:
        raise WebInputError("no avatar yet: create one (or load a saved one) on the Avatar tab first")
    if driven_by_video:
        path = check_file(video, settings, "driving video")
        if not is_video_file(path):
            raise WebInputError(f"{path.name}: not a video (use MP4, MOV or WebM)")
    if driven_by_speech:
        check_file(speech, settings, "speech recording")
    if reference_frame not in (None, ""):
        check_reference_index(reference_frame, "the reference frame")


def animate(pipe: TalkingHeadPipeline, avatar: Avatar | None, settings: WebSettings, job: Job, *,
            video: str | Path | None = None, motion: str | None = "talk", duration: float | None = None,
            adapt: bool = True, reference_frame: int | None = None, smooth: bool = False, side_by_side: bool = False,
            paste_back: bool = False, progress: bool = True, eye_contact: bool = False,
            speech: str | Path | None = None) -> AnimateResult:
    """Drive the avatar (`pipe.animate`): result video and contact sheet in `job.results`. eye_contact: for
    models that render gaze (the page shows the box only for them; elsewhere it changes nothing). speech: a
    recording whose sound moves the mouth (the head: the idle motion)."""
    check_animate(avatar, settings, video=video, driven_by_video=video is not None, reference_frame=reference_frame,
                  speech=speech, driven_by_speech=speech is not None)
    if reference_frame in (None, ""):  # blank: the most neutral frame (the pipeline chooses it)
        reference_frame = None
    else:  # a negative or fractional number is refused before the driver is prepared
        reference_frame = check_reference_index(reference_frame, "the reference frame")
    seq, warnings = prepare_driver(pipe, settings, job.temp, video=video, motion=motion, duration=duration,
                                   smooth=smooth, speech=speech)
    if reference_frame is not None:
        check_reference_frame(seq, reference_frame)
    name = f"{_stem(avatar)}_{'driven' if video else 'speaking' if speech else motion}.mp4"
    result = pipe.animate(avatar, seq, job.results / name, adapt=adapt, reference_frame=reference_frame,
                          side_by_side=side_by_side, paste_back=paste_back, contact_sheet=True, progress=progress,
                          eye_contact=eye_contact)
    warnings = _unique(warnings + result.warnings)
    what = "a video" if video else "speech (the mouth; the head: the idle motion)" if speech else \
        f"the built-in motion '{motion}'"
    sound = "with the speech" if speech else "with the driver's sound" if seq.audio is not None else "no sound"
    summary = (f"{result.frames} frames at {result.fps:g} fps ({result.frames / result.fps:.1f} s, {sound}), driven by "
               f"{what}; landmarks {'adapted to the avatar' if adapt else 'as driven'}")
    if result.lost_frames:
        summary += f"; {result.lost_frames} driver frames had no face (they hold the last good landmarks)"
    return AnimateResult(result, summary, warnings)


def _stem(avatar: Avatar) -> str:
    first = Path(avatar.sources[0]).stem if avatar.sources else "avatar"
    return re.sub(r"[^A-Za-z0-9_-]+", "_", first)[:40] or "avatar"


# --- verify tab -----------------------------------------------------------------------------------------

def verify_file(path: str | Path | None, settings: WebSettings) -> VerifyReport:
    """`provenance.verify` of an uploaded image or video."""
    return verify(check_file(path, settings, "file to check"))


def report_markdown(report: VerifyReport, name: str) -> str:
    """The report in words for the page."""
    if report.synthetic:
        head = f"### {name}: SYNTHETIC\nMade by talking-heads (or another tool that writes its labels)."
    else:
        head = (f"### {name}: no synthetic label found\nNo talking-heads marker or watermark. This does not prove "
                "the file is real: labels are lost when a video is resized, cropped or re-encoded heavily.")
    marker, watermark = report.parts()
    return f"{head}\n\n- metadata marker: {marker}\n- invisible watermark: {watermark}"


__all__ = ["WebInputError", "USER_ERRORS", "Workspace", "Job", "check_file", "check_sources", "FacePreview",
           "landmark_overlay", "preview_faces", "describe_avatar", "AvatarResult", "create_avatar",
           "render_first_frame", "new_browser_key", "private_dir", "avatar_choices", "save_avatar", "avatar_path",
           "load_avatar", "cut_video", "prepare_driver", "AnimateResult", "animate", "verify_file", "report_markdown",
           "check_epochs"]
