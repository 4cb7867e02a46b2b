"""How far the TPS renderer turns a head: a yaw sweep on real photos (issue: the TPS renderer, head turns).

For each photo, an FF avatar driven by the motion template turned to 0, 10, 15, 20, 25, 30 and 40 degrees
(landmark adaptation onto the photo's face, no yaw limit), and once more at 40 degrees with the model's limit
(`inference.max_yaw`, 15 for the TPS models): one row per photo. Below the picture, per angle, the dlib
distance of the rendered face to the photo and the share of faces dlib still finds.

    python scripts/tps_yaw_sweep.py MODEL_DIR OUT.png [--size 256] [PHOTO ...]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from talking_heads import media
from talking_heads.demo import default_data_dir, portrait
from talking_heads.identity import _one_face
from talking_heads.landmarks.adaptation import adapt_landmarks
from talking_heads.landmarks.motions import FaceControls, face_landmarks
from talking_heads.landmarks.yaw import clamp_yaw, estimate_yaw
from talking_heads.metrics.csim import FaceDescriptor
from talking_heads.pipeline import TalkingHeadPipeline

ANGLES = (0, 10, 15, 20, 25, 30, 40)
PHOTOS = ("avatarify_mona.jpg", "gfpgan_Adele_crop.png", "avatarify_jobs.jpg", "lia_ted_subject1.png")


def turned(size: int, degrees: float) -> np.ndarray:
    """The template turned by `degrees`, in a `size` px crop (only its motion matters: it is adapted)."""
    return face_landmarks(FaceControls(yaw=math.radians(degrees))) * (size / 2.2) + size / 2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("photos", nargs="*", type=Path)
    args = ap.parse_args(argv)
    data = default_data_dir()
    photos = args.photos or ([data / "photos" / p for p in PHOTOS] if data else [])
    pipe = TalkingHeadPipeline.from_pretrained(args.model)
    pipe.cfg.inference.output_size = args.size
    limit = pipe.cfg.inference.max_yaw
    net = FaceDescriptor()
    rows, dist = [], {a: [] for a in [*ANGLES, "limited"]}
    for photo in [portrait(), *photos]:
        avatar = pipe.create_avatar(photo, progress=False)
        src = media.resize(avatar.source_images[0], args.size)
        own = net.describe(src, _one_face("photo", src)[0])
        s = pipe.image_size
        row = [src]
        for angle in [*ANGLES, "limited"]:
            drive = np.stack([turned(s, 0), turned(s, 40 if angle == "limited" else angle)])
            pts = adapt_landmarks(drive, avatar.face, 0)[1]  # the turn since the frontal frame, on the photo's face
            if angle == "limited":
                pts = clamp_yaw(pts, avatar.face, limit)
            frame = pipe.render_frames(avatar, pts[None].astype(np.float32))[0]
            row.append(frame)
            try:
                points, _ = _one_face("frame", frame)
                dist[angle].append(float(np.linalg.norm(net.describe(frame, points) - own)))
            except Exception:  # noqa: BLE001 - no face found: counted as lost
                dist[angle].append(None)
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    media.write_png(args.out, media.contact_sheet(rows, args.size // 2))
    summary = {str(a): {"distance": float(np.mean([d for d in v if d is not None])) if any(d is not None for d in v)
                        else None, "found": sum(d is not None for d in v) / len(v)} for a, v in dist.items()}
    summary["limit"] = limit
    summary["estimated_yaw_of_the_template"] = {a: round(float(estimate_yaw(turned(128, a))), 1) for a in ANGLES}
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
