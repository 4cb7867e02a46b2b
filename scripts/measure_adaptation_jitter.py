"""Does landmark adaptation add frame-to-frame jitter, and what does the neutral reference change?

    .venv/bin/python scripts/measure_adaptation_jitter.py

For three test-split drivers and the Mona Lisa's avatar face: the mean second difference of the landmarks
(in inter-ocular units) of the driver and of its adaptation onto the avatar, with frame 0 and with the
automatically chosen neutral frame (`landmarks.masks.neutral_frame`) as the reference, and the reference's
mouth opening. The numbers quoted in docs/training_ablations.md come from this script.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DRIVERS = ("xportrait_driving_video.mp4", "lp_source_s18.mp4", "dreamtalk_mead_W011_front_angry_level3_001.mp4")


def jitter(points: np.ndarray) -> float:
    iod = np.linalg.norm(points[:, 45] - points[:, 36], axis=1).mean()
    return float(np.abs(points[2:] - 2 * points[1:-1] + points[:-2]).mean() / iod)


def main() -> int:
    from talking_heads.landmarks.adaptation import adapt_landmarks, mouth_opening
    from talking_heads.landmarks.masks import neutral_frame
    from talking_heads.pipeline import TalkingHeadPipeline

    pipe = TalkingHeadPipeline.from_pretrained()
    face = pipe.detect_and_crop([DATA / "photos" / "lp_source_s9.jpg"])[0].landmarks.astype(np.float64)
    print("| driver | reference | driver jitter | adapted jitter | reference mouth opening |\n|---|---|---|---|---|")
    for name in DRIVERS:
        d = pipe.load_driver(DATA / "videos" / "test" / name).driver_points.astype(np.float64)
        for ref in (0, neutral_frame(d)):
            a = adapt_landmarks(d, face, ref).astype(np.float64)
            print(f"| {name} | {ref} | {jitter(d):.4f} | {jitter(a):.4f} | {float(mouth_opening(d[ref])):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
