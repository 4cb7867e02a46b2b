"""Model directories (architecture.md principle 4: a saved model rebuilds itself).

A model directory (meta-learned model, and the same format for avatars):
    config.json          the whole `Config` (`Config.to_dict()`) plus a "meta" block:
                         format, format_version, stage ("meta" | "avatar"), num_videos, content_loss
                         ("vgg" | "offline"), step, created (UTC ISO time), torch and talking_heads versions,
                         files ({name: "module" | "tensors"}), and any extra keys the writer adds
    <name>.safetensors   one file per network: the unwrapped module's state_dict (DDP / torch.compile
                         wrappers stripped), or a dict of plain tensors (e.g. an avatar's psi')
Loading needs no flags: `load_model_dir(path)` reads the config, rebuilds E, G, D with `build_networks`
and loads their weights. Directories are written with `atomic_dir` (a killed writer leaves the previous
complete directory or nothing); run checkpoints write into a fresh folder instead (`write_dir`, durable)
and switch to it by one rename (`checkpoint.py`).
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from . import __version__, atomic
from .atomic import atomic_dir, fsync_path, umask
from .config import Config
from .models import build_networks
from .safetensors_io import (CheckpointError, check_against, load_module, read_safetensors_header, regular_file,
                             save_part)

FORMAT = "talking-heads-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
NETWORK_NAMES = ("embedder", "generator", "discriminator")
CONFIG_MAX_BYTES = 16 * 2**20  # a config.json is a few kB; anything this big is not one
MAX_VIDEOS = 10_000_000  # rows of W a model may claim (VoxCeleb2 has ~150,000 videos)

DIRECTORY_KINDS = {  # what read_config's caller expects: (its name, how to make one)
    "model": ("a talking-heads model directory", "train one with `talking-heads train` or omit --model"),
    "avatar": ("an avatar directory", "make one with `talking-heads avatar create`"),
}


# --- writing ----------------------------------------------------------------------------------------

def written(path: Path, durable: bool) -> None:
    """After writing a file of a model directory or checkpoint: the umask's mode, fsync when `durable`, and
    the kill tests' `atomic.fault_point`."""
    os.chmod(path, 0o666 & ~umask())  # safetensors writes 0600 whatever the umask
    if durable:
        fsync_path(path)
    atomic.fault_point(f"wrote {path.name}")


def save_dir(path: str | os.PathLike, cfg: Config, parts: Mapping[str, nn.Module | Mapping[str, torch.Tensor]],
             *, stage: str, meta: Mapping[str, Any] | None = None) -> Path:
    """Write a self-describing directory atomically: config.json + one `<name>.safetensors` per part.

    `parts`: name -> module (its unwrapped state_dict is stored) or name -> dict of tensors.
    `meta`: extra keys for the "meta" block (num_videos, content_loss, step, e_new shape, ...).
    """
    path = Path(path)
    with atomic_dir(path) as tmp:
        write_dir(tmp, cfg, parts, stage=stage, meta=meta)
    return path


def write_dir(path: Path, cfg: Config, parts: Mapping[str, nn.Module | Mapping[str, torch.Tensor]], *, stage: str,
              meta: Mapping[str, Any] | None = None, durable: bool = False) -> Path:
    """`save_dir`'s content written into the existing empty folder `path` (no renaming: the caller makes it
    atomic). `durable`: fsync every file (checkpoints). Calls `atomic.fault_point` after each file."""
    files: dict[str, str] = {}
    full_meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "stage": stage,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "talking_heads": __version__,
    }
    full_meta.update(meta or {})
    for name, part in parts.items():
        if not name.isidentifier():
            raise ValueError(f"part name {name!r} must be an identifier (it becomes a file name)")
        target = path / f"{name}.safetensors"
        files[name] = save_part(target, part)
        written(target, durable)
    full_meta["files"] = files
    d = cfg.to_dict()
    d["meta"] = full_meta
    (path / CONFIG_FILE).write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
    written(path / CONFIG_FILE, durable)
    return path


def save_model_dir(path: str | os.PathLike, cfg: Config, networks, *, num_videos: int, content_loss: str,
                   step: int, extra_meta: Mapping[str, Any] | None = None, into: Path | None = None) -> Path:
    """Save the meta-learned E, G, D (a `models.Networks`) as stage "meta" at `path` (atomically), or into the
    new folder `into` (fsynced; `path` unused)."""
    parts = {name: getattr(networks, name) for name in NETWORK_NAMES}
    meta = {"num_videos": int(num_videos), "content_loss": content_loss, "step": int(step)}
    meta.update(extra_meta or {})
    if into is not None:  # an empty folder the caller renames into place (run checkpoints)
        into.mkdir()
        return write_dir(into, cfg, parts, stage="meta", meta=meta, durable=True)
    return save_dir(path, cfg, parts, stage="meta", meta=meta)


