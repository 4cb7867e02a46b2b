"""Training state and run checkpoints; the model-directory API re-exported (`model_dir.py`, `safetensors_io.py`).

Training state (`training_state.pt`, beside the model directory of a run): optimiser state_dicts, step,
the episode sampler's (epoch, position) and the RNG states of python, numpy, torch and CUDA, one set per
rank. Only tensors, numbers, strings, lists and dicts, so `torch.load(path, weights_only=True)` loads it.

Run checkpoint: a model directory (`model_dir.py`) and its training state in one folder,
RUN/checkpoints/step_NNNNNNN/{model/, training_state.pt}, committed by one atomic rename of the link
RUN/latest (`commit_run_checkpoint`); every write and rename calls `atomic.fault_point`, where the kill tests
stop the process.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from . import atomic
from .atomic import atomic_path, fsync_path, sweep_temporaries, umask
from .model_dir import (CONFIG_FILE, CONFIG_MAX_BYTES, DIRECTORY_KINDS, FORMAT, FORMAT_VERSION, MAX_VIDEOS,
                        NETWORK_NAMES, is_model_dir, load_model_dir, read_config, save_dir, save_model_dir,
                        write_dir, written)
from .safetensors_io import (HEADER_MAX_BYTES, SAFETENSORS_DTYPES, CheckpointError, load_module, load_tensors,
                             read_safetensors_header)

TRAINING_STATE_FILE = "training_state.pt"

__all__ = ["CONFIG_FILE", "CONFIG_MAX_BYTES", "DIRECTORY_KINDS", "FORMAT", "FORMAT_VERSION", "HEADER_MAX_BYTES",
           "MAX_VIDEOS", "NETWORK_NAMES", "SAFETENSORS_DTYPES", "TRAINING_STATE_FILE", "CheckpointError",
           "RunCheckpoint", "commit_run_checkpoint", "ensure_run_links", "find_run_checkpoint", "is_model_dir",
           "load_model_dir", "load_module", "load_tensors", "load_training_state", "read_config",
           "read_safetensors_header", "rng_state", "save_dir", "save_model_dir", "save_training_state",
           "set_rng_state", "sweep_run_dir", "write_dir"]


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


def save_training_state(path: str | os.PathLike, state: Mapping[str, Any], atomic: bool = True) -> Path:
    """Write a training state (must hold only weights_only-loadable types): atomically, or (atomic=False)
    straight to `path` inside a checkpoint folder that is renamed into place afterwards."""
    path = Path(path)
    if not atomic:
        torch.save(dict(state), path)
        written(path, True)
        return path
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


# --- run checkpoints: model + training state as one unit, switched by one atomic rename ------------------

CHECKPOINTS_DIR = "checkpoints"  # RUN/checkpoints/step_0000020/{model/, training_state.pt}
LATEST_LINK = "latest"  # RUN/latest -> checkpoints/step_0000020: the one pointer; replacing it commits
MODEL_LINK = "model"  # RUN/model -> latest/model (never changes: users pass RUN/model to other commands)
STATE_LINK = TRAINING_STATE_FILE  # RUN/training_state.pt -> latest/training_state.pt (never changes)


@dataclass
class RunCheckpoint:
    """The last complete checkpoint of a run: `folder` holds model/ and training_state.pt."""

    folder: Path
    step: int
    legacy: bool = False  # the layout before checkpoint folders (RUN/model/ + RUN/training_state.pt)

    @property
    def model_dir(self) -> Path:
        return self.folder / MODEL_LINK

    @property
    def state_file(self) -> Path:
        return self.folder / TRAINING_STATE_FILE


def _step_of(folder: Path) -> int:
    _, meta = read_config(folder / MODEL_LINK)
    return int(meta.get("step", -1))


def find_run_checkpoint(run_dir: str | os.PathLike) -> RunCheckpoint | None:
    """The checkpoint `latest` points at; else an older run's RUN/model/ + RUN/training_state.pt (also when a
    kill between the two renames of that layout's directory swap left the model only aside, as
    `.model.old-PID`); None when the run has no complete checkpoint."""
    run_dir = Path(run_dir)
    latest = run_dir / LATEST_LINK
    if latest.is_symlink():
        folder = run_dir / os.readlink(latest)
        if not ((folder / MODEL_LINK / CONFIG_FILE).is_file() and (folder / TRAINING_STATE_FILE).is_file()):
            raise CheckpointError(f"{latest} points at {folder}, which is not a complete checkpoint (removed by "
                                  "hand?); restore that folder or remove the run's latest link to start again")
        return RunCheckpoint(folder.resolve(), _step_of(folder))
    state = run_dir / TRAINING_STATE_FILE
    if not state.is_file() or state.is_symlink():
        return None
    model = run_dir / MODEL_LINK
    candidates = [model] if (model / CONFIG_FILE).is_file() else []
    candidates += sorted(run_dir.glob(f".{MODEL_LINK}.old-*"))  # the old atomic_dir's aside copy
    ts_step = int(load_training_state(state)["step"])
    for c in candidates:
        try:
            if _step_of_dir(c) == ts_step:
                return RunCheckpoint(run_dir, ts_step, legacy=True) if c == model else _adopt_aside(run_dir, c, ts_step)
        except CheckpointError:
            continue
    if candidates:
        raise CheckpointError(
            f"{run_dir}: model/ is at step {_step_of_dir(candidates[0])} but training_state.pt at step {ts_step} "
            "(written by an older talking-heads killed while checkpointing; this version's checkpoints cannot "
            "get into this state): start a new run (--out elsewhere)")
    return None


def _step_of_dir(model_dir: Path) -> int:
    return int(read_config(model_dir)[1].get("step", -1))


def _adopt_aside(run_dir: Path, aside: Path, step: int) -> RunCheckpoint:
    """Put an older layout's aside model copy back at RUN/model (the kill fell between its two renames)."""
    model = run_dir / MODEL_LINK
    if model.exists():
        shutil.rmtree(model)
    os.replace(aside, model)
    return RunCheckpoint(run_dir, step, legacy=True)


