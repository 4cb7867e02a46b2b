"""A reader of dlib's binary serialization, for `dlib_face_recognition_resnet_model_v1.dat` (no dlib needed).

Written from dlib's own source (`dlib/serialize.h`, `dlib/dnn/core.h`, `layers.h`, `input.h`, `loss.h`,
`dlib/cuda/tensor.h`; summarised in ../shared/design/identity_network.md). numpy and the standard library
only; the torch network that takes these weights is `models/face_identity.py`.

The primitives:
- integers: one control byte (low nibble = number of magnitude bytes that follow, 0x80 = negative), then the
  magnitude, little-endian; strings: an integer length, then the bytes; bool: the byte '1' or '0';
  float / double: an int64 mantissa and an int16 exponent, value = m * 2**e (exponents 32000-32002 are
  inf, -inf, NaN);
- `resizable_tensor`: version 2, num_samples, k, nr, nc, then that many little-endian float32 (NCHW);
  `alias_tensor`: version 1 and four dimensions (a shape, no data).

A network nests: every layer writes its version, then its whole inner network, then its own details and a
few bookkeeping fields (bools and empty gradient / output tensors). So the file starts with the versions of
all layers from the outside in and then holds the details from the input layer outwards. `read_network`
walks a declared layer list (innermost first) through that nesting, checks every version string, kernel
size, stride and padding against the declaration, and insists on consuming the file to its last byte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError

MAX_TENSOR_FLOATS = 64 * 1024 * 1024  # no tensor of this network is anywhere near 256 MiB; bounds hostile headers


class DlibFormatError(InputError):
    """A file that is not the expected dlib network; the message names the file, the offset and what was
    expected."""


@dataclass(frozen=True)
class Layer:
    """One layer of a dlib network declaration. kind: input_rgb_image_sized, con, affine, relu, max_pool,
    avg_pool, fc, tag1, tag2, skip1, add_prev1, add_prev2, loss_metric. For con/pools: (filters or 0,
    kernel, stride); padding follows dlib's defaults (k // 2 at stride 1, 0 at stride 2)."""

    kind: str
    filters: int = 0
    kernel: int = 0
    stride: int = 1

    @property
    def padding(self) -> int:
        return self.kernel // 2 if self.stride == 1 else 0


@dataclass
class LayerWeights:
    """What a layer with parameters holds: `params` as stored (flat float32) and its meaning."""

    layer: Layer
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


TAG_KINDS = {"tag1", "tag2", "skip1"}  # add_tag_layer / add_skip_layer: a version and the inner network only
COMPUTE_VERSIONS = {  # accepted version strings of each computational layer's details
    "con": ("con_4", "con_5", "con_6"),
    "affine": ("affine_", "affine_2"),
    "relu": ("relu_", "relu_2"),
    "max_pool": ("max_pool_2",),
    "avg_pool": ("avg_pool_2",),
    "fc": ("fc_2", "fc_3"),
    "add_prev1": ("add_prev_",),
    "add_prev2": ("add_prev_",),
}


class Reader:
    """Sequential reader of dlib's primitives over an in-memory file; every error names path and offset."""

    def __init__(self, data: bytes, path: str):
        self.data, self.path, self.pos = data, path, 0

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.path}: not a valid dlib network file at byte {self.pos} of "
                               f"{len(self.data)}: {what}")

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"file ends while reading {what} ({n} bytes needed, {len(self.data) - self.pos} left); "
                            "the file is truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self, what: str = "an integer") -> int:
        control = self.take(1, what)[0]
        size, negative = control & 0x0F, bool(control & 0x80)
        if size > 8 or control & 0x70:
            raise self.fail(f"bad integer control byte 0x{control:02x} for {what}")
        value = int.from_bytes(self.take(size, what), "little") if size else 0
        return -value if negative else value

    def string(self, what: str = "a string") -> str:
        n = self.int(f"the length of {what}")
        if n > 256:
            raise self.fail(f"implausible length {n} of {what}")
        return self.take(n, what).decode("latin-1")

    def bool(self, what: str = "a bool") -> bool:
        b = self.take(1, what)
        if b not in (b"0", b"1"):
            raise self.fail(f"expected '0' or '1' for {what}, got {b!r}")
        return b == b"1"

    def float(self, what: str = "a float") -> float:
        mantissa, exponent = self.int(f"the mantissa of {what}"), self.int(f"the exponent of {what}")
        special = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}
        if exponent in special:
            return special[exponent]
        if abs(exponent) > 2000:
            raise self.fail(f"implausible exponent {exponent} of {what}")
        return float(mantissa) * 2.0 ** exponent

    def version(self, expected: Sequence, what: str):
        """An integer or string version, checked against `expected`."""
        value = self.string(f"the version of {what}") if isinstance(expected[0], str) else self.int(f"the version of {what}")
        if value not in expected:
            raise self.fail(f"{what}: expected version {' or '.join(map(repr, expected))}, found {value!r}")
        return value

    def tensor(self, what: str) -> np.ndarray:
        """A resizable_tensor: (num_samples, k, nr, nc) float32."""
        self.version((2,), f"the tensor of {what}")
        dims = [self.int(f"a dimension of the tensor of {what}") for _ in range(4)]
        if min(dims) < 0 or int(np.prod(dims, dtype=np.int64)) > MAX_TENSOR_FLOATS:
            raise self.fail(f"implausible tensor shape {dims} for {what}")
        n = int(np.prod(dims, dtype=np.int64))
        raw = self.take(4 * n, f"the {n} floats of {what}")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def empty_tensor(self, what: str) -> None:
        t = self.tensor(what)
        if t.size:
            raise self.fail(f"expected an empty {what}, found {t.size} values")

    def alias(self, what: str) -> tuple[int, ...]:
        self.version((1,), f"the alias tensor of {what}")
        return tuple(self.int(f"a dimension of {what}") for _ in range(4))

    def expect_int(self, expected: int, what: str) -> None:
        value = self.int(what)
        if value != expected:
            raise self.fail(f"{what}: expected {expected}, found {value}")


