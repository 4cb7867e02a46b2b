"""`talking-heads telepresence-demo`: both ends on loopback.

A receiver (the avatar, `receiver.Receiver`) listens on 127.0.0.1 at a free port with a fresh token; a sender
(`sender.send`) plays a test-split video as a camera and streams its landmarks to it; then a side-by-side mp4
is written: the sender's head crop of the original frame | what the receiver rendered for that frame (the
receiver's own recording, where frames it dropped as stale hold the previous picture). Everything goes
through the same code as `talking-heads send` / `receive`; nothing is shortcut in-process but the token file.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_text
from ..data.video import read_frames
from ..media import side_by_side
from .basis import known_bases
from .receiver import Receiver
from .sender import FileSource, SenderStats, send
from .settings import TelepresenceConfig
from .transport import generate_token

DEMO_VIDEO = "videos/test/pcavs_Audio_Source_00373.mp4"  # test split (a person the model never saw), 25 fps, 5 s


@dataclass
class TelepresenceDemoResult:
    side_by_side: Path
    received: Path
    stats: Path
    sender: SenderStats
    receiver: dict  # Receiver.snapshot()

    def summary(self) -> str:
        r, s = self.receiver, self.sender
        nan = float("nan")
        return (f"sent {s.frames} frames at {s.fps:g} fps, {s.kbps:.2f} kbit/s ({s.bits_per_frame:.0f} bit/frame); "
                f"rendered {r['rendered']} ({r['dropped']} dropped as stale) = {r['rendered'] / max(s.seconds, 1e-9):.1f} "
                f"fps; end-to-end latency mean {r['latency_run_mean_ms'] or nan:.0f} ms, 95th percentile "
                f"{r['latency_p95_ms'] or nan:.0f} ms, max {r['latency_max_ms'] or nan:.0f} ms")


def run_telepresence_demo(pipe, avatar, video: str | Path, out_dir: str | Path, *,
                          settings: TelepresenceConfig | None = None, seconds: float | None = None,
                          adapt: bool = True) -> TelepresenceDemoResult:
    """Stream `video` from a sender to a receiver driving `avatar` on loopback and write the receiver's
    recording, the side-by-side video and both ends' statistics into `out_dir` (module docstring)."""
    settings = settings or TelepresenceConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    token = generate_token()
    source = FileSource(video, seconds=seconds)
    receiver = Receiver(pipe, avatar, settings=settings, bases=known_bases(), adapt=adapt, out=out / "received.mp4",
                        fps=source.fps, once=True)
    serving = _ReceiverThread(receiver, token)
    originals: dict[int, object] = {}
    size = pipe.frame_size(avatar)

    def keep(seq, index, frame, stream) -> None:
        tf = stream.crop.transform
        originals[seq] = tf.resized(size).crop(frame) if tf is not None else frame[:size, :size]

    try:
        sent = asyncio.run(send(source, "127.0.0.1", serving.port, token, settings=settings, record_sent=True,
                                on_frame=keep))
    finally:
        serving.join()
    serving.raise_failure()
    stats = serving.stats
    first = sent.sent[0][0] if sent.sent else 0
    path = out / "side_by_side.mp4"
    pipe.write_video(_side_by_side_frames(out / "received.mp4", originals, first), path, source.fps)
    stats_path = out / "stats.json"
    _write_stats(stats_path, sent, stats)
    return TelepresenceDemoResult(path, out / "received.mp4", stats_path, sent, stats)


class _ReceiverThread:
    """`receiver.run` on 127.0.0.1 at a free port, in a thread with its own event loop; the constructor
    returns once it listens (`port`), `join` waits for the end of its (one) stream. A failure of the receiver
    is raised in the caller's thread, by the constructor or by `raise_failure`."""

    def __init__(self, receiver: Receiver, token: str):
        self.receiver, self.token = receiver, token
        self.ready, self.failure, self.result = threading.Event(), [], {}
        self.thread = threading.Thread(target=self._serve, name="telepresence-demo-receiver", daemon=True)
        self.thread.start()
        self.ready.wait()
        self.raise_failure()

    def _serve(self) -> None:
        def listening(port, key) -> None:
            self.result.update(port=port)
            self.ready.set()

        try:
            self.result["stats"] = asyncio.run(self.receiver.run(self.token, host="127.0.0.1", port=0,
                                                                 ready=listening))
        except BaseException as err:  # re-raised in the caller's thread
            self.failure.append(err)
            self.ready.set()

    def raise_failure(self) -> None:
        if self.failure:
            raise self.failure[0]

    @property
    def port(self) -> int:
        return self.result["port"]

    @property
    def stats(self) -> dict:
        return self.result["stats"]

    def join(self) -> None:
        self.thread.join(timeout=120)


def _side_by_side_frames(received: Path, originals: dict, first: int):
    """The sender's crop | the received frame, for every received frame whose original was kept (frame k of
    the recording is sequence number first + k)."""
    for k, (_, image) in enumerate(read_frames(received)):
        original = originals.get(first + k)
        if original is None:
            break
        yield side_by_side([original, image], height=image.shape[0])


def _write_stats(path: Path, sent: SenderStats, receiver: dict) -> None:
    write_text(path, json.dumps({"sender": {k: v for k, v in vars(sent).items() if k != "sent"}
                                 | {"kbps": sent.kbps, "bits_per_frame": sent.bits_per_frame},
                                 "receiver": receiver}, indent=2, default=str))
