"""The Live tab's server side (`web/live.py`) over loopback: its page and WebSocket served by uvicorn as the web
app serves them, the shipped sample model, an FF avatar of a real photo, and the frames of a real test-split
clip sent as the page sends them (JPEG with the page's header). The browser end is in test_web_browser.py."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct
import threading
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from talking_heads.web.live import IN_HEADER, IN_MAGIC, OUT_HEADER, OUT_MAGIC, FrameError, LiveHub, decode_jpeg, parse_frame  # noqa: E402
from talking_heads.web.settings import WebSettings  # noqa: E402

PHOTO = "photos/lp_source_s9.jpg"
CLIP = "videos/test/edtalk_mouth_source.mp4"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _message(frame: np.ndarray, frame_id: int, capture_ms: float = 0.0, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return IN_HEADER.pack(IN_MAGIC, frame_id, capture_ms) + buf.tobytes()


@pytest.fixture(scope="module")
def live_server(shared_data):
    from starlette.applications import Starlette

    from talking_heads.data.video import read_image
    from talking_heads.pipeline import TalkingHeadPipeline

    pipe = TalkingHeadPipeline.from_pretrained()
    avatar = pipe.create_avatar(read_image(shared_data / PHOTO))
    settings = WebSettings(live_sessions=1, live_bad_frames=5)
    hub = LiveHub(pipe, settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=hub.routes()), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield hub, port, pipe, avatar
    server.should_exit = True
    thread.join(timeout=10)


def _frames(shared_data, n: int) -> list[np.ndarray]:
    from talking_heads.data.video import read_frames

    return [cv2.resize(f, (360, 360)) for i, f in read_frames(shared_data / CLIP) if i < n]


async def _exchange(port: int, key: str, messages: list[bytes], *, wait_each: bool = True, timeout: float = 60):
    """Send the messages as the page does (one at a time when wait_each, else all at once); returns the text
    messages and the binary replies received."""
    from websockets.asyncio.client import connect

    texts, replies = [], []
    async with connect(f"ws://127.0.0.1:{port}/live/ws?key={key}", max_size=2 ** 22) as ws:
        texts.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
        for m in messages:
            await ws.send(m)
            if wait_each:
                reply = await asyncio.wait_for(ws.recv(), timeout)
                texts.append(json.loads(reply)) if isinstance(reply, str) else replies.append(reply)
        if not wait_each:
            try:
                while True:
                    reply = await asyncio.wait_for(ws.recv(), 5)
                    texts.append(json.loads(reply)) if isinstance(reply, str) else replies.append(reply)
            except (asyncio.TimeoutError, Exception):
                pass
    return texts, replies


def _decode_reply(reply: bytes) -> tuple[tuple, np.ndarray, bytes]:
    head = OUT_HEADER.unpack_from(reply)
    jpeg = reply[OUT_HEADER.size:]
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    return head, np.ascontiguousarray(image), jpeg


def _opening(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[66] - points[62]) / np.linalg.norm(points[45] - points[36]))


def test_live_socket_renders_the_clip_and_labels_it(live_server, shared_data, tmp_path):
    from talking_heads.landmarks.tracking import FaceTracker
    from talking_heads.provenance import verify

    hub, port, pipe, avatar = live_server
    key = hub.open("session-a", avatar)
    frames = _frames(shared_data, 60)
    texts, replies = asyncio.run(_exchange(port, key, [_message(f, i + 1, 1000.0 + 40 * i)
                                                       for i, f in enumerate(frames)]))
    assert texts[0] == {"ready": True, "output_size": pipe.frame_size(avatar)}
    assert len(replies) == len(frames) and len(texts) == 1
    tracker, avatar_tracker = FaceTracker("dlib"), FaceTracker("dlib")
    driver, rendered = [], []
    for i, (frame, reply) in enumerate(zip(frames, replies)):
        (magic, frame_id, capture_ms, server_ms, dropped, face), image, jpeg = _decode_reply(reply)
        assert magic == OUT_MAGIC and frame_id == i + 1 and capture_ms == 1000.0 + 40 * i and face == 1
        assert image.shape == (pipe.frame_size(avatar),) * 2 + (3,) and server_ms > 0 and dropped == 0
        driver.append(_opening(tracker.update(frame)[0]))
        points = avatar_tracker.update(image)[0]
        rendered.append(_opening(points) if points is not None else np.nan)
    d, r = np.array(driver), np.array(rendered)
    ok = np.isfinite(r)
    assert ok.sum() >= 55 and np.ptp(d) > 0.1
    assert np.corrcoef(d[ok], r[ok])[0, 1] > 0.7  # the avatar's mouth follows the camera's
    (tmp_path / "frame.jpg").write_bytes(jpeg)
    report = verify(tmp_path / "frame.jpg")
    assert report.marker is not None and report.watermark, report


def test_live_newest_frame_wins(live_server, shared_data):
    """A burst of frames sent without waiting: the server drops the stale ones instead of queueing them, and
    the last frame sent is among those rendered."""
    hub, port, _, avatar = live_server
    key = hub.open("session-b", avatar)
    frames = _frames(shared_data, 40)
    _, replies = asyncio.run(_exchange(port, key, [_message(f, i + 1) for i, f in enumerate(frames)],
                                       wait_each=False))
    ids = [OUT_HEADER.unpack_from(r)[1] for r in replies]
    dropped = OUT_HEADER.unpack_from(replies[-1])[4]
    assert ids == sorted(ids) and ids[-1] == len(frames)
    assert len(ids) < len(frames) and dropped == len(frames) - len(ids)


def test_live_refuses_bad_keys_and_bad_frames(live_server, shared_data):
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    hub, port, _, avatar = live_server
    key = hub.open("session-c", avatar)

    async def refused(k: str):
        try:
            async with connect(f"ws://127.0.0.1:{port}/live/ws?key={k}") as ws:
                await asyncio.wait_for(ws.recv(), 10)
        except (InvalidStatus, ConnectionClosed) as err:
            return err
        return None

    assert asyncio.run(refused("not-a-key")) is not None
    hub.open("session-c", avatar)  # a new key for the session ends the old one
    assert asyncio.run(refused(key)) is not None
    key = hub.open("session-c", avatar)
    hub.close_session("session-c")  # the session ended (page closed)
    assert asyncio.run(refused(key)) is not None

    key = hub.open("session-c", avatar)
    bad = [b"hello", IN_HEADER.pack(IN_MAGIC, 1, 0.0) + b"\xff\xd8garbage", b"\x00" * 64,
           IN_HEADER.pack(IN_MAGIC, 2, 0.0) + b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, b"THL1" + b"\x80" * 40]
    texts, replies = asyncio.run(_exchange(port, key, bad, wait_each=False))
    errors = [t["error"] for t in texts if "error" in t]
    assert not replies and errors and errors[-1] == "5 frames could not be used: stopped", texts
    assert any("not an image" in e or "damaged" in e for e in errors)


def test_decode_frame_checks_before_decoding():
    settings = WebSettings(live_max_side=640, live_max_bytes=100_000)
    frame = np.zeros((48, 64, 3), np.uint8)
    frame_id, capture, jpeg = parse_frame(_message(frame, 7, 12.5), settings)
    assert (frame_id, capture, decode_jpeg(jpeg).shape) == (7, 12.5, (48, 64, 3))
    # a JPEG header claiming 60000 x 60000 px is refused from its header (nothing is decoded)
    big = bytearray(_message(np.zeros((64, 64, 3), np.uint8), 1))
    sof = big.index(b"\xff\xc0")
    struct.pack_into(">HH", big, sof + 5, 60000, 60000)
    with pytest.raises(FrameError, match="32 to 640 px a side"):
        parse_frame(bytes(big), settings)
    with pytest.raises(FrameError, match="over the limit"):
        parse_frame(IN_HEADER.pack(IN_MAGIC, 1, 0.0) + b"\0" * 100_000, settings)
    with pytest.raises(FrameError, match="32 to 640"):
        parse_frame(_message(np.zeros((16, 16, 3), np.uint8), 1), settings)
    with pytest.raises(FrameError, match="must be JPEG"):
        buf = io.BytesIO()
        from PIL import Image

        Image.new("RGB", (64, 64)).save(buf, "PNG")
        parse_frame(IN_HEADER.pack(IN_MAGIC, 1, 0.0) + buf.getvalue(), settings)
    with pytest.raises(FrameError, match="damaged"):  # a valid header over garbage: refused when decoded
        decode_jpeg(bytes(big[:sof + 20]) + b"\0" * 10)


def test_live_renderer_choice(live_server, tiny_model_dir):
    """auto: onnxruntime where the pipeline would run torch fp32 on a CPU (faster at batch 1 there), the model's
    own settings elsewhere; the pipeline itself is not changed (its other jobs keep their renderer)."""
    from talking_heads.inference import resolve_precision
    from talking_heads.web.live import live_renderer

    _, _, pipe, _ = live_server
    fp32_cpu = resolve_precision(pipe.cfg.inference.precision, pipe.device) == "fp32"
    chosen = live_renderer(pipe, "auto")
    assert chosen.cfg.inference.backend == ("onnxruntime" if fp32_cpu else "torch")
    assert pipe.cfg.inference.backend == "torch" and live_renderer(pipe, "model") is pipe
    assert chosen.networks is pipe.networks  # the same weights, not a copy
    assert live_renderer(pipe, "onnxruntime").cfg.inference.backend == "onnxruntime"
    with pytest.raises(ValueError, match="live_backend"):
        WebSettings(live_backend="cuda")
