"""The two earlier public implementations rebuilt from their own source, for scripts/bench_vs_reference.py
(imported by it; not a script): their generator and embedder as their inference scripts run them, and one step
of their training loops, on random data with random weights.

- vincent-thevenin/Realistic-Neural-Talking-Head-Models (`network/model.py`, `loss/`),
- shrubb/latent-pose-reenactment, the authors' lab's FSTH reimplementation (`generators/FSTH.py`,
  `embedders/FSTH.py`, `discriminators/FSTH.py`, `criterions/`, `runners/holycow.py`).

torchvision: their perceptual losses build torchvision's VGG19 / VGG16. When torchvision cannot be imported
(as on the project's machines), `torchvision_shim()` provides `torchvision.models.vgg19 / vgg16` with
torchvision's exact layer layout (features, avgpool, classifier) and random weights. Pretrained weights are
never loaded (none can be had offline): theirs get random VGG weights as ours do (same cost).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import importlib
import os
import shutil
import sys
import tempfile
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import torch
import torch.optim as optim
from torch import nn

from talking_heads.bench import neutral_landmarks
from talking_heads.models.perceptual import VGG16_CFG, VGG19_CFG, vgg_features

# --- importing their code ----------------------------------------------------------------------------

def torchvision_shim() -> types.ModuleType:
    """A stand-in `torchvision` package with `models.vgg19`, `models.vgg16` and `models.VGG` in torchvision's
    layout (features: conv3x3 pad 1 + ReLU(inplace) + MaxPool2d(2, 2); avgpool 7x7; classifier 25088 -> 4096 ->
    4096 -> 1000 with ReLU and Dropout), random weights. Registered in sys.modules."""
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



# --- generator and embedder ---------------------------------------------------------------------------

def vincent_render_fns(root: str, size: int, k: int) -> dict[str, Callable[[], Any]]:
    """vincent's generator as their video_inference.py renders (psi fixed by finetuning_init) and embedder as
    their embedder_inference.py (K frames in one batch)."""
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


# --- meta-learning step -------------------------------------------------------------------------------

def vincent_step(root: str, size: int = 256, k: int = 8) -> Callable[[], Any]:
    """One step of their train.py loop (STEP_INCLUDES["vincent"]) on random data, random weights. Changes that
    CPU needs, nothing else: no DataParallel (a pass-through without GPUs), D's `torch.cuda.current_device()` /
    `gpu_num` split of W_i made a single-device one (0 / 1), and D's hard-coded Padding(224) (224 -> 256 px)
    made Padding(size), so that D sees the same 256 px as G and E (unchanged it would pad 256 to 288)."""
    ensure_torchvision()
    _stub_module("imp", load_source=lambda *a, **kw: None)
    mods = import_from(root, ["network.model", "loss.loss_generator", "loss.loss_discriminator"])
    model, lg, ld = mods["network.model"], mods["loss.loss_generator"], mods["loss.loss_discriminator"]
    torch.cuda.current_device = lambda: 0  # this worker process only; their D indexes W_i by the GPU's number
    wi_dir = tempfile.mkdtemp(prefix="th-vincent-wi-")
    atexit.register(shutil.rmtree, wi_dir, True)
    s = types.SimpleNamespace(path_to_wi=os.path.join(wi_dir, "Wi_weights"))
    torch.manual_seed(0)
    s.G = model.Generator(size)
    s.E = model.Embedder(size)
    s.D = model.Discriminator(2, s.path_to_wi)  # finetuning=False writes W_0, W_1 files into the temporary folder
    s.D.pad = model.Padding(size)
    s.D.gpu_num = 1
    s.G.train(); s.E.train(); s.D.train()  # noqa: E702
    s.optimizerG = optim.Adam(params=list(s.E.parameters()) + list(s.G.parameters()), lr=5e-5, amsgrad=False)
    s.optimizerD = optim.Adam(params=s.D.parameters(), lr=2e-4, amsgrad=False)
    s.criterionG = _vincent_loss_g(lg)
    s.criterionDreal, s.criterionDfake = ld.LossDSCreal(), ld.LossDSCfake()
    s.f_lm = torch.rand(1, k, 2, 3, size, size)  # their dataset's (B, K, frame|landmarks, 3, H, W) in [0, 1]
    s.x, s.g_y = torch.rand(1, 3, size, size), torch.rand(1, 3, size, size)
    s.i = torch.tensor([0])
    s.W_i_batch = torch.rand(1, 512, 1)  # their dataset's W_i of the episode's video
    return functools.partial(_vincent_train_step, s)


class _FullVGGFace:  # what their torch.load of Pytorch_VGGFACE.pth returns: a model; random weights here
    def state_dict(self):
        return {}


def _vincent_loss_g(lg: types.ModuleType):
    """Their LossG with random VGG19 / VGGFace weights (their files are neither loaded nor needed)."""
    orig_vgg19, orig_load = lg.vgg19, torch.load
    load = lambda path, *a, **kw: _FullVGGFace() if str(path).endswith("Pytorch_VGGFACE.pth") else orig_load(path, *a, **kw)  # noqa: E731
    with patched(lg, "vgg19", lambda pretrained=False, **kw: orig_vgg19()), \
            patched(lg, "imp", types.SimpleNamespace(load_source=lambda *a, **kw: None)), patched(torch, "load", load):
        return lg.LossG(VGGFace_body_path="Pytorch_VGGFACE_IR.py", VGGFace_weight_path="Pytorch_VGGFACE.pth",
                        device=torch.device("cpu"))


def _vincent_train_step(s: types.SimpleNamespace) -> tuple[float, float]:
    """Their train.py loop body on the networks, optimisers, losses and data of `vincent_step`."""
    E, G, D, f_lm, x, g_y, i = s.E, s.G, s.D, s.f_lm, s.x, s.g_y, s.i
    optimizerG, optimizerD = s.optimizerG, s.optimizerD
    W_i = s.W_i_batch.squeeze(-1).transpose(0, 1).requires_grad_()
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
        lossG = s.criterionG(x, x_hat, r_hat, D_res_list, D_hat_res_list, e_vectors, D.W_i, i)
        lossG.backward(retain_graph=False)
        optimizerG.step()
    with torch.autograd.enable_grad():
        optimizerG.zero_grad()
        optimizerD.zero_grad()
        x_hat.detach_().requires_grad_()
        for _ in range(2):
            optimizerD.zero_grad()
            r_hat, D_hat_res_list = D(x_hat, g_y, i)
            lossDfake = s.criterionDfake(r_hat)
            r, D_res_list = D(x, g_y, i)
            lossDreal = s.criterionDreal(r)
            lossD = lossDfake + lossDreal
            lossD.backward(retain_graph=False)
            optimizerD.step()
    for enum, idx in enumerate(i):
        torch.save({"W_i": D.W_i[:, enum].unsqueeze(-1)}, f"{s.path_to_wi}/W_{idx.item()}/W_{idx.item()}.tar")
    return float(lossG), float(lossD)


def shrubb_step(root: str, size: int = 256, k: int = 8) -> Callable[[], Any]:
    """One step of their runners/holycow.py `run_epoch` (STEP_INCLUDES["shrubb"]) with their TrainingModule,
    optimisers and FSTH criterions, on random data, random weights. The VGG weight files their PerceptualLoss
    reads with torch.load are replaced by random state_dicts in the same layout (built in memory)."""
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
    with patched(torch, "load", _shrubb_random_vgg_load(mods["criterions.common.perceptual_loss"].Flatten)):
        criterion_list = [mods[f"criterions.{c}"].Wrapper.get_net(args) for c in crit_names]
    training_module = runner.TrainingModule(embedder, generator, discriminator, criterion_list, [], {})
    training_module.train(True)  # train.py: training_module.train(not args.set_eval_mode_in_train)
    torch.set_grad_enabled(True)
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


def _shrubb_random_vgg_load(flatten: type) -> Callable[..., Any]:
    """A torch.load that returns random state_dicts in the layout of their two VGG weight files (the Caffe VGG19:
    classifier after their Flatten, .6 for .7; VGGFace: VGG16's features), and loads anything else."""
    import torchvision  # the real one or `torchvision_shim` (ensure_torchvision has run)

    orig_load = torch.load

    def load(path, *a, **kw):
        base = os.path.basename(str(path))
        if base == "vgg19-d01eb7cb.pth":
            m = torchvision.models.vgg19()
            m.classifier = nn.Sequential(flatten(), *m.classifier._modules.values())
            return OrderedDict((key.replace("classifier.7.", "classifier.6."), v) for key, v in m.state_dict().items())
        if base == "vgg_face_weights.pth":
            return torchvision.models.vgg16().features.state_dict()
        return orig_load(path, *a, **kw)

    return load
