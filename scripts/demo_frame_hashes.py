"""Checksums of every frame `make demo` hands to the video encoder, to show that a change leaves the demo's
pictures bit-identical. The mp4 files themselves are not a fair test: x264's sliced threads make the encoded
bytes of the same frames differ between runs of the same code (seen on the 2000 x 1280 Mona Lisa video).

    python scripts/demo_frame_hashes.py OUT_DIR > hashes.txt     # then diff two runs' hashes.txt

Runs `talking-heads demo --out OUT_DIR` with `media.VideoWriter.write` and `provenance.embed_watermark` wrapped
to record the MD5 of each frame before and after watermarking; prints one line per frame and, last, one line
per video with the MD5 over all its frames. Also lists the MD5 of the avatar weights and contact sheets."""

from __future__ import annotations

import hashlib
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from talking_heads import media, provenance
from talking_heads.cli import main as cli_main


def run(out: Path) -> list[str]:
    rows: list[str] = []
    per_video: dict[str, hashlib._Hash] = defaultdict(hashlib.md5)
    write, embed = media.VideoWriter.write, provenance.embed_watermark
    current = {"video": "?"}

    def recording_write(self, frame):
        current["video"] = self.path.name
        digest = hashlib.md5(frame.tobytes()).hexdigest()
        per_video[self.path.name].update(digest.encode())
        rows.append(f"{self.path.name} frame {digest}")
        return write(self, frame)

    def recording_embed(frame, *args, **kwargs):
        marked = embed(frame, *args, **kwargs)
        digest = hashlib.md5(marked.tobytes()).hexdigest()
        per_video[current["video"] + " watermarked"].update(digest.encode())
        rows.append(f"  watermarked {digest}")
        return marked

    media.VideoWriter.write, provenance.embed_watermark = recording_write, recording_embed
    try:
        rc = cli_main(["demo", "--out", str(out)])
    finally:
        media.VideoWriter.write, provenance.embed_watermark = write, embed
    if rc:
        raise SystemExit(rc)
    for path in sorted(out.rglob("*")):
        if path.suffix == ".png":
            rows.append(f"{path.relative_to(out)} pixels {hashlib.md5(np.asarray(Image.open(path)).tobytes()).hexdigest()}")
        elif path.suffix == ".safetensors":
            rows.append(f"{path.relative_to(out)} file {hashlib.md5(path.read_bytes()).hexdigest()}")
    frames = sum(1 for r in rows if " frame " in r)
    rows += [f"all frames of {name}: {h.hexdigest()}" for name, h in sorted(per_video.items())]
    rows.append(f"{frames} frames")
    return rows


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print("\n".join(run(Path(sys.argv[1]))))
