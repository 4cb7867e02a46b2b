"""`talking-heads send`, `receive`, `token` and `telepresence-demo`. Parsing only: the work is in
`talking_heads.telepresence` (sender, receiver, transport, demo) and the pipeline's live stage. Modules that
load torch or PyAV, and asyncio, ssl and the codec, are imported inside the `run_*` functions, so that `talking-heads --help` stays fast."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import webbrowser
from pathlib import Path

from .. import limits
from ..atomic import write_text
from ..paths import input_path, output_dir, output_file
from ..telepresence.settings import TelepresenceConfig
from . import UserError
from .common import check_eye_contact, model_args, onnx_arg, pipeline_from_args, use_onnx_file

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULTS = TelepresenceConfig()


def register(sub: argparse._SubParsersAction) -> None:
    _send_parser(sub)
    _receive_parser(sub)
    t = sub.add_parser("token", help="make a shared token file for send/receive (mode 0600)",
                       description="Writes 32 random bytes (URL-safe base64) to FILE, readable by its owner only. "
                                   "Give the same file to both ends (copy it over a secure channel).")
    t.add_argument("file", metavar="FILE")
    t.add_argument("--force", action="store_true", help="replace an existing token file")
    t.set_defaults(func=run_token)
    _demo_parser(sub)


def _send_parser(sub: argparse._SubParsersAction) -> None:
    d = DEFAULTS
    s = sub.add_parser("send", help="stream face landmarks from a camera or a video to a receiver",
                       description="Tracks 68 face landmarks per frame, encodes them (a few hundred bits per frame) "
                                   "and sends them over a WebSocket to `talking-heads receive`. A video file is "
                                   "played at its own frame rate, as a camera would deliver it.")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", type=int, metavar="N", help="OpenCV camera index")
    src.add_argument("--video", metavar="FILE", help="a video file (or folder of frames) played as a camera")
    src.add_argument("--browser", action="store_true",
                     help="serve a page on this machine whose camera and microphone are sent (open the address "
                          "it prints)")
    s.add_argument("--to", required=True, metavar="HOST:PORT", help="the receiver's address")
    s.add_argument("--token-file", required=True, metavar="F", help="the shared token (talking-heads token F)")
    s.add_argument("--tls-ca", metavar="CERT", default=None,
                   help="use TLS (wss) and trust this certificate (e.g. the receiver's self-signed one)")
    s.add_argument("--tls", action="store_true", help="use TLS (wss) with the system's certificate authorities")
    s.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    s.add_argument("--step", type=float, default=d.step, help=f"quantisation step in px at the crop (default {d.step})")
    s.add_argument("--key-interval", type=int, default=d.key_interval,
                   help=f"frames between key frames (default {d.key_interval})")
    s.add_argument("--no-smooth", action="store_true", help="send the tracked landmarks without One Euro smoothing")
    s.add_argument("--smooth-space", choices=("basis", "points"), default=d.smooth_space,
                   help="smooth the shape basis's motion coefficients (default) or each coordinate (v1's filter)")
    s.add_argument("--packet-version", type=int, choices=(1, 2, 3), default=d.version,
                   help=f"packet format to send (default {d.version}: landmarks and gaze; 2 or 1 for receivers of "
                        "an older release)")
    s.add_argument("--no-basis", action="store_true", help="code point by point instead of on the shape basis")
    s.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="with --browser: where the page is served (default 127.0.0.1, a free port)")
    s.add_argument("--no-voice", action="store_true",
                   help="do not send the video's sound (sent by default as Opus, about 25 kbit/s, when it has one)")
    s.add_argument("--wait", type=float, default=30.0, metavar="S",
                   help="wait this long for a receiver that is not up yet (default 30 s)")
    s.add_argument("--reconnect", type=float, default=60.0, metavar="S",
                   help="after a lost connection, try to reconnect for this long (default 60 s; 0: give up at once)")
    s.set_defaults(func=run_send)


def _receive_parser(sub: argparse._SubParsersAction) -> None:
    d = DEFAULTS
    r = sub.add_parser("receive", help="render an avatar from received landmarks, live (page on the same port)",
                       description="Listens for one sender (WebSocket, shared token), drives the avatar with the "
                                   "received landmarks in real time (stale frames are dropped and counted), serves a "
                                   "page with the live picture, fps, latency and bitrate, and optionally records a "
                                   "labelled mp4. Binds 127.0.0.1 unless told otherwise.")
    r.add_argument("--avatar", required=True, metavar="DIR", help="an avatar directory (talking-heads avatar create)")
    r.add_argument("--listen", default=f"{d.host}:{d.port}", metavar="HOST:PORT",
                   help=f"address to listen on (default {d.host}:{d.port}; port 0: any free port)")
    r.add_argument("--token-file", required=True, metavar="F", help="the shared token (talking-heads token F)")
    r.add_argument("--out", metavar="FILE.mp4", default=None, help="also record what is rendered (labelled synthetic)")
    r.add_argument("--view", action="store_true", help="open the page in a web browser")
    r.add_argument("--once", action="store_true", help="exit when the first sender has finished")
    r.add_argument("--stats", metavar="FILE.json", default=None, help="write the final statistics here")
    r.add_argument("--tls-cert", default=None, metavar="CERT", help="serve TLS (wss/https) with this certificate")
    r.add_argument("--tls-key", default=None, metavar="KEY", help="... and this private key")
    r.add_argument("--no-adapt", action="store_true", help="use the sender's landmarks as they are (the paper)")
    r.add_argument("--reference", choices=("auto", "first"), default=d.reference,
                   help="the sender's neutral face that adaptation measures motion from: auto (default: the most "
                        "neutral face of the stream's first 3 s, as `animate` picks it) or the first face frame")
    r.add_argument("--smooth", action="store_true", help="One Euro smoothing at the receiver too")
    r.add_argument("--eye-contact", action="store_true",
                   help="turn the sender's sustained gaze towards the camera (blinks and quick glances kept; for "
                        "models that render gaze, e.g. --model tps)")
    r.add_argument("--max-senders", type=int, default=d.max_senders, help=f"senders at once (default {d.max_senders})")
    model_args(r)
    onnx_arg(r)
    r.set_defaults(func=run_receive)


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("telepresence-demo", help="sender and receiver on loopback with a test-split video",
                       description="Runs a receiver and a sender on 127.0.0.1 with a test-split video of "
                                   "../shared/data and an avatar, and writes OUT/side_by_side.mp4 (original | what "
                                   "the receiver rendered), OUT/received.mp4 and OUT/stats.json; prints bitrate, "
                                   "fps and latency.")
    m.add_argument("--video", default=None, metavar="FILE",
                   help="driving video (default: a test-split clip of ../shared/data or $TALKING_HEADS_DATA)")
    m.add_argument("--avatar", default=None, metavar="DIR",
                   help="avatar directory (default: outputs/demo/avatar_astronaut from `make demo` when present, "
                        "else a new FT avatar of the astronaut portrait)")
    m.add_argument("--epochs", type=int, default=None, help="FT epochs for a new avatar (default finetune.epochs)")
    m.add_argument("--seconds", type=float, default=10.0, help="stream at most this many seconds (default 10)")
    m.add_argument("--out", default="outputs/telepresence", help="output folder (default outputs/telepresence)")
    m.add_argument("--step", type=float, default=DEFAULTS.step, help=f"quantisation step (default {DEFAULTS.step})")
    model_args(m)
    m.set_defaults(func=run_demo)


def run_token(args: argparse.Namespace) -> int:
    from ..telepresence.access import write_token_file

    path = write_token_file(args.file, force=args.force)
    print(f"token: {path} (mode 0600; give the same file to `send` and `receive`)")
    return 0


def run_send(args: argparse.Namespace) -> int:
    import threading

    from ..telepresence.access import client_ssl, parse_address, read_token_file
    from ..telepresence.codec import check_key_interval, check_step
    from ..telepresence.sender import CameraSource, FileSource, Reconnect, send
    from ..telepresence.voice import file_voice

    check_step(args.step, "--step")
    check_key_interval(args.key_interval, "--key-interval")
    limits.check_seconds(args.seconds, "--seconds")
    for name in ("wait", "reconnect"):
        if not 0 <= getattr(args, name) <= 24 * 3600:
            raise UserError(f"--{name} must be between 0 and 86400 seconds")
    host, port = parse_address(args.to)
    token = read_token_file(args.token_file)
    tls = client_ssl(args.tls_ca) if (args.tls_ca or args.tls) else None
    settings = dataclasses.replace(DEFAULTS, step=args.step, key_interval=args.key_interval,
                                   smooth=not args.no_smooth, use_basis=not args.no_basis,
                                   smooth_space=args.smooth_space, version=args.packet_version)
    stop = threading.Event()
    say = lambda line: print(f"send: {line}", file=sys.stderr, flush=True)  # noqa: E731
    reconnect = Reconnect(args.wait, args.reconnect)
    if args.browser:
        stats, signum = until_signal(lambda _: _send_browser(args, host, port, token, settings, tls, stop, reconnect,
                                                             say), on_signal=stop.set)
        print(f"sent: {stats.summary()}")
        return _signal_exit(signum)
    source = CameraSource(args.camera, seconds=args.seconds) if args.camera is not None \
        else FileSource(args.video, seconds=args.seconds)
    print(f"sending {'camera ' + str(args.camera) if args.camera is not None else args.video} at {source.fps:g} fps "
          f"to {'wss' if tls else 'ws'}://{host}:{port}", flush=True)
    voice = None if args.no_voice or args.video is None else file_voice(args.video)
    stats, signum = until_signal(lambda _: send(source, host, port, token, settings=settings, ssl_context=tls,
                                                stop=stop, reconnect=reconnect, say=say, voice=voice),
                                 on_signal=stop.set)
    print(f"sent: {stats.summary()}")
    return _signal_exit(signum)


async def _send_browser(args, host: str, port: int, token: str, settings, tls, stop, reconnect, say):
    """`send --browser`: the capture page on --listen, its camera and microphone sent until the page leaves."""
    import asyncio
    import threading

    from ..telepresence.access import parse_address
    from ..telepresence.browser_sender import BrowserSource, CapturePage
    from ..telepresence.sender import send

    page_host, page_port = parse_address(args.listen)
    if not getattr(args, "verbose", False):  # the page's server would log every connection
        logging.getLogger("websockets").setLevel(logging.WARNING)
    source = BrowserSource(seconds=args.seconds)
    page = CapturePage(source)
    try:
        bound = await page.start(page_host, page_port)
    except OSError as err:
        raise UserError(f"cannot serve the page on {args.listen} ({err.strerror or err})") from None
    print(f"page: http://{page_host}:{bound}/?key={page.key} (open it, press Start and allow the camera and the "
          f"microphone); sending to {'wss' if tls else 'ws'}://{host}:{port}", flush=True)
    loop = asyncio.get_running_loop()

    def end_on_stop() -> None:  # a signal: the page's source ends, so the stream does
        stop.wait()
        try:
            loop.call_soon_threadsafe(source.end)
        except RuntimeError:  # the loop has already finished
            pass

    threading.Thread(target=end_on_stop, daemon=True).start()
    try:
        return await send(source, host, port, token, settings=settings, ssl_context=tls, stop=stop,
                          reconnect=reconnect, say=say, voice=None if args.no_voice else source.voice())
    finally:
        await page.close()


def until_signal(make, on_signal=None):
    """Run the coroutine `make(stop)` (stop: an asyncio.Event) with the first SIGINT or SIGTERM setting `stop`
    (and calling `on_signal`), so the command ends cleanly: recordings and statistics written, the stream's end
    sent. A second signal interrupts at once. Returns (result, the signal number or None)."""
    import asyncio
    import signal

    caught: list[int] = []

    async def main():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def handle(signum: int) -> None:
            caught.append(signum)
            print(f"\n{signal.Signals(signum).name}: stopping (again to interrupt at once)", file=sys.stderr, flush=True)
            for s in (signal.SIGINT, signal.SIGTERM):  # the next one acts at once
                loop.remove_signal_handler(s)
            stop.set()
            if on_signal is not None:
                on_signal()

        for s in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(s, handle, s)
        try:
            return await make(stop)
        finally:
            for s in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(s)

    result = asyncio.run(main())
    return result, (caught[0] if caught else None)


def _signal_exit(signum: int | None) -> int:
    """The README's exit codes after a clean stop: 130 after Ctrl-C, 143 after SIGTERM, else 0."""
    return 0 if signum is None else 128 + int(signum)


