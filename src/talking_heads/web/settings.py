"""The web app's own settings (`talking-heads web` options). The model's settings stay in `talking_heads.config`:
the page reads its defaults (fine-tuning epochs, motion length, T frames of a video) from the loaded model's Config.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from pathlib import Path


@dataclass
class WebSettings:
    """Server, limits and folders of the web app; one trailing comment per field (docs/web.md lists them)."""

    host: str = "127.0.0.1"  # address to bind: 127.0.0.1 = only this machine; 0.0.0.0 = every network interface
    port: int = 7860  # TCP port of the page
    share_dir: str = ""  # folder of avatar directories every visitor may load (read-only); "" = none
    avatars_dir: str = "outputs/web/avatars"  # avatars saved from the page: one private folder per browser
    work_dir: str = ""  # per-session and per-job temporary files; "" = a new folder in the system temp dir
    max_jobs: int = 1  # avatar / animation jobs running at once (all visitors together); the rest wait in line
    queue_size: int = 16  # jobs that may wait in line; more are refused with a message
    max_upload_mb: float = 50.0  # largest file accepted (photo, video, file to verify)
    max_photos: int = 8  # photos per avatar (1 to this many, or one video)
    max_image_megapixels: float = 40.0  # larger photos are refused before they are decoded (memory)
    max_driver_seconds: float = 60.0  # driving videos longer than this are cut to it, with a warning
    max_motion_seconds: float = 20.0  # longest built-in motion the duration slider offers
    max_epochs: int = 200  # most fine-tuning epochs the slider offers (its default is the model's finetune.epochs)
    keep_results_minutes: float = 60.0  # results and uploads stay downloadable this long, then are deleted
    live_sessions: int = 2  # Live tab: pages driving an avatar with their camera at once (more are refused)
    live_in_flight: int = 2  # Live tab: camera frames a page keeps unanswered (more: it skips camera frames)
    live_send_width: int = 480  # Live tab: px width of the camera frames the page sends (JPEG)
    live_send_quality: float = 0.8  # Live tab: JPEG quality (0-1) of those frames
    live_jpeg_quality: int = 85  # Live tab: JPEG quality (1-100) of the avatar's frames sent back
    live_max_bytes: int = 2_000_000  # Live tab: larger frame messages are refused
    live_max_side: int = 1920  # Live tab: camera frames larger than this (px a side) are refused before decoding
    live_bad_frames: int = 25  # Live tab: unusable frames that stop a session
    live_backend: str = "auto"  # Live tab renderer: "auto" (onnxruntime where torch would run fp32 on a CPU), "torch", "onnxruntime", "model" (the model's own)
    examples_dir: str = ""  # photos for the painting examples; "" = $TALKING_HEADS_DATA or ../shared/data, photos/

    def __post_init__(self) -> None:
        for name in ("max_jobs", "queue_size", "max_photos", "max_epochs", "live_sessions", "live_in_flight",
                     "live_send_width", "live_jpeg_quality", "live_max_bytes", "live_max_side", "live_bad_frames"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_upload_mb", "max_image_megapixels", "max_driver_seconds", "max_motion_seconds",
                     "keep_results_minutes", "live_send_quality"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.live_backend not in ("auto", "torch", "onnxruntime", "model"):
            raise ValueError(f"live_backend must be auto, torch, onnxruntime or model, got {self.live_backend!r}")
        if not 0 <= int(self.port) < 65536:
            raise ValueError(f"port must be in 0..65535, got {self.port}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def replace(self, **changes) -> "WebSettings":
        return dataclasses.replace(self, **changes)


def browser_secret(settings: WebSettings) -> str:
    """The key that encrypts the browser's avatar-folder key, kept beside the avatars so it survives restarts."""
    root = Path(settings.avatars_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".browser-secret"
    if not path.is_file():
        path.write_text(secrets.token_hex(16))
        path.chmod(0o600)
    return path.read_text().strip()


__all__ = ["WebSettings", "browser_secret"]
