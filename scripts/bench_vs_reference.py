#!/usr/bin/env python
"""Our paper-preset networks against the two earlier public implementations (issue 16 item 4).

    OMP_NUM_THREADS=1 python scripts/bench_vs_reference.py --vincent PATH --shrubb PATH --write docs/benchmarks.md

PATHs are work trees of their source (e.g. `git archive HEAD | tar -x -C /tmp/ref_vincent`):
- vincent-thevenin/Realistic-Neural-Talking-Head-Models (`network/model.py`, `loss/`),
- shrubb/latent-pose-reenactment, the authors' lab's FSTH reimplementation (`generators/FSTH.py`,
  `embedders/FSTH.py`, `discriminators/FSTH.py`, `criterions/`, `runners/holycow.py`).
Their networks are rebuilt from their own code (imported from PATH; random weights, the paper's widths: 64 ->
512 channels, embedding 512, 256 px). Without a PATH that implementation's figures recorded in the design
notes (speed.md: one core, 1 thread, CPU-time medians) stand in, labelled "recorded (speed.md)".

Protocol, the same for all (batch 1, 256 px, K = 8, `--threads` threads, default 1):
- generator: ms per frame with the avatar's AdaIN parameters computed once, as each one's inference renders a
  frame: ours = `inference.TorchRenderer` of `models.specialise` at the default precision (`auto`: bf16 on CPUs
  with native bf16) and in fp32; vincent = `Generator(256, finetuning=True)` after `finetuning_init()` (psi
  fixed), eval, no_grad; shrubb = FSTH `Generator` after `enable_finetuning()` (AdaIN weights fixed), eval,
  no_grad.
- embedder: ms for K = 8 frames in one batch, eval, no_grad.
- generator and embedder are timed in one process in interleaved rounds (one call of each implementation per
  round, the order rotating), after `--warmup` calls of each; medians.
- meta-learning step: one E/G update + the D update(s) each implementation does per step (`STEP_INCLUDES`),
  each in its own worker subprocess (`--worker`), so that one's memory does not count for another; the workers
  are driven in interleaved rounds too (round r: one step of each, rotating order) when memory allows all
  of them at once, else one after another (`--step-mode`). Peak memory: the worker's lifetime peak RSS
  (getrusage ru_maxrss) and, in brackets, the peak RSS over the warm-up and timed steps alone (VmHWM reset after
  building everything).
- times: CPU time of the process (time.process_time, which load on other cores does not inflate; the recorded
  figures are CPU times too) and wall time, both from the same rounds.

Targets (issue 16): generator at the default precision <= 1/3 of theirs, step <= 1/2 of theirs, peak memory
<= theirs. Output: a Markdown table (or `--json`); `--write FILE` replaces this script's own section of FILE
("## " + SECTION) or appends it at the end.

torchvision: their perceptual losses build torchvision's VGG19 / VGG16. When torchvision cannot be imported
(as on the project's machines), `torchvision_shim()` provides `torchvision.models.vgg19 / vgg16` with
torchvision's exact layer layout (features, avgpool, classifier) and random weights. Pretrained weights are
never loaded (none can be had offline): theirs get random VGG weights as ours do (same cost).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
SECTION = "Against the earlier implementations (scripts/bench_vs_reference.py)"
IMPLS = ("vincent", "shrubb")
LABELS = {"ours": "ours", "vincent": "vincent-thevenin", "shrubb": "shrubb (FSTH)"}
WHAT = ("generator", "embedder", "step")
# the design notes' speed.md: one core, 1 thread, paper preset 256 px, CPU-time medians over 3 rounds of 3 warm-up
# + 10 timed calls; training peak RSS
RECORDED = {
    "vincent": {"generator_ms": 1559.0, "embedder_ms": 4103.0, "step_s": 26.9, "peak_gib": 4.6},
    "shrubb": {"generator_ms": 1373.0, "embedder_ms": 4237.0, "step_s": 24.6, "peak_gib": 8.1},
    "ours": {"generator_ms": 1418.0, "embedder_ms": 2709.0, "step_s": 19.3, "peak_gib": 3.9},
}
TARGETS = {"generator": 1 / 3, "step": 1 / 2, "peak": 1.0}  # ours / theirs at most
# peak RSS (GiB) a step worker is expected to need (measured plus a margin): decides --step-mode auto
EXPECTED_STEP_GIB = {"ours": 3.0, "vincent": 4.5, "shrubb": 5.5}  # measured 2.5 / 3.9 / 4.6 (paper preset)
STEP_INCLUDES = {
    "ours": "`meta.meta_step` as the training loop runs it: E on the K frames, G, content loss with VGG19 + "
            "VGGFace (random weights, loaded from files in the standard layout as in training), L_ADV with "
            "feature matching, L_MCH, E/G Adam update, then `d_steps_per_g_step` = 2 D updates (hinge loss on "
            "the fake and the real frame each)",
    "vincent": "their `train.py` loop body: E on the K frames, G, D(fake) and D(real, no_grad), `LossG` (their "
               "`LossCnt`: torchvision VGG19 and their `Cropped_VGG19` as VGGFace, random weights; `LossAdv` "
               "with feature matching; `LossMatch`), E/G Adam update, then 2 D updates (D(fake) + D(real), hinge "
               "losses) and the per-video W_i file save (to a temporary folder); `load_W_i` before the step",
    "shrubb": "their `runners/holycow.py` `run_epoch` body with their `TrainingModule`: E on the K frames, G, D's "
              "three passes (fake for G, fake detached for D, real), the FSTH criterions adversarial, featmat, "
              "perceptual (VGG19, Caffe layout), idt_embed (VGG16 VGGFace) and dis_embed (random VGG weights), E/G "
              "Adam update, 1 D update, the running averages of E and G (0.999) and the per-loss float() logging",
}


# --- timing and memory -------------------------------------------------------------------------------

def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def interleaved(fns: dict[str, Callable[[], Any]], *, warmup: int, rounds: int) -> dict[str, dict[str, float]]:
    """CPU and wall seconds (medians) of each fn, timed in interleaved rounds: round r calls every fn once,
    starting with the r-th (rotating), after `warmup` calls of each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    cpu: dict[str, list[float]] = {k: [] for k in names}
    wall: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            w0, c0 = time.perf_counter(), time.process_time()
            fns[k]()
            cpu[k].append(time.process_time() - c0)
            wall[k].append(time.perf_counter() - w0)
    return {k: {"cpu_s": _median(cpu[k]), "wall_s": _median(wall[k]), "runs": rounds, "cpu_all": cpu[k],
                "wall_all": wall[k]} for k in names}