def run_receive(args: argparse.Namespace) -> int:
    from ..telepresence.access import parse_address, read_token_file, server_ssl
    from ..avatar import Avatar
    from ..live import require_landmarks
    from ..telepresence.basis import known_bases
    from ..telepresence.receiver import Receiver

    if args.out is not None:
        output_file(args.out, "--out", suffixes=[".mp4"])
    if args.max_senders < 1:
        raise UserError("--max-senders must be at least 1")
    host, port = parse_address(args.listen)
    token = read_token_file(args.token_file)
    tls = server_ssl(args.tls_cert, args.tls_key)
    if not getattr(args, "verbose", False):  # one log line per refused connection would let a flood fill the disk
        logging.getLogger("websockets").setLevel(logging.WARNING)
    pipe = pipeline_from_args(args)
    check_eye_contact(pipe, args)
    avatar = Avatar.load(args.avatar, pipe)
    if not args.no_adapt:
        require_landmarks(avatar)
    use_onnx_file(pipe, avatar, args)
    settings = dataclasses.replace(DEFAULTS, host=host, port=port, max_senders=args.max_senders,
                                   eye_contact=args.eye_contact, reference=args.reference)
    receiver = Receiver(pipe, avatar, settings=settings, bases=known_bases(), adapt=not args.no_adapt,
                        smooth=args.smooth, out=args.out, once=args.once)
    try:
        stats, signum = until_signal(lambda stop: receiver.run(token, host=host, port=port, ssl_context=tls, stop=stop,
                                                               ready=_announce(host, tls is not None, args.view)))
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None
    if args.stats:
        write_text(args.stats, json.dumps(stats, indent=2, default=list))
    print(f"received: {stats['decoded']} frames decoded, {stats['rendered']} rendered, {stats['dropped']} dropped as "
          f"stale, {stats['bad_packets']} bad packets; {stats['bytes']} codec bytes, {stats['voice_packets']} voice "
          f"packets ({stats['voice_bytes']} bytes), {stats['wire_bytes']} bytes with the WebSocket framing"
          + (f"; recording: {args.out} ({stats['recorded']} frames)" if args.out else ""))
    return _signal_exit(signum)


