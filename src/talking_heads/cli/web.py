"""`talking-heads web`: the web app. Parsing only: the work is `talking_heads.web.app.serve`."""

from __future__ import annotations

import argparse
import errno
import socket
from pathlib import Path

from ..web.settings import WebSettings
from . import UserError
from .common import model_args, pipeline_from_args

DEFAULTS = WebSettings()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("web", help="a web page to create, animate, download and verify avatars",
                       description="Starts the web app (Gradio) on this machine: create an avatar from photos or a "
                                   "video (FF or FT), drive it with a built-in motion, a video or the webcam, "
                                   "watch and download the result, and check any file's synthetic label. Offline; "
                                   "bound to 127.0.0.1 unless --host says otherwise. See docs/web.md.")
    model_args(p)
    p.add_argument("--host", default=DEFAULTS.host,
                   help=f"address to bind (default {DEFAULTS.host}: only this machine; 0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=DEFAULTS.port, help=f"port (default {DEFAULTS.port})")
    p.add_argument("--share-dir", default=None, metavar="DIR",
                   help="folder of avatar directories every visitor may load (read-only), e.g. made with "
                        "`talking-heads avatar create -o DIR/NAME --finetune`")
    p.add_argument("--avatars-dir", default=DEFAULTS.avatars_dir, metavar="DIR",
                   help=f"where avatars saved from the page go, one private folder per browser "
                        f"(default {DEFAULTS.avatars_dir})")
    p.add_argument("--work-dir", default=None, metavar="DIR",
                   help="per-session temporary files (default: a new folder in the system temp dir, removed on exit)")
    p.add_argument("--max-jobs", type=int, default=DEFAULTS.max_jobs, metavar="N",
                   help=f"avatar / animation jobs running at once; more wait in line (default {DEFAULTS.max_jobs})")
    p.add_argument("--queue-size", type=int, default=DEFAULTS.queue_size, metavar="N",
                   help=f"jobs that may wait in line (default {DEFAULTS.queue_size})")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULTS.max_upload_mb, metavar="MB",
                   help=f"largest upload (default {DEFAULTS.max_upload_mb:g})")
    p.add_argument("--max-driver-seconds", type=float, default=DEFAULTS.max_driver_seconds, metavar="S",
                   help="longer driving videos are cut to this, with a warning "
                        f"(default {DEFAULTS.max_driver_seconds:g})")
    p.set_defaults(func=run)


def _check_can_listen(host: str, port: int) -> None:
    """UserError unless this machine can listen on host:port now: a name that does not resolve, an address
    of another machine or a port in use is refused before anything is loaded or written."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as err:
        raise UserError(f"--host {host}: not a known name or address ({getattr(err, 'strerror', None) or err})"
                        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} is already in use on {host}: choose another with --port") from None
            if err.errno == errno.EADDRNOTAVAIL:
                raise UserError(f"--host {host}: not an address of this machine (use 127.0.0.1, or 0.0.0.0 for "
                                "every interface)") from None
            raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None


def run(args: argparse.Namespace) -> int:
    try:
        settings = WebSettings(host=args.host, port=args.port, share_dir=args.share_dir or "",
                               avatars_dir=args.avatars_dir, work_dir=args.work_dir or "", max_jobs=args.max_jobs,
                               queue_size=args.queue_size, max_upload_mb=args.max_upload_mb,
                               max_driver_seconds=args.max_driver_seconds)
    except ValueError as err:  # "max_jobs must be ..." -> "--max-jobs must be ..."
        field, _, rest = str(err).partition(" ")
        raise UserError(f"--{field.replace('_', '-')} {rest}") from None
    if settings.share_dir and not Path(settings.share_dir).is_dir():
        raise UserError(f"--share-dir {settings.share_dir}: no such folder")
    try:
        from ..web.app import serve  # gradio: an optional dependency, loaded only here
    except ModuleNotFoundError as err:
        if err.name not in ("gradio", "gradio_client"):
            raise
        raise UserError("the web app needs gradio: run `make setup`, or pip install 'talking-heads[web]'") from None
    _check_can_listen(settings.host, settings.port)
    pipe = pipeline_from_args(args)

    try:
        serve(pipe, settings, announce=lambda line: print(line, flush=True))
    except OSError as err:  # e.g. the port is taken
        if "empty port" in str(err):
            raise UserError(f"port {settings.port} is already in use on {settings.host}: choose another with "
                            "--port") from None
        raise UserError(f"cannot start the server on {settings.host}:{settings.port} ({err})") from None
    return 0