def _status_kib(field: str) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux /proc/self/clear_refs); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_mib() -> dict[str, float | None]:
    """rss / hwm (VmRSS / VmHWM, None without /proc) and maxrss (getrusage, the lifetime peak), MiB."""
    rss, hwm = _status_kib("VmRSS"), _status_kib("VmHWM")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"rss_mib": None if rss is None else round(rss / 1024, 1),
            "hwm_mib": None if hwm is None else round(hwm / 1024, 1), "maxrss_mib": round(maxrss / 1024, 1)}


def machine_busy_s() -> float | None:
    """CPU seconds all processes of the machine have used since boot (/proc/stat: user, nice, system, irq,
    softirq, steal), None without /proc."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK")
    return None


def own_cpu_s() -> float:
    """CPU seconds of this process and of its children that have been waited for (the step workers)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def mem_available_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return None


# --- importing their code ----------------------------------------------------------------------------

def torchvision_shim() -> types.ModuleType:
    """A stand-in `torchvision` package with `models.vgg19`, `models.vgg16` and `models.VGG` in torchvision's
    layout (features: conv3x3 pad 1 + ReLU(inplace) + MaxPool2d(2, 2); avgpool 7x7; classifier 25088 -> 4096 ->
    4096 -> 1000 with ReLU and Dropout), random weights. Registered in sys.modules."""
    import torch
    from torch import nn

    from talking_heads.models.perceptual import VGG16_CFG, VGG19_CFG, vgg_features

    class VGG(nn.Module):
        def __init__(self, cfg, num_classes: int = 1000):
            super().__init__()
            self.features = vgg_features(cfg, len(cfg) * 2)  # all of it
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
                                            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
                                            nn.Linear(4096, num_classes))

        def forward(self, x):
            x = self.avgpool(self.features(x))
            return self.classifier(torch.flatten(x, 1))

    def vgg19(pretrained: bool = False, progress: bool = True, weights=None, **kwargs):
        return VGG(VGG19_CFG, **kwargs)  # random weights whatever `pretrained` / `weights` say

    def vgg16(pretrained: bool = False, progress: bool = True, weights=None, **kwargs):
        return VGG(VGG16_CFG, **kwargs)

    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    models.VGG, models.vgg19, models.vgg16 = VGG, vgg19, vgg16
    tv.models, tv.__version__, tv.__path__ = models, "shim (scripts/bench_vs_reference.py)", []
    sys.modules["torchvision"], sys.modules["torchvision.models"] = tv, models
    return tv


def ensure_torchvision() -> str:
    """The real torchvision if it imports, else `torchvision_shim()`; returns which."""
    mod = sys.modules.get("torchvision")
    if mod is None:
        try:
            import torchvision as mod  # noqa: F811
        except Exception:  # missing, or built for another torch
            for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
                del sys.modules[name]
            mod = torchvision_shim()
    return str(getattr(mod, "__version__", "?"))


def _stub_module(name: str, **attrs) -> None:
    """An empty module `name` (with `attrs`) where the real one cannot be imported: vincent's loss module does
    `import imp` (gone in Python 3.12; only used to load their VGGFace file), shrubb's utils `import yamlenv`
    (config files; not used here)."""
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        mod = types.ModuleType(name)
        for k, v in attrs.items():
            setattr(mod, k, v)
        sys.modules[name] = mod


