"""The release path of a meta-learned model: the copy shipped in the package (`talking-heads export-model`).

A training run's model directory holds fp32 weights and the run's meta block. The released copy is the same
self-describing directory (config.json + one `.safetensors` per network, loadable with no flags) with its
floating-point weights stored as float16 (half the size; `checkpoint.load_module` loads them back into fp32
networks), and a meta block that keeps the run's keys plus `dtype` and `exported_from`. Written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import torch

from . import checkpoint
from .config import apply_overrides
from .errors import InputError
from .paths import output_dir

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# meta keys that describe the writing of a directory (save_dir writes them anew), not the run
_WRITER_KEYS = ("format", "format_version", "stage", "created", "files", "torch", "talking_heads")


EXPORT_SECTIONS = ("inference",)  # settings an export may change: how the model renders, never the networks


def export_model(src: str | os.PathLike, dst: str | os.PathLike, dtype: str = "float16", *,
                 names: Mapping[str, str] | None = None, overrides: Sequence[str] = ()) -> Path:
    """Write the model directory `src` (from `talking-heads train`: RUN_DIR/model) to `dst` with its floating-point
    weights in `dtype` (one of DTYPES). `dst` is created, or replaced when it is a model directory already;
    any other existing folder is refused (its contents would be replaced), as is one that overlaps `src`.
    names: what messages call `dst` and `dtype` (a command's, e.g. {"dtype": "--dtype"}; default: "dst", "dtype").
    overrides: "inference.FIELD=VALUE" settings the released copy renders with (e.g. the TPS model's yaw
    limit); other sections are refused (they describe the networks and their training)."""
    called = {"dst": "dst", "dtype": "dtype", **(names or {})}
    for item in overrides:
        if item.split(".", 1)[0] not in EXPORT_SECTIONS:
            raise InputError(f"--set {item}: an export may change only {', '.join(EXPORT_SECTIONS)}.* settings")
    if dtype not in DTYPES:
        raise InputError(f"{called['dtype']} {dtype}: choose one of {', '.join(DTYPES)}")
    dst = output_dir(dst, called["dst"], inputs=[src])
    if dst.is_dir() and any(dst.iterdir()) and not checkpoint.is_model_dir(dst):
        raise InputError(f"{called['dst']} {dst} is a folder that holds something other than a model directory, and "
                         "exporting replaces the whole folder; give a new folder or a model directory")
    cfg, meta, networks = checkpoint.load_model_dir(src)
    cfg = apply_overrides(cfg, list(overrides))
    parts = {}
    for name in checkpoint.NETWORK_NAMES:
        state = getattr(networks, name).state_dict()  # load_model_dir returns plain modules
        parts[name] = {k: (v.to(DTYPES[dtype]) if v.is_floating_point() else v) for k, v in state.items()}
    meta = {k: v for k, v in meta.items() if k not in _WRITER_KEYS}
    meta.update(dtype=dtype, exported_from=str(Path(src)))
    return checkpoint.save_dir(dst, cfg, parts, stage="meta", meta=meta)
