"""Reading footage: video files of any container, size and frame rate (PyAV/FFmpeg), and folders of frames.

A "clip" is either a video file (`VIDEO_EXTENSIONS`) or a folder holding image files (`IMAGE_EXTENSIONS`,
frames in natural sort order: 2.jpg before 10.jpg). Frames come out as RGB uint8 (H,W,3), rotated upright
when the container carries a display rotation (phone footage). A folder of frames has no frame rate of its
own: `FRAMES_FPS` (25, the VoxCeleb2 rate) unless the caller gives one.

Errors: anything that cannot be read at all raises `VideoError` (a ValueError) whose message names the file
and the reason (empty file, not a video, no video stream, no decodable frame, unreadable folder). A video
that breaks part-way (truncated download) yields the frames before the damage and records a warning.
"""

from __future__ import annotations

import os
import re
import warnings as py_warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .. import limits
from ..errors import InputError
from ..paths import is_special

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
FRAMES_FPS = 25.0  # frame rate assumed for folders of frames (VoxCeleb2)


class VideoError(InputError):
    """The input cannot be read as footage; the message says which file and why."""


@dataclass
class VideoInfo:
    """What `probe` finds out without decoding the whole clip."""

    path: str
    kind: str  # "video" or "frames"
    width: int  # upright frame size (after display rotation)
    height: int
    fps: float
    num_frames: int  # from the container header (or the file count); 0 when unknown
    duration: float  # seconds (num_frames / fps when the container has no duration)
    has_audio: bool
    codec: str = ""
    rotation: int = 0  # degrees counter-clockwise applied to decoded frames to make them upright
    warnings: list[str] = field(default_factory=list)


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside `folder`, natural sort order. Raises VideoError when unreadable."""
    folder = Path(folder)
    try:
        names = os.listdir(folder)
    except OSError as err:
        raise VideoError(f"{folder}: cannot list folder ({err.strerror or err})") from None
    files = [folder / n for n in names if is_image_file(n) and not n.startswith(".")]
    return sorted(files, key=lambda p: _natural_key(p.name))


def is_frames_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    try:
        return path.is_dir() and any(is_image_file(n) for n in os.listdir(path))
    except OSError:
        return False


def even_indices(num_frames: int, max_frames: int | None) -> list[int]:
    """At most `max_frames` indices spread evenly over range(num_frames) (all of them when 0/None)."""
    if not max_frames or max_frames >= num_frames:
        return list(range(num_frames))
    return sorted({int(round(i * (num_frames - 1) / max(1, max_frames - 1))) for i in range(max_frames)})


# --- video files -------------------------------------------------------------------------------------

def _file_size(path: Path, as_folder: str = "no such file") -> int:
    """The size of `path`, which must be a regular, non-empty file (`as_folder`: what a folder there is
    called); VideoError saying what it is otherwise."""
    if is_special(path):
        raise VideoError(f"{path}: not a regular file (a FIFO, socket or device, which could block for ever)")
    if path.is_dir():
        raise VideoError(f"{path}: {as_folder}")
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    return size


def _open(path: Path):
    size = _file_size(path, as_folder="is a folder with no image files, not a video")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise VideoError(f"{path}: not a readable video ({_reason(err)}); is the file complete "
                         f"({size} bytes) and really a video?") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: the file has no video stream")
    ctx = container.streams.video[0].codec_context
    try:  # the header's frame size, before any frame is decoded (a tiny file can claim 65535 x 65535)
        limits.check("video_frame_pixels", int(ctx.width or 0) * int(ctx.height or 0),
                     f"{path} (frames of {ctx.width} x {ctx.height} pixels)")
    except limits.LimitError as err:
        container.close()
        raise VideoError(str(err)) from None
    return container


def _reason(err: Exception) -> str:
    text = getattr(err, "strerror", None) or str(err).strip()
    return text.split(": '")[0] if text else type(err).__name__


def _rotation_of(frame) -> int:
    """Display rotation of a decoded frame, in degrees counter-clockwise to apply (multiple of 90)."""
    try:
        rot = float(frame.rotation or 0)
    except Exception:  # older PyAV without VideoFrame.rotation
        return 0
    return int(round(rot / 90.0)) % 4 * 90


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    return image if rotation == 0 else np.ascontiguousarray(np.rot90(image, k=rotation // 90))


def probe(path: str | os.PathLike, frames_fps: float = FRAMES_FPS) -> VideoInfo:
    """Frame rate, upright size, frame count, audio presence of a video file or a folder of frames."""
    path = Path(path)
    if path.is_dir():
        return _probe_frames(path, frames_fps)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        n = int(stream.frames or 0)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6
        else:
            duration = n / fps if fps else 0.0
        if n == 0 and fps and duration:
            n = int(round(duration * fps))
        w, h = stream.codec_context.width, stream.codec_context.height
        rotation = 0
        try:  # the first frame tells the display rotation (and proves that something decodes)
            first = next(container.decode(stream))
            rotation = _rotation_of(first)
            w, h = first.width, first.height
        except StopIteration:
            raise VideoError(f"{path}: the video stream holds no decodable frame") from None
        except Exception as err:  # av errors: corrupt or truncated
            raise VideoError(f"{path}: cannot decode the first frame ({_reason(err)}); corrupt or truncated?") from None
        if rotation in (90, 270):
            w, h = h, w
        return VideoInfo(str(path), "video", int(w), int(h), fps or FRAMES_FPS, n, duration,
                         bool(container.streams.audio), stream.codec_context.name, rotation)
    finally:
        container.close()


def _probe_frames(folder: Path, fps: float) -> VideoInfo:
    files = list_frame_files(folder)
    if not files:
        raise VideoError(f"{folder}: folder holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    warnings = []
    for f in files[:5]:  # size from the first readable frame
        try:
            img = read_image(f)
            break
        except VideoError as err:
            warnings.append(str(err))
    else:
        raise VideoError(f"{folder}: none of the first frames can be read ({warnings[-1]})")
    audio = any(folder.with_suffix(s).exists() for s in (".mp3", ".wav", ".m4a", ".aac"))
    return VideoInfo(str(folder), "frames", int(img.shape[1]), int(img.shape[0]), float(fps), len(files),
                     len(files) / fps, audio, "images", 0, warnings)


def read_frames(path: str | os.PathLike, indices: Iterable[int] | None = None, *, threads: int = 0,
                warnings: list[str] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, RGB uint8 frame) for a video file or a folder of frames.

    indices: sorted frame indices to keep (None = all); the video is still decoded sequentially, only the
    RGB conversion is skipped for the others. threads: decoder threads (0 = FFmpeg's choice; 1 inside
    worker pools). A video that breaks part-way stops early and appends a message to `warnings`; one that
    yields no frame at all raises VideoError.
    """
    path = Path(path)
    warnings = warnings if warnings is not None else []
    keep = None if indices is None else sorted(set(int(i) for i in indices))
    if path.is_dir():
        yield from _read_frame_files(path, keep, warnings)
        return
    yield from _read_video(path, keep, threads, warnings)


