"""How far the TPS renderer's eye shift moves an iris, as the iris locator sees it (docs/gaze.md section 2):

1. rendered: an FF avatar of each photo (shipped `tps` model, 256 px) rendered with its gaze set 0.15 eye widths
   left, then 0.15 right of its own (a commanded swing of 0.30): the horizontal swing measured on the frames;
2. warp only (no network): the photo at 512 px warped by the landmark prior plus `tps_prior.iris_shift`, with
   the shift's feathering nearly off (a rigid shift of each eye opening's content by 0.15 eye widths either
   way): what the locator reads of a shift whose size is known.

    .venv/bin/python scripts/gaze_shift_check.py
"""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

import talking_heads.models.tps_prior as P
from talking_heads.data.faces import prepare_photo
from talking_heads.images import to_tensor, to_uint8
from talking_heads.landmarks.iris import conjugate, place_gaze, relative_gaze, with_iris
from talking_heads.metrics.gaze import frame_gaze
from talking_heads.pipeline import TalkingHeadPipeline

PHOTOS = ("lia_vox_taylor.png", "debian_skimage_astronaut.png", "gfpgan_Justin_Timberlake_crop.png")
SWING = 0.15


def rendered(pipe, photo: str) -> float:
    avatar = pipe.create_avatar(f"../shared/data/photos/{photo}", progress=False)
    frames = [pipe.render_frames(avatar, with_iris(avatar.face, place_gaze(avatar.face, avatar.rest_gaze + [g, 0]))[None])[0]
              for g in (-SWING, SWING)]
    x = frame_gaze(frames).mean(1)[:, 0]
    return float(x[1] - x[0])


def warp_only(photo: str, size: int = 512) -> float:
    crop = prepare_photo(f"../shared/data/photos/{photo}", size)
    rest = conjugate(relative_gaze(crop.landmarks, crop.iris))
    src = P.normalise_points(torch.tensor(with_iris(crop.landmarks, crop.iris))[None], size)
    x = to_tensor(crop.image)[None]
    frames = []
    for g in (-SWING, SWING):
        drv = with_iris(crop.landmarks, place_gaze(crop.landmarks, rest + [g, 0]))
        d = P.normalise_points(torch.tensor(drv)[None], size)
        disp = F.interpolate(P.prior_displacement(d[:, :68], src[:, :68], 64), size=(size, size), mode="bilinear",
                             align_corners=False) + P.iris_shift(d, src, size, feather=0.01)
        frames.append(to_uint8(F.grid_sample(x, P.grid_from_displacement(disp, size), mode="bilinear",
                                             padding_mode="border", align_corners=False))[0])
    g = frame_gaze(frames).mean(1)[:, 0]
    return float(g[1] - g[0])


def main() -> None:
    base = TalkingHeadPipeline.from_pretrained("tps")
    base.cfg.inference.output_size = 256
    at_lids = P.AT_LIDS
    out = {}
    for photo in PHOTOS:
        P.AT_LIDS = at_lids
        r = rendered(base, photo)
        P.AT_LIDS = 0.01  # the opening's content moves rigidly up to the lids
        w = warp_only(photo)
        out[photo] = {"commanded": 2 * SWING, "rendered_swing": round(r, 3), "rigid_warp_swing": round(w, 3)}
        print(json.dumps({photo: out[photo]}), flush=True)
    P.AT_LIDS = at_lids


if __name__ == "__main__":
    main()
