"""Speed of the speech driver on this machine (docs/benchmarks.md, "Speech-driven avatars"): how much faster than
real time the sound becomes landmarks, and what `animate --audio` spends per frame on top of rendering.

A real test-split recording is looped to `--seconds` (default 60) so the timing is of real speech. Timed, each the
median of `--repeats` runs, one process, torch at its default threads (2 on this machine) and at 1:
- reading the sound (PyAV decode + resample to 16 kHz);
- log-mel features + AudioToMotion over the whole sound (`predict_motion`, chunked);
- the whole speech driver (`pipe.speech_driver`: the above, the silence gate, the idle head, placing the mouth).

    .venv/bin/python scripts/bench_speech.py [--data ../shared/data] [--seconds 60]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch

from talking_heads.machine import describe
from talking_heads.pipeline import TalkingHeadPipeline
from talking_heads.speech.audio import load_audio
from talking_heads.speech.model_io import predict_motion

CLIP = "videos/test/styletalk_feifeili_clip1.mp4"


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    clip = load_audio(Path(args.data) / CLIP)
    n = int(args.seconds * clip.rate)
    samples = np.resize(clip.samples, n)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(clip.rate)
            w.writeframes(np.round(samples * 32767).astype("<i2").tobytes())
        pipe = TalkingHeadPipeline.from_pretrained("tps")
        model = pipe.speech_model()
        m = describe()
        print(f"{m['date']}, {m['cpu']}, {m['cpu_count']} cores, torch {m['torch']}; {args.seconds:g} s of speech")
        print("| stage | threads | seconds | x real time |")
        print("|---|---|---|---|")
        for threads in (torch.get_num_threads(), 1):
            torch.set_num_threads(threads)
            for name, fn in (("read the sound", lambda: load_audio(wav)),
                             ("features + AudioToMotion", lambda: predict_motion(model, samples)),
                             ("whole speech driver", lambda: pipe.speech_driver(wav))):
                s = timed(fn, args.repeats)
                print(f"| {name} | {threads} | {s:.3f} | {args.seconds / s:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