def _read_details(r: Reader, layer: Layer, index: int) -> LayerWeights | None:
    """The details of one computational layer (after its inner network); the weights of con, affine, fc."""
    what = f"layer {index} ({layer.kind})"
    if layer.kind not in COMPUTE_VERSIONS:
        raise r.fail(f"{what}: no details reader")  # pragma: no cover - declaration error
    version = r.version(COMPUTE_VERSIONS[layer.kind], what)
    if layer.kind == "relu" and version == "relu_2":
        r.bool(f"{what} disabled")
    if layer.kind in ("max_pool", "avg_pool"):
        k = 0 if layer.kernel == 0 else layer.kernel  # avg_pool_everything is stored as 0 x 0
        for name, expected in (("nr", k), ("nc", k), ("stride_y", layer.stride), ("stride_x", layer.stride),
                               ("padding_y", layer.padding), ("padding_x", layer.padding)):
            r.expect_int(expected, f"{what} {name}")
    readers = {"con": _read_con, "affine": _read_affine, "fc": _read_fc}
    return readers[layer.kind](r, layer, version, what) if layer.kind in readers else None  # add_prev: none


def _read_con(r: Reader, layer: Layer, version: str, what: str) -> LayerWeights:
    params = r.tensor(f"{what} params").ravel()
    for name, expected in (("num_filters", layer.filters), ("nr", layer.kernel), ("nc", layer.kernel),
                           ("stride_y", layer.stride), ("stride_x", layer.stride),
                           ("padding_y", layer.padding), ("padding_x", layer.padding)):
        r.expect_int(expected, f"{what} {name}")
    filters, biases = r.alias(f"{what} filters"), r.alias(f"{what} biases")
    for m in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
        r.float(f"{what} {m} multiplier")
    if version in ("con_5", "con_6"):
        r.bool(f"{what} use_bias")
    if version == "con_6":
        r.bool(f"{what} use_relu")
    o, i, kh, kw = filters
    if (o, kh, kw) != (layer.filters, layer.kernel, layer.kernel) or biases[1] != o:
        raise r.fail(f"{what}: filter shape {filters} / bias shape {biases} do not match the declaration")
    nw = o * i * kh * kw
    if params.size != nw + o:
        raise r.fail(f"{what}: {params.size} parameters, expected {nw + o} for filters {filters} and biases")
    return LayerWeights(layer, {"weight": params[:nw].reshape(o, i, kh, kw), "bias": params[nw:]})


def _read_affine(r: Reader, layer: Layer, version: str, what: str) -> LayerWeights:
    params = r.tensor(f"{what} params").ravel()
    gamma, beta = r.alias(f"{what} gamma"), r.alias(f"{what} beta")
    r.int(f"{what} mode")
    if version == "affine_2":
        r.bool(f"{what} disabled")
    c = int(np.prod(gamma))
    if params.size != 2 * c or int(np.prod(beta)) != c:
        raise r.fail(f"{what}: {params.size} parameters for gamma {gamma} and beta {beta}")
    return LayerWeights(layer, {"gamma": params[:c], "beta": params[c:]})


