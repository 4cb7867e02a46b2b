"""The web app's API through `gradio_client`: the real server (in this process, on a free loopback port) and the
real pipeline with the shipped sample model; two clients are two users. Every TCP connection made while the
tests run is recorded: none may leave the machine."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio", reason="the web app needs gradio (make setup installs it)")
gradio_client = pytest.importorskip("gradio_client")

pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),  # inside Gradio's queue (pandas 3)
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

PHOTO = "photos/lp_source_s9.jpg"
UPLOAD_MB = 5  # the server's upload limit in these tests
CONNECTIONS: list[tuple] = []  # (host, port) of every TCP connect while the module runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def record_connections():
    original = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            CONNECTIONS.append(tuple(address[:2]))
        return original(self, address)

    socket.socket.connect = connect
    try:
        yield
    finally:
        socket.socket.connect = original


@pytest.fixture(scope="module")
def server(shared_data, tmp_path_factory, record_connections):
    from talking_heads.pipeline import TalkingHeadPipeline
    from talking_heads.web.app import build_app, launch
    from talking_heads.web.settings import WebSettings

    root = tmp_path_factory.mktemp("web")
    settings = WebSettings(port=_free_port(), max_upload_mb=UPLOAD_MB, avatars_dir=str(root / "avatars"),
                           work_dir=str(root / "work"))
    demo = build_app(TalkingHeadPipeline.from_pretrained(), settings, root / "work")
    _, url, _ = launch(demo, settings, root / "work", block=False)
    yield url, settings, root
    demo.close()


def _client(url):
    return gradio_client.Client(url, verbose=False, download_files=False)


def _path(value) -> Path:
    """A file output as the client returns it (a path, or a dict with one)."""
    if isinstance(value, dict):
        value = value.get("path") or value.get("video")
    return Path(value)


def test_api_lists_the_endpoints(server):
    info = _client(server[0]).view_api(print_info=False, return_format="dict")
    names = set(info["named_endpoints"])
    assert {"/preview_faces", "/create_avatar", "/animate", "/verify", "/save_avatar", "/load_avatar"} <= names


def test_create_animate_verify_through_the_api(server, shared_data):
    import av

    from talking_heads.provenance import verify

    url, settings, root = server
    alice = _client(url)
    photo = gradio_client.handle_file(str(shared_data / PHOTO))
    first, status, current = alice.predict([photo], "ff", 40, api_name="/create_avatar")
    assert "Avatar ready" in status and "feed-forward (FF)" in current
    assert verify(_path(first)).synthetic  # the first rendered frame is labelled
    video, downloads, text = alice.predict("motion", "nod", 1.0, None, True, 0, False, False, False,
                                           api_name="/animate")
    video = _path(video)
    with av.open(str(video)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 25
    report = verify(video)
    assert report.marker is not None and report.watermark
    assert sorted(_path(d).suffix for d in downloads) == [".mp4", ".png"]
    assert "25 frames at 25 fps" in text
    checked = alice.predict(gradio_client.handle_file(str(video)), api_name="/verify")
    assert "SYNTHETIC" in checked
    # a voice through the API (the speech argument is optional: older clients' calls above still work)
    voice = gradio_client.handle_file(str(shared_data / "videos/test/pcavs_Audio_Source_00015.mp4"))
    video, _, text = alice.predict("speech", "talk", 1.0, None, True, 0, False, False, False, False, voice,
                                   api_name="/animate")
    assert "with the speech" in text and "_speaking" in _path(video).name
    with av.open(str(_path(video))) as c:
        assert c.streams.audio and sum(1 for _ in c.decode(video=0)) == 175  # 7.0 s at 25 fps, its sound
    # another user (another session) has no avatar: the state is per session
    bob = _client(url)
    with pytest.raises(gradio_client.exceptions.AppError, match="no avatar yet"):
        bob.predict("motion", "nod", 1.0, None, True, 0, False, False, False, api_name="/animate")
    # each session's results are in its own folder
    sessions = [p for p in (root / "work" / "sessions").iterdir() if any(p.glob("results/*/*.mp4"))]
    assert len(sessions) == 1


def test_bad_input_is_a_readable_error(server, tmp_path):
    from PIL import Image

    url, _, _ = server
    gradient = tmp_path / "gradient.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None], (240, 1, 3))).save(gradient)
    client = _client(url)
    with pytest.raises(gradio_client.exceptions.AppError, match="no face found in gradient.png") as err:
        client.predict([gradio_client.handle_file(str(gradient))], api_name="/preview_faces")
    assert "Traceback" not in str(err.value)
    with pytest.raises(gradio_client.exceptions.AppError, match="less than minimum value 0.5"):
        client.predict("motion", "nod", 0.0, None, True, 0, False, False, False, api_name="/animate")
    with pytest.raises(gradio_client.exceptions.AppError, match="no driving video: upload one or record one"):
        client.predict("video", "nod", 1.0, None, True, 0, False, False, False, api_name="/animate")


def test_uploads_over_the_limit_are_refused(server, tmp_path):
    import httpx

    big = tmp_path / "big.jpg"
    big.write_bytes(np.random.default_rng(0).bytes((UPLOAD_MB + 1) * 2 ** 20))
    with pytest.raises(ValueError, match=f"exceeds the maximum file size of {UPLOAD_MB * 2 ** 20} bytes"):
        _client(server[0]).predict([gradio_client.handle_file(str(big))], api_name="/preview_faces")
    with big.open("rb") as f:  # and the server refuses it too, whoever sends it
        response = httpx.post(server[0] + "gradio_api/upload", files={"files": ("big.jpg", f)}, timeout=30)
    assert response.status_code == 413 and "maximum allowed size" in response.text


def test_no_connection_left_the_machine(server):
    assert CONNECTIONS, "the recorder saw no connection at all"
    outside = [(h, p) for h, p in CONNECTIONS if not ipaddress.ip_address(socket.gethostbyname(h)).is_loopback]
    assert not outside, outside


def test_eta_text():
    from talking_heads.web.app import time_left

    assert time_left(0, 40, 0.0) == "estimating the time left"
    assert time_left(10, 40, 5.0) == "about 15 s left"
    assert time_left(1, 100, 60.0) == "about 99 min left"
