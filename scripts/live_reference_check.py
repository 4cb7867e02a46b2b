"""How the live stage's neutral reference changes mouth following (docs/telepresence.md, "The neutral reference").

Every test-split clip of at least 100 frames drives an FF avatar of the Mona Lisa (shipped sample model) through
`LiveStage.landmarks` (a telepresence receiver or the Live tab: no file to search ahead) three ways: the first
face frame as the reference (before), the most neutral face of the first 3 s (`reference_seconds`, now the
default), and `animate`'s most neutral frame of the whole clip (the best an offline job can do). It prints the
correlation of the avatar's mouth opening with the driver's after the first 3 s.

    .venv/bin/python scripts/live_reference_check.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from talking_heads.data.video import read_image
from talking_heads.landmarks.masks import neutral_frame
from talking_heads.pipeline import TalkingHeadPipeline

DATA = Path(os.environ.get("TALKING_HEADS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def mouth(p: np.ndarray) -> np.ndarray:
    return np.linalg.norm(p[..., 66, :] - p[..., 62, :], axis=-1) / np.linalg.norm(p[..., 45, :] - p[..., 36, :], axis=-1)


def main() -> int:
    pipe = TalkingHeadPipeline.from_pretrained("sample")
    avatar = pipe.create_avatar(read_image(DATA / "photos" / "lp_source_s9.jpg"))
    rows = []
    for clip in sorted((DATA / "videos" / "test").glob("*.mp4")):
        seq = pipe.load_driver(clip)
        p = seq.driver_points.copy()
        if len(p) < 100:
            continue
        seen = np.isfinite(p).all(axis=(1, 2))
        for i in np.where(~seen)[0]:  # hold the last face (as the live stage does)
            p[i] = p[i - 1] if i else p[np.argmax(seen)]
        start = int(3 * seq.fps)
        r = []
        for kind in ("first", "auto", "animate"):
            live = pipe.live(avatar, fps=seq.fps, reference=p[neutral_frame(p)] if kind == "animate" else None,
                             reference_seconds=0.0 if kind == "first" else 3.0)
            adapted = np.stack([live.landmarks(q).copy() for q in p])
            r.append(float(np.corrcoef(mouth(p[start:]), mouth(adapted[start:]))[0, 1]))
        rows.append(r)
        print(f"{clip.stem[:36]:36s} first {r[0]:+.2f}  auto {r[1]:+.2f}  animate's {r[2]:+.2f}", flush=True)
    r = np.array(rows)
    print(f"mean over {len(r)} clips: first {r[:, 0].mean():+.3f}, auto {r[:, 1].mean():+.3f}, "
          f"animate's {r[:, 2].mean():+.3f}; below 0.5: {(r < 0.5).sum(0).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