def _read_fc(r: Reader, layer: Layer, version: str, what: str) -> LayerWeights:
    """fc without bias (this network's): params stored inputs x outputs."""
    outputs, inputs = r.int(f"{what} num_outputs"), r.int(f"{what} num_inputs")
    params = r.tensor(f"{what} params")
    r.alias(f"{what} weights"), r.alias(f"{what} biases")
    bias_mode = r.int(f"{what} bias mode")
    for m in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
        r.float(f"{what} {m} multiplier")
    if version == "fc_3":
        r.bool(f"{what} use_bias")
    if outputs != layer.filters or params.size != inputs * outputs or bias_mode != 1:
        raise r.fail(f"{what}: {outputs} outputs x {inputs} inputs, {params.size} parameters, bias mode "
                     f"{bias_mode}; expected {layer.filters} outputs without bias (mode 1)")
    return LayerWeights(layer, {"weight": params.reshape(inputs, outputs).T.copy()})


def _read_input(r: Reader, layer: Layer) -> dict[str, float]:
    r.version(("input_rgb_image_sized",), "the input layer")
    mean = [r.float(f"the input layer's mean {c}") for c in ("red", "green", "blue")]
    r.expect_int(layer.kernel, "the input layer's rows")
    r.expect_int(layer.kernel, "the input layer's columns")
    return {"mean": np.array(mean, np.float32)}


def _read_suffix(r: Reader, version: int, what: str, on_input: bool) -> None:
    """The bookkeeping after an add_layer's details: 3 bools and empty x_grad / cached_output tensors, then
    params_grad (v2) or, for the layer directly on the input, grad_final and (v3) the sample expansion factor."""
    for name in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        r.bool(f"{what} {name}")
    r.empty_tensor(f"{what} x_grad")
    r.empty_tensor(f"{what} cached_output")
    if on_input:
        r.empty_tensor(f"{what} grad_final")
        if version >= 3:
            r.int(f"{what} sample expansion factor")
    elif version == 2:
        r.empty_tensor(f"{what} params_grad")


def _read_subnet(r: Reader, layers: Sequence[Layer], top: int, out: list, meta: dict) -> None:
    """Read the network made of layers[0..top] (layers[0] the input), appending parameter-holding layers to
    `out` from the input outwards."""
    layer = layers[top]
    what = f"layer {top} ({layer.kind})"
    if top == 0:
        meta.update(_read_input(r, layer))
        return
    on_input = top == 1
    if layer.kind in TAG_KINDS:
        version = r.version((1, 2) if on_input else (1,), what)
        _read_subnet(r, layers, top - 1, out, meta)
        if on_input:
            r.empty_tensor(f"{what} cached_output")
            r.empty_tensor(f"{what} grad_final")
            r.bool(f"{what} gradient_input_is_stale")
            if version >= 2:
                r.int(f"{what} sample expansion factor")
        return
    version = r.version((2, 3) if on_input else (1, 2), what)
    _read_subnet(r, layers, top - 1, out, meta)
    weights = _read_details(r, layer, top)
    _read_suffix(r, version, what, on_input)
    if weights is not None:
        out.append(weights)


def read_network(path: str | os.PathLike, layers: Sequence[Layer], max_bytes: int = 256 * 1024 * 1024
                 ) -> tuple[list[LayerWeights], dict]:
    """Parse a dlib `loss_metric` network declared by `layers` (innermost first: layers[0] is the input,
    layers[-1] the loss). Returns (parameter layers from the input outwards, {"mean": (3,), "margin",
    "distance_threshold"}). Raises DlibFormatError on any mismatch, and unless the file ends exactly there."""
    path = Path(path)
    if not path.is_file():
        raise DlibFormatError(f"{path}: not found (or not a regular file); expected dlib's "
                              "dlib_face_recognition_resnet_model_v1.dat")
    size = path.stat().st_size
    if size > max_bytes:
        raise DlibFormatError(f"{path}: {size} bytes, larger than any network this reader expects ({max_bytes})")
    r = Reader(path.read_bytes(), str(path))
    if layers[-1].kind != "loss_metric":
        raise ValueError("the declaration must end with the loss_metric layer")  # pragma: no cover
    r.version((1,), "the loss layer")
    r.version(("loss_metric_", "loss_metric_2"), "the loss layer's details")
    meta: dict = {"margin": r.float("the loss margin"), "distance_threshold": r.float("the loss distance threshold")}
    out: list[LayerWeights] = []
    _read_subnet(r, layers, len(layers) - 2, out, meta)
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} bytes left after the network; expected the file to end here")
    return out, meta


def parameter_count(weights: Sequence[LayerWeights]) -> int:
    return int(sum(a.size for w in weights for a in w.arrays.values()))


__all__ = ["DlibFormatError", "Layer", "LayerWeights", "read_network", "parameter_count"]
