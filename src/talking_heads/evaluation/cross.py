"""Cross-identity puppeteering evaluation: avatars of one test person driven by another person's clip.

The paper shows puppeteering only qualitatively (and chose drivers of similar face geometry, section 8).
Here it is measured, with the avatars of the self-reenactment run (every T, each variant: T = 1 is
"one photo of the person, driven by somebody else"):
- pairs: every evaluated video is driven by the next evaluated video of a *different* identity (cyclic
  order); no pair when all videos show one person;
- driver frames: `EvalConfig.cross_frames` frames evenly spaced over the driver clip, their landmarks
  (driver crop pixels at the model resolution; both clips are VoxCeleb-style crops, so without adaptation
  these are the paper's raw driving landmarks);
- adaptation off: those landmarks as they are; on: the driver's motion moved onto the avatar's own face
  (`pipeline.driver_landmarks(..., adapt=True)`, i.e. `landmarks.adaptation.adapt_landmarks`, relative to
  the driver's first used frame);
- identity kept: CSIM of each generated frame to the *source* person, i.e. cosine between its dlib
  descriptor (aligned with the landmarks it was driven with) and the mean unit descriptor of the source's
  real hold-out frames (never used to build the avatar); also CSIM to the *driver* person (identity leakage:
  lower is better); and the calibrated figures (metrics/identity.py): the fraction of generated frames
  verified as the source person (descriptor within dlib's 0.6 of the mean descriptor of the T few-shot frames
  the avatar was made from) and as the driver person (mean descriptor of the driver frames; leakage);
- motion followed: landmark error of the generated frame against the landmarks it was driven with
  (adapted ones when adaptation is on), undetected faces counted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import Config
from ..driver import DriverSequence
from ..landmarks.iris import conjugate, neutral_gaze, place_gaze, relative_gaze, uses_gaze, with_iris
from ..landmarks.raster import rasterize_tensor
from ..metrics import MetricValue, as_uint8, create
from ..metrics.csim import cosine
from ..metrics.gaze import frame_gaze, gaze_agreement
from ..metrics.identity import rate_value, reference_descriptor, verified


def pick_drivers(videos: list[int], identities: list[str]) -> dict[int, int]:
    """{source video: driver video}: the next video in `videos` (cyclic) whose identity differs."""
    out: dict[int, int] = {}
    for i, v in enumerate(videos):
        for j in range(1, len(videos)):
            d = videos[(i + j) % len(videos)]
            if identities[d] != identities[v]:
                out[v] = d
                break
    return out


class CrossEvaluation:
    """Runs the cross-identity measurements for one source video at a time (see the module docstring)."""

    def __init__(self, pipe, test, metrics: dict[str, Any], cfg: Config, device: str = "cpu"):
        self.pipe, self.test, self.cfg, self.device = pipe, test, cfg, device
        self.csim = metrics.get("csim")
        self.lmk = metrics.get("landmark_error")
        if self.csim is None or self.lmk is None:  # cross needs them even if the table does not list them
            self.csim = self.csim or create("csim", cfg.eval, device)
            self.lmk = self.lmk or create("landmark_error", cfg.eval, device)
        self.records: list[dict[str, Any]] = []
        self.gaze = metrics.get("gaze_error")  # when the table lists it: the rendered gaze against the driver's

    def pick_drivers(self, videos: list[int]) -> dict[int, int]:
        return pick_drivers(videos, self.test.identities)

    def driver_frames(self, driver: int) -> dict[str, Any]:
        n = self.test.n_frames[driver]
        idx = np.unique(np.linspace(0, n - 1, min(n, self.cfg.eval.cross_frames)).round().astype(np.int64))
        return self.test.clip_frames(driver, idx)

    def driving_landmarks(self, avatar, driver_points: np.ndarray, clip: str, adapt: bool) -> np.ndarray:
        """(F,68,2) landmarks that drive the avatar, in its crop pixels: the pipeline's driver stage given the
        driver clip's own crop landmarks (already at the model's resolution, so no re-cropping)."""
        own = np.asarray(driver_points, np.float32)
        seq = DriverSequence(points=own, driver_points=own.copy(), size=self.cfg.model.image_size,
                             fps=self.cfg.inference.motion_fps, kind="landmarks", source=clip)
        out = self.pipe.driver_landmarks(seq, avatar=avatar, adapt=adapt, reference_frame=0)
        return np.asarray(out.points, np.float64)

    def evaluate(self, source: int, driver: int, split, avatars: dict[str, Any], t: int) -> None:
        hold = self.test.clip_frames(source, split.holdout)
        drv = self.driver_frames(driver)
        ok = self.csim.available
        source_id = self.csim.net.identity(hold["x"], hold["points"]) if ok else None
        driver_id = self.csim.net.identity(drv["x"], drv["points"]) if ok else None
        if ok:  # raw mean descriptors for dlib's 0.6 rule: the avatar's own few-shot frames, the driver's frames
            shots = self.test.clip_frames(source, split.shots(t))
            self.references = (reference_descriptor(self.csim.net.describe_all(shots["x"], shots["points"])),
                               reference_descriptor(self.csim.net.describe_all(drv["x"], drv["points"])))
        size, thickness = self.cfg.model.image_size, self.cfg.data.line_thickness
        for variant, avatar in avatars.items():
            for adapt in (False, True):
                points = self.driving_landmarks(avatar, drv["points"], self.test.clip_ids[driver], adapt)
                drive = self.with_drivers_gaze(avatar, points, drv)  # gaze models: 70 rows
                y = rasterize_tensor(drive, size, thickness, self.cfg.data.pupils).to(self.device)
                fake = as_uint8(self.pipe.render(avatar, y, batch_size=self.cfg.eval.render_batch, points=drive))
                record = self.measure(source, driver, t, variant, adapt, fake, points, source_id, driver_id)
                if self.gaze is not None and self.gaze.available:  # against the driver's own frames
                    record["values"]["gaze_error"] = self.gaze_change(fake, drv["x"]).to_dict()
                self.records.append(record)

    @staticmethod
    def gaze_change(fake, driver_frames) -> MetricValue:
        """The rendered gaze against the driver's, each with its own median removed (two people's neutral gazes
        differ by their eye shapes: what transfers is the change; `metrics.gaze.gaze_agreement`), eye widths;
        horizontal / vertical correlation beside it."""
        agree = gaze_agreement(frame_gaze(as_uint8(fake)), frame_gaze(as_uint8(driver_frames)))
        n = len(fake)
        value = agree["error_centred"] if agree["frames"] else None
        return MetricValue("gaze_error", value, n=n, failed=n - agree["frames"], higher_is_better=False,
                           extra={"corr_x": agree["corr_x"], "corr_y": agree["corr_y"]})

    def with_drivers_gaze(self, avatar, points: np.ndarray, drv: dict) -> np.ndarray:
        """For a model that renders gaze: (F,70,2) the driving points with the driver's gaze change (from its
        median gaze, `iris.neutral_gaze`) on the avatar's eyes (not seen: the avatar's own gaze); else the points
        as they are."""
        if not uses_gaze(self.cfg):
            return points
        rest, out = avatar.rest_gaze, []
        ref = neutral_gaze(drv["points"], drv.get("iris"))  # the change from the driver's neutral gaze, as live.py
        for k, p in enumerate(points):
            g = rest
            if ref is not None:
                g = rest + conjugate(relative_gaze(drv["points"][k], drv["iris"][k])) - ref
                g = np.where(np.isfinite(g), g, rest)
            out.append(with_iris(p, place_gaze(p, g)))
        return np.stack(out)

    def measure(self, source: int, driver: int, t: int, variant: str, adapt: bool, fake: np.ndarray,
                points: np.ndarray, source_id, driver_id) -> dict[str, Any]:
        values: dict[str, MetricValue] = {}
        if self.csim.available:
            desc = self.csim.net.describe_all(fake, points)
            values["csim_source"] = self.csim.summarize(cosine(desc, source_id))
            values["csim_driver"] = self.csim.summarize(cosine(desc, driver_id))
            values["csim_driver"].higher_is_better = False
            values["verified_source"] = rate_value("verified_source", [verified(desc, self.references[0])])
            values["verified_driver"] = rate_value("verified_driver", [verified(desc, self.references[1])])
            values["verified_driver"].higher_is_better = False
        else:
            for name in ("csim_source", "csim_driver", "verified_source", "verified_driver"):
                values[name] = self.csim.unavailable(len(fake))
        values["landmark_error"] = self.lmk(fake, fake, points) if self.lmk.available else \
            self.lmk.unavailable(len(fake))
        for name, v in values.items():
            v.name = name
        return {"source": self.test.clip_ids[source], "source_identity": self.test.identities[source],
                "driver": self.test.clip_ids[driver], "driver_identity": self.test.identities[driver],
                "T": t, "variant": variant, "adapt": adapt, "frames": len(fake),
                "values": {k: v.to_dict() for k, v in values.items()}}
