"""The page: a Gradio Blocks layout whose events call `handlers` (docs/web.md).

Four tabs. *Avatar*: photos or a video (or a built-in example) -> the detected face crop with its landmarks
(shown as soon as a file is chosen, and again when the work starts) -> FF or FT avatar (FT with a live progress
bar: steps and time left) -> its first rendered frame; save / load avatars. *Animate*: a built-in motion or a
video (uploaded or recorded with the webcam) drives the avatar -> the result plays in the page, the mp4 and the
contact sheet are offered for download (progress: frames done / total). *Live*: the browser's camera drives the
avatar in real time, on a page of our own embedded in the tab (`live.py`: a WebSocket beside Gradio's routes).
*Verify*: the provenance report of any
image or video.

Offline and private by construction: Gradio's analytics are off, its theme uses the fonts it ships (no
request leaves the machine: the browser test checks every request), the server binds 127.0.0.1 unless told
otherwise. Each browser session has its own state (the current avatar) and folders (`handlers.Workspace`);
heavy jobs share one queue with `max_jobs` running at once. Bad input is one readable line in the page
(`gr.Error`), warnings are `gr.Warning` toasts and are repeated in the status text.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterator

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry, no update check

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from ..demo import default_data_dir, portrait  # noqa: E402
from ..landmarks.iris import uses_gaze  # noqa: E402
from ..landmarks.motions import MOTIONS  # noqa: E402
from ..pipeline import TalkingHeadPipeline  # noqa: E402
from . import handlers  # noqa: E402
from .handlers import time_left  # noqa: E402
from .live import LiveHub  # noqa: E402
from .live_page import panel_html  # noqa: E402
from .settings import WebSettings, browser_secret  # noqa: E402

log = logging.getLogger(__name__)

TITLE = "talking-heads"
BROWSER_KEY_STORAGE = "talking-heads-avatar-folder"  # localStorage key holding this browser's private folder key
EXAMPLE_PAINTINGS = (("lp_source_s9.jpg", "Mona Lisa"), ("lp_source_s10.jpg", "Vermeer"),
                     ("avatarify_einstein.jpg", "Einstein"))
LIVE_INTRO = ("Your camera drives the current avatar in real time: press **Start live**, then *Start camera* in the "
              "panel below and allow the camera. Frames go to this server only and come back labelled synthetic. "
              "Look into the camera with a closed mouth for the first seconds: the neutral face motion is measured "
              "from.")
ERROR_SECONDS = 30  # how long an error toast stays (it can be closed earlier)

INTRO = """# talking-heads: animate a portrait
**1.** On *Avatar*, upload a photo of one person (or click an example) and press **Create avatar**.
**2.** On *Animate*, pick a motion, a driving video or a voice and press **Animate**; watch and download the result.
Everything runs on this machine. Every video and image made here is labelled synthetic (metadata and an invisible
watermark: *Verify* checks any file). Do not animate people without their consent."""


# --- helpers for the Gradio layer -----------------------------------------------------------------------

SERVER_PATH = re.compile(r"(?:/[^/\s'\"]+)+/([^/\s'\":,;]+)")  # an absolute path on the server


def _one_line(message: str) -> str:
    """A message for the page on one line, with every server path shortened to the file's own name (upload
    folders, Gradio's temporary folder and its 64-hex hashes are the server's business)."""
    return SERVER_PATH.sub(r"\1", " ".join(str(message).split())) or "the input could not be used"


@contextlib.contextmanager
def page_errors() -> Iterator[None]:
    """User errors become a readable `gr.Error` in the page; anything else is logged and reported in one line
    (never a traceback in the page)."""
    try:
        yield
    except gr.Error:
        raise
    except handlers.USER_ERRORS as err:
        raise gr.Error(_one_line(str(err)), duration=ERROR_SECONDS, print_exception=False) from None
    except Exception as err:  # a bug or an environment problem: the log has the traceback
        log.exception("web job failed")
        raise gr.Error(_one_line(f"something went wrong on the server ({type(err).__name__}: {err}); the server "
                                 "log has the details"), duration=ERROR_SECONDS, print_exception=False) from None


def _warn(messages) -> None:
    for message in messages:
        gr.Warning(_one_line(message), duration=15)


def _status(text: str, warnings=()) -> str:
    lines = [text] + [f"- warning: {w}" for w in warnings]
    return "\n".join(lines)


@contextlib.contextmanager
def eta_relay(progress: gr.Progress, every: float = 0.5) -> Iterator[None]:
    """While the block runs, add the time left to the description of the pipeline's tqdm bars that Gradio
    tracks for this job (`gr.Progress(track_tqdm=True)`), so fine-tuning shows steps *and* an ETA. Best effort:
    if Gradio's progress internals change, the plain bar (steps, elapsed) remains."""
    stop = threading.Event()
    base: dict[int, str] = {}

    def loop() -> None:
        while not stop.wait(every):
            try:
                for item in list(getattr(progress, "iterables", [])):
                    bar = getattr(item, "_tqdm", None)
                    info = getattr(bar, "format_dict", None)
                    if not info or not info.get("total"):
                        continue
                    desc = base.setdefault(id(item), item.desc or "working")
                    item.desc = f"{desc}: {time_left(info['n'], info['total'], info['elapsed'])}"
                if getattr(progress, "iterables", None):
                    progress.update(0)
            except Exception:  # never let the relay break a job
                log.debug("progress relay", exc_info=True)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(loop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "local"


def prepare_examples(settings: WebSettings, folder: Path) -> list[tuple[str, str]]:
    """(path, caption) of the built-in examples: the astronaut (scikit-image, public domain) and, when the real
    footage folder is here, three paintings (copied into the app's own folder, which is what it serves)."""
    folder.mkdir(parents=True, exist_ok=True)
    astronaut = folder / "astronaut.png"
    if not astronaut.is_file():
        Image.fromarray(portrait()).save(astronaut)  # a real photo: no synthetic label
    examples = [(str(astronaut), "Astronaut")]
    if settings.examples_dir:
        photos = Path(settings.examples_dir)
    else:
        data = default_data_dir()
        photos = data / "photos" if data is not None else None
    for name, caption in EXAMPLE_PAINTINGS:
        if photos is not None and (photos / name).is_file():
            shutil.copyfile(photos / name, folder / name)
            examples.append((str(folder / name), caption))
    return examples


# --- the page -------------------------------------------------------------------------------------------

class Page:
    """The components of one app and the callbacks that call `handlers` (one `Page` per server; Gradio keeps
    each session's values apart). `build()` lays out the tabs, then wires the events."""

    def __init__(self, pipe: TalkingHeadPipeline, settings: WebSettings, work_dir: str | Path):
        self.pipe, self.settings, self.cfg = pipe, settings, pipe.cfg
        work_dir = Path(work_dir)
        self.workspace = handlers.Workspace(work_dir, settings.keep_results_minutes * 60)
        self.examples = prepare_examples(settings, work_dir / "examples")
        self.jobs = dict(concurrency_id="jobs", concurrency_limit=settings.max_jobs)  # FF / FT / animate
        self.light = dict(concurrency_id="light", concurrency_limit=max(2, settings.max_jobs))  # previews, files
        self.live = LiveHub(pipe, settings)  # the Live tab's camera page and WebSocket (web/live.py)

    def build(self) -> gr.Blocks:
        keep = int(self.settings.keep_results_minutes * 60)
        with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(max(60, keep // 4), keep)) as demo:
            self.browser_key = gr.BrowserState("", storage_key=BROWSER_KEY_STORAGE,
                                               secret=browser_secret(self.settings))
            self.avatar = gr.State(None)
            gr.Markdown(INTRO, elem_id="intro")
            with gr.Tabs():
                with gr.Tab("1. Avatar", id="avatar", elem_id="tab-avatar"):
                    self._avatar_tab()
                with gr.Tab("2. Animate", id="animate", elem_id="tab-animate"):
                    self._animate_tab()
                with gr.Tab("3. Live", id="live", elem_id="tab-live"):
                    self._live_tab()
                with gr.Tab("4. Verify", id="verify", elem_id="tab-verify"):
                    self._verify_tab()
            model = Path(self.pipe.model_dir).name if self.pipe.model_dir is not None else "in memory"
            renders = ("a TPS renderer: your photo warped by its landmarks, at up to "
                       f"{self.pipe.render_size_for(10**6)} px" if getattr(self.pipe.generator, "needs_points", False)
                       else f"{self.cfg.model.image_size} px")
            gr.Markdown(f"Model: `{model}` ({renders}). Results are kept "
                        f"{self.settings.keep_results_minutes:g} minutes. See docs/web.md.", elem_id="footer")
            self._wire_avatar()
            self._wire_saved()
            self._wire_animate()
            self._wire_live()
            self._wire_verify()
            demo.load(self.on_page_load, [self.browser_key], [self.browser_key, self.saved],
                      api_visibility="private")
            demo.unload(self.on_unload)
        demo.queue(max_size=self.settings.queue_size, default_concurrency_limit=self.settings.max_jobs)
        return demo

    # --- layout -------------------------------------------------------------------------------------------
    def _avatar_tab(self) -> None:
        s = self.settings
        with gr.Row():
            with gr.Column():
                self.sources = gr.File(label=f"Photos of one person (1 to {s.max_photos}) or one video",
                                       file_count="multiple", file_types=["image", "video"], type="filepath",
                                       elem_id="sources")
                self.example_gallery = gr.Gallery(value=self.examples, label="... or click an example", columns=4,
                                                  height=150, allow_preview=False, object_fit="cover",
                                                  interactive=False, fit_columns=False, buttons=[],
                                                  elem_id="examples")
                # the TPS renderer moves the photo itself, so an FF avatar already is the person (measured:
                # docs/benchmarks.md); other models' FF avatars are a look-alike at best, FT is their default
                warps_photo = bool(getattr(self.pipe.generator, "needs_points", False))
                ff = "feed-forward (FF): instant" + (", and it keeps your photo's person (this model moves your "
                                                     "photo itself)" if warps_photo else "")
                ft = "fine-tuned (FT): the paper's fine-tuning on your photos" + ("" if warps_photo else ", best likeness")
                self.mode = gr.Radio([(ft, "ft"), (ff, "ff")], value="ff" if warps_photo else "ft",
                                     label="Kind of avatar", elem_id="mode")
                self.epochs = gr.Slider(1, s.max_epochs, value=self.cfg.finetune.epochs, step=1,
                                        label="Fine-tuning epochs", elem_id="epochs", visible=not warps_photo)
                self.create_btn = gr.Button("Create avatar", variant="primary", elem_id="create")
                with gr.Accordion("Saved avatars", open=False, elem_id="saved-avatars"):
                    self.saved = gr.Dropdown(choices=[], value=None, label="Avatars saved in this browser"
                                             + (" and shared ones" if s.share_dir else ""), elem_id="saved")
                    self.load_btn = gr.Button("Load", elem_id="load")
                    self.save_name = gr.Textbox(label="Save the current avatar as", placeholder="e.g. mona_ft",
                                                elem_id="save-name")
                    self.save_btn = gr.Button("Save", elem_id="save")
            with gr.Column():
                self.faces = gr.Gallery(label="Detected face: the crop and the landmarks the model sees", columns=4,
                                        height=280, allow_preview=False, interactive=False, object_fit="contain",
                                        fit_columns=False, buttons=["fullscreen"], elem_id="faces")
                self.first_frame = gr.Image(label="The avatar: its first rendered frame", type="filepath",
                                            interactive=False, height=280, buttons=["download", "fullscreen"],
                                            elem_id="first-frame")
                self.avatar_status = gr.Markdown(elem_id="avatar-status")

    def _animate_tab(self) -> None:
        s = self.settings
        self.current = gr.Markdown("No avatar yet: make one on the *Avatar* tab.", elem_id="current-avatar")
        with gr.Row():
            with gr.Column():
                self.driver_kind = gr.Radio([("a built-in motion", "motion"),
                                             ("a video: upload one or record with the webcam", "video"),
                                             ("a voice: upload speech or record it (moves the mouth)", "speech")],
                                            value="motion", label="Drive it with", elem_id="driver-kind")
                self.motion = gr.Dropdown([(f"{name}: {desc}", name) for name, (_, desc) in MOTIONS.items()],
                                          value="talk", label="Motion", elem_id="motion")
                self.duration = gr.Slider(0.5, s.max_motion_seconds, value=self.cfg.inference.motion_seconds, step=0.5,
                                          label="Length of the motion (seconds)", elem_id="duration")
                self.driver_video = gr.Video(sources=["upload", "webcam"], include_audio=True, visible=False,
                                             label=f"Driving video (its first {s.max_driver_seconds:g} s are used)",
                                             elem_id="driver-video")
                self.speech_audio = gr.Audio(sources=["upload", "microphone"], type="filepath", visible=False,
                                             label=f"Speech (wav, mp3, m4a; its first {s.max_driver_seconds:g} s are "
                                                   "used): the mouth follows it, the head moves gently",
                                             elem_id="speech-audio")
                with gr.Accordion("Options", open=False, elem_id="options"):
                    self.adapt = gr.Checkbox(True, label="Adapt the driver's motion to the avatar's face shape",
                                             elem_id="adapt")
                    self.reference = gr.Textbox("", label="Reference frame of the driver (its neutral expression, "
                                                "for adaptation)", placeholder="auto: the most neutral frame",
                                                elem_id="reference")
                    self.smooth = gr.Checkbox(False, label="Smooth the driver's landmarks (One Euro filter)",
                                              elem_id="smooth")
                    self.side = gr.Checkbox(False, label="Side by side: driver | result", elem_id="side-by-side")
                    self.paste = gr.Checkbox(False, label="Paste the face back into the whole source photo",
                                             elem_id="paste-back")
                    self.eye_contact = gr.Checkbox(False, label="Eye contact: look at the viewer where the driver "
                                                   "looked near the camera (blinks and quick glances kept)",
                                                   visible=uses_gaze(self.cfg), elem_id="eye-contact")
                self.animate_btn = gr.Button("Animate", variant="primary", elem_id="animate")
            with gr.Column():
                self.video_out = gr.Video(label="Result", autoplay=True, loop=True, interactive=False,
                                          buttons=["download"], elem_id="result")
                self.downloads = gr.File(label="Download: the video (mp4) and its contact sheet (png)",
                                         file_count="multiple", interactive=False, elem_id="downloads")
                self.animate_status = gr.Markdown(elem_id="animate-status")

    def _live_tab(self) -> None:
        gr.Markdown(LIVE_INTRO, elem_id="live-intro")
        with gr.Row():
            self.live_eye_contact = gr.Checkbox(False, label="Eye contact (look at the viewer where you look near the "
                                                "camera)", visible=uses_gaze(self.cfg), elem_id="live-eye-contact")
            self.live_btn = gr.Button("Start live", variant="primary", elem_id="live-start")
        self.live_panel = gr.HTML("", elem_id="live-panel")

    def _verify_tab(self) -> None:
        gr.Markdown("Check any image or video for talking-heads' synthetic labels: the metadata marker and the "
                    "invisible watermark.")
        self.check_in = gr.File(label="An image or a video", file_types=["image", "video"], type="filepath",
                                elem_id="verify-file")
        self.check_btn = gr.Button("Check", elem_id="verify")
        self.check_out = gr.Markdown(elem_id="verify-report")

    # --- events -------------------------------------------------------------------------------------------
    def _wire_avatar(self) -> None:
        self.sources.change(self.on_preview, [self.sources], [self.faces, self.avatar_status], api_name="preview_faces",
                            **self.light)
        self.example_gallery.select(self.on_example, None, [self.sources], api_visibility="private")
        self.mode.change(lambda kind: gr.Slider(visible=kind == "ft"), [self.mode], [self.epochs],
                         api_visibility="private", queue=False)
        inputs = [self.sources, self.mode, self.epochs]
        self.create_btn.click(self.on_start, inputs, [self.faces, self.avatar_status], api_visibility="private",
                              **self.light).success(
            self.on_create, inputs, [self.first_frame, self.avatar_status, self.avatar, self.current],
            api_name="create_avatar", show_progress_on=[self.first_frame], **self.jobs)

    def _wire_saved(self) -> None:
        self.save_btn.click(self.on_save, [self.avatar, self.browser_key, self.save_name], [self.saved],
                            api_name="save_avatar", **self.light)
        self.load_btn.click(self.on_load, [self.saved, self.browser_key],
                            [self.first_frame, self.avatar_status, self.avatar, self.current, self.faces],
                            api_name="load_avatar", **self.light)

    def _wire_animate(self) -> None:
        self.driver_kind.change(self.on_driver_kind, [self.driver_kind],
                                [self.motion, self.duration, self.driver_video, self.speech_audio],
                                api_visibility="private", queue=False)
        self.animate_btn.click(self.on_check_animate, [self.avatar, self.driver_kind, self.driver_video, self.reference,
                                                       self.speech_audio],
                               None, api_visibility="private", **self.light).success(
            self.on_animate, [self.avatar, self.driver_kind, self.motion, self.duration,
                                                 self.driver_video, self.adapt, self.reference, self.smooth, self.side,
                                                 self.paste, self.eye_contact, self.speech_audio],
                                [self.video_out, self.downloads, self.animate_status],
            api_name="animate", show_progress_on=[self.video_out], **self.jobs)

    def _wire_live(self) -> None:
        self.live_btn.click(self.on_live, [self.avatar, self.live_eye_contact], [self.live_panel],
                            api_visibility="private", **self.light)

    def _wire_verify(self) -> None:
        self.check_in.change(self.on_verify, [self.check_in], [self.check_out], api_visibility="private", **self.light)
        self.check_btn.click(self.on_verify, [self.check_in], [self.check_out], api_name="verify", **self.light)

    # --- callbacks (each one handler call; errors to the page) --------------------------------------------
    def on_preview(self, files):
        if not files:
            return [], ""
        with page_errors():
            preview = handlers.preview_faces(self.pipe, files, self.settings)
        _warn(preview.warnings)
        n = len(preview.images)
        return preview.images, _status(f"Face found in {n} frame{'s' if n != 1 else ''}: press **Create avatar**.",
                                       preview.warnings)

    def on_example(self, evt: gr.SelectData):
        return [self.examples[evt.index][0]]

    def on_start(self, files, kind, n_epochs):
        """The face preview again, as the work starts (the next event does the work)."""
        with page_errors():
            preview = handlers.preview_faces(self.pipe, files, self.settings)
        work = f"fine-tuning {int(n_epochs)} epochs" if kind == "ft" else "computing the feed-forward avatar"
        return preview.images, _status(f"Face found; {work} ...", preview.warnings)

    def on_create(self, files, kind, n_epochs, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        with page_errors(), self.workspace.job(_session(request)) as job, eta_relay(progress):
            result = handlers.create_avatar(self.pipe, files, self.settings, job.results, finetune=kind == "ft",
                                            epochs=n_epochs)
        _warn(result.warnings)
        text = f"**Avatar ready**: {result.summary}. Now go to *Animate*."
        return (str(result.first_frame), _status(text, result.warnings), result.avatar,
                f"**Current avatar**: {result.summary}.")

    def on_page_load(self, key):
        if not key or not handlers.BROWSER_KEY.match(str(key)):
            key = handlers.new_browser_key()
        return key, gr.Dropdown(choices=handlers.avatar_choices(self.settings, key), value=None)

    def on_save(self, avatar, key, name):
        with page_errors():
            path, replaced = handlers.save_avatar(avatar, self.settings, key, name)
        gr.Info(f"saved as {path.name}" + (" (replacing the older one)" if replaced else ""))
        return gr.Dropdown(choices=handlers.avatar_choices(self.settings, key), value=f"{handlers.MINE}/{path.name}")

    def on_load(self, choice, key, request: gr.Request):
        with page_errors(), self.workspace.job(_session(request)) as job:
            avatar = handlers.load_avatar(self.pipe, self.settings, key, choice)
            frame = handlers.render_first_frame(self.pipe, avatar, job.results / "avatar_first_frame.png")
        summary = handlers.describe_avatar(avatar)
        return str(frame), f"**Avatar loaded**: {summary}.", avatar, f"**Current avatar**: {summary}.", []

    def on_driver_kind(self, kind):
        motion = kind == "motion"
        return (gr.Dropdown(visible=motion), gr.Slider(visible=motion), gr.Video(visible=kind == "video"),
                gr.Audio(visible=kind == "speech"))

    def on_check_animate(self, avatar, kind, video, reference, speech):
        with page_errors():
            handlers.check_animate(avatar, self.settings, video=video, driven_by_video=kind == "video",
                                   reference_frame=reference, speech=speech, driven_by_speech=kind == "speech")

    def on_animate(self, avatar, kind, motion, seconds, video, adapt, reference, smooth, side, paste, eye_contact,
                   speech=None, request: gr.Request = None, progress=gr.Progress(track_tqdm=True)):
        with page_errors():
            handlers.check_animate(avatar, self.settings, video=video, driven_by_video=kind == "video",
                                   reference_frame=reference, speech=speech, driven_by_speech=kind == "speech")
            with self.workspace.job(_session(request)) as job, eta_relay(progress):
                result = handlers.animate(self.pipe, avatar, self.settings, job,
                                          video=video if kind == "video" else None, motion=motion, duration=seconds,
                                          speech=speech if kind == "speech" else None,
                                          adapt=adapt, reference_frame=reference, smooth=smooth, side_by_side=side,
                                          paste_back=paste, eye_contact=bool(eye_contact))
        _warn(result.warnings)
        return (str(result.result.video), [str(p) for p in result.downloads],
                _status(f"**Done**: {result.summary}.", result.warnings))

    def on_live(self, avatar, eye_contact, request: gr.Request):
        with page_errors():
            if avatar is None:
                raise handlers.WebInputError("no avatar yet: make one on the Avatar tab (or load a saved one) first")
            key = self.live.open(_session(request), avatar, eye_contact=bool(eye_contact))
        return panel_html(key)

    def on_verify(self, path):
        if not path:
            return ""
        with page_errors():
            report = handlers.verify_file(path, self.settings)
        return handlers.report_markdown(report, Path(path).name)

    def on_unload(self, request: gr.Request):
        self.workspace.end_session(_session(request))
        self.live.close_session(_session(request))


def build_app(pipe: TalkingHeadPipeline, settings: WebSettings, work_dir: str | Path) -> gr.Blocks:
    """The Blocks app, not launched yet (`launch` serves its Live page too). `work_dir`: per-session folders and
    the examples."""
    page = Page(pipe, settings, work_dir)
    demo = page.build()
    demo.live_routes = page.live.routes()  # the Live tab's own page and WebSocket, served beside Gradio's
    return demo


def launch(demo: gr.Blocks, settings: WebSettings, work_dir: str | Path, *, block: bool = True, quiet: bool = True):
    """Start the server on settings.host:port; returns Gradio's (app, local_url, share_url). `work_dir` (the one
    given to `build_app`) holds the examples and results Gradio hands to the page."""
    return demo.launch(app_kwargs={"routes": list(getattr(demo, "live_routes", []))}, server_name=settings.host, server_port=settings.port, share=False, inbrowser=False,
                       prevent_thread_lock=not block, quiet=quiet, show_error=False,
                       max_file_size=settings.max_upload_bytes, footer_links=["api", "settings"],
                       ssr_mode=False, pwa=False, mcp_server=False, enable_monitoring=False,
                       allowed_paths=[str(work_dir)], strict_cors=True)


@contextlib.contextmanager
def work_folder(settings: WebSettings) -> Iterator[Path]:
    """settings.work_dir, or a new folder in the system temp dir removed when the server stops."""
    if settings.work_dir:
        path = Path(settings.work_dir).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="talking-heads-web-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def serve(pipe: TalkingHeadPipeline, settings: WebSettings, announce=print) -> None:
    """Build and run the app until interrupted (the `talking-heads web` command)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up checks of the local URL
    with work_folder(settings) as work:
        os.environ.setdefault("GRADIO_TEMP_DIR", str(work / "gradio"))  # uploads and results: removed on exit
        demo = build_app(pipe, settings, work)
        _, url, _ = launch(demo, settings, work, block=False)
        url = url.rstrip("/") + "/" if url else f"http://{settings.host}:{settings.port}/"
        if settings.host in ("127.0.0.1", "localhost", "::1"):
            announce(f"bound to {settings.host}: only this machine can open the page (--host 0.0.0.0 shares it "
                     "on your network)")
        else:
            announce(f"bound to {settings.host}: anyone who can reach this machine on port {settings.port} can use "
                     "the page")
        announce(f"avatars saved from the page go to {Path(settings.avatars_dir).expanduser().resolve()}"
                 + (f"; shared avatars are read from {settings.share_dir}" if settings.share_dir else ""))
        announce(f"talking-heads web: open {url} in a browser (Ctrl+C stops the server)")
        try:
            demo.block_thread()
        finally:
            demo.close()


__all__ = ["Page", "build_app", "launch", "serve", "page_errors", "eta_relay", "time_left", "prepare_examples"]