def _announce(host: str, tls: bool, view: bool):
    """The receiver's `ready(port, key)` callback: where it listens, the page's address (opened with --view)."""
    def ready(bound: int, key: str) -> None:
        where = "loopback only" if host in LOOPBACK else "REACHABLE FROM OTHER MACHINES"
        print(f"listening on {host}:{bound} ({where}); sender URL {'wss' if tls else 'ws'}://{host}:{bound}/send",
              flush=True)
        if host not in LOOPBACK and not tls:
            print("warning: no TLS (--tls-cert/--tls-key): landmarks and the page travel unencrypted", file=sys.stderr)
        page = f"{'https' if tls else 'http'}://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{bound}/?key={key}"
        print(f"page: {page}", flush=True)
        if view:
            webbrowser.open(page)
    return ready


def run_demo(args: argparse.Namespace) -> int:
    from ..telepresence.codec import check_step
    from ..avatar import Avatar
    from ..data.video import probe
    from ..demo import default_data_dir, portrait
    from ..telepresence.demo import DEMO_VIDEO, run_telepresence_demo

    # every option and the driving video are checked before a minute of fine-tuning
    check_step(args.step, "--step")
    limits.check_seconds(args.seconds, "--seconds")
    limits.check_epochs(args.epochs, "--epochs")
    video = args.video
    if video is None:
        data = default_data_dir()
        if data is None or not (data / DEMO_VIDEO).is_file():
            raise UserError("no driving video: pass --video FILE (the test-split clips of ../shared/data or "
                            "$TALKING_HEADS_DATA are not here)")
        video = data / DEMO_VIDEO
    input_path(video, "--video")
    probe(video)  # a file that is not a video fails here, before the avatar's fine-tuning
    if args.avatar is not None and not Path(args.avatar).is_dir():
        raise UserError(f"--avatar {args.avatar}: no such avatar directory (make one with `talking-heads avatar "
                        "create`)")
    output_dir(args.out, "--out", inputs=[video, args.avatar])
    pipe = pipeline_from_args(args)
    default_avatar = Path("outputs/demo/avatar_astronaut")
    if args.avatar is not None:
        avatar = Avatar.load(args.avatar, pipe)
        what = args.avatar
    elif (default_avatar / "config.json").is_file():
        avatar = Avatar.load(default_avatar, pipe)
        what = str(default_avatar)
    else:
        avatar = pipe.create_avatar(portrait(), finetune=True, epochs=args.epochs)
        avatar.save(Path(args.out) / "avatar_astronaut")
        what = f"a new FT avatar of the astronaut portrait ({Path(args.out) / 'avatar_astronaut'})"
    print(f"avatar: {what}; driver: {video}", flush=True)
    settings = dataclasses.replace(DEFAULTS, step=args.step)
    result = run_telepresence_demo(pipe, avatar, video, args.out, settings=settings, seconds=args.seconds)
    print(result.summary())
    print(f"side by side (original | received): {result.side_by_side}")
    print(f"receiver's recording: {result.received}; statistics: {result.stats}")
    print("every output carries a synthetic marker and watermark: check with `talking-heads verify FILE`")
    return 0
