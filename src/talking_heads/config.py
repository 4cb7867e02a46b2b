"""Every setting of the project, in one place (architecture.md principle 3).

Dataclasses grouped by stage, one trailing comment per field, and named presets. A preset is a complete
`Config`; `--set section.field=value` on the command line overrides single fields (see `apply_overrides`).
A saved model directory stores the whole `Config` as `config.json`, so it rebuilds itself with no flags.
Every value is checked where a config is built from text (`Config.from_dict`, hence `apply_overrides` and
config.json): its type and, for the numeric settings, its range (`RANGES`: a refusal names the setting and
its valid range). Counts with a safety limit (`LIMITED`: steps, epochs, shots, seconds) are also held to
their `limits` check when a user sets them (`--set`, a command's flag), never when a saved config is read:
a model or run made with `--limit steps=2e7` loads, animates and resumes without the flag.

Paper references (../shared/design/paper.md): section 1 (few-shot avatars, puppeteering), 3 (architecture),
4 (losses), 5 (optimisation), 6 (fine-tuning). Glossary: x frame, y landmark image, e embedding, psi AdaIN
parameters, W per-video table.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping

from . import limits
from .config_checks import ConfigError, _between, _describe, _item, _KIND, _named, _one_of, _positive


@dataclass
class ModelConfig:
    """Widths and resolutions of E, G, V (paper section 3; reference layout from LAB)."""

    image_size: int = 256  # H = W of frames and landmark images the networks see
    embedding_dim: int = 512  # N, size of e, of W's rows and of w0
    embedder_channels: tuple[int, ...] = (64, 128, 256, 512, 512, 512)  # E/V down blocks; each halves H
    embedder_attention_at: tuple[int, ...] = (32,)  # resolutions (px) after which E/V apply self-attention
    discriminator_extra_blocks: int = 1  # V's residual blocks at the last resolution beyond E's layout
    generator_down_channels: tuple[int, ...] = (64, 128, 256, 512)  # G encoder (instance norm); each halves H
    generator_down_attention_at: tuple[int, ...] = (32,)  # G encoder self-attention resolutions
    generator_res_blocks: int = 4  # AdaIN residual blocks in G's bottleneck
    generator_up_channels: tuple[int, ...] = (512, 256, 128, 64)  # G decoder AdaIN up blocks; each doubles H [LAB: 38M]
    generator_up_attention_at: tuple[int, ...] = (64,)  # G decoder self-attention resolutions
    spectral_norm: bool = True  # spectral norm on every conv and linear layer (paper: all networks)
    generator: str = "adain"  # "adain": the paper's direct-synthesis G; "warp": warp-then-refine (models/warp.py); "tps": the photo warped by its landmarks, a learned correction and a generated fill (models/tps.py); the last two not in the paper
    warp_channels: tuple[int, ...] = (32, 64, 128)  # warp generator: flow network encoder widths (decoder mirrors them)
    warp_scale: float = 0.5  # warp generator: resolution of the flow network relative to the image
    tps_mouth_size: int = 64  # TPS renderer: side (px) of the mouth view its mouth generator paints
    tps_mouth_channels: tuple[int, ...] = (32, 64, 128)  # TPS renderer: the mouth generator's encoder widths (decoder mirrors them)
    tps_grid_size: int = 64  # TPS renderer: the landmark warp is solved on this grid, then upsampled
    tps_iris: bool = False  # TPS renderer: the two iris centres join the warp's control points, so the photo's own pupils move with the driver's gaze (landmarks/iris.py; not in the paper)
    tps_fill_own_mouth: bool = True  # TPS renderer: also generate where the photo's own open mouth lands (a closed driven mouth would show its teeth squeezed into the lip line)
    embedder_activation: str = "relu"  # E's activation before the sum pool: "relu" (paper) or "leaky_relu" (0.2; e_hat may be negative)


@dataclass
class LossConfig:
    """Loss weights (paper section 4). `weights` picks the v1 [P] or v2 [P2] set of content weights."""

    weights: str = "v1"  # "v1": VGG19 1e-2, VGGFace 2e-3, L_MCH 80; "v2": 1.5e-1, 2.5e-2, L_MCH 10
    vgg19_weights: str = ""  # path to a torchvision-format VGG19 state_dict (.pth / .safetensors); "" = none
    vggface_weights: str = ""  # path to the common PyTorch conversion of the VGG-Face descriptor; "" = none
    offline_content_weight: float = 1.0  # weight of the offline content loss used when no VGG file is given
    face_network: str = ""  # "dlib": add a face term and an identity term computed with dlib's face ResNet on aligned chips (not in the paper); "" = off
    face_network_weights: str = ""  # dlib_face_recognition_resnet_model_v1.dat; "" = the copy inside face-recognition-models
    face_content_weight: float = 1.0  # weight of the face term: L1 of the face ResNet's activations (VGGFace's role)
    face_layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)  # per activation: stem pool, level4, level3, level2, level1
    identity_weight: float = 1.0  # weight of the identity term 1 - cos(descriptor(fake), descriptor(real))
    feature_matching_weight: float = 10.0  # weight of L_FM inside L_ADV
    match_loss: bool = True  # L_MCH on (FT variant) or off (FF variant)
    match_weight: float | None = None  # L_MCH weight; None = the weight set's (v1 80, v2 10)
    match_warmup_steps: int = 0  # L_MCH weight is 0 for this many steps (not in the paper; 0 = from step 1)
    match_ramp_steps: int = 0  # then rises linearly to match_weight over this many steps (0 = at once)
    adversarial_weight: float = 1.0  # weight of -D(x_fake) in L_ADV
    warp_smoothness_weight: float = 0.1  # warp generator: weight of the flow's total variation
    tps_mask_weight: float = 0.1  # TPS renderer: weight of the area the network moves from warped to generated


@dataclass
class TrainConfig:
    """Meta-learning (paper sections 1 and 5)."""

    k_shot: int = 8  # K source frames per episode (the target is never among them)
    batch_size: int = 1  # episodes per optimiser step and process
    steps: int = 100_000  # total E/G updates
    lr_generator: float = 5e-5  # Adam learning rate for E and G
    lr_discriminator: float = 2e-4  # Adam learning rate for V, W, w0, b
    betas: tuple[float, float] = (0.0, 0.999)  # Adam betas [REC, SAGAN/BigGAN/LAB]
    d_steps_per_g_step: int = 2  # discriminator updates per E/G update
    seed: int = 0  # seed of parameters, episode sampling and augmentation
    num_workers: int = 2  # DataLoader workers per process
    flip: bool = True  # random horizontal flip with consistent landmark flip
    log_every: int = 10  # steps between scalar log lines
    sample_every: int = 500  # steps between sample grids (landmarks | ground truth | output)
    checkpoint_every: int = 1000  # steps between checkpoints
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    amp_cpu: bool | str = "auto"  # bf16 autocast of meta-learning's forwards on CPU: true, false, or "auto" = on where the CPU has native bf16 (AVX-512 BF16 / AMX), else fp32 (training quality held against fp32 in an A/B run)
    adam: str = "fused"  # Adam: "fused" (one kernel; the same update up to float rounding), "foreach", "for-loop" (one parameter at a time)
    compile: bool = False  # torch.compile the networks
    init_w_from_data: bool = False  # before step 1: W_i := mean E output over K frames of video i with the initial E (not in the paper)
    diffaugment: str = ""  # DiffAugment policy for every D call, e.g. "translation,cutout,color"; "" = off (paper)
    lecam_weight: float = 0.0  # LeCam regularisation of D (0 = off, the paper); 0.3 in the LeCam paper's GAN
    lecam_decay: float = 0.99  # decay of LeCam's moving averages of D's real / fake scores
    border_dropout: float = 0.0  # TPS renderer: probability that a source loses a band along one edge, marked invalid (data/episodes.py), so the generator learns to fill crops that run past a photo (0 = off; not in the paper)
    probe_frames: int = 0  # frames held back at the end of every clip (never in episodes) for the identity probe
    probe_every: int = 0  # steps between identity-probe log entries (nearest-centroid accuracy of e_hat); 0 = off


@dataclass
class FinetuneConfig:
    """Few-shot fine-tuning (paper section 6)."""

    epochs: int = 40  # passes over the T frames
    batch_size: int = 8  # frames per step (min(T, batch_size))
    lr_generator: float = 5e-5  # Adam learning rate for G and psi'
    lr_discriminator: float = 2e-4  # Adam learning rate for V, w', b
    d_steps_per_g_step: int = 2  # discriminator updates per G update
    steps: int = 0  # G' updates instead of epochs (0 = the paper's epochs x batches; an explicit epochs argument wins)
    augment: bool = False  # batches of augmented copies of the T frames: flip, +-5 % scale, +-4 % shift (not in the paper)
    lr_psi: float | None = None  # learning rate of psi' (None = lr_generator, the paper)
    ema: float = 0.0  # decay of an exponential moving average of G' and psi', used as the result (0 = off, the paper)


@dataclass
class DataConfig:
    """Preprocessing and landmarks (paper section 2)."""

    crop_scale: float = 1.8  # side of the VoxCeleb-style square crop / face size measure
    crop_shift: float = 0.1  # shift of the crop centre downward, in face sizes (hair above, neck below)
    redetect_every: int = 25  # frames between full re-detections while tracking
    max_frames: int = 0  # keep at most this many frames per clip, evenly spaced (0 = all)
    jpeg_quality: int = 95  # quality of stored crops
    line_thickness: float = 2.0  # landmark line thickness at 256 px; scaled linearly with resolution
    follow_threshold: float = 0.6  # driver crop: a face moving further (face sizes, data.crop.face_motion) is followed by a smoothed box per frame, else one stable box (talking heads: 0.01-0.5; not in the paper)
    iris: str = "auto"  # iris locator for gaze (landmarks/iris.py): "mediapipe", "classical", "auto" = mediapipe where installed, else classical; "none" = no iris points (not in the paper)
    pupils: bool = False  # draw each seen iris as a filled disc inside its eye in the landmark image (gaze; not in the paper, whose 68-point image shows no gaze)
    follow_smoothing: float = 0.3  # seconds: zero-phase moving average of a followed driver box's centre and size (data.crop.smooth_track)


PRECISIONS = ("auto", "fp32", "bf16", "int8")  # inference.precision values (talking_heads.inference)
BACKENDS = ("torch", "onnxruntime")  # inference.backend values


@dataclass
class InferenceConfig:
    """Few-shot avatars and puppeteering (paper section 1 stages 2-3; `talking_heads.pipeline`)."""

    video_frames: int = 8  # T frames picked evenly spread over a source video when creating an avatar
    batch_size: int = 8  # landmark images per generator call when rendering
    output_size: int = 0  # side (px) of rendered video frames (--size); 0 = automatic: a TPS avatar's own size (512 where the photo holds it, else 256), other generators' output upscaled to 256
    motion_seconds: float = 4.0  # length of a built-in motion
    motion_fps: float = 25.0  # frame rate of built-in motions and of saved landmark sequences (.npy)
    thumbnail_size: int = 64  # side (px) of the source thumbnail stored in an avatar directory
    contact_sheet_frames: int = 8  # evenly spaced frames shown on the PNG contact sheet
    precision: str = "auto"  # generator arithmetic when rendering: "fp32", "bf16", "int8" (onnxruntime backend, CPU: static int8 calibrated per avatar; not in the paper), or "auto" = bf16 on CUDA and on CPUs with AVX-512 BF16 / AMX, else fp32 (inference.py)
    max_yaw: float = 0.0  # degrees a driven head may turn away from the photo's own yaw (landmarks/yaw.py: past it the turn is held at the limit, the rest of the motion kept); 0 = no limit (the paper). The TPS renderer's models use 15
    backend: str = "torch"  # renderer: "torch", or "onnxruntime" (the avatar's generator exported to ONNX, fp32 or int8; inference.py)


@dataclass
class EvalConfig:
    """Evaluation protocol and metrics (paper section 7; `talking-heads evaluate`, talking_heads.evaluation)."""

    shots: tuple[int, ...] = (1, 8, 32)  # few-shot set sizes T (nested: the T=1 frame is among the T=8 ones)
    holdout: int = 32  # hold-out frames per test video, disjoint from every few-shot set [P]
    variants: tuple[str, ...] = ("ff", "ft")  # avatars: "ff" feed-forward psi' = P e_new, "ft" fine-tuned
    videos: int = 0  # test videos used, the first N in clip-id order (0 = all)
    per_identity: int = 0  # at most this many videos per identity, first in clip-id order (0 = no limit)
    epochs: int | None = None  # FT epochs (None = finetune.epochs, the paper's 40)
    seed: int = 0  # seed of the few-shot draws (FT's batch order follows train.seed, as in the pipeline)
    metrics: tuple[str, ...] = ("ssim", "psnr", "l1", "lpips", "csim", "identity", "landmark_error", "fid",
                                "fid_face", "sharpness", "gaze_error")  # registry names (talking_heads.metrics)
    render_batch: int = 1  # frames per generator call (1 = per-frame inference timing, as the paper reports)
    cross: bool = False  # also run cross-identity puppeteering (adaptation on and off)
    cross_frames: int = 16  # driver frames per cross-identity pair, evenly spaced over the driver clip
    grid_rows: int = 4  # hold-out frames shown per image grid
    fid_weights: str = ""  # path to pt_inception-2015-12-05-6726825d.pth (FID Inception); "" = FID not available
    lpips_weights: str = ""  # path to LPIPS v0.1 linear layers (alex.pth / vgg.pth); "" = LPIPS not available
    lpips_backbone: str = ""  # torchvision alexnet / vgg16 state_dict for LPIPS ("" = inside lpips_weights)
    detect_size: int = 256  # frames are upscaled to this side before face detection (landmark error, CSIM)
    face_weights: str = ""  # dlib_face_recognition_resnet_model_v1.dat for CSIM and the identity metrics; "" = the copy inside face-recognition-models
    identity_threshold: float = 0.6  # descriptor distance below which two faces count as one person (dlib's rule; models.face_identity.SAME_PERSON_DISTANCE is this value)


@dataclass
class SpeechConfig:
    """The speech-to-motion model and its training (beyond the paper; `talking_heads.speech`, `talking-heads
    speech train`). Stored as the speech model's own config.json: it is independent of the renderer."""

    channels: int = 128  # width of the temporal convolutions
    dilations: tuple[int, ...] = (1, 2, 4, 8, 1, 2, 4, 8)  # one residual block per entry, kernel 3 (0.6 s of the past)
    lookahead: float = 0.2  # seconds of sound after a frame that its motion may use (offline; 0 = streaming)
    steps: int = 6000  # training steps
    batch_size: int = 32  # windows per step
    window: float = 2.0  # seconds per training window
    lr: float = 1e-3  # Adam, cosine decay to 5 % over the steps
    mouth_weight: float = 1.0  # L1 weight of the 20 mouth points (the chin's is chin_weight)
    chin_weight: float = 0.3
    velocity_weight: float = 0.5  # L1 of the frame-to-frame change (keeps the motion's speed, not a mean)
    opening_weight: float = 1.0  # L1 of the inner-lip opening
    gain_db: float = 12.0  # augmentation: random gain within +-gain_db
    noise_snr: tuple[float, float] = (10.0, 40.0)  # augmentation: white noise at an SNR (dB) in this range, half the windows
    speed: float = 0.1  # augmentation: tempo change within +-speed (sound and motion together)
    narrowband: float = 0.2  # augmentation: share of windows band-limited to telephone sound (8 kHz audio)
    eq_db: float = 6.0  # augmentation: a random smooth spectral tilt of up to +-eq_db across the mel bands (microphones, rooms)
    normalise_window: float = 2.0  # seconds: each band's mean over the past window (network positions) is subtracted, so a voice's timbre and a microphone's colour count less; 0 = off
    norm: str = "group"  # normalisation in each block: "group" (GroupNorm over the channels and the whole window: every output depends on the window; the shipped model) or "frame" (over the channels of each frame: causal, what streaming needs; held-out r 0.287 against 0.318)
    dropout: float = 0.1  # dropout inside each residual block (17 minutes of speech from 60-odd people over-fit quickly)
    min_sync: float = 0.05  # training clips whose loudness and mouth opening correlate less (best shift within +-0.2 s) are left out: silent tracks, music, dubbed voices (speech/data.py); -1 keeps every audible clip
    val_identities: int = 8  # train-split people held out to watch over-fitting (never the test split)
    seed: int = 0


