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
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from . import __version__
from .atomic import atomic_dir, atomic_path, fsync_path, umask
from .config import Config
from .errors import InputError

FORMAT = "talking-heads-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
TRAINING_STATE_FILE = "training_state.pt"
NETWORK_NAMES = ("embedder", "generator", "discriminator")


class CheckpointError(InputError):
    """A path that is not a model directory, or one this version cannot load."""


# --- writing ----------------------------------------------------------------------------------------

def fault_point(what: str) -> None:
    """Called after every write and rename of a checkpoint (`what` names it). A no-op; the kill tests replace
    it in a child process with one that SIGKILLs the process at the N-th call."""


def _written(path: Path, durable: bool) -> None:
    os.chmod(path, 0o666 & ~umask())  # safetensors writes 0600 whatever the umask
    if durable:
        fsync_path(path)
    fault_point(f"wrote {path.name}")


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
    with atomic_dir(path) as tmp:
        write_dir(tmp, cfg, parts, stage=stage, meta=meta)
    return path


def write_dir(path: Path, cfg: Config, parts: Mapping[str, nn.Module | Mapping[str, torch.Tensor]], *, stage: str,
              meta: Mapping[str, Any] | None = None, durable: bool = False) -> Path:
    """`save_dir`'s content written into the existing empty folder `path` (no renaming: the caller makes it
    atomic). `durable`: fsync every file (checkpoints). Calls `fault_point` after each file."""
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
        if isinstance(part, nn.Module):
            save_model(_unwrap(part), str(target))
            files[name] = "module"
        else:
            save_file({k: v.detach().contiguous().cpu() for k, v in part.items()}, str(target))
            files[name] = "tensors"
        _written(target, durable)
    full_meta["files"] = files
    d = cfg.to_dict()
    d["meta"] = full_meta
    (path / CONFIG_FILE).write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
    _written(path / CONFIG_FILE, durable)
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

CONFIG_MAX_BYTES = 16 * 2**20  # a config.json is a few kB; anything this big is not one
HEADER_MAX_BYTES = 64 * 2**20  # safetensors' own cap on the JSON header (100 MB) is in the same range
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
                      "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_TORCH_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                 torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                 torch.bool: "BOOL"}
MAX_VIDEOS = 10_000_000  # rows of W a model may claim (VoxCeleb2 has ~150,000 videos)


def _regular_file(file: Path, what: str) -> None:
    """CheckpointError unless `file` is a regular file (a FIFO or device would block or never end)."""
    from .paths import input_file

    if not file.exists():
        raise CheckpointError(f"{file.parent}: missing {file.name}")
    try:
        input_file(file, what)
    except InputError as err:
        raise CheckpointError(str(err)) from None


DIRECTORY_KINDS = {  # what read_config's caller expects: (its name, how to make one)
    "model": ("a talking-heads model directory", "train one with `talking-heads train` or omit --model"),
    "avatar": ("an avatar directory", "make one with `talking-heads avatar create`"),
}