# --- reading ----------------------------------------------------------------------------------------

def _config_file(path: Path, expected: str) -> Path:
    """`path`/config.json, with a readable error when `path` is not a directory holding one."""
    name, how = DIRECTORY_KINDS[expected]
    if not path.exists():
        raise CheckpointError(f"{path}: no such folder (expected {name}; {how})")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (expected {name} holding {CONFIG_FILE}; {how})")
    cfg_file = path / CONFIG_FILE
    if not cfg_file.exists():
        raise CheckpointError(f"{path}: not {name} (no {CONFIG_FILE}; {how})")
    regular_file(cfg_file, "config.json")
    if cfg_file.stat().st_size > CONFIG_MAX_BYTES:
        raise CheckpointError(f"{cfg_file}: {cfg_file.stat().st_size} bytes is far too big for a model config")
    return cfg_file


def _check_meta(path: Path, cfg_file: Path, meta) -> None:
    """The meta block: ours (format), a version this code reads, and numbers in sane ranges."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: {CONFIG_FILE} is not a talking-heads model config (no meta block "
                              f"with format {FORMAT!r})")
    version = meta.get("format_version", -1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{cfg_file}: meta.format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {meta.get('format_version')} is newer than this "
                              f"talking-heads ({FORMAT_VERSION}); upgrade the package")
    for key, lo, hi in (("step", 0, 10**12), ("num_videos", 1, MAX_VIDEOS), ("num_frames", 0, 10**7),
                        ("epochs", 0, 10**9)):
        if key in meta and (isinstance(meta[key], bool) or not isinstance(meta[key], int)
                            or not lo <= meta[key] <= hi):
            raise CheckpointError(f"{cfg_file}: meta.{key} must be an integer in [{lo}, {hi}], got {meta[key]!r}")
    if not isinstance(meta.get("files", {}), dict):
        raise CheckpointError(f"{cfg_file}: meta.files must be an object, got {meta['files']!r}")


def read_config(path: str | os.PathLike, expected: str = "model") -> tuple[Config, dict[str, Any]]:
    """(Config, meta) of a model (or avatar) directory, with a readable error for anything else. Every field
    is checked against the config dataclasses (type, name) and the meta block's numbers against sane ranges.
    `expected` ("model" or "avatar") only words the errors for a path that is not such a directory at all."""
    path = Path(path)
    cfg_file = _config_file(path, expected)
    try:
        d = json.loads(cfg_file.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({err})") from None
    meta = d.pop("meta", None) if isinstance(d, dict) else None
    _check_meta(path, cfg_file, meta)
    try:
        cfg = Config.from_dict(d)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: incompatible model config: {err}") from None
    return cfg, meta


def load_model_dir(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(cfg, meta, networks) of a meta-learned model directory; networks in train mode on `device`.
    The networks are first built on the meta device (no memory) and every weight file's header is checked
    against them, so a config or a file that claims huge tensors is refused before anything is allocated."""
    cfg, meta = read_config(path)
    if meta.get("stage") != "meta":
        raise CheckpointError(f"{path}: holds a {meta.get('stage')!r} directory, not a meta-learned model "
                              "(avatars are loaded by talking_heads.pipeline)")
    if "num_videos" not in meta:
        raise CheckpointError(f"{path}: meta block lacks num_videos")
    try:
        with torch.device("meta"):
            shapes = build_networks(cfg, int(meta["num_videos"]))
    except (ValueError, TypeError, RuntimeError, ZeroDivisionError, IndexError, KeyError) as err:
        raise CheckpointError(f"{path}: the config does not describe networks this version can build: "
                              f"{err}") from None
    for name in NETWORK_NAMES:
        file = Path(path) / f"{name}.safetensors"
        check_against(file, read_safetensors_header(file), getattr(shapes, name))
    networks = build_networks(cfg, int(meta["num_videos"]))
    for name in NETWORK_NAMES:
        load_module(path, name, getattr(networks, name))
        getattr(networks, name).to(device)
    return cfg, meta, networks


def is_model_dir(path: str | os.PathLike) -> bool:
    try:
        read_config(path)
    except CheckpointError:
        return False
    return True
