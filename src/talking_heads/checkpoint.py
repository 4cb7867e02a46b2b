"""Model directories and training state (architecture.md principle 4: a saved model rebuilds itself).

Model directory (meta-learned model, and the same format for avatars):
    config.json          the whole `Config` (`Config.to_dict()`) plus a "meta" block:
                         format, format_version, stage ("meta" | "avatar"), num_videos, content_loss
                         ("vgg" | "offline"), step, created (UTC ISO time), torch and talking_heads versions,
                         files ({name: "module" | "tensors"}), and any extra keys the writer adds
    <name>.safetensors   one file per network: the unwrapped module's state_dict (DDP / torch.compile
                         wrappers stripped), or a dict of plain tensors (e.g. an avatar's psi')
Loading needs no flags: `load_model_dir(path)` reads the config, rebuilds E, G, D with `build_networks`
and loads their weights. Directories are written with `atomic_dir` (a killed writer leaves the previous
complete directory or nothing).

Training state (`training_state.pt`, beside the model directory of a run): optimiser state_dicts, step,
the episode sampler's (epoch, position) and the RNG states of python, numpy, torch and CUDA, one set per
rank. Only tensors, numbers, strings, lists and dicts, so `torch.load(path, weights_only=True)` loads it.
"""

from __future__ import annotations

import datetime
import json
import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from . import __version__
from .atomic import atomic_dir, atomic_path
from .config import Config

FORMAT = "talking-heads-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
TRAINING_STATE_FILE = "training_state.pt"
NETWORK_NAMES = ("embedder", "generator", "discriminator")


class CheckpointError(ValueError):
    """A path that is not a model directory, or one this version cannot load."""


# --- writing ----------------------------------------------------------------------------------------

def _unwrap(module: nn.Module) -> nn.Module:
    from .dist import unwrap

    return unwrap(module)


def save_dir(path: str | os.PathLike, cfg: Config, parts: Mapping[str, nn.Module | Mapping[str, torch.Tensor]],
             *, stage: str, meta: Mapping[str, Any] | None = None) -> Path:
    """Write a self-describing directory atomically: config.json + one `<name>.safetensors` per part.

    `parts`: name -> module (its unwrapped state_dict is stored) or name -> dict of tensors.
    `meta`: extra keys for the "meta" block (num_videos, content_loss, step, e_new shape, ...).
    """
    path = Path(path)
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
    with atomic_dir(path) as tmp:
        for name, part in parts.items():
            if not name.isidentifier():
                raise ValueError(f"part name {name!r} must be an identifier (it becomes a file name)")
            target = tmp / f"{name}.safetensors"
            if isinstance(part, nn.Module):
                save_model(_unwrap(part), str(target))
                files[name] = "module"
            else:
                save_file({k: v.detach().contiguous().cpu() for k, v in part.items()}, str(target))
                files[name] = "tensors"
        full_meta["files"] = files
        d = cfg.to_dict()
        d["meta"] = full_meta
        (tmp / CONFIG_FILE).write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
    return path


def save_model_dir(path: str | os.PathLike, cfg: Config, networks, *, num_videos: int, content_loss: str,
                   step: int, extra_meta: Mapping[str, Any] | None = None) -> Path:
    """Save the meta-learned E, G, D (a `models.Networks`) as stage "meta"."""
    parts = {name: getattr(networks, name) for name in NETWORK_NAMES}
    meta = {"num_videos": int(num_videos), "content_loss": content_loss, "step": int(step)}
    meta.update(extra_meta or {})
    return save_dir(path, cfg, parts, stage="meta", meta=meta)


# --- reading ----------------------------------------------------------------------------------------

def read_config(path: str | os.PathLike) -> tuple[Config, dict[str, Any]]:
    """(Config, meta) of a model directory, with a readable error for anything else."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (expected a model directory holding config.json)")
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: not a talking-heads model directory (no {CONFIG_FILE})")
    try:
        d = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({err})") from None
    meta = d.pop("meta", None) if isinstance(d, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: {CONFIG_FILE} is not a talking-heads model config (no meta block "
                              f"with format {FORMAT!r})")
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {meta.get('format_version')} is newer than this "
                              f"talking-heads ({FORMAT_VERSION}); upgrade the package")
    try:
        cfg = Config.from_dict(d)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: incompatible model config: {err}") from None
    return cfg, meta


def load_module(path: str | os.PathLike, name: str, module: nn.Module) -> nn.Module:
    """Load `<path>/<name>.safetensors` into `module` (strict), with a readable error on mismatch."""
    file = Path(path) / f"{name}.safetensors"
    if not file.is_file():
        raise CheckpointError(f"{Path(path)}: missing {file.name}")
    target = _unwrap(module)
    try:
        missing, unexpected = load_model(target, str(file), strict=False)
    except (RuntimeError, ValueError) as err:  # shape mismatch
        raise CheckpointError(f"{file}: weights do not fit the network the config describes: "
                              f"{str(err).splitlines()[0]}") from None
    if missing or unexpected:
        raise CheckpointError(f"{file}: weights do not fit the network the config describes "
                              f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    return module


def load_tensors(path: str | os.PathLike, name: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The dict of tensors stored as `<path>/<name>.safetensors`."""
    file = Path(path) / f"{name}.safetensors"
    if not file.is_file():
        raise CheckpointError(f"{Path(path)}: missing {file.name}")
    return load_file(str(file), device=str(device))


def load_model_dir(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(cfg, meta, networks) of a meta-learned model directory; networks in train mode on `device`."""
    from .models import build_networks

    cfg, meta = read_config(path)
    if meta.get("stage") != "meta":
        raise CheckpointError(f"{path}: holds a {meta.get('stage')!r} directory, not a meta-learned model "
                              "(avatars are loaded by talking_heads.pipeline)")
    if "num_videos" not in meta:
        raise CheckpointError(f"{path}: meta block lacks num_videos")
    try:
        networks = build_networks(cfg, int(meta["num_videos"]))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: the config does not describe networks this version can build: "
                              f"{err}") from None
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


# --- training state ---------------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch (CPU) and every CUDA device, in weights_only-safe types."""
    py = random.getstate()
    npy = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"bit_generator": npy["bit_generator"],
                  "key": torch.from_numpy(npy["state"]["key"].astype(np.int64)),
                  "pos": int(npy["state"]["pos"]), "has_gauss": int(npy["has_gauss"]),
                  "gauss": float(npy["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state()` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = list(state["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def save_training_state(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Atomically write a training state (must hold only weights_only-loadable types)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return path


def load_training_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no training state")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not our file"
        raise CheckpointError(f"{path}: not a loadable training state ({err})") from None
