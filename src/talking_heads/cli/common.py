"""What several commands share: the model options (--model, --device, --precision, --backend, --onnx), the
pipeline they describe, and how warnings are printed. The checks of values and paths are the library's
(`talking_heads.paths`, `talking_heads.limits`, `talking_heads.config`); errors are printed by the policy in
`cli/__init__.py`. torch and the pipeline are imported inside the functions that use them, so that
`talking-heads --help` stays fast."""

from __future__ import annotations

import argparse
import sys
from typing import Iterable

from .. import limits
from ..config import BACKENDS, PRECISIONS
from . import UserError


def model_args(p: argparse.ArgumentParser) -> None:
    """--model, --device, --precision, --backend and --size, what `pipeline_from_args` reads (every command that
    builds the pipeline)."""
    p.add_argument("--model", default=None, metavar="DIR",
                   help="model directory, or a shipped model: sample (the default) or tps (the TPS renderer: your "
                        "photo itself, moved by its landmarks, at up to 512 px)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="rendering arithmetic (default inference.precision = auto: bf16 on CUDA and on CPUs with "
                        "AVX-512 BF16 / AMX, else fp32; int8: onnxruntime's int8 kernels on the CPU, calibrated on "
                        "the avatar, implies --backend onnxruntime)")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="rendering backend (default inference.backend = torch; onnxruntime: the avatar's generator "
                        "exported to ONNX, fp32 or int8)")
    p.add_argument("--size", type=int, default=None, metavar="PX",
                   help="side of rendered frames, 64-2048 (default: automatic: a TPS-renderer avatar is made at 512 "
                        "where the photo holds that many pixels, else 256, and renders at its own size; other "
                        "models' 128/256 px output is upscaled to 256)")


def onnx_arg(p: argparse.ArgumentParser) -> None:
    """--onnx FILE: run an export of the avatar (`talking-heads export`) with onnxruntime."""
    p.add_argument("--onnx", default=None, metavar="FILE.onnx",
                   help="render with this ONNX export of the avatar (talking-heads export; implies --backend "
                        "onnxruntime)")


def resolve_device(device: str | None, flag: str = "--device") -> str:
    """cpu, cuda or cuda:N (None: cuda when available), refused when CUDA is asked for and absent."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not (device in ("cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise UserError(f"{flag} {device}: expected cpu, cuda or cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{flag} {device}: no CUDA device available")
    return device


def _rendering_backend(args: argparse.Namespace, device: str) -> str | None:
    """--backend, made onnxruntime by --onnx or --precision int8 (which need it)."""
    backend = args.backend
    if getattr(args, "onnx", None):
        if backend == "torch":
            raise UserError("--onnx runs the file with onnxruntime: drop --backend torch")
        backend = "onnxruntime"
    if getattr(args, "precision", None) == "int8":
        if backend == "torch":
            raise UserError("--precision int8 runs on onnxruntime's int8 kernels: drop --backend torch")
        if device != "cpu":
            raise UserError("--precision int8 runs on the CPU: add --device cpu")
        backend = "onnxruntime"
    if backend == "onnxruntime":
        try:
            import onnx, onnxruntime  # noqa: F401, E401  (optional dependencies: only their presence is checked)
        except ModuleNotFoundError:
            raise UserError("--backend onnxruntime needs onnx and onnxruntime: pip install onnx onnxruntime") from None
    return backend


def pipeline_from_args(args: argparse.Namespace):
    """The `TalkingHeadPipeline` of --model on --device, rendering with --precision / --backend."""
    from ..pipeline import TalkingHeadPipeline

    device = resolve_device(args.device)
    args.backend = _rendering_backend(args, device)
    size = limits.check_frame_size(getattr(args, "size", None), "--size")
    pipe = TalkingHeadPipeline.from_pretrained(args.model, device=device)
    if size is not None:
        pipe.cfg.inference.output_size = size
    for name in ("precision", "backend"):  # rendering settings (inference.py); None: the model's config
        if getattr(args, name, None) is not None:
            setattr(pipe.cfg.inference, name, getattr(args, name))
    if pipe.cfg.inference.backend == "onnxruntime":  # refused before any work, not at the first frame
        from ..inference import check_exportable

        check_exportable(pipe.generator)
    return pipe


def check_eye_contact(pipe, args: argparse.Namespace) -> None:
    """UserError for --eye-contact with a model that does not render gaze (it would change nothing)."""
    from ..landmarks.iris import uses_gaze

    if getattr(args, "eye_contact", False) and not uses_gaze(pipe.cfg):
        raise UserError("--eye-contact needs a model that renders gaze (model.tps_iris or data.pupils), which this "
                        "one does not: use --model tps, or leave --eye-contact out")


def use_onnx_file(pipe, avatar, args: argparse.Namespace) -> None:
    """Build the avatar's renderer from --onnx now (a wrong or unreadable file fails before any work)."""
    if getattr(args, "onnx", None):
        pipe.renderer(avatar, onnx_file=args.onnx)


def flag_names(dests: Iterable[str]) -> dict[str, str]:
    """{argparse dest: the flag as typed}, e.g. {"per_identity": "--per-identity"}: the `names` a command passes
    to the library's checks (`config.check_section`, `data.preprocess.check_job`, ...), so that a refusal
    names the flag the user typed, not the library's argument or setting."""
    return {dest: "--" + dest.replace("_", "-") for dest in dests}


def print_warnings(*groups: Iterable[str]) -> None:
    """Each warning once, on stderr."""
    for msg in dict.fromkeys(m for group in groups for m in group):
        print(f"warning: {msg}", file=sys.stderr)


__all__ = ["flag_names", "model_args", "onnx_arg", "pipeline_from_args", "print_warnings", "resolve_device",
           "use_onnx_file"]
