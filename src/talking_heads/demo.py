"""The main job (`make demo`, `talking-heads demo`): the shipped sample model animates a portrait out of the box.

1. The astronaut portrait that scikit-image ships (NASA, public domain) becomes an avatar (FT by default: the
   paper's fine-tuning, section 6, on T = 1 photo) and is driven by a built-in motion ("talk"): an mp4
   (driving landmarks | result) and a PNG contact sheet.
2. When the real footage folder is there (`../shared/data`, or `$TALKING_HEADS_DATA`, or `data_dir`), a
   painting from `photos/` is puppeteered by a test-split driver video (a person the model never saw),
   with landmark adaptation to the painting's face and the driver's audio carried over.

Everything goes through `TalkingHeadPipeline` (no second inference path); every output is labelled synthetic.
Outputs are written atomically by the pipeline, so a failed demo leaves no half-written file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from skimage import data as skimage_data

from .pipeline import TalkingHeadPipeline

PORTRAIT_NAME = "astronaut"  # skimage.data.astronaut(): Eileen Collins, NASA, public domain
PORTRAIT_MOTION = "talk"
PAINTING = "photos/lp_source_s9.jpg"  # the Mona Lisa (Leonardo da Vinci, public domain)
DRIVER = "videos/test/pcavs_Audio_Source_00015.mp4"  # test split: an identity never seen in meta-learning


@dataclass
class DemoResult:
    """What the demo wrote, in the order it wrote it."""

    outputs: list[tuple[str, Path]] = field(default_factory=list)  # (what it shows, path)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per part
    skipped: list[str] = field(default_factory=list)  # parts not run, with the reason
    background_change: float | None = None  # the puppeteered painting: mean change outside the person (1/255)


def default_data_dir() -> Path | None:
    """$TALKING_HEADS_DATA, else ../shared/data beside the current folder (the project root); None when absent."""
    env = os.environ.get("TALKING_HEADS_DATA")
    path = Path(env) if env else Path.cwd().parent / "shared" / "data"
    return path if (path / "manifest.csv").is_file() else None


def missing_footage(data: Path) -> str | None:
    """The first of the demo's files (painting, driver) that `data` lacks, as a relative path; None if both."""
    return next((name for name in (PAINTING, DRIVER) if not (data / name).is_file()), None)


def portrait():
    """The astronaut photo shipped inside scikit-image's wheel (uint8 RGB, 512 x 512)."""
    return skimage_data.astronaut()


def run_demo(out_dir: str | os.PathLike, *, pipe=None, model_dir: str | os.PathLike | None = None,
             data_dir: str | os.PathLike | None = None, finetune: bool = True, epochs: int | None = None,
             duration: float | None = None, driver_seconds: float | None = None, progress: bool = True) -> DemoResult:
    """Write the demo into `out_dir` (module docstring). `pipe` (or `model_dir`, default: the shipped model);
    `data_dir` None: `default_data_dir()`; `duration`: seconds of the built-in motion; `driver_seconds`:
    cut the puppeteering driver (None: whole clip)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipe = pipe or TalkingHeadPipeline.from_pretrained(model_dir)
    result = DemoResult()

    t0 = time.perf_counter()
    avatar = pipe.create_avatar(portrait(), finetune=finetune, epochs=epochs, progress=progress)
    avatar.sources = [f"{PORTRAIT_NAME} (scikit-image)"]
    result.outputs.append(("avatar of the astronaut portrait", avatar.save(out / f"avatar_{PORTRAIT_NAME}")))
    anim = pipe.animate(avatar, PORTRAIT_MOTION, out / f"{PORTRAIT_NAME}_{PORTRAIT_MOTION}.mp4", side_by_side=True,
                        duration=duration, progress=progress)
    result.outputs += [(f"astronaut, built-in motion '{PORTRAIT_MOTION}' (landmarks | result)", anim.video),
                       ("contact sheet: source, driver, landmarks, result", anim.contact_sheet)]
    result.seconds["portrait"] = time.perf_counter() - t0

    data = Path(data_dir) if data_dir is not None else default_data_dir()
    if data is None or missing_footage(data):
        result.skipped.append("puppeteering a painting: the real footage folder (../shared/data or "
                              "$TALKING_HEADS_DATA) is not here")
        return result
    t0 = time.perf_counter()
    driver = pipe.load_driver(data / DRIVER)
    if driver_seconds is not None:
        driver = driver.head(int(round(driver_seconds * driver.fps)))
    painting = pipe.create_avatar([data / PAINTING], finetune=finetune, epochs=epochs, progress=progress)
    # pasted back into the whole painting through the head mask: the background stays the painting's own
    anim = pipe.animate(painting, driver, out / "mona_lisa_puppeteered.mp4", side_by_side=True, paste_back=True,
                        progress=progress)
    result.background_change = anim.background_change
    result.outputs += [("Mona Lisa driven by a test-split video (driver | result, driver's audio)", anim.video),
                       ("contact sheet of the puppeteering", anim.contact_sheet)]
    result.seconds["puppeteering"] = time.perf_counter() - t0
    return result