def _read_video(path: Path, keep: list[int] | None, threads: int, warnings: list[str]):
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        wanted = None if keep is None else set(keep)
        last = -1 if keep is None else keep[-1]
        i, produced = -1, 0
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except Exception as err:  # av.FFmpegError and friends: damaged data
                if produced == 0 and i < 0:
                    raise VideoError(f"{path}: cannot decode ({_reason(err)}); corrupt or truncated?") from None
                warnings.append(f"decoding stopped after frame {i} ({_reason(err)}): file truncated or damaged")
                break
            i += 1
            if wanted is not None and i not in wanted:
                if i > last:
                    break
                continue
            image = frame.to_ndarray(format="rgb24")
            yield i, _upright(image, _rotation_of(frame))
            produced += 1
        if i < 0:
            raise VideoError(f"{path}: the video stream holds no decodable frame")
        expected = int(stream.frames or 0)
        if expected and i + 1 < expected and (keep is None or keep[-1] > i):
            if not any(w.startswith("decoding stopped") for w in warnings):
                warnings.append(f"only {i + 1} of {expected} frames could be decoded: file truncated or damaged")
    finally:
        container.close()


def _read_frame_files(folder: Path, keep: list[int] | None, warnings: list[str]):
    files = list_frame_files(folder)
    if not files:
        raise VideoError(f"{folder}: folder holds no image files")
    produced = 0
    for i in (range(len(files)) if keep is None else [k for k in keep if k < len(files)]):
        try:
            image = read_image(files[i])
        except VideoError as err:
            warnings.append(f"frame {i} skipped: {err}")
            continue
        produced += 1
        yield i, image
    if produced == 0:
        raise VideoError(f"{folder}: no frame could be read")


