"""The Live tab's server alone (docs/benchmarks.md "Live tab", the table "The server alone"): `LiveHub`'s routes
served by uvicorn on loopback, the sample model and an FF avatar of the Mona Lisa, and a Python client that
sends a test clip's frames (480 x 360 JPEG) at 30 fps as the page does, keeping at most IN_FLIGHT unanswered;
prints frames/s and latency (sent -> reply received) after a 3 s warm-up, then the session's own decode/track
and render/encode times.

    python scripts/bench_live_server.py [torch|fp32|int8] [IN_FLIGHT]   # torch: the model's own renderer;
                                                                          # fp32/int8: onnxruntime
"""
import asyncio, threading, time, json, sys, os
import numpy as np, cv2, uvicorn
from starlette.applications import Starlette
from talking_heads.data.video import read_image, read_frames
from talking_heads.demo import default_data_dir
from talking_heads.pipeline import TalkingHeadPipeline
from talking_heads.web.live import IN_HEADER, IN_MAGIC, OUT_HEADER, LiveHub
from talking_heads.web.settings import WebSettings
backend = sys.argv[1] if len(sys.argv) > 1 else "torch"
inflight = int(sys.argv[2]) if len(sys.argv) > 2 else 2
pipe = TalkingHeadPipeline.from_pretrained()
if backend != "torch": pipe.cfg.inference.backend, pipe.cfg.inference.precision = "onnxruntime", backend
avatar = pipe.create_avatar(read_image(default_data_dir() / "photos/lp_source_s9.jpg"))
hub = LiveHub(pipe, WebSettings(live_backend="model")); key = hub.open("s", avatar)
server = uvicorn.Server(uvicorn.Config(Starlette(routes=hub.routes()), host="127.0.0.1", port=8799, log_level="warning"))
threading.Thread(target=server.run, daemon=True).start()
while not server.started: time.sleep(0.05)
frames = []
for i, f in read_frames(default_data_dir() / "videos/test/edtalk_mouth_source.mp4"):
    c = np.full((360, 480, 3), 120, np.uint8); c[:, 60:420] = cv2.resize(f, (360, 360)); frames.append(cv2.imencode(".jpg", c[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
async def main():
    from websockets.asyncio.client import connect
    async with connect(f"ws://127.0.0.1:8799/live/ws?key={key}", max_size=2**22) as ws:
        await ws.recv()
        sent = {}; lat = []; shown = []; n = 0; t0 = time.perf_counter(); pending = 0
        async def reader():
            nonlocal pending
            while True:
                r = await ws.recv()
                if isinstance(r, str): continue
                h = OUT_HEADER.unpack_from(r); pending -= 1
                now = time.perf_counter(); lat.append(now - sent.pop(h[1])); shown.append(now)
        task = asyncio.create_task(reader())
        i = 0
        while time.perf_counter() - t0 < 20:
            due = t0 + i / 30
            await asyncio.sleep(max(0, due - time.perf_counter()))
            if pending < inflight:
                pending += 1; sent[i + 1] = time.perf_counter()
                await ws.send(IN_HEADER.pack(IN_MAGIC, i + 1, 0.0) + frames[i % len(frames)])
            i += 1
        await asyncio.sleep(1); task.cancel()
        s = [t for t in shown if t > t0 + 3]
        print(f"{backend} inflight {inflight}: {len(s) / (shown[-1] - t0 - 3):.1f} fps, latency median {1000*np.median(lat[30:]):.0f} ms p95 {1000*np.percentile(lat[30:],95):.0f}")
asyncio.run(main())
time.sleep(3); print(hub.last_summary); server.should_exit = True