def import_from(root: str | os.PathLike, names: list[str]) -> dict[str, types.ModuleType]:
    """Modules `names` imported from the source tree `root` (put first on sys.path); an error when one of them
    resolves to a file outside it."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise SystemExit(f"{root}: not a folder (give the path to a work tree of their source)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    out = {}
    for name in names:
        mod = importlib.import_module(name)
        where = Path(getattr(mod, "__file__", "") or "").resolve()
        if root not in where.parents:
            raise SystemExit(f"{name} was imported from {where}, not from {root}: is {root} the right tree?")
        out[name] = mod
    return out


# what the docs show for a path outside the project given to these options (a machine's absolute paths stay out)
PATH_OPTIONS = {"--vincent": "REF/vincent", "--shrubb": "REF/shrubb", "--write": None, "--from-json": None}


def shown_path(path: str | os.PathLike, placeholder: str | None = None) -> str:
    """`path` as committed docs show it: relative to the project when inside it, else `placeholder` (default: the
    file name)."""
    p = Path(path).resolve()
    if p.is_relative_to(ROOT):
        return str(p.relative_to(ROOT))
    return placeholder or p.name


def shown_command(args: list[str]) -> str:
    """This script's command line with the PATH_OPTIONS' values as `shown_path` gives them."""
    out, i = [], 0
    while i < len(args):
        opt, eq, value = args[i].partition("=")
        if opt in PATH_OPTIONS and (eq or i + 1 < len(args)):
            if not eq:
                i, value = i + 1, args[i + 1]
            out.append(f"{opt} {shown_path(value, PATH_OPTIONS[opt])}")
        else:
            out.append(args[i])
        i += 1
    return "python scripts/bench_vs_reference.py " + " ".join(out)


def source_revision(root: str | os.PathLike) -> str | None:
    """The git commit of a work tree that is a checkout (an exported tree has none)."""
    with contextlib.suppress(Exception):
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if out.returncode == 0 and Path(root, ".git").exists():
            return out.stdout.strip()
    return None


@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def shrubb_args(size: int = 256, k: int = 8, vgg_weights_dir: str = "criterions/common/"):
    """Their train.py / module get_args defaults for the FSTH networks and criterions (paper widths)."""
    return argparse.Namespace(
        in_channels=3, out_channels=3, num_channels=64, max_num_channels=512, embed_channels=512,
        image_size=size, num_labels=2, device="cpu",
        gen_padding="zero", norm_layer="in", gen_num_downsample_blocks=4, gen_num_residual_blocks=4,
        embed_padding="zero", embed_num_blocks=6, average_function="sum",
        dis_padding="zero", dis_num_blocks=7,
        optimizer="Adam", lr_gen=5e-5, lr_dis=2e-4, beta1=0.0, finetune=False,
        gan_type="gan", fm_weight=10.0, perc_weight=1e-2, idt_embed_weight=2e-3, dis_embed_weight=1e-2,
        vgg_weights_dir=vgg_weights_dir, num_frames=k)


# --- generator and embedder (one process, interleaved) --------------------------------------------------

def ours_render_fns(preset_name: str, k: int) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    """ours' generator (default precision and fp32, the avatar-specialised renderer of `bench --what render`)
    and embedder (K frames)."""
    import torch

    from talking_heads.config import preset
    from talking_heads.inference import TorchRenderer, resolve_precision
    from talking_heads.models import build_networks
    from talking_heads.models.specialise import specialise
    from talking_heads.train.bench import _random_avatar

    cpu = torch.device("cpu")
    cfg = preset(preset_name)
    g, psi, sources, y = _random_avatar(cfg, cpu)
    default = resolve_precision("auto", cpu)
    fns: dict[str, Callable[[], Any]] = {}
    info = {"default_precision": default, "image_size": cfg.model.image_size, "generator": cfg.model.generator}
    renderers = {"ours_default": TorchRenderer(specialise(g, psi, sources), cpu, "auto")}
    if default != "fp32":
        renderers["ours_fp32"] = TorchRenderer(specialise(g, psi, sources), cpu, "fp32")
    for name, r in renderers.items():
        fns[f"generator/{name}"] = (lambda r=r: r(y))
    torch.manual_seed(0)
    e = build_networks(cfg, num_videos=1).embedder.eval()
    s = cfg.model.image_size
    xk, yk = torch.rand(k, 3, s, s) * 2 - 1, torch.rand(k, 3, s, s) * 2 - 1

    def embed():
        with torch.no_grad():
            return e(xk, yk)

    fns["embedder/ours"] = embed
    return fns, info


def vincent_render_fns(root: str, size: int, k: int) -> dict[str, Callable[[], Any]]:
    """vincent's generator as their video_inference.py renders (psi fixed by finetuning_init) and embedder as
    their embedder_inference.py (K frames in one batch)."""
    import torch

    model = import_from(root, ["network.model"])["network.model"]
    torch.manual_seed(0)
    emb = model.Embedder(size).eval()
    x, y = torch.rand(k, 3, size, size), torch.rand(k, 3, size, size)  # their images are in [0, 1]
    with torch.no_grad():
        e_hat = emb(x, y).view(-1, k, 512, 1).mean(dim=1)  # B,512,1 as their embedder_inference.py
    gen = model.Generator(size, finetuning=True, e_finetuning=e_hat)
    gen.finetuning_init()  # psi = P e_hat, once
    gen.eval()
    g_y = torch.rand(1, 3, size, size)

    def generate():
        with torch.no_grad():
            return gen(g_y, e_hat)

    def embed():
        with torch.no_grad():
            return emb(x, y)

    return {"generator/vincent": generate, "embedder/vincent": embed}


def shrubb_render_fns(root: str, size: int, k: int) -> dict[str, Callable[[], Any]]:
    """shrubb's FSTH generator as their drive.py renders (AdaIN parameters fixed by enable_finetuning, eval,
    no grad) and embedder (`get_identity_embedding` of K frames)."""
    import torch

    mods = import_from(root, ["generators.FSTH", "embedders.FSTH"])
    args = shrubb_args(size, k)
    torch.manual_seed(0)
    emb = mods["embedders.FSTH"].Wrapper.get_net(args).eval()
    gen = mods["generators.FSTH"].Wrapper.get_net(args).eval()
    data = {"enc_stickmen": torch.rand(1, k, 3, size, size) * 2 - 1, "enc_rgbs": torch.rand(1, k, 3, size, size) * 2 - 1}
    with torch.no_grad():
        emb.get_identity_embedding(data)
    gen.enable_finetuning({"embeds": data["embeds"]})
    gen.eval()
    y = torch.rand(1, 1, 3, size, size) * 2 - 1

    def generate():
        with torch.no_grad():
            d = {"dec_stickmen": y}
            gen(d)
            return d["fake_rgbs"]

    def embed():
        with torch.no_grad():
            emb.get_identity_embedding(dict(data))

    return {"generator/shrubb": generate, "embedder/shrubb": embed}


def measure_render(what: list[str], paths: dict[str, str | None], *, preset_name: str, k: int, warmup: int,
                   rounds: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """{"generator": {name: timing}, "embedder": {name: timing}, "info": ...}, all in this process."""
    fns, info = ours_render_fns(preset_name, k)
    size = info["image_size"]
    if paths.get("vincent"):
        fns.update(vincent_render_fns(paths["vincent"], size, k))
    if paths.get("shrubb"):
        fns.update(shrubb_render_fns(paths["shrubb"], size, k))
    out: dict[str, Any] = {"info": info}
    for part in ("generator", "embedder"):
        if part not in what:
            continue
        sel = {name.split("/", 1)[1]: fn for name, fn in fns.items() if name.startswith(part + "/")}
        log(f"[{part}] {len(sel)} implementations, {warmup} warm-up calls each, {rounds} interleaved rounds")
        out[part] = interleaved(sel, warmup=warmup, rounds=rounds)
        log(f"[{part}] " + ", ".join(f"{n} {t['cpu_s'] * 1e3:.1f} ms cpu / {t['wall_s'] * 1e3:.1f} ms wall"
                                     for n, t in out[part].items()))
    return out


# --- meta-learning step (one worker subprocess per implementation) -------------------------------------

def ours_step(preset_name: str, k: int, content: str = "vgg", overrides: list[str] = ()) -> Callable[[], Any]:
    """One `meta.meta_step` of our preset (batch 1, K = k) with the VGG19 + VGGFace content loss (random weights
    from temporary files, as `bench --what train-step` does) or the offline one."""
    import torch
    from dataclasses import replace

    from talking_heads import dist
    from talking_heads.config import apply_overrides, preset
    from talking_heads.models import build_networks
    from talking_heads.train.bench import SyntheticEpisodes, collate, random_vgg_files
    from talking_heads.train.meta import build_meta_state, meta_step

    cfg = apply_overrides(preset(preset_name), list(overrides))
    cfg = replace(cfg, train=replace(cfg.train, k_shot=k, batch_size=1))
    ctx = random_vgg_files(cfg) if content == "vgg" else contextlib.nullcontext(cfg)
    with ctx as run_cfg:  # the weight files are read while building; removed after
        torch.manual_seed(0)
        state = build_meta_state(run_cfg, build_networks(run_cfg, num_videos=2), dist.DistInfo(device=torch.device("cpu")))
    if state.content_loss.mode != content:
        raise RuntimeError(f"expected the {content} content loss, got {state.content_loss.mode}")
    batch = collate([SyntheticEpisodes(run_cfg, num_episodes=1, k_shot=k)[0]])
    return lambda: meta_step(state, batch, run_cfg)


def vincent_step(root: str, size: int = 256, k: int = 8) -> Callable[[], Any]:
    """One step of their train.py loop (STEP_INCLUDES["vincent"]) on random data, random weights. Changes that
    CPU needs, nothing else: no DataParallel (a pass-through without GPUs), D's `torch.cuda.current_device()` /
    `gpu_num` split of W_i made a single-device one (0 / 1), and D's hard-coded Padding(224) (224 -> 256 px)
    made Padding(size), so that D sees the same 256 px as G and E (unchanged it would pad 256 to 288)."""
    import torch
    import torch.optim as optim

    ensure_torchvision()
    _stub_module("imp", load_source=lambda *a, **kw: None)
    mods = import_from(root, ["network.model", "loss.loss_generator", "loss.loss_discriminator"])
    model, lg, ld = mods["network.model"], mods["loss.loss_generator"], mods["loss.loss_discriminator"]
    torch.cuda.current_device = lambda: 0  # this worker process only; their D indexes W_i by the GPU's number
    wi_dir = tempfile.mkdtemp(prefix="th-vincent-wi-")
    import atexit
    import shutil

    atexit.register(shutil.rmtree, wi_dir, True)
    path_to_wi = os.path.join(wi_dir, "Wi_weights")
    torch.manual_seed(0)
    G = model.Generator(size)
    E = model.Embedder(size)
    D = model.Discriminator(2, path_to_wi)  # finetuning=False writes W_0, W_1 files into the temporary folder
    D.pad = model.Padding(size)
    D.gpu_num = 1
    G.train(); E.train(); D.train()  # noqa: E702
    optimizerG = optim.Adam(params=list(E.parameters()) + list(G.parameters()), lr=5e-5, amsgrad=False)
    optimizerD = optim.Adam(params=D.parameters(), lr=2e-4, amsgrad=False)

    class _FullVGGFace:  # what their torch.load of Pytorch_VGGFACE.pth returns: a model; random weights here
        def state_dict(self):
            return {}

    orig_vgg19, orig_load = lg.vgg19, torch.load
    load = lambda path, *a, **kw: _FullVGGFace() if str(path).endswith("Pytorch_VGGFACE.pth") else orig_load(path, *a, **kw)  # noqa: E731
    with patched(lg, "vgg19", lambda pretrained=False, **kw: orig_vgg19()), \
            patched(lg, "imp", types.SimpleNamespace(load_source=lambda *a, **kw: None)), patched(torch, "load", load):
        criterionG = lg.LossG(VGGFace_body_path="Pytorch_VGGFACE_IR.py", VGGFace_weight_path="Pytorch_VGGFACE.pth",
                              device=torch.device("cpu"))
    criterionDreal, criterionDfake = ld.LossDSCreal(), ld.LossDSCfake()
    f_lm = torch.rand(1, k, 2, 3, size, size)  # their dataset's (B, K, frame|landmarks, 3, H, W) in [0, 1]
    x, g_y = torch.rand(1, 3, size, size), torch.rand(1, 3, size, size)
    i = torch.tensor([0])
    W_i_batch = torch.rand(1, 512, 1)  # their dataset's W_i of the episode's video

    def step():
        W_i = W_i_batch.squeeze(-1).transpose(0, 1).requires_grad_()
        D.load_W_i(W_i)
        with torch.autograd.enable_grad():
            optimizerG.zero_grad()
            optimizerD.zero_grad()
            f_lm_compact = f_lm.view(-1, f_lm.shape[-4], f_lm.shape[-3], f_lm.shape[-2], f_lm.shape[-1])
            e_vectors = E(f_lm_compact[:, 0, :, :, :], f_lm_compact[:, 1, :, :, :])
            e_vectors = e_vectors.view(-1, f_lm.shape[1], 512, 1)
            e_hat = e_vectors.mean(dim=1)
            x_hat = G(g_y, e_hat)
            r_hat, D_hat_res_list = D(x_hat, g_y, i)
            with torch.no_grad():
                r, D_res_list = D(x, g_y, i)
            lossG = criterionG(x, x_hat, r_hat, D_res_list, D_hat_res_list, e_vectors, D.W_i, i)
            lossG.backward(retain_graph=False)
            optimizerG.step()
        with torch.autograd.enable_grad():
            optimizerG.zero_grad()
            optimizerD.zero_grad()
            x_hat.detach_().requires_grad_()
            for _ in range(2):
                optimizerD.zero_grad()
                r_hat, D_hat_res_list = D(x_hat, g_y, i)
                lossDfake = criterionDfake(r_hat)
                r, D_res_list = D(x, g_y, i)
                lossDreal = criterionDreal(r)
                lossD = lossDfake + lossDreal
                lossD.backward(retain_graph=False)
                optimizerD.step()
        for enum, idx in enumerate(i):
            torch.save({"W_i": D.W_i[:, enum].unsqueeze(-1)}, f"{path_to_wi}/W_{idx.item()}/W_{idx.item()}.tar")
        return float(lossG), float(lossD)

    return step


def shrubb_step(root: str, size: int = 256, k: int = 8) -> Callable[[], Any]:
    """One step of their runners/holycow.py `run_epoch` (STEP_INCLUDES["shrubb"]) with their TrainingModule,
    optimisers and FSTH criterions, on random data, random weights. The VGG weight files their PerceptualLoss
    reads with torch.load are replaced by random state_dicts in the same layout (built in memory)."""
    import torch
    from torch import nn

    ensure_torchvision()
    _stub_module("yamlenv")
    crit_names = ["adversarial", "featmat", "perceptual", "idt_embed", "dis_embed"]
    mods = import_from(root, ["generators.FSTH", "embedders.FSTH", "discriminators.FSTH", "runners.holycow",
                              "criterions.common.perceptual_loss"] + [f"criterions.{c}" for c in crit_names])
    runner, dis = mods["runners.holycow"], mods["discriminators.FSTH"]
    args = shrubb_args(size, k, vgg_weights_dir=tempfile.gettempdir())
    torch.manual_seed(0)
    discriminator = dis.Wrapper.get_net(args)
    generator = mods["generators.FSTH"].Wrapper.get_net(args)
    embedder = mods["embedders.FSTH"].Wrapper.get_net(args)
    optimizer_G = runner.get_optimizer(embedder, generator, args)
    optimizer_D = dis.Wrapper.get_optimizer(discriminator, args)

    import torchvision

    flatten = mods["criterions.common.perceptual_loss"].Flatten
    orig_load = torch.load

    def load(path, *a, **kw):
        base = os.path.basename(str(path))
        if base == "vgg19-d01eb7cb.pth":  # the Caffe VGG19 file: classifier after their Flatten, .6 for .7
            m = torchvision.models.vgg19()
            m.classifier = nn.Sequential(flatten(), *m.classifier._modules.values())
            return OrderedDict((key.replace("classifier.7.", "classifier.6."), v) for key, v in m.state_dict().items())
        if base == "vgg_face_weights.pth":
            return torchvision.models.vgg16().features.state_dict()
        return orig_load(path, *a, **kw)

    with patched(torch, "load", load):
        criterion_list = [mods[f"criterions.{c}"].Wrapper.get_net(args) for c in crit_names]
    training_module = runner.TrainingModule(embedder, generator, discriminator, criterion_list, [], {})
    training_module.train(True)  # train.py: training_module.train(not args.set_eval_mode_in_train)
    torch.set_grad_enabled(True)
    from talking_heads.train.bench import neutral_landmarks

    rand = lambda *shape: torch.rand(*shape) * 2 - 1  # noqa: E731
    data_dict = {"enc_rgbs": rand(1, k, 3, size, size), "enc_stickmen": rand(1, k, 3, size, size),
                 "pose_input_rgbs": rand(1, 1, 3, size, size), "dec_stickmen": rand(1, 1, 3, size, size),
                 "dec_keypoints": (neutral_landmarks(size) / size).reshape(1, 136)}
    target_dict = {"target_rgbs": rand(1, 1, 3, size, size), "label": torch.tensor([0])}
    optimizer_G.zero_grad()
    optimizer_D.zero_grad()

    def step():
        all_data_dict, losses_G_dict, losses_D_dict = training_module(data_dict, target_dict)
        loss_G = sum(v for v in losses_G_dict.values() if isinstance(v, torch.Tensor))
        loss_D = sum(v for v in losses_D_dict.values() if isinstance(v, torch.Tensor))
        optimizer_G.zero_grad()
        loss_G.backward(retain_graph=True)
        optimizer_G.step()
        if losses_D_dict:
            optimizer_D.zero_grad()
            loss_D.backward()
            optimizer_D.step()
        training_module.update_running_average(0.999)
        logs = {name: float(v) for name, v in list(losses_G_dict.items()) + list(losses_D_dict.items())}
        del loss_G, loss_D, losses_G_dict, losses_D_dict, all_data_dict
        return logs

    return step


def build_step(impl: str, *, path: str | None, preset_name: str, k: int, content: str,
               overrides: list[str]) -> Callable[[], Any]:
    if impl == "ours":
        return ours_step(preset_name, k, content, overrides)
    from talking_heads.config import preset

    size = preset(preset_name).model.image_size
    return {"vincent": vincent_step, "shrubb": shrubb_step}[impl](path, size, k)


def worker_main(opts: argparse.Namespace) -> int:
    """A step worker: builds one implementation's step, then answers commands on stdin with one JSON line on
    stdout each: `step` (runs one, {"cpu_s", "wall_s"}), `reset` (resets the peak RSS), `mem` (memory_mib),
    `quit`. Everything else that is printed (theirs print progress bars) goes to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import torch

    torch.set_num_threads(opts.threads)

    def send(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    t0 = time.perf_counter()
    try:
        fn = build_step(opts.worker, path=opts.path, preset_name=opts.preset, k=opts.k, content=opts.content,
                        overrides=opts.set or [])
    except BaseException:  # noqa: BLE001  (reported to the driver, which shows it)
        send({"error": traceback.format_exc()})
        return 1
    send({"ready": True, "build_s": round(time.perf_counter() - t0, 2), **memory_mib(),
          "torchvision": sys.modules["torchvision"].__version__ if "torchvision" in sys.modules else None})
    for line in sys.stdin:
        cmd = line.strip()
        try:
            if cmd == "step":
                w0, c0 = time.perf_counter(), time.process_time()
                fn()
                send({"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0})
            elif cmd == "reset":
                send({"exact": reset_peak_rss()})
            elif cmd == "mem":
                send(memory_mib())
            elif cmd == "quit":
                break
            else:
                send({"error": f"unknown command {cmd!r}"})
        except BaseException:  # noqa: BLE001
            send({"error": traceback.format_exc()})
            return 1
    return 0


class StepWorker:
    """The driver's handle on one worker subprocess."""

    def __init__(self, name: str, impl: str, argv: list[str], log_dir: str):
        self.name, self.impl = name, impl
        self.log_path = Path(log_dir) / f"{name.replace(' ', '_').replace('/', '_')}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=str(ROOT))
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"step worker {self.name} exited ({self.proc.returncode}):\n{self._tail()}")
        msg = json.loads(line)
        if "error" in msg:
            raise RuntimeError(f"step worker {self.name} failed:\n{msg['error']}\n{self._tail()}")
        return msg

    def _tail(self) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=60)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def step_precision(preset_name: str) -> str:
    """Our meta-learning step's arithmetic on this CPU at the preset's default train.amp_cpu: "bf16" or "fp32"."""
    from talking_heads.config import preset
    from talking_heads.train import steps

    return steps.step_precision(preset(preset_name).train, "cpu")


def step_specs(paths: dict[str, str | None], opts: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """(name, impl, worker argv) of each step worker: ours, ours with each --also-step, theirs with a path."""
    common = ["--threads", str(opts.threads), "--preset", opts.preset, "--k", str(opts.k)]
    specs = [("ours", "ours", ["--worker", "ours", "--content", opts.content, *common])]
    also = list(opts.also_step or [])
    if step_precision(opts.preset) != "fp32" and not any("train.amp_cpu=false" in a for a in also):
        also.insert(0, "train.amp_cpu=false")  # the default is bf16 here: fp32 is reported too
    for extra in also:
        sets = [s for s in extra.split(",") if s]
        specs.append((f"ours [{' '.join(sets)}]", "ours",
                      ["--worker", "ours", "--content", opts.content, *common, *sum((["--set", s] for s in sets), [])]))
    for impl in IMPLS:
        if paths.get(impl):
            specs.append((impl, impl, ["--worker", impl, "--path", str(Path(paths[impl]).resolve()), *common]))
    return specs


def measure_steps(specs: list[tuple[str, str, list[str]]], *, warmup: int, rounds: int, mode: str = "auto",
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """{name: {cpu_s, wall_s, runs, build_s, maxrss_mib, step_peak_mib, ...}, "_mode": ...}."""
    if mode == "auto":
        need = sum(EXPECTED_STEP_GIB.get(impl, 5.0) for _, impl, _ in specs) + 3.0
        avail = mem_available_gib()
        mode = "interleaved" if avail is None or avail >= need else "sequential"
        log(f"[step] memory available {avail if avail is None else round(avail, 1)} GiB, all workers at once need "
            f"~{need:.1f}: {mode}")
    out: dict[str, Any] = {"_mode": mode}
    with tempfile.TemporaryDirectory(prefix="th-bench-vs-ref-") as logs:
        groups = [specs] if mode == "interleaved" else [[s] for s in specs]
        for group in groups:
            workers: list[StepWorker] = []
            try:
                for name, impl, argv in group:
                    log(f"[step] building {name} in its own process")
                    workers.append(StepWorker(name, impl, argv, logs))
                    log(f"[step] {name} built in {workers[-1].ready['build_s']} s, RSS {workers[-1].ready['rss_mib']} MiB")
                exact = {w.name: w.ask("reset")["exact"] for w in workers}
                for w in workers:
                    for _ in range(warmup):
                        w.ask("step")
                cpu: dict[str, list[float]] = {w.name: [] for w in workers}
                wall: dict[str, list[float]] = {w.name: [] for w in workers}
                for r in range(rounds):
                    for w in workers[r % len(workers):] + workers[:r % len(workers)]:
                        t = w.ask("step")
                        cpu[w.name].append(t["cpu_s"])
                        wall[w.name].append(t["wall_s"])
                    log(f"[step] round {r + 1}/{rounds}: " + ", ".join(
                        f"{w.name} {cpu[w.name][-1]:.2f} s cpu / {wall[w.name][-1]:.2f} s wall" for w in workers))
                for w in workers:
                    mem = w.ask("mem")
                    out[w.name] = {"impl": w.impl, "cpu_s": _median(cpu[w.name]), "wall_s": _median(wall[w.name]),
                                   "runs": rounds, "cpu_all": cpu[w.name], "wall_all": wall[w.name],
                                   "build_s": w.ready["build_s"], "rss_built_mib": w.ready["rss_mib"],
                                   "maxrss_mib": mem["maxrss_mib"],
                                   "step_peak_mib": mem["hwm_mib"] if exact[w.name] else None,
                                   "torchvision": w.ready.get("torchvision")}
            finally:
                for w in workers:
                    w.close()
    return out


# --- results, table, section ---------------------------------------------------------------------------

def collect(render: dict[str, Any], steps: dict[str, Any], paths: dict[str, str | None]) -> dict[str, Any]:
    """Figures per implementation in table units (ms, s, GiB), measured or recorded, and the sources."""
    fig: dict[str, dict[str, Any]] = {"ours": {"source": "measured"}}
    gen, emb = render.get("generator", {}), render.get("embedder", {})
    ours = fig["ours"]
    if "ours_default" in gen:
        ours["generator_ms"] = round(gen["ours_default"]["cpu_s"] * 1e3, 1)
        ours["generator_wall_ms"] = round(gen["ours_default"]["wall_s"] * 1e3, 1)
        fp32 = gen.get("ours_fp32", gen["ours_default"])
        ours["generator_fp32_ms"] = round(fp32["cpu_s"] * 1e3, 1)
        ours["generator_fp32_wall_ms"] = round(fp32["wall_s"] * 1e3, 1)
    if "ours" in emb:
        ours["embedder_ms"] = round(emb["ours"]["cpu_s"] * 1e3, 1)
        ours["embedder_wall_ms"] = round(emb["ours"]["wall_s"] * 1e3, 1)
    if "ours" in steps:
        st = steps["ours"]
        ours.update(step_s=round(st["cpu_s"], 2), step_wall_s=round(st["wall_s"], 2),
                    peak_gib=round(st["maxrss_mib"] / 1024, 2),
                    step_peak_gib=None if st["step_peak_mib"] is None else round(st["step_peak_mib"] / 1024, 2))
    for name, st in steps.items():
        if name.startswith("ours ["):
            fig[name] = {"source": "measured", "step_s": round(st["cpu_s"], 2), "step_wall_s": round(st["wall_s"], 2),
                         "peak_gib": round(st["maxrss_mib"] / 1024, 2),
                         "step_peak_gib": None if st["step_peak_mib"] is None else round(st["step_peak_mib"] / 1024, 2)}
    for impl in IMPLS:
        if not paths.get(impl):
            fig[impl] = {"source": "recorded (speed.md)", **RECORDED[impl]}
            continue
        f: dict[str, Any] = {"source": "measured"}
        if impl in gen:
            f.update(generator_ms=round(gen[impl]["cpu_s"] * 1e3, 1), generator_wall_ms=round(gen[impl]["wall_s"] * 1e3, 1))
        if impl in emb:
            f.update(embedder_ms=round(emb[impl]["cpu_s"] * 1e3, 1), embedder_wall_ms=round(emb[impl]["wall_s"] * 1e3, 1))
        if impl in steps:
            st = steps[impl]
            f.update(step_s=round(st["cpu_s"], 2), step_wall_s=round(st["wall_s"], 2),
                     peak_gib=round(st["maxrss_mib"] / 1024, 2),
                     step_peak_gib=None if st["step_peak_mib"] is None else round(st["step_peak_mib"] / 1024, 2))
        fig[impl] = f
    return fig


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs <= 0:
        return None
    return ours / theirs


ROWS = [  # (key, label, target key or None)
    ("generator_ms", "generator, ms per frame, default precision ({prec})", "generator"),
    ("generator_fp32_ms", "generator, ms per frame, fp32", None),
    ("embedder_ms", "embedder, ms for K = {k}", None),
    ("step_s", "meta-learning step, s, default precision ({step_prec})", "step"),
    ("peak_gib", "training peak RSS, GiB: process lifetime (steps alone)", "peak"),
]


def targets(fig: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per target: ratios ours / each of theirs and whether each is within the target."""
    out = {}
    for key, _, tkey in ROWS:
        if tkey is None:
            continue
        r = {impl: ratio(fig["ours"].get(key), fig[impl].get(key)) for impl in IMPLS if impl in fig}
        out[tkey] = {"limit": TARGETS[tkey], "ratios": r,
                     "met": {impl: (v is not None and v <= TARGETS[tkey] + 1e-12) for impl, v in r.items()}}
    return out


def _fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:.0f}"


def _fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def markdown_table(fig: dict[str, dict[str, Any]], precision: str = "bf16", k: int = 8,
                   step_prec: str = "fp32") -> str:
    impls = [i for i in IMPLS if i in fig]
    tg = targets(fig)
    head = ["measurement (CPU time)", "ours (measured)"] + [f"{LABELS[i]}, {fig[i]['source']}" for i in impls] \
        + [f"ours / {LABELS[i].split(' ')[0]}" for i in impls] + ["target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, tkey in ROWS:
        ours = fig["ours"].get(key)
        cells = [label.format(prec=precision, k=k, step_prec=step_prec)]
        if key == "peak_gib":
            sp = fig["ours"].get("step_peak_gib")
            cells.append(f"{_fmt(ours, 2)}" + (f" ({_fmt(sp, 2)})" if sp is not None else ""))
            for i in impls:
                sp = fig[i].get("step_peak_gib")
                cells.append(f"{_fmt(fig[i].get(key), 2)}" + (f" ({_fmt(sp, 2)})" if sp is not None else ""))
        else:
            digits = 2 if key == "step_s" else 1
            cells += [_fmt(ours, digits)] + [_fmt(fig[i].get(key), digits) for i in impls]
        cells += [_fmt_ratio(ratio(ours, fig[i].get(key))) for i in impls]
        if tkey:
            t = tg[tkey]
            limit = {"generator": "<= 1/3", "step": "<= 1/2", "peak": "<= 1"}[tkey]
            met = [f"{LABELS[i].split(' ')[0]} {'yes' if t['met'][i] else 'no'}" for i in impls
                   if t["ratios"][i] is not None]
            cells += [limit, ", ".join(met) or "-"]
        else:
            cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    for name, f in fig.items():  # ours with extra step settings (--also-step)
        if not name.startswith("ours ["):
            continue
        for key, label, tkey in ROWS[3:]:
            v = f.get(key)
            sp = f.get("step_peak_gib") if key == "peak_gib" else None
            cells = [f"{label.split(',')[0]} of {name}, {label.split(', ')[1]}",
                     _fmt(v, 2) + (f" ({_fmt(sp, 2)})" if sp is not None else "")] + ["" for _ in impls]
            cells += [_fmt_ratio(ratio(v, fig[i].get(key))) for i in impls]
            t = TARGETS[tkey]
            met = [f"{LABELS[i].split(' ')[0]} {'yes' if (r := ratio(v, fig[i].get(key))) is not None and r <= t else 'no'}"
                   for i in impls if ratio(v, fig[i].get(key)) is not None]
            cells += [{"step": "<= 1/2", "peak": "<= 1"}[tkey], ", ".join(met) or "-"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def wall_table(fig: dict[str, dict[str, Any]]) -> str:
    impls = [i for i in IMPLS if i in fig and fig[i]["source"] == "measured"]
    rows = [("generator_wall_ms", "generator ms, default precision"), ("generator_fp32_wall_ms", "generator ms, fp32"),
            ("embedder_wall_ms", "embedder ms, K frames"), ("step_wall_s", "meta-learning step s, default precision")]
    head = ["wall time (same rounds)", "ours"] + [LABELS[i] for i in impls] + [f"ours / {LABELS[i].split(' ')[0]}" for i in impls]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label in rows:
        if fig["ours"].get(key) is None:
            continue
        ours = fig["ours"][key]
        lines.append("| " + " | ".join([label, _fmt(ours, 2 if key == "step_wall_s" else 1)]
                                       + [_fmt(fig[i].get(key), 2 if key == "step_wall_s" else 1) for i in impls]
                                       + [_fmt_ratio(ratio(ours, fig[i].get(key))) for i in impls]) + " |")
    return "\n".join(lines) + "\n"


def section(results: dict[str, Any]) -> str:
    """The whole "## SECTION" Markdown section for `results` (run())."""
    m, fig = results["machine"], results["figures"]
    prec = results.get("render", {}).get("info", {}).get("default_precision", "bf16")
    measured = [LABELS[i] for i in IMPLS if fig.get(i, {}).get("source") == "measured"]
    recorded = [LABELS[i] for i in IMPLS if fig.get(i, {}).get("source", "").startswith("recorded")]
    lines = [f"## {SECTION}", "",
             f"Measured {m['date']} on {m['cpu']}, {m['cpu_count']} cores, RAM {m['ram_gib']} GiB, torch {m['torch']}, "
             f"Python {m['python']}, {results['threads']} thread(s); preset `{results['preset']}` "
             f"({results.get('image_size', 256)} px), batch 1, K = {results['k']}. "
             f"Load average at the start {results['load_start']}, at the end {results['load_end']}"
             + (f"; other processes used {results['other_load_cores']} of the {m['cpu_count']} cores on average "
                f"during the {results['wall_s']:.0f} s run" if results.get("other_load_cores") is not None else "")
             + ("; the machine was shared, so wall times are inflated and the CPU-time ratios of the interleaved "
                "rounds are the figures to trust" if (results.get("other_load_cores") or 0) >= 0.25 else "") + "."
             + (f" {results['note']}" if results.get("note") else ""), "",
             f"Command: `{results['command']}`", ""]
    if measured:
        lines.append("Their networks rebuilt from their source (" + "; ".join(
            f"{LABELS[i]}: {results['sources'][i]}" for i in IMPLS if fig.get(i, {}).get("source") == "measured")
            + f"), random weights, the paper's widths; torchvision for their VGGs: {results.get('torchvision') or '-'}.")
    if recorded:
        lines.append(f"{', '.join(recorded)}: no source given, so the figures recorded in speed.md (one core, 1 "
                     "thread, CPU-time medians) stand in.")
    # runs recorded before train.amp_cpu had "auto" timed the step in fp32 by default
    lines += ["", markdown_table(fig, prec, results["k"], results.get("step_precision", "fp32"))]
    if any(f.get("source") == "measured" for i, f in fig.items() if i in IMPLS):
        lines += ["Wall times of the same rounds:", "", wall_table(fig)]
    rec = RECORDED["ours"]
    lines += [
        "Protocol: CPU time of the process (time spent waiting for a core while other jobs run does not count; "
        "sharing the cores' caches and memory bandwidth with them still slows all implementations alike), medians "
        f"of {results['rounds']} interleaved rounds (one call of each implementation per round, rotating order) "
        f"after {results['warmup']} warm-up calls each for the generator and the embedder, "
        f"{results['step_rounds']} rounds after {results['step_warmup']} warm-up step(s) each for the step "
        f"({results.get('step_mode', '-')} workers). Generator: psi / AdaIN parameters computed once; ours is the "
        f"avatar-specialised renderer (`inference.TorchRenderer`) at the default precision `auto` = {prec} here "
        "(and fp32); theirs as their inference scripts render a frame (vincent: `Generator(256, finetuning=True)` "
        "after `finetuning_init`; shrubb: FSTH `Generator` after `enable_finetuning`), eval, no_grad. Embedder: K "
        "frames in one batch, eval, no_grad (ours fp32). Peak RSS: each step worker's own process, lifetime peak "
        "(getrusage), in brackets the peak over the warm-up and timed steps alone (VmHWM reset once everything "
        "was built); the recorded figures are training peak RSS.", "",
        "What one meta-learning step includes:", ""]
    lines += [f"- {LABELS[k]}: {v}." for k, v in STEP_INCLUDES.items()]
    lines += ["", "Changes to their code needed on a CPU-only machine, nothing else: vincent's D gets a single-device "
              "W_i split (`torch.cuda.current_device()` = 0, `gpu_num` = 1) and `Padding(256)` instead of its "
              "hard-coded `Padding(224)` (so that D sees 256 px like G and E instead of padding 256 to 288 px); no "
              "DataParallel (a pass-through without GPUs). Their VGG weight files (and vincent's VGGFace model "
              "file) are replaced by random weights of the same layout; vincent's loss does not freeze its VGGs, so "
              "its backward also computes their weight gradients, as their training does.",
              "", f"For comparison, speed.md recorded ours at {rec['generator_ms']:.0f} ms (generator, fp32, before "
              f"the specialised renderer), {rec['embedder_ms']:.0f} ms (embedder), {rec['step_s']} s (step), "
              f"{rec['peak_gib']} GiB then."]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_section(path: str | os.PathLike, text: str) -> None:
    """Replace the "## SECTION" section of `path` with `text`, or append it at the end; other sections kept, and
    the hand-written notes after the old section's end-of-generated-text marker (`bench.with_notes`)."""
    from talking_heads.atomic import write_text
    from talking_heads.train.bench import with_notes

    path = Path(path)
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    head = f"## {SECTION}"
    if head in doc:
        start = doc.index(head)
        nxt = doc.find("\n## ", start + len(head))
        rest = "" if nxt < 0 else "\n" + doc[nxt + 1:]
        old = doc[start:] if nxt < 0 else doc[start:nxt]
        doc = doc[:start] + with_notes(text, old) + "\n" + rest
    else:
        doc = doc.rstrip("\n") + "\n\n" + with_notes(text) + "\n"
    write_text(path, doc)


# --- driver ----------------------------------------------------------------------------------------------

def run(opts: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    import torch

    from talking_heads.config import preset
    from talking_heads.machine import describe

    torch.set_num_threads(opts.threads)
    what = [w for w in opts.what.split(",") if w]
    bad = set(what) - set(WHAT)
    if bad:
        raise SystemExit(f"unknown --what item(s) {sorted(bad)}; choose from {', '.join(WHAT)}")
    paths = {"vincent": opts.vincent, "shrubb": opts.shrubb}
    results: dict[str, Any] = {
        "machine": describe("cpu"), "command": opts.command, "threads": opts.threads, "preset": opts.preset,
        "image_size": preset(opts.preset).model.image_size, "k": opts.k, "rounds": opts.rounds,
        "warmup": opts.warmup, "step_rounds": opts.step_rounds or opts.rounds, "step_warmup": opts.step_warmup,
        "load_start": [round(v, 2) for v in os.getloadavg()], "note": opts.note,
        "step_precision": step_precision(opts.preset),
        "sources": {i: (f"`{shown_path(paths[i], f'REF/{i}')}`" + (f" at {rev[:12]}" if (rev := source_revision(paths[i])) else ""))
                    if paths[i] else None for i in IMPLS}}
    busy0, own0, wall0 = machine_busy_s(), own_cpu_s(), time.perf_counter()
    if opts.vincent or opts.shrubb:
        results["torchvision"] = ensure_torchvision()
    render: dict[str, Any] = {}
    if "generator" in what or "embedder" in what:
        render = measure_render(what, paths, preset_name=opts.preset, k=opts.k, warmup=opts.warmup,
                                rounds=opts.rounds, log=log)
    steps: dict[str, Any] = {}
    if "step" in what:
        steps = measure_steps(step_specs(paths, opts), warmup=opts.step_warmup, rounds=results["step_rounds"],
                              mode=opts.step_mode, log=log)
        results["step_mode"] = steps.pop("_mode")
    results["load_end"] = [round(v, 2) for v in os.getloadavg()]
    busy1, wall = machine_busy_s(), time.perf_counter() - wall0
    if busy0 is not None and busy1 is not None and wall > 0:  # what other jobs used meanwhile, in cores
        results["other_load_cores"] = round(max(0.0, (busy1 - busy0) - (own_cpu_s() - own0)) / wall, 2)
    results["wall_s"] = round(wall, 1)
    results.update(render=render, steps=steps, figures=collect(render, steps, paths))
    results["targets"] = targets(results["figures"])
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vincent", metavar="PATH", help="work tree of vincent-thevenin/Realistic-Neural-Talking-Head-Models")
    p.add_argument("--shrubb", metavar="PATH", help="work tree of shrubb/latent-pose-reenactment")
    p.add_argument("--what", default="generator,embedder,step", help="comma-separated: generator, embedder, step")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up calls of each generator / embedder (default 2)")
    p.add_argument("--step-rounds", type=int, default=None, help="rounds for the step (default: --rounds)")
    p.add_argument("--step-warmup", type=int, default=1, help="warm-up steps of each worker (default 1)")
    p.add_argument("--step-mode", choices=("auto", "interleaved", "sequential"), default="auto",
                   help="step workers all alive and interleaved, or one after another (auto: by free memory)")
    p.add_argument("--also-step", action="append", metavar="OVERRIDES",
                   help="also time our step with these comma-separated --set overrides, e.g. train.amp_cpu=true")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the recorded figures)")
    p.add_argument("--preset", default="paper", help="our preset (default paper; tiny for tests)")
    p.add_argument("--k", type=int, default=8, help="K frames for the embedder and the step (default 8)")
    p.add_argument("--content", choices=("vgg", "offline"), default="vgg",
                   help="our step's content loss: VGG19 + VGGFace (random weights, as theirs; default) or offline")
    p.add_argument("--note", default="", help="a sentence added to the section (e.g. about other load)")
    p.add_argument("--write", metavar="FILE", help="replace / append this script's section of FILE (docs/benchmarks.md)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of Markdown")
    p.add_argument("--from-json", metavar="FILE",
                   help="measure nothing: the section from the results of an earlier run saved with --json (its "
                        "command is kept; --note, when given, replaces its note)")
    # worker mode (internal)
    p.add_argument("--worker", choices=("ours", *IMPLS), help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--set", action="append", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    args = sys.argv[1:] if argv is None else argv
    env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    opts.command = env + shown_command(args)
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.worker:
        return worker_main(opts)
    if opts.from_json:
        results = json.loads(Path(opts.from_json).read_text())
        # a run recorded before `shown_command` / `shown_path` existed may hold this machine's absolute paths
        env, _, args = results["command"].partition("python scripts/bench_vs_reference.py ")
        results["command"] = env + shown_command(shlex.split(args))
        results["sources"] = {i: v and re.sub(r"`([^`]+)`", lambda m: f"`{shown_path(m[1], f'REF/{i}')}`", v, count=1)
                              for i, v in results["sources"].items()}
        if opts.note:
            results["note"] = opts.note
    else:
        results = run(opts, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps(results, indent=2) if opts.json else section(results))
    if opts.write:
        write_section(opts.write, section(results))
        print(f"wrote the section to {opts.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