# --- still images ------------------------------------------------------------------------------------

def read_image(path: str | os.PathLike) -> np.ndarray:
    """Any still image file -> RGB uint8 (H,W,3): grayscale, palette, RGBA (composited on white), 16-bit,
    float, CMYK and EXIF-rotated images are all converted. Raises VideoError with the reason."""
    path = Path(path)
    _file_size(path)
    try:
        with py_warnings.catch_warnings():
            py_warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # large photos are expected
            with Image.open(path) as img:  # reads the header only: the size is known before decoding
                w, h = img.size
                try:
                    limits.check("image_pixels", w * h, f"{path} ({w} x {h} pixels)")
                except limits.LimitError as err:
                    raise VideoError(f"{err} (a decompression bomb, or a photo to downscale first)") from None
                img = ImageOps.exif_transpose(img)
                return to_rgb_uint8(img)
    except Image.DecompressionBombError:
        raise VideoError(f"{path}: the image is too large to decode safely (over {Image.MAX_IMAGE_PIXELS * 2} "
                         "pixels); downscale it first") from None
    except MemoryError:
        raise VideoError(f"{path}: not enough memory to decode this image; downscale it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise VideoError(f"{path}: not a readable image ({err})") from None


def to_rgb_uint8(image) -> np.ndarray:
    """PIL image or numpy array (HxW, HxWx1/2/3/4; uint8, uint16, int, bool or float in [0,1]) -> RGB uint8.

    Transparency is composited on white (photos with a cut-out background look natural that way).
    """
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            image = np.asarray(image)
        else:
            if image.mode == "P":
                image = image.convert("RGBA")
            if image.mode not in ("RGB", "RGBA", "L", "LA"):
                image = image.convert("RGBA" if "A" in image.mode else "RGB")
            image = np.asarray(image)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (2, 3, 4)) or min(arr.shape[:2]) < 1:
        raise VideoError(f"not an image array: shape {arr.shape}")
    arr = _to_uint8(arr)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.shape[2] in (2, 4):  # gray+alpha or RGBA: composite on white
        alpha = arr[:, :, -1:].astype(np.float32) / 255.0
        colour = arr[:, :, :-1].astype(np.float32)
        if colour.shape[2] == 1:
            colour = np.repeat(colour, 3, axis=2)
        arr = np.clip(colour * alpha + 255.0 * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Samples of any depth -> uint8: uint16 is 16-bit; floats are [0,1] (or [0,255] / 16-bit when larger);
    other integers are 8-bit unless their maximum says 16-bit (PIL's 32-bit mode for 16-bit PNGs)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr.astype(np.float64))
        hi = float(arr.max()) if arr.size else 1.0
        scale = 255.0 if hi <= 1.0 + 1e-6 else (1.0 if hi <= 255.0 else 1.0 / 257.0)
        return np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        sixteen = arr.dtype == np.uint16 or (arr.size and int(arr.max()) > 255)
        if sixteen:
            return np.clip(arr.astype(np.float64) / 257.0 + 0.5, 0, 255).astype(np.uint8)
        return np.clip(arr, 0, 255).astype(np.uint8)
    raise VideoError(f"unsupported image dtype {arr.dtype}")
