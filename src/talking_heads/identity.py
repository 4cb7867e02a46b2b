"""Are these the same person? Face descriptors of photos and videos with dlib's face ResNet (our PyTorch port).

`describe(path)` finds the one face of a photo (or of T frames spread over a video or folder of frames),
aligns it with its 68 landmarks and returns dlib's 128-D descriptor (the mean over a video's frames);
`compare(identities)` gives every pair's Euclidean distance and dlib's verdict (same person below 0.6, the
threshold of dlib's metric loss, `EvalConfig.identity_threshold`). Used by `talking-heads identity compare`,
and by anything else that needs to know whether two faces are one person: `check_same_person` warns when the
sources of an avatar show different people.

Input problems raise `IdentityInputError` (a ValueError) with a message naming the file: unreadable file, no
face, several faces (ambiguous: crop the photo to the person meant), a face too small to describe.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .config import EvalConfig
from .data.faces import DETECT_MAX_SIDE, FaceCrop
from .data.video import VideoError, even_indices, is_frames_folder, is_video_file, probe, read_frames, read_image
from .errors import InputError
from .landmarks.backend import detect_faces, get_backend
from .metrics.csim import FaceDescriptor, face_descriptor
from .models.face_identity import SAME_PERSON_DISTANCE  # dlib's threshold on the distance (EvalConfig.identity_threshold)

MIN_FACE_PX = 40  # a face smaller than this (landmark extent) carries too little to describe


class IdentityInputError(InputError):
    """A photo or video whose face cannot be described; the message says which file and what to do."""


@dataclass
class FaceIdentity:
    """One person's descriptor: from a photo (frames = 1) or the mean over a video's frames."""

    source: str
    descriptor: np.ndarray  # (128,) float64, not normalised
    frames: int  # faces averaged
    face_px: float  # size of the (smallest) face described, landmark extent in px


@dataclass
class Comparison:
    a: str
    b: str
    distance: float
    same: bool

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "distance": round(self.distance, 4), "same_person": self.same}


def _images(path: Path, frames: int) -> tuple[list[tuple[str, np.ndarray]], bool]:
    """([(label, RGB uint8)], is a video) of a photo, or of `frames` frames spread over a video / folder of
    frames."""
    if not path.exists():
        raise IdentityInputError(f"{path}: no such file")
    if not (path.is_file() or path.is_dir()):
        raise IdentityInputError(f"{path}: not a regular file (a photo, a video or a folder of frames is expected)")
    try:
        if is_video_file(path) or is_frames_folder(path):
            info = probe(path)
            if info.num_frames:
                got = list(read_frames(path, even_indices(info.num_frames, frames)))
            else:  # no frame count in the header: decode all, keep an even spread
                every = list(read_frames(path))
                got = [every[i] for i in even_indices(len(every), frames)]
            return [(f"{path.name} frame {i}", img) for i, img in got], True
        if path.is_dir():
            raise IdentityInputError(f"{path}: a folder without image frames")
        return [(path.name, read_image(path))], False
    except VideoError as err:
        raise IdentityInputError(f"{path}: cannot be read ({err})") from None


def _one_face(label: str, image: np.ndarray) -> tuple[np.ndarray, float]:
    """(68 landmarks (68,2), face size px) of the single face of an image; IdentityInputError for none or
    several."""
    backend = get_backend("dlib")
    faces = detect_faces(image, backend, max_side=DETECT_MAX_SIDE)
    h, w = image.shape[:2]
    if not faces:
        raise IdentityInputError(f"{label}: no face found ({w}x{h} px); use a photo with one clearly visible face")
    if len(faces) > 1:
        sizes = ", ".join(f"{f.size:.0f}" for f in faces[:4])
        raise IdentityInputError(f"{label}: {len(faces)} faces found (sizes {sizes} px); crop the photo to the one "
                                 "person to compare")
    points, _ = backend.landmarks(image, faces[0].box)
    extent = float(np.ptp(points, axis=0).max())
    if extent < MIN_FACE_PX:
        raise IdentityInputError(f"{label}: the face is only {extent:.0f} px across (at least {MIN_FACE_PX} px "
                                 "are needed); use a closer or higher-resolution image")
    return np.asarray(points, np.float64), extent


def describe(path: str | os.PathLike, *, frames: int = 8, descriptor=None) -> FaceIdentity:
    """The descriptor of the one face in a photo, or the mean over `frames` frames of a video (frames where
    no face is found are skipped; a video with no face at all is an error). `descriptor`: a
    metrics.csim.FaceDescriptor to reuse (one is built on the CPU otherwise)."""
    path = Path(path)
    net = descriptor or FaceDescriptor()
    images, video = _images(path, max(1, int(frames)))
    descs, sizes = [], []
    for label, image in images:
        try:
            points, extent = _one_face(label, image)
        except IdentityInputError as err:
            if not video or "faces found" in str(err):  # several faces is ambiguous even in a video
                raise
            continue
        descs.append(net.describe(image, points))
        sizes.append(extent)
    if not descs:
        raise IdentityInputError(f"{path}: no face found in any of the {len(images)} frames read")
    return FaceIdentity(str(path), np.mean(descs, axis=0), len(descs), min(sizes))


def compare(identities: Sequence[FaceIdentity], threshold: float = SAME_PERSON_DISTANCE) -> list[Comparison]:
    """Every pair (i < j): Euclidean distance of the descriptors and the verdict distance < threshold."""
    out = []
    for a, b in itertools.combinations(identities, 2):
        d = float(np.linalg.norm(a.descriptor - b.descriptor))
        out.append(Comparison(a.source, b.source, d, d < threshold))
    return out


def check_same_person(crops: Sequence[FaceCrop], names: Sequence[str], eval_cfg: EvalConfig) -> list[str]:
    """Warnings for avatar sources that do not look like the first one's person: the descriptors of the crops
    (with their landmarks) farther apart than the same-person distance `eval_cfg.identity_threshold` (dlib's 0.6). An avatar of two people
    is allowed (it may be wanted), but never silently. names: the sources' names (missing ones are numbered);
    eval_cfg: where the descriptor network's files are."""
    if len(crops) < 2:
        return []
    net = face_descriptor(eval_cfg, "cpu")
    if isinstance(net, str):
        return [f"could not check that the sources show one person ({net})"]
    desc = net.describe_all(np.stack([c.image for c in crops]),
                            np.stack([c.landmarks for c in crops]).astype(np.float64))
    dist = np.linalg.norm(desc - desc[0], axis=1)
    names = list(names) + [f"source {i + 1}" for i in range(len(names), len(crops))]
    limit = eval_cfg.identity_threshold
    return [f"{names[i]} does not look like the same person as {names[0]} (face descriptor distance "
            f"{d:.2f} > {limit}): the avatar mixes their faces" for i, d in enumerate(dist)
            if i and np.isfinite(d) and d > limit]
