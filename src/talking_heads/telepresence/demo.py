"""`talking-heads telepresence-demo`: both ends on loopback (issue 14, item 6).

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

from .settings import TelepresenceConfig

DEMO_VIDEO = "videos/test/pcavs_Audio_Source_00373.mp4"  # test split (a person the model never saw), 25 fps, 5 s


@dataclass
class TelepresenceDemoResult:
    side_by_side: Path
    received: Path
    stats: Path
    sender: object  # SenderStats
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
    from ..media import side_by_side
    from ..data.video import read_frames
    from .basis import known_bases
    from .receiver import Receiver
    from .sender import FileSource, send
    from .transport import generate_token

    settings = settings or TelepresenceConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    token = generate_token()
    source = FileSource(video, seconds=seconds)
    receiver = Receiver(pipe, avatar, settings=settings, bases=known_bases(), adapt=adapt, out=out / "received.mp4",
                        fps=source.fps, once=True)
    ready, failure, result = threading.Event(), [], {}

    def serve() -> None:
        try:
            result["stats"] = asyncio.run(receiver.run(token, host="127.0.0.1", port=0,
                                                       ready=lambda port, key: (result.update(port=port), ready.set())))
        except BaseException as err:  # re-raised in the caller's thread
            failure.append(err)
            ready.set()

    thread = threading.Thread(target=serve, name="telepresence-demo-receiver", daemon=True)
    thread.start()
    ready.wait()
    if failure:
        raise failure[0]
    originals: dict[int, object] = {}
    size = pipe.output_size

    def keep(seq, index, frame, stream) -> None:
        tf = stream.crop.transform
        originals[seq] = tf.resized(size).crop(frame) if tf is not None else frame[:size, :size]

    try:
        sent = asyncio.run(send(source, "127.0.0.1", result["port"], token, settings=settings, record_sent=True,
                                on_frame=keep))
    finally:
        thread.join(timeout=120)
    if failure:
        raise failure[0]
    stats = result["stats"]
    first = sent.sent[0][0] if sent.sent else 0

    def frames():
        for k, (_, image) in enumerate(read_frames(out / "received.mp4")):
            original = originals.get(first + k)
            if original is None:
                break
            yield side_by_side([original, image], height=image.shape[0])

    path = out / "side_by_side.mp4"
    pipe.write_video(frames(), path, source.fps)
    stats_path = out / "stats.json"
    from ..atomic import write_text

    write_text(stats_path, json.dumps({"sender": {k: v for k, v in vars(sent).items() if k != "sent"}
                                       | {"kbps": sent.kbps, "bits_per_frame": sent.bits_per_frame},
                                       "receiver": stats}, indent=2, default=str))
    return TelepresenceDemoResult(path, out / "received.mp4", stats_path, sent, stats)