@dataclass
class Config:
    """A complete, self-describing configuration (what `config.json` holds)."""

    preset: str = "paper"  # name of the preset this was built from
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    # --- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, user_set: Collection[str] = ()) -> "Config":
        """Rebuild from `to_dict()` output, checking every field's type and range against the dataclasses (the
        message names the field); unknown keys are an error (an incompatible model directory). user_set: the
        "section.field" keys a user sets now (`apply_overrides`): only their counts are held to the safety
        limits (`LIMITED`), so a saved config (a model trained with --limit steps=2e7) loads without the flag."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a JSON object of sections, got {type(d).__name__}")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            value = d[f.name]
            sub = _SECTIONS.get(f.name)
            if sub:
                if not isinstance(value, dict):
                    raise ConfigError(f"config section {f.name!r} must be an object of fields, got "
                                      f"{_describe(value)}")
                limited = {k.split(".", 1)[1] for k in user_set if k.startswith(f"{f.name}.")}
                kwargs[f.name] = sub(**check_section(f.name, value, limited=limited))
            else:
                kwargs[f.name] = _check_value(f.name, value, str)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}: written by a different version?")
        return cls(**kwargs)


_SECTIONS = {"model": ModelConfig, "loss": LossConfig, "train": TrainConfig,
             "finetune": FinetuneConfig, "data": DataConfig, "inference": InferenceConfig, "eval": EvalConfig,
             "speech": SpeechConfig}  # speech: the speech model's own config.json, not a section of Config


def check_section(section: str, values: dict[str, Any], *, names: Mapping[str, str] | None = None,
                  limited: Collection[str] | None = None) -> dict[str, Any]:
    """Fields of one section (e.g. "eval") checked as a config.json's are (type, range); returns them as the
    dataclass holds them (lists as tuples). Callers that take single settings (the evaluation's flags) use it
    to refuse a bad value before any work. names: what messages call a field (a command's flag, e.g.
    {"epochs": "--epochs"}; default "section.field"); limited: the fields a user gives, held to the safety
    limits too (default: all of `values`)."""
    cls = _SECTIONS[section]
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s) {sorted(unknown)}: written by a different version?")
    hints, names = typing.get_type_hints(cls), names or {}
    limited = values.keys() if limited is None else limited
    return {k: _check_value(names.get(k, f"{section}.{k}"), v, hints[k], key=f"{section}.{k}", limited=k in limited)
            for k, v in values.items()}


_WEIGHT = _between(0.0, 1e6)  # a loss weight
_LR = _between(0.0, 1.0)  # an Adam learning rate (0: the networks do not move)
_SEED = _between(0, 2**63 - 1)
_EVERY = _between(1, 10**9)  # steps between two log lines, samples or checkpoints
_BATCH = _between(1, 4096)

# "section.field" -> its check (of each element of a list field), for every config, a saved one included.
# Ranges accept every preset's value and all sensible use.
RANGES: dict[str, Callable[[Any, str], Any]] = {
    "speech.channels": _between(8, 1024), "speech.lookahead": _between(0.0, 1.0), "speech.steps": _between(1, 10**7),
    "speech.batch_size": _between(1, 4096), "speech.window": _between(0.5, 30.0), "speech.lr": _between(1e-7, 1.0),
    "speech.val_identities": _between(0, 10**4), "speech.speed": _between(0.0, 0.5),
    "speech.narrowband": _between(0.0, 1.0), "speech.gain_db": _between(0.0, 40.0),
    "speech.eq_db": _between(0.0, 40.0), "speech.dropout": _between(0.0, 0.9),
    "speech.normalise_window": _between(0.0, 30.0), "speech.min_sync": _between(-1.0, 1.0),
    "speech.norm": _one_of("frame", "group"),
    "data.crop_scale": _between(1.0, 5.0), "data.crop_shift": _between(-1.0, 1.0),
    "data.redetect_every": _between(1, 100_000), "data.max_frames": _between(0, 10**7),
    "data.jpeg_quality": _between(1, 100), "data.line_thickness": _between(0.25, 32.0),
    "data.iris": _one_of("auto", "mediapipe", "classical", "none"), "data.follow_threshold": _between(0.0, 100.0), "data.follow_smoothing": _between(0.0, 60.0),
    "inference.video_frames": _between(1), "inference.batch_size": _BATCH,
    "inference.output_size": _between(0, 8192), "inference.motion_seconds": _positive,
    "inference.motion_fps": _between(1.0, 240.0), "inference.thumbnail_size": _between(8, 1024),
    "inference.contact_sheet_frames": _between(1, 1000), "inference.max_yaw": _between(0.0, 90.0),
    "finetune.epochs": _between(0), "finetune.steps": _between(0),
    "finetune.batch_size": _BATCH, "finetune.lr_generator": _LR, "finetune.lr_discriminator": _LR,
    "finetune.lr_psi": _LR, "finetune.d_steps_per_g_step": _between(0, 100), "finetune.ema": _between(0.0, 0.9999),
    "train.k_shot": _between(1, 1024), "train.batch_size": _BATCH, "train.steps": _between(1),
    "train.lr_generator": _LR, "train.lr_discriminator": _LR, "train.betas": _between(0.0, 0.99999),
    "train.d_steps_per_g_step": _between(0, 100), "train.seed": _SEED, "train.num_workers": _between(0, 256),
    "train.log_every": _EVERY, "train.sample_every": _EVERY, "train.checkpoint_every": _EVERY,
    "train.lecam_weight": _WEIGHT, "train.lecam_decay": _between(0.0, 1.0), "train.probe_frames": _between(0, 10_000),
    "train.probe_every": _between(0, 10**9), "train.border_dropout": _between(0.0, 1.0),
    "loss.offline_content_weight": _WEIGHT, "loss.face_content_weight": _WEIGHT, "loss.face_layer_weights": _WEIGHT,
    "loss.identity_weight": _WEIGHT, "loss.feature_matching_weight": _WEIGHT, "loss.match_weight": _WEIGHT,
    "loss.adversarial_weight": _WEIGHT, "loss.warp_smoothness_weight": _WEIGHT, "loss.tps_mask_weight": _WEIGHT,
    "model.tps_mouth_size": _between(16, 1024), "model.tps_mouth_channels": _between(1, 4096),
    "model.tps_grid_size": _between(8, 1024),
    "loss.match_warmup_steps": _between(0, 10**9), "loss.match_ramp_steps": _between(0, 10**9),
    "eval.shots": _between(1), "eval.variants": _one_of("ff", "ft"), "eval.holdout": _between(1, 100_000),
    "eval.videos": _between(0, 10**9), "eval.per_identity": _between(0, 10**9), "eval.epochs": _between(0),
    "eval.seed": _SEED, "eval.render_batch": _BATCH, "eval.cross_frames": _between(1, 100_000),
    "eval.grid_rows": _between(0, 1000), "eval.detect_size": _between(16, 8192),
    "eval.identity_threshold": _between(0.01, 10.0),
}
# counts with a safety limit (`limits.LIMITS`): a value a user sets is checked by that limit's function (its
# message says how to go past the limit) before its range; a value read from a saved config only by its range
LIMITED: dict[str, Callable[[Any, str], Any]] = {
    "inference.video_frames": limits.check_shots, "inference.motion_seconds": limits.check_seconds,
    "finetune.epochs": limits.check_epochs, "finetune.steps": limits.check_finetune_steps,
    "train.steps": limits.check_steps, "eval.shots": limits.check_shots, "eval.epochs": limits.check_epochs,
}


def _check_range(name: str, key: str, value: Any, limited: bool) -> None:
    """The checks of the setting `key` ("section.field"; `name` is what messages call it): its safety limit
    when a user set it (`limited`), then its range."""
    for check in ((LIMITED.get(key) if limited else None), RANGES.get(key)):
        if check is not None:
            check(value, name)


def _check_value(name: str, value: Any, hint: Any, *, key: str = "", limited: bool = False) -> Any:
    """`value` as the type `hint` (int, float, bool, str, X | None, tuple[X, ...], tuple[X, Y]) within its
    range (`_check_range` of `key`, default `name`); an InputError naming the field otherwise. Floats must be
    finite; ints are accepted for floats; JSON lists become tuples."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    key = key or name
    again = {"key": key, "limited": limited}  # for the checks of the same setting one type level down
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(name, value, inner[0] if len(inner) == 1 else typing.Union[tuple(inner)], **again)
    if origin in (typing.Union, types.UnionType):  # e.g. bool | str: the first arm the value fits
        for arm in args:
            try:
                return _check_value(name, value, arm, **again)
            except ConfigError:
                pass
        kinds = " or ".join(_KIND.get(a, getattr(a, "__name__", str(a))) for a in args)
        raise ConfigError(f"{name} must be {kinds}, got {_describe(value)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_value(_item(name, i), v, args[0], **again) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{name} must be a list of {len(args)} values, got {_describe(list(value))}")
        return tuple(_check_value(_item(name, i), v, a, **again) for i, (v, a) in enumerate(zip(value, args)))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {_describe(value)}")
        _check_range(name, key, value, limited)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {_describe(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value}")
        _check_range(name, key, float(value), limited)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {_describe(value)}")
        _check_range(name, key, value, limited)
        return value
    return value


# --- presets -----------------------------------------------------------------------------------------

def _paper() -> Config:
    """The paper's 256 px model: E 15M, G 38M, V 20M parameters (asserted by a test)."""
    return Config(preset="paper")


def _sample() -> Config:
    """CPU-trainable 128 px model for the shipped sample avatar model."""
    return Config(
        preset="sample",
        model=ModelConfig(
            image_size=128,
            generator="warp",  # won its A/B run against the paper's generator (docs/training_ablations.md)
            embedding_dim=256,
            embedder_channels=(16, 32, 64, 128, 256),  # E/V widths sized for training on a few CPU cores
            embedder_attention_at=(16,),
            generator_down_channels=(32, 64, 128, 256),
            generator_down_attention_at=(16,),
            generator_res_blocks=2,
            generator_up_channels=(128, 64, 32, 32),
            generator_up_attention_at=(32,),
        ),
        # without the VGG files (none can be had offline) the offline content loss is L_CNT; at weight 1 the
        # discriminator's feature matching (x10) and hinge terms swamp it and reconstruction stalls, so the
        # sample model weighs it 10x. The options below won their A/B runs (docs/training_ablations.md): a live
        # embedder (W from the data, L_MCH 1 warmed up), DiffAugment on every D call, the dlib face and identity
        # terms; the generator's learning rate is D's.
        loss=LossConfig(offline_content_weight=10.0, face_network="dlib", face_content_weight=1.0,
                        identity_weight=10.0, match_weight=1.0, match_warmup_steps=200, match_ramp_steps=300),
        train=TrainConfig(sample_every=200, checkpoint_every=500, lr_generator=2e-4, init_w_from_data=True,
                          diffaugment="translation,cutout,color", probe_frames=4, probe_every=500),
        # FT from one photo (docs/training_ablations.md, FT recipes): 40 steps of 8 augmented copies, psi' at
        # 10x the learning rate: kept the person's identity far better than the paper's recipe in its A/B run
        finetune=FinetuneConfig(steps=40, batch_size=8, augment=True, lr_psi=5e-4),
    )


def _tiny() -> Config:
    """Minimal 32 px model for unit tests and CPU debugging."""
    return Config(
        preset="tiny",
        model=ModelConfig(
            image_size=32,
            embedding_dim=16,
            embedder_channels=(8, 16, 16),
            embedder_attention_at=(16,),
            generator_down_channels=(8, 16),
            generator_down_attention_at=(16,),
            generator_res_blocks=1,
            generator_up_channels=(16, 8),
            generator_up_attention_at=(16,),
        ),
        # fp32 on every CPU: the unit tests compare training arithmetic exactly, whatever machine runs them
        train=TrainConfig(k_shot=2, num_workers=0, log_every=1, sample_every=10, checkpoint_every=10,
                          amp_cpu=False),
        finetune=FinetuneConfig(epochs=2, batch_size=2),
    )


PRESETS = {"paper": _paper, "sample": _sample, "tiny": _tiny}


def preset(name: str) -> Config:
    """A fresh Config for a named preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def _override(item: str) -> tuple[str, str, Any]:
    """(section, field, value) of a `section.field=value` string (the value parsed as JSON, else a string)."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"override {item!r} must look like section.field=value, e.g. train.steps=1000")
    key, raw = item.split("=", 1)
    section, name = key.split(".", 1)
    try:
        return section, name, json.loads(raw)
    except json.JSONDecodeError:
        return section, name, raw


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `section.field=value` strings (values parsed as JSON, else taken as strings); the values set here
    are held to the safety limits (`LIMITED`) besides their ranges."""
    d, user_set = cfg.to_dict(), set()
    for item in overrides:
        section, name, value = _override(item)
        if section not in d or not isinstance(d[section], dict) or name not in d[section]:
            raise ConfigError(f"unknown setting {section + '.' + name!r}")
        d[section][name] = value
        user_set.add(f"{section}.{name}")
    return Config.from_dict(d, user_set=user_set)


def speech_overrides(cfg: SpeechConfig, overrides: list[str]) -> SpeechConfig:
    """`apply_overrides` for the speech model's own config (`speech.field=value`)."""
    parsed = [_override(item) for item in overrides]
    if any(section != "speech" for section, _, _ in parsed):
        raise ConfigError("the speech model's settings are given as speech.FIELD=value")
    return dataclasses.replace(cfg, **check_section("speech", {name: value for _, name, value in parsed}))
