"""Data (paper.md section 2): decoding footage, head crops, preprocessing to per-clip folders, episodes.

- `video.py`: read videos of any container / folders of frames / still images; `probe`; `VideoError`.
- `crop.py`: the VoxCeleb-style stable square crop and its `CropTransform` (paste-back).
- `faces.py`: `prepare_photo` (one photo -> `FaceCrop`) and `track_video` (-> `LandmarkTrack`), used by the
  inference pipeline; `FaceNotFoundError`.
- `preprocess.py`: the `talking-heads preprocess` job (per clip and per shard); the job is
  `talking_heads.data.preprocess.preprocess(...)` (this package's `preprocess` attribute is the module);
  `discover.py` finds the clips of its INPUT, `layout.py` is the on-disk layout and its manifests.
- `episodes.py`: `EpisodeDataset`, K source frames + a distinct target per video.
"""

from .crop import ClipCrop, CropTransform, clip_crop, face_extent
from .faces import FaceCrop, FaceNotFoundError, min_face_size, prepare_photo, track_video
from .discover import discover
from .layout import merge_manifests, read_manifest, rebuild_manifest
from .preprocess import PreprocessReport
from .video import VideoError, VideoInfo, probe, read_frames, read_image, to_rgb_uint8

__all__ = [
    "ClipCrop", "CropTransform", "clip_crop", "face_extent", "EpisodeDataset", "identity_split", "FaceCrop",
    "FaceNotFoundError", "min_face_size", "prepare_photo", "track_video", "PreprocessReport", "discover",
    "merge_manifests", "read_manifest", "rebuild_manifest", "VideoError", "VideoInfo", "probe",
    "read_frames", "read_image", "to_rgb_uint8",
]


def __getattr__(name: str):
    """`EpisodeDataset` and `identity_split` import torch: loaded on first use, so that preprocessing worker
    processes (which import this package) start without torch."""
    if name in ("EpisodeDataset", "identity_split"):
        from . import episodes

        return getattr(episodes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
