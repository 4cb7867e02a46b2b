"""Face landmarks (paper.md section 2): detection backends, video tracking, temporal filters, rasterisation.

- `backend.py`: the detector interface (`LandmarkBackend`, `get_backend`, `detect_faces`); `dlib_backend.py`
  the dlib HOG + 68-point implementation, which registers itself as "dlib" when imported here (the default
  backend: every import of this package registers it; dlib itself loads only when a backend is built).
- `tracking.py`: `FaceTracker`, `track_frames` -> `LandmarkTrack` (detect, then track; per-frame confidence).
- `filters.py`: One Euro smoothing and gap filling for driving sequences.
- `raster.py`: `rasterize(points, size)` -> the colour-coded landmark image y; `flip_landmarks`.
- `adaptation.py`: driver motion moved onto another person's face (puppeteering; paper section 8).
- `motions.py`: built-in procedural driving motions (talk, blink, nod, ...).

Landmarks are computed once (preprocessing, or once per driving video at inference), never inside a data
loader (paper.md section 9).

Every command imports this package, `talking-heads --help` included (the CLI lists the built-in motions), so
the modules imported here load cv2, dlib and torch inside the functions that use them (start-up time).
"""

from . import dlib_backend  # noqa: F401  (registers the default backend, "dlib")
from .backend import NUM_POINTS, Detection, LandmarkBackend, detect_faces, get_backend, register_backend
from .filters import OneEuroFilter, fill_gaps, smooth_sequence
from .raster import FLIP_PERMUTATION, SEGMENTS, flip_image, flip_landmarks, rasterize, rasterize_tensor
from .tracking import FaceTracker, LandmarkTrack, track_frames

__all__ = [
    "NUM_POINTS", "Detection", "LandmarkBackend", "detect_faces", "get_backend", "register_backend",
    "OneEuroFilter", "fill_gaps", "smooth_sequence",
    "FLIP_PERMUTATION", "SEGMENTS", "flip_image", "flip_landmarks", "rasterize", "rasterize_tensor",
    "FaceTracker", "LandmarkTrack", "track_frames",
]