def commit_run_checkpoint(run_dir: str | os.PathLike, step: int, write: Callable[[Path], None]) -> RunCheckpoint:
    """Write a checkpoint folder with `write(folder)` (model/ and training_state.pt inside, fsynced), rename it
    into RUN/checkpoints/, then switch RUN/latest to it with one atomic rename (the commit), make sure the
    fixed links RUN/model and RUN/training_state.pt exist, and only then delete the previous checkpoint.
    A SIGKILL at any instant leaves the previous checkpoint or this one committed; what it leaves half-done
    is removed by `sweep_run_dir` on the next start."""
    run_dir = Path(run_dir)
    ckdir = run_dir / CHECKPOINTS_DIR
    ckdir.mkdir(parents=True, exist_ok=True)
    previous = _latest_target(run_dir)
    name = f"step_{int(step):07d}"
    if previous is not None and previous.name == name:  # the same step again (defensive): a fresh name
        name = f"{name}.{os.getpid()}"
    final = ckdir / name
    if final.exists():  # left by a killed run, never committed
        shutil.rmtree(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=ckdir))
    os.chmod(tmp, 0o777 & ~umask())
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    fsync_path(ckdir)
    atomic.fault_point("renamed the checkpoint folder")
    _replace_link(run_dir / LATEST_LINK, f"{CHECKPOINTS_DIR}/{name}")  # the commit
    atomic.fault_point("switched latest")
    ensure_run_links(run_dir)
    for old in sorted(ckdir.iterdir()):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
            atomic.fault_point(f"removed {old.name}")
    return RunCheckpoint(final.resolve(), int(step))


def _latest_target(run_dir: Path) -> Path | None:
    latest = run_dir / LATEST_LINK
    return (run_dir / os.readlink(latest)) if latest.is_symlink() else None


def _replace_link(link: Path, target: str) -> None:
    """Point `link` at `target` (relative) atomically: a new link under a temporary name, renamed over it."""
    tmp = link.parent / f".{link.name}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(target, tmp)
    except OSError as err:
        raise CheckpointError(f"{link.parent}: cannot make symbolic links here ({err.strerror}); run directories "
                              "need a file system with symbolic links (a local disk, NFS, Lustre, ...)") from None
    atomic.fault_point(f"made link {tmp.name}")
    os.replace(tmp, link)
    fsync_path(link.parent)


def ensure_run_links(run_dir: str | os.PathLike) -> None:
    """RUN/model -> latest/model and RUN/training_state.pt -> latest/training_state.pt; an older layout's real
    model/ folder and training_state.pt file are replaced (the committed checkpoint holds their data)."""
    run_dir = Path(run_dir)
    for name in (MODEL_LINK, STATE_LINK):
        link, target = run_dir / name, f"{LATEST_LINK}/{name}"
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.is_dir() and not link.is_symlink():  # the older layout's model/: set it aside, then link
            aside = run_dir / f".{name}.{os.getpid()}.old.tmp"
            os.replace(link, aside)
            atomic.fault_point(f"set aside {name}")
            _replace_link(link, target)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            _replace_link(link, target)
        atomic.fault_point(f"linked {name}")


def sweep_run_dir(run_dir: str | os.PathLike) -> list[Path]:
    """Remove what a killed run left half-done: checkpoint folders `latest` does not point at, their
    temporaries, temporary links and files; repair the fixed links. Returns what was removed."""
    run_dir = Path(run_dir)
    removed = sweep_temporaries(run_dir)
    current = _latest_target(run_dir)
    ckdir = run_dir / CHECKPOINTS_DIR
    if current is not None and ckdir.is_dir():
        for p in ckdir.iterdir():
            if p.name != current.name:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink()
                removed.append(p)
        ensure_run_links(run_dir)
    elif current is None and ckdir.is_dir():  # killed before the first commit: nothing in there is committed
        shutil.rmtree(ckdir, ignore_errors=True)
        removed.append(ckdir)
    for p in run_dir.glob(f".{MODEL_LINK}.old-*"):  # an older layout's aside copy, not needed any more
        if current is not None:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed
