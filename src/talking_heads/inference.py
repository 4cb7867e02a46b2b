"""Real-time rendering of one avatar: precision, backends, ONNX export (paper section 1 stage 3).

`renderer.Renderer.render` (and so animate, evaluate, the web app, the live stage and the telepresence
receiver) renders through an avatar-specialised renderer built here once per avatar:

- `models/specialise.py` folds spectral norm, psi' and the warp generator's sources into a plain eval-mode
  module `AvatarGenerator: y -> x_hat`;
- `TorchRenderer` runs it under `torch.inference_mode` at a precision (`inference.precision`, `--precision`):
  "fp32", or "bf16" (weights and activations in bfloat16, channels_last memory format; output in fp32), or
  "auto": bf16 on CUDA and on CPUs with native bf16 (AVX-512 BF16 or AMX), fp32 elsewhere. channels_last
  only pays in bf16 (in fp32 it is slower on CPUs, so fp32 stays NCHW);
- `OnnxRenderer` runs the same module exported to ONNX (`export_onnx`, `talking-heads export`) with
  onnxruntime (`inference.backend = "onnxruntime"`, `--backend onnxruntime`), in fp32, or in int8
  (`precision = "int8"`, onnxruntime backend only; never picked by "auto"): `quantize_int8` turns the export
  into onnxruntime's static int8 form (QDQ: int8 weights per output channel, uint8 activations with ranges
  calibrated on `calibration_images`: the avatar's own landmark images and built-in motions applied to its
  face; `reduce_range` so that the AVX2 / AVX-512 u8s8 kernels cannot saturate; convolutions and matrix
  products only, norms and grid_sample stay fp32).

An exported file is self-describing: its metadata names the producer, the model's image size and generator,
the model fingerprint and the avatar's own fingerprint (`avatar_fingerprint`), so loading it for the wrong
model or avatar is an error, not a wrong picture. Errors are `OnnxModelError` (a CheckpointError: one line at
the CLI, exit 2).

Glossary: y landmark images (B,3,H,W) in [-1,1], x_hat rendered frames (B,3,H,W) in [-1,1].

onnx and onnxruntime are optional heavy dependencies (the onnxruntime backend and `talking-heads export`
only): they are imported where they are used, like torch.onnx (the exporter, which rendering never needs).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import io
import logging
import os
import tempfile
import threading
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import machine
from .atomic import atomic_path
from .safetensors_io import CheckpointError
from .config import BACKENDS, PRECISIONS, DataConfig
from .landmarks.adaptation import adapt_landmarks
from .landmarks.motions import motion_landmarks
from .landmarks.raster import rasterize_tensor
from .models.sources import as_sources
from .models.specialise import AvatarGenerator, specialise
from .paths import input_file

ONNX_OPSET = 17  # grid_sample (2-D) needs opset >= 16
ONNX_PRODUCER = "talking-heads"
ONNX_KIND = "avatar-generator"  # metadata "kind" of an exported avatar
INT8_OPS = ("Conv", "ConvTranspose", "MatMul")  # what int8 quantises (quantize_int8)
CALIBRATION_MOTIONS = ("talk", "turn", "surprise")  # int8 calibration: 4 frames of each (calibration_images)

__all__ = ["PRECISIONS", "BACKENDS", "OnnxModelError", "resolve_precision", "TorchRenderer",
           "OnnxRenderer", "RendererCache", "avatar_fingerprint", "avatar_metadata", "build_renderer",
           "calibration_images", "export_avatar", "export_onnx", "quantize_int8", "read_onnx", "onnx_metadata"]


class OnnxModelError(CheckpointError):
    """An .onnx file that cannot be read, was not written by `talking-heads export`, or is for another model
    or avatar; the message says which."""


# --- precision -----------------------------------------------------------------------------------------

def resolve_precision(precision: str, device: torch.device | str) -> str:
    """"fp32", "bf16" or "int8" for `precision` (PRECISIONS) on `device` ("auto": module docstring; it never
    picks int8, which needs the onnxruntime backend)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and torch.device(device).type != "cpu":
        raise ValueError("precision int8 runs on the CPU (onnxruntime's int8 kernels): use --device cpu")
    if precision != "auto":
        return precision
    device = torch.device(device)
    return "bf16" if device.type == "cuda" or (device.type == "cpu" and machine.cpu_supports_bf16()) else "fp32"


# --- the torch backend ---------------------------------------------------------------------------------

class TorchRenderer:
    """`renderer(y) -> x_hat` (fp32, on `device`) with an AvatarGenerator at `precision` ("fp32" | "bf16")."""

    backend = "torch"

    def __init__(self, model: AvatarGenerator, device: torch.device | str, precision: str):
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        bf16 = self.precision == "bf16"
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        # bf16 weights (no per-frame weight casts: autocast would re-cast every weight every frame); the warp
        # generator's source frames stay fp32, and it keeps its sampling grid fp32 (models/warp.py).
        # channels_last pays only in bf16 on CPU (module docstring); on CUDA with bf16 as well
        self.memory_format = torch.channels_last if bf16 else torch.contiguous_format
        self.model = model.to(self.device).eval()
        self.model.generator.to(self.dtype).to(memory_format=self.memory_format)

    def __call__(self, y: Tensor, points: Tensor | None = None) -> Tensor:
        """y (B,3,S,S) landmark images; points (B,68,2) normalised landmarks, for the TPS renderer."""
        with torch.inference_mode():
            y = y.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)
            if points is not None:
                return self.model(y, points.to(self.device, torch.float32)).float().contiguous()
            return self.model(y).float().contiguous()  # B,3,R,R


# --- the onnxruntime backend ---------------------------------------------------------------------------

def avatar_fingerprint(generator: nn.Module, psi: Tensor, sources: tuple[Tensor, Tensor] | None) -> str:
    """Hash of everything an avatar's renderer depends on: psi', the generator's weights (FT avatars carry
    their own) and the warp generator's sources."""
    h = hashlib.sha256()
    tensors = [("psi", psi)] + sorted(generator.state_dict().items())
    if sources is not None:
        tensors += as_sources(sources).tensors()
    for key, value in tensors:
        h.update(key.encode())
        h.update(value.detach().float().cpu().contiguous().reshape(-1).numpy().tobytes())
    return h.hexdigest()[:16]


def _resize_matrix(n: int, m: int, align_corners: bool) -> Tensor:
    """(m, n): PyTorch's antialiased bilinear resize of a length-n signal to length m, as a matrix (the resize
    is linear and separable, so applying it to the identity gives it exactly)."""
    eye = torch.eye(n)[:, None, None, :]  # n signals of 1 x n
    out = F.interpolate(eye, size=(1, m), mode="bilinear", antialias=True, align_corners=align_corners)
    return out[:, 0, 0, :].T.contiguous()


def _antialiased_resize_symbolic(g, x, output_size, align_corners, scale_factors, *, image_size: int):
    """ONNX for aten::_upsample_bilinear2d_aa (the warp generator's downscaling of its inputs), which the
    exporter lacks (ONNX Resize's antialias differs from PyTorch's by up to 0.05): A_h @ x @ A_w^T with the
    resize matrices as constants, exact to float rounding. The input's H, W: its traced size or, where the
    tracer lost it (after a concatenation), `image_size`, the only size these models resize from."""
    from torch.onnx import symbolic_helper as sh  # lazy: export only (start-up time: rendering never loads torch.onnx)

    sizes = sh._get_tensor_sizes(x) or [None] * 4
    h, w = (v if isinstance(v, int) else image_size for v in sizes[-2:])
    oh, ow = sh._maybe_get_const(output_size, "is")
    ac = bool(sh._maybe_get_const(align_corners, "b"))
    rows = g.op("MatMul", g.op("Constant", value_t=_resize_matrix(h, oh, ac)), x)  # B,C,oh,W
    return g.op("MatMul", rows, g.op("Constant", value_t=_resize_matrix(w, ow, ac).T.contiguous()))  # B,C,oh,ow


def export_onnx(model: AvatarGenerator, image_size: int, metadata: dict[str, str],
                path: str | os.PathLike | None = None) -> bytes:
    """The AvatarGenerator as ONNX (fp32, opset ONNX_OPSET, input "landmarks" (B,3,S,S), output "frame"
    (B,3,S,S), dynamic batch), with `metadata` (plus producer and kind) in its metadata_props. Written
    atomically to `path` when given; the bytes are returned either way."""
    import onnx  # optional dependency (module docstring)

    model = model.float().to("cpu", memory_format=torch.contiguous_format).eval()
    example = torch.zeros(1, 3, image_size, image_size)
    buffer = io.BytesIO()
    torch.onnx.register_custom_op_symbolic(
        "aten::_upsample_bilinear2d_aa", functools.partial(_antialiased_resize_symbolic, image_size=image_size),
        ONNX_OPSET)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and instance-norm notes
        torch.onnx.export(model, (example,), buffer, input_names=["landmarks"], output_names=["frame"],
                          dynamic_axes={"landmarks": {0: "batch"}, "frame": {0: "batch"}},
                          opset_version=ONNX_OPSET, dynamo=False)
    proto = onnx.load_from_string(buffer.getvalue())
    meta = {"producer": ONNX_PRODUCER, "kind": ONNX_KIND, **metadata, "image_size": str(image_size)}
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=str(value))
    data = proto.SerializeToString()
    if path is not None:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return data


class _QuietRoot(logging.Filter):
    """Drops onnxruntime.quantization's advice to pre-process the model (logged on the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage() and "pre-processing" not in record.getMessage()


def quantize_int8(data: bytes, calibration: Tensor) -> bytes:
    """An exported avatar (fp32 ONNX bytes) in onnxruntime's static int8 form (module docstring), its activation
    ranges calibrated on `calibration`: landmark images (N,3,S,S) in [-1,1] like those it will render. The
    metadata is kept, with "precision" = "int8"."""
    import onnx  # optional dependencies (module docstring)
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if calibration.dim() != 4 or len(calibration) == 0:
        raise ValueError(f"int8 calibration needs landmark images (N,3,S,S), got {tuple(calibration.shape)}")
    frames = [np.ascontiguousarray(c[None].detach().float().cpu().numpy()) for c in calibration]

    class Frames(CalibrationDataReader):
        def __init__(self):
            self._it = iter(frames)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {"landmarks": x}

    meta = onnx_metadata(data, "the exported avatar")
    quiet = _QuietRoot()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        with tempfile.TemporaryDirectory(prefix="th-int8-") as tmp:
            src, dst = Path(tmp, "fp32.onnx"), Path(tmp, "int8.onnx")
            src.write_bytes(data)
            quantize_static(str(src), str(dst), Frames(), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(INT8_OPS), per_channel=True, reduce_range=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            proto = onnx.load(str(dst))
    finally:
        root.removeFilter(quiet)
    del proto.metadata_props[:]
    for key, value in {**meta, "precision": "int8"}.items():
        proto.metadata_props.add(key=key, value=str(value))
    return proto.SerializeToString()


def onnx_metadata(data: bytes, name: str = "the ONNX model") -> dict[str, str]:
    """The metadata_props of an exported avatar; OnnxModelError for a file that is not one."""
    import onnx  # optional dependency (module docstring)

    try:
        proto = onnx.load_from_string(data)
    except Exception as err:  # protobuf's DecodeError and friends: not an ONNX file
        raise OnnxModelError(f"{name} is not a readable ONNX model ({type(err).__name__})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("producer") != ONNX_PRODUCER or meta.get("kind") != ONNX_KIND:
        raise OnnxModelError(f"{name} is an ONNX model but not an avatar exported by `talking-heads export`")
    return meta


ONNX_MAX_BYTES = 2**31  # protobuf's limit for one serialised model (the paper preset's export is 120 MiB)


def read_onnx(path: str | os.PathLike) -> tuple[bytes, dict[str, str]]:
    """(bytes, metadata) of an exported avatar file; OnnxModelError when it is missing, unreadable or foreign."""
    path = input_file(path, "ONNX file", max_bytes=ONNX_MAX_BYTES)  # a FIFO would block, a folder is not one
    try:
        data = path.read_bytes()
    except OSError as err:
        raise OnnxModelError(f"cannot read {path} ({err.strerror or err})") from None
    return data, onnx_metadata(data, str(path))


class OnnxRenderer:
    """`renderer(y) -> x_hat` with onnxruntime on the CPU from an exported avatar's bytes (fp32, or int8 when
    the file was quantised: its metadata says which)."""

    backend = "onnxruntime"

    def __init__(self, data: bytes, name: str = "the ONNX model", threads: int | None = None):
        try:
            import onnxruntime as ort  # optional dependency (module docstring)
        except ModuleNotFoundError:
            raise OnnxModelError("the onnxruntime backend needs onnxruntime: pip install onnxruntime") from None
        self.metadata = onnx_metadata(data, name)
        self.precision = self.metadata.get("precision", "fp32")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's InvalidGraph / Fail: a damaged file
            raise OnnxModelError(f"onnxruntime cannot load {name}: {str(err).splitlines()[0][:200]}") from None
        self.image_size = int(self.metadata.get("image_size", 0))

    def __call__(self, y: Tensor, points: Tensor | None = None) -> Tensor:
        y_np = np.ascontiguousarray(y.detach().float().cpu().numpy())
        out = self.session.run(["frame"], {"landmarks": y_np})[0]
        return torch.from_numpy(out).to(y.device)


def avatar_metadata(generator: nn.Module, psi: Tensor, sources: tuple[Tensor, Tensor] | None, *, image_size: int,
                    generator_name: str, model_fingerprint: str) -> dict[str, str]:
    """What an exported avatar's metadata says about the model and the avatar it renders."""
    return {"image_size": str(image_size), "generator": generator_name, "model_fingerprint": model_fingerprint,
            "avatar_fingerprint": avatar_fingerprint(generator, psi, sources)}


def check_onnx_fits(meta: dict[str, str], name: str, expected: dict[str, str]) -> None:
    """OnnxModelError unless the exported avatar's `meta` matches `expected` (`avatar_metadata`)."""
    if meta.get("image_size") != expected["image_size"] or meta.get("generator") != expected["generator"]:
        raise OnnxModelError(f"{name} renders {meta.get('image_size')} px with the {meta.get('generator')!r} "
                             f"generator, but this model is {expected['image_size']} px {expected['generator']!r}: "
                             "export the avatar again with this model")
    if meta.get("model_fingerprint") != expected["model_fingerprint"] or \
            meta.get("avatar_fingerprint") != expected["avatar_fingerprint"]:
        raise OnnxModelError(f"{name} was exported from another avatar or model: export this avatar with "
                             "`talking-heads export AVATAR_DIR -o FILE.onnx`")


def check_exportable(generator: nn.Module) -> None:
    """OnnxModelError for the TPS renderer: its landmark warp solves a linear system per frame
    (torch.linalg.solve), which ONNX has no operator for; it renders with the torch backend only."""
    if getattr(generator, "needs_points", False):
        raise OnnxModelError("the TPS renderer (model.generator = 'tps') cannot be exported to ONNX or run by "
                             "onnxruntime (its landmark warp solves a linear system per frame, which ONNX has no "
                             "operator for): render it with the torch backend (--backend torch)")


def build_renderer(generator: nn.Module, psi: Tensor, sources: tuple[Tensor, Tensor] | None, *,
                   device: torch.device | str, precision: str = "auto", backend: str = "torch",
                   onnx_file: str | os.PathLike | None = None, describe=None, calibration=None):
    """An avatar's renderer (module docstring): TorchRenderer, or OnnxRenderer from `onnx_file` (checked to
    fit; run at the precision it was written in) or, without one, from an export made now in memory (int8:
    quantised now). describe(): the avatar's `avatar_metadata`, calibration(): its int8 calibration landmark
    images (`calibration_images`); both needed by the onnxruntime backend only."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    resolve_precision(precision, device)  # a bad value is an error whatever the backend
    if precision == "int8" and backend != "onnxruntime":
        raise ValueError("precision int8 runs on the onnxruntime backend: set inference.backend = 'onnxruntime' "
                         "(--backend onnxruntime)")
    model = specialise(generator, psi, sources)
    if backend == "torch":
        return TorchRenderer(model, device, precision)
    check_exportable(generator)
    meta = describe()
    if onnx_file is not None:
        data, found = read_onnx(onnx_file)
        check_onnx_fits(found, str(onnx_file), meta)
        return OnnxRenderer(data, str(onnx_file))
    data = export_onnx(model, int(meta["image_size"]), meta)
    if precision == "int8":
        data = quantize_int8(data, calibration())
    return OnnxRenderer(data, "the exported avatar")


class RendererCache:
    """The renderers of the last few avatars (the web app serves several), each rebuilt when what it was built
    from changes (`key`). Thread-safe: the web app's jobs and the receiver's render thread share a renderer."""

    def __init__(self, size: int = 4):
        self.size = size
        self._items: collections.OrderedDict = collections.OrderedDict()  # id(avatar) -> (weakref, key, renderer)
        self._lock = threading.Lock()

    def get(self, avatar: Any, key: tuple, build, *, rebuild: bool = False):
        with self._lock:
            entry = self._items.get(id(avatar))
            if entry is not None and entry[0]() is avatar and entry[1] == key and not rebuild:
                self._items.move_to_end(id(avatar))
                return entry[2]
            renderer = build()
            self._items[id(avatar)] = (weakref.ref(avatar), key, renderer)
            self._items.move_to_end(id(avatar))
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return renderer


def calibration_images(landmarks: np.ndarray | None, size: int, data_cfg: DataConfig) -> Tensor:
    """Landmark images (N,3,size,size) like those an avatar will render, on which int8 calibrates its activation
    ranges (`quantize_int8`): the avatar's own source landmarks `landmarks` (T,68,2) (up to 8) and 4 frames
    each of the built-in CALIBRATION_MOTIONS applied to its face `landmarks[0]` (without source landmarks, the
    motions on the neutral template)."""
    motions = [motion_landmarks(m, 2.0, 2.0, size, data_cfg) for m in CALIBRATION_MOTIONS]  # 4 each
    if landmarks is not None:  # each motion starts on the neutral face: its frame 0 is the reference
        motions = [adapt_landmarks(m, landmarks[0], 0) for m in motions]
        motions.insert(0, landmarks[:8])
    points = np.concatenate(motions).astype(np.float32)
    return rasterize_tensor(points, size, data_cfg.line_thickness)


def export_avatar(renderer, avatar, path: str | os.PathLike, precision: str = "fp32") -> dict[str, str]:
    """Write `avatar`'s specialised generator (`renderer.render_inputs`; renderer: a `renderer.Renderer` or the
    pipeline) to `path` (.onnx) atomically, in fp32 or int8 (`quantize_int8`, calibrated on
    `renderer.calibration_images(avatar)`); returns the metadata it carries. OnnxModelError for an output path
    that cannot be one."""
    if precision not in ("fp32", "int8"):
        raise OnnxModelError(f"an ONNX export is fp32 or int8, not {precision}")
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise OnnxModelError(f"{path}: the output must be an .onnx file")
    if path.is_dir():
        raise OnnxModelError(f"{path} is a folder: give the path of the .onnx file to write")
    generator, psi, sources = renderer.render_inputs(avatar)
    check_exportable(generator)
    meta = renderer.describe_render_inputs(generator, psi, sources)
    data = export_onnx(specialise(generator, psi, sources), int(meta["image_size"]), meta)
    if precision == "int8":
        data = quantize_int8(data, renderer.calibration_images(avatar))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return onnx_metadata(data, str(path))
