"""The landmark codec's bitrate with the gaze (packet version 3) against version 2, on every test-split clip
(issue 28: at most 2.2 kbit/s at 25 fps with the pupils): the sender's own stream (`LandmarkStream`: tracking,
iris points, smoothing, the default step), all packet bytes counted (headers and key frames included).

    .venv/bin/python scripts/gaze_codec_bitrate.py --out docs/gaze/codec_bitrate.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from talking_heads.data.video import probe, read_frames
from talking_heads.telepresence.basis import known_bases
from talking_heads.telepresence.codec import LandmarkDecoder
from talking_heads.telepresence.packet import GAZE_STEP
from talking_heads.telepresence.sender import LandmarkStream
from talking_heads.telepresence.settings import TelepresenceConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="docs/gaze/codec_bitrate.json")
    args = ap.parse_args()
    rows = []
    for clip in sorted((Path(args.data) / "videos" / "test").glob("*.mp4")):
        fps = probe(clip).fps or 25.0
        frames = [f for _, f in read_frames(clip)]
        row = {"clip": clip.name, "frames": len(frames)}
        for version in (2, 3):
            stream = LandmarkStream(fps, dataclasses.replace(TelepresenceConfig(), version=version))
            dec = LandmarkDecoder(known_bases())
            nbytes, seen, err = 0, 0, []
            for i, frame in enumerate(frames):
                packet = stream.process(frame, i / fps)
                nbytes += len(packet)
                got = dec.decode(packet)
                if got.gaze is not None:
                    seen += 1
                    err.append(float(np.abs(got.gaze - stream.gaze).max()))
            bits = 8 * nbytes / len(frames)
            row[f"v{version}_bits_per_frame"] = bits
            row[f"v{version}_kbps25"] = bits * 25 / 1000
            if version == 3:
                row["gaze_frames"] = seen
                row["gaze_max_error_eye_widths"] = max(err) if err else None
        row["added_bits_per_frame"] = row["v3_bits_per_frame"] - row["v2_bits_per_frame"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    frames = sum(r["frames"] for r in rows)
    summary = {k: sum(r[k] * r["frames"] for r in rows) / frames
               for k in ("v2_bits_per_frame", "v3_bits_per_frame", "added_bits_per_frame")}
    summary["v3_kbps25_max_clip"] = max(r["v3_kbps25"] for r in rows)
    summary["v3_kbps25_mean"] = summary["v3_bits_per_frame"] * 25 / 1000
    summary["gaze_step_eye_widths"] = GAZE_STEP
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "clips": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
