"""Background flicker of a puppeteered photo: how much the pixels outside the person change between frames.

When a photo is animated and the rendered head is pasted back into it, everything that is not the person
(the background, the painting's landscape) should stay still. `BackgroundFlicker` measures it on the frames
as they are written: the mean over consecutive frame pairs of the mean absolute change of the pixels
outside the person's mask (all three channels), in 1/255 intensity steps, so 2.0 means "two grey levels per
frame on average". The mask is the photo's own head mask (`landmarks.masks.head_mask` of the avatar's
landmarks) in frame pixels: changes there are the person moving, not flicker (`paste_back_flicker` builds
it for frames pasted into a photo).
"""

from __future__ import annotations

import numpy as np

from ..data.crop import CropTransform
from ..landmarks.masks import head_mask


class BackgroundFlicker:
    """Feed frames with `update(frame)`; `value` is the mean change outside `person` (module docstring)."""

    def __init__(self, person: np.ndarray, threshold: float = 0.5):
        self.outside = np.asarray(person, np.float32) < threshold  # (H,W) True where the person is not
        self.previous: np.ndarray | None = None
        self.changes: list[float] = []

    def update(self, frame: np.ndarray) -> None:
        if frame.shape[:2] != self.outside.shape:
            raise ValueError(f"frame {frame.shape[:2]} and mask {self.outside.shape} differ in size")
        current = frame[self.outside].astype(np.int16)
        if self.previous is not None and current.size:
            self.changes.append(float(np.abs(current - self.previous).mean()))
        self.previous = current

    @property
    def value(self) -> float | None:
        """Mean change per frame pair in 1/255 steps; None before two frames (or with no background)."""
        return float(np.mean(self.changes)) if self.changes else None

    @property
    def worst(self) -> float | None:
        """The largest change of one frame pair."""
        return float(np.max(self.changes)) if self.changes else None


def paste_back_flicker(face: np.ndarray | None, frame: np.ndarray, transform: CropTransform, size: int
                       ) -> BackgroundFlicker:
    """A BackgroundFlicker for frames pasted into the photo `frame` (H,W,3) through `transform` (its crop box,
    at any output size): outside the photo's own head mask, drawn from `face` (68,2) in crop px at `size` (the
    whole crop box when there are no landmarks)."""
    inside = head_mask(face, size) if face is not None else np.ones((size, size), np.float32)
    person = transform.paste_back(np.ones((size, size), np.float32), np.zeros(frame.shape[:2], np.float32), inside)
    return BackgroundFlicker(person)