def read_config(path: str | os.PathLike, expected: str = "model") -> tuple[Config, dict[str, Any]]:
    """(Config, meta) of a model (or avatar) directory, with a readable error for anything else. Every field
    is checked against the config dataclasses (type, name) and the meta block's numbers against sane ranges.
    `expected` ("model" or "avatar") only words the errors for a path that is not such a directory at all."""
    path = Path(path)
    name, how = DIRECTORY_KINDS[expected]
    if not path.exists():
        raise CheckpointError(f"{path}: no such folder (expected {name}; {how})")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (expected {name} holding {CONFIG_FILE}; {how})")
    cfg_file = path / CONFIG_FILE
    if not cfg_file.exists():
        raise CheckpointError(f"{path}: not {name} (no {CONFIG_FILE}; {how})")
    _regular_file(cfg_file, "config.json")
    if cfg_file.stat().st_size > CONFIG_MAX_BYTES:
        raise CheckpointError(f"{cfg_file}: {cfg_file.stat().st_size} bytes is far too big for a model config")
    try:
        d = json.loads(cfg_file.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({err})") from None
    meta = d.pop("meta", None) if isinstance(d, dict) else None
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
    try:
        cfg = Config.from_dict(d)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: incompatible model config: {err}") from None
    return cfg, meta


def read_safetensors_header(file: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{tensor name: (dtype, shape)} of a safetensors file, checked before any tensor data is read: the
    header's length, JSON, dtypes, shapes, and data offsets that tile the data section exactly (so a
    truncated file, a header that lies about sizes or claims huge tensors, random bytes or a pickle are
    refused here, with the file named)."""
    import struct

    file = Path(file)
    _regular_file(file, "weights file")
    size = file.stat().st_size

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{file}: not a valid safetensors file ({why}); the file is damaged or not "
                               "written by talking-heads: copy it again or re-create the directory")

    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad(f"{size} bytes, shorter than the 8-byte header length" if size else "empty file")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 and (head[:1] == b"\x80" or head[:2] == b"PK"):
            raise bad("it looks like a pickle / torch.save file, which is never loaded: it could run code")
        if n > min(HEADER_MAX_BYTES, size - 8):
            raise bad(f"header length {n} does not fit the file's {size} bytes" if n > size - 8
                      else f"header length {n} is over {HEADER_MAX_BYTES}")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise bad("the header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    data_size = size - 8 - n
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"entry {name!r} is not dtype / shape / data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            raise bad(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40
                                                for d in shape)):
            raise bad(f"tensor {name!r} has an invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise bad(f"tensor {name!r} has invalid data offsets {offsets!r}")
        nbytes = SAFETENSORS_DTYPES[dtype]
        for d in shape:
            nbytes *= d
        begin, end = offsets
        if not 0 <= begin <= end or end - begin != nbytes:
            raise bad(f"tensor {name!r}: offsets {offsets} do not hold {dtype} {shape} ({nbytes} bytes)")
        if end > data_size:
            raise bad(f"truncated: tensor {name!r} ends at byte {end} of a {data_size}-byte data section")
        out[name] = (dtype, tuple(shape))
        spans.append((begin, end))
    pos = 0
    for begin, end in sorted(spans):
        if begin != pos:
            raise bad("tensors overlap or leave gaps in the data section")
        pos = end
    if pos != data_size:
        raise bad(f"the header describes {pos} bytes of data, the file holds {data_size}")
    return out


def _check_against(file: Path, header: dict[str, tuple[str, tuple[int, ...]]], module: nn.Module) -> None:
    """CheckpointError unless the file's tensors are exactly the module's state_dict (names, shapes, and
    dtypes of the same kind: floating point or the exact integer type)."""
    expected = {k: (_TORCH_DTYPES.get(v.dtype, str(v.dtype)), tuple(v.shape)) for k, v in module.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{file}: weights do not fit the network the config describes "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    def kind(dtype: str) -> str:  # floating tensors load into any float dtype (the sample model ships F16)
        return "float" if dtype.startswith(("F", "BF")) else dtype

    for k, (dtype, shape) in expected.items():
        if header[k][1] != shape or kind(header[k][0]) != kind(dtype):
            raise CheckpointError(f"{file}: weights do not fit the network the config describes: {k} is "
                                  f"{header[k][0]} {list(header[k][1])} in the file, the config needs {dtype} "
                                  f"{list(shape)}")


def _check_finite(file: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{file}: tensor {k} holds NaN or infinite values; the file is damaged (or "
                                  "the run diverged): use an earlier checkpoint")


def load_module(path: str | os.PathLike, name: str, module: nn.Module) -> nn.Module:
    """Load `<path>/<name>.safetensors` into `module` (strict): the header is checked against the module's
    state_dict before reading, the values must be finite."""
    file = Path(path) / f"{name}.safetensors"  # a missing file is named by read_safetensors_header
    target = _unwrap(module)
    _check_against(file, read_safetensors_header(file), target)
    try:
        missing, unexpected = load_model(target, str(file), strict=False)
    except Exception as err:  # noqa: BLE001 - whatever the reader raises, the file is not usable
        raise CheckpointError(f"{file}: weights do not fit the network the config describes: "
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if missing or unexpected:
        raise CheckpointError(f"{file}: weights do not fit the network the config describes "
                              f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    _check_finite(file, target.state_dict())
    return module


def load_tensors(path: str | os.PathLike, name: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The dict of tensors stored as `<path>/<name>.safetensors` (header checked first, values finite)."""
    file = Path(path) / f"{name}.safetensors"
    read_safetensors_header(file)
    try:
        tensors = load_file(str(file), device=str(device))
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{file}: not readable as safetensors ({err})") from None
    _check_finite(file, tensors)
    return tensors


def load_model_dir(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(cfg, meta, networks) of a meta-learned model directory; networks in train mode on `device`.
    The networks are first built on the meta device (no memory) and every weight file's header is checked
    against them, so a config or a file that claims huge tensors is refused before anything is allocated."""
    from .models import build_networks

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
        _check_against(file, read_safetensors_header(file), getattr(shapes, name))
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
        _written(path, True)
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
        import shutil

        shutil.rmtree(model)
    os.replace(aside, model)
    return RunCheckpoint(run_dir, step, legacy=True)


def commit_run_checkpoint(run_dir: str | os.PathLike, step: int, write: Callable[[Path], None]) -> RunCheckpoint:
    """Write a checkpoint folder with `write(folder)` (model/ and training_state.pt inside, fsynced), rename it
    into RUN/checkpoints/, then switch RUN/latest to it with one atomic rename (the commit), make sure the
    fixed links RUN/model and RUN/training_state.pt exist, and only then delete the previous checkpoint.
    A SIGKILL at any instant leaves the previous checkpoint or this one committed; what it leaves half-done
    is removed by `sweep_run_dir` on the next start."""
    import shutil
    import tempfile

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
    fault_point("renamed the checkpoint folder")
    _replace_link(run_dir / LATEST_LINK, f"{CHECKPOINTS_DIR}/{name}")  # the commit
    fault_point("switched latest")
    ensure_run_links(run_dir)
    for old in sorted(ckdir.iterdir()):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
            fault_point(f"removed {old.name}")
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
    fault_point(f"made link {tmp.name}")
    os.replace(tmp, link)
    fsync_path(link.parent)


def ensure_run_links(run_dir: str | os.PathLike) -> None:
    """RUN/model -> latest/model and RUN/training_state.pt -> latest/training_state.pt; an older layout's real
    model/ folder and training_state.pt file are replaced (the committed checkpoint holds their data)."""
    import shutil

    run_dir = Path(run_dir)
    for name in (MODEL_LINK, STATE_LINK):
        link, target = run_dir / name, f"{LATEST_LINK}/{name}"
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.is_dir() and not link.is_symlink():  # the older layout's model/: set it aside, then link
            aside = run_dir / f".{name}.{os.getpid()}.old.tmp"
            os.replace(link, aside)
            fault_point(f"set aside {name}")
            _replace_link(link, target)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            _replace_link(link, target)
        fault_point(f"linked {name}")


def sweep_run_dir(run_dir: str | os.PathLike) -> list[Path]:
    """Remove what a killed run left half-done: checkpoint folders `latest` does not point at, their
    temporaries, temporary links and files; repair the fixed links. Returns what was removed."""
    import shutil

    from .atomic import sweep_temporaries

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
