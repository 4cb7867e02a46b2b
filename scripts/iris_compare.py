"""Choose the iris locator by measurement (issue 28): MediaPipe's iris points against our classical dark-disc
search, on frames of every test-split clip of ../shared/data.

For each clip, N evenly spaced frames are tracked with dlib (68 points); both locators run on the full frame.
Reported: agreement (distance between the two centres in eye widths), each one's rate of "seen" irises on
open eyes and on closed eyes (lid gap under 0.14 eye widths), time per face, and a contact sheet of eye crops
with both marks (MediaPipe green, classical red) to judge by eye which one is right where they disagree.

    .venv/bin/python scripts/iris_compare.py --frames 4 --out docs/gaze/iris_compare
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from talking_heads.data.faces import track_file
from talking_heads.data.video import read_frames
from talking_heads.landmarks.iris import (EYES, MIN_IRIS_CONFIDENCE, ClassicalIris, MediaPipeIris, eye_frame,
                                          openness)


def eye_crop(frame, points, eye, marks, px=96):
    o, _, _, w = eye_frame(points, eye)
    half = 0.9 * w
    s = px / (2 * half)
    m = np.array([[s, 0, px / 2 - s * o[0]], [0, s * 1, px / 4 - s * o[1]]])
    crop = cv2.warpAffine(frame, m, (px, px // 2), flags=cv2.INTER_CUBIC)
    for (x, y), colour in marks:
        if np.isfinite([x, y]).all():
            cv2.circle(crop, (int(round(s * x + m[0, 2])), int(round(s * y + m[1, 2]))), 3, colour, 1, cv2.LINE_AA)
    return crop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/videos/test")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--out", default="docs/gaze/iris_compare")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mp_loc, cl_loc = MediaPipeIris(), ClassicalIris()
    rows, tiles, t_mp, t_cl = [], [], [], []
    for clip in sorted(Path(args.data).glob("*.mp4")):
        track, info = track_file(clip, max_frames=args.frames)
        frames = dict(read_frames(clip, [int(i) for i in track.frame_indices]))
        for k, idx in enumerate(track.frame_indices):
            if not track.found[k]:
                continue
            p = track.points[k].astype(np.float64)
            f = frames[int(idx)]
            t0 = time.perf_counter()
            a = mp_loc.locate(f, p)
            t1 = time.perf_counter()
            b = cl_loc.locate(f, p)
            t2 = time.perf_counter()
            t_mp.append(t1 - t0)
            t_cl.append(t2 - t1)
            for eye in range(2):
                w = eye_frame(p, eye)[3]
                rows.append({"clip": clip.stem, "frame": int(idx), "eye": eye, "eye_width_px": w,
                             "openness": openness(p, eye), "mp": a[eye].tolist(), "cl": b[eye].tolist(),
                             "diff": float(np.hypot(*(a[eye, :2] - b[eye, :2])) / w)})
                marks = [(a[eye, :2] if a[eye, 3] >= MIN_IRIS_CONFIDENCE else (np.nan, np.nan), (0, 255, 0)),
                         (b[eye, :2] if b[eye, 3] >= MIN_IRIS_CONFIDENCE else (np.nan, np.nan), (255, 0, 0))]
                tiles.append(eye_crop(f, p, eye, marks))
    both = [r for r in rows if r["mp"][3] >= MIN_IRIS_CONFIDENCE and r["cl"][3] >= MIN_IRIS_CONFIDENCE]
    diffs = np.array([r["diff"] for r in both])
    is_open = np.array([r["openness"] >= 0.2 for r in rows])
    seen_mp = np.array([r["mp"][3] >= MIN_IRIS_CONFIDENCE for r in rows])
    seen_cl = np.array([r["cl"][3] >= MIN_IRIS_CONFIDENCE for r in rows])
    summary = {
        "eyes": len(rows), "both_seen": len(both),
        "median_diff_eye_widths": float(np.median(diffs)) if len(diffs) else None,
        "p90_diff_eye_widths": float(np.percentile(diffs, 90)) if len(diffs) else None,
        "frac_diff_over_0.1": float((diffs > 0.1).mean()) if len(diffs) else None,
        "seen_open_mp": float(seen_mp[is_open].mean()), "seen_open_cl": float(seen_cl[is_open].mean()),
        "seen_closed_mp": float(seen_mp[~np.array([r["openness"] >= 0.14 for r in rows])].mean())
        if any(r["openness"] < 0.14 for r in rows) else None,
        "ms_per_face_mp": 1000 * float(np.median(t_mp)), "ms_per_face_cl": 1000 * float(np.median(t_cl)),
        "median_eye_width_px": float(np.median([r["eye_width_px"] for r in rows])),
    }
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    cols = 12
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    sheet = np.concatenate([np.concatenate(tiles[i:i + cols], 1) for i in range(0, len(tiles), cols)], 0)
    cv2.imwrite(str(out / "sheet.jpg"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
