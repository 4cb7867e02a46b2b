"""Checked safetensors files: one network's weights (or a dict of plain tensors) per file.

Writing stores the *unwrapped* module's state_dict (DDP / torch.compile wrappers stripped,
architecture.md principle 4). Reading never trusts a file: `read_safetensors_header` checks the header's
length, JSON, dtypes, shapes and data offsets before any tensor data is read, `load_module` compares the
header with the module's own state_dict, and every loaded floating-point tensor must be finite. Whatever is
wrong is a `CheckpointError` that names the file.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from .dist import unwrap
from .errors import InputError
from .paths import input_file

HEADER_MAX_BYTES = 64 * 2**20  # safetensors' own cap on the JSON header (100 MB) is in the same range
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
                      "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_TORCH_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                 torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                 torch.bool: "BOOL"}

Header = dict[str, tuple[str, tuple[int, ...]]]  # tensor name -> (safetensors dtype, shape)


class CheckpointError(InputError):
    """A path that is not a model directory, or one this version cannot load."""


# --- writing ----------------------------------------------------------------------------------------

def save_part(file: Path, part: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """Write a module's unwrapped state_dict, or a dict of tensors (detached, contiguous, on the CPU), to
    `file`; returns what it was ("module" or "tensors", the kind config.json records)."""
    if isinstance(part, nn.Module):
        save_model(unwrap(part), str(file))
        return "module"
    save_file({k: v.detach().contiguous().cpu() for k, v in part.items()}, str(file))
    return "tensors"


# --- reading ----------------------------------------------------------------------------------------

def regular_file(file: Path, what: str) -> None:
    """CheckpointError unless `file` is a regular file (a FIFO or device would block or never end)."""
    if not file.exists():
        raise CheckpointError(f"{file.parent}: missing {file.name}")
    try:
        input_file(file, what)
    except InputError as err:
        raise CheckpointError(str(err)) from None


def _bad(file: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{file}: not a valid safetensors file ({why}); the file is damaged or not "
                           "written by talking-heads: copy it again or re-create the directory")


def _read_header_json(file: Path, size: int) -> tuple[dict, int]:
    """(the JSON header, its length n) of a file of `size` bytes: 8 bytes little-endian n, then n bytes of
    JSON. A pickle is refused by its first bytes (it is never loaded: it could run code)."""
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _bad(file, f"{size} bytes, shorter than the 8-byte header length" if size else "empty file")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 and (head[:1] == b"\x80" or head[:2] == b"PK"):
            raise _bad(file, "it looks like a pickle / torch.save file, which is never loaded: it could run code")
        if n > min(HEADER_MAX_BYTES, size - 8):
            raise _bad(file, f"header length {n} does not fit the file's {size} bytes" if n > size - 8
                       else f"header length {n} is over {HEADER_MAX_BYTES}")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _bad(file, "the header is not JSON") from None
    if not isinstance(header, dict):
        raise _bad(file, "the header is not a JSON object")
    return header, n


def _is_count(v, limit: int | None = None) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and (limit is None or 0 <= v < limit)


def _check_entry(file: Path, name: str, info, data_size: int) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    """(dtype, shape, (begin, end)) of one header entry, checked: its fields, and offsets that hold exactly
    the bytes its dtype and shape need, inside the data section of `data_size` bytes."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise _bad(file, f"entry {name!r} is not dtype / shape / data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in SAFETENSORS_DTYPES:
        raise _bad(file, f"tensor {name!r} has unknown dtype {dtype!r}")
    if not (isinstance(shape, list) and all(_is_count(d, 2**40) for d in shape)):
        raise _bad(file, f"tensor {name!r} has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise _bad(file, f"tensor {name!r} has invalid data offsets {offsets!r}")
    nbytes = SAFETENSORS_DTYPES[dtype]
    for d in shape:
        nbytes *= d
    begin, end = offsets
    if not 0 <= begin <= end or end - begin != nbytes:
        raise _bad(file, f"tensor {name!r}: offsets {offsets} do not hold {dtype} {shape} ({nbytes} bytes)")
    if end > data_size:
        raise _bad(file, f"truncated: tensor {name!r} ends at byte {end} of a {data_size}-byte data section")
    return dtype, tuple(shape), (begin, end)


def read_safetensors_header(file: str | os.PathLike) -> Header:
    """{tensor name: (dtype, shape)} of a safetensors file, checked before any tensor data is read: the
    header's length, JSON, dtypes, shapes, and data offsets that tile the data section exactly (so a
    truncated file, a header that lies about sizes or claims huge tensors, random bytes or a pickle are
    refused here, with the file named)."""
    file = Path(file)
    regular_file(file, "weights file")
    size = file.stat().st_size
    header, n = _read_header_json(file, size)
    data_size = size - 8 - n
    out: Header = {}
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, span = _check_entry(file, name, info, data_size)
        out[name] = (dtype, shape)
        spans.append(span)
    pos = 0
    for begin, end in sorted(spans):
        if begin != pos:
            raise _bad(file, "tensors overlap or leave gaps in the data section")
        pos = end
    if pos != data_size:
        raise _bad(file, f"the header describes {pos} bytes of data, the file holds {data_size}")
    return out


def check_against(file: Path, header: Header, module: nn.Module) -> None:
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
    target = unwrap(module)
    check_against(file, read_safetensors_header(file), target)
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
