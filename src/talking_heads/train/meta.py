"""Meta-learning (paper.md sections 1, 4, 5): the explicit training loop behind `talking-heads train`.

One step simulates a K-shot task per episode: K source frames (x_src, y_src) and a distinct target
(x_tgt, y_tgt) of video i. e_hat = mean_k E(x_k, y_k); psi = P e_hat; x_fake = G(y_tgt, psi). Then one
E/G update (`steps.generator_step`: L_CNT + L_ADV + L_MCH) and `cfg.train.d_steps_per_g_step` (2) D updates
(`steps.discriminator_step`: hinge on V, W, w0, b). Adam, lr 5e-5 (E, G) / 2e-4 (D), betas from the config;
its implementation `train.adam` (fused by default), bf16 autocast on CUDA with `train.amp`, on CPU with
`train.amp_cpu` ("auto": where the CPU has native bf16; docs/benchmarks.md "Training step" has the speed-ups,
the fp32 / bf16 curves and the A/B that made it the default).

Decisions (paper silent; [LAB] does the same):
- Order within a step: the E/G update first, then the D updates. Every D update of a step reuses the
  same episodes and the same x_fake.detach() (produced by E/G before their update): no second generator
  forward, and the E/G graph is freed before D runs (lower peak memory). No D forward is shared between the
  updates either: each D call runs one power iteration of spectral norm (and, with DiffAugment, sees its own
  transform), so reusing one would change the arithmetic, not just its cost.
- Distributed: E and G sit in one module (`EmbedderGenerator`) wrapped in a single DDP, D in another;
  the global batch of step s is the same for any world size (`dist.EpisodeSampler`).
- Resume: when RUN_DIR holds a checkpoint the run continues from it with the run's own config (`--set`
  overrides applied on top, e.g. more steps). Parameters, optimiser states, spectral-norm vectors (buffers
  in the model files), RNG states of python/numpy/torch/CUDA (per rank) and the sampler position are
  restored, so a killed and resumed run equals an uninterrupted one. log.jsonl lines written after the
  checkpoint by the killed run are dropped.
- Checkpoints survive any kill: the model and the training state of a step are one folder,
  RUN/checkpoints/step_NNNNNNN/{model/, training_state.pt}, written and fsynced under a temporary name,
  renamed, and committed by replacing the symbolic link RUN/latest (one atomic rename); the previous
  checkpoint is deleted only after that (`checkpoint.commit_run_checkpoint`). RUN/model -> latest/model and
  RUN/training_state.pt -> latest/training_state.pt never change, so RUN/model is the model directory to pass
  to other commands (a link, not a pointer file only this loader follows: every tool, `ls`, the web app and
  other programs see a plain model directory, and the switch is atomic; copy it with `cp -rL`). A start sweeps
  what a killed run left half-done (`checkpoint.sweep_run_dir`). Runs in the earlier layout (a real model/
  folder beside training_state.pt) resume and are converted at their next checkpoint.
- Signals: the first SIGTERM or Ctrl-C (SIGINT) finishes the current step, checkpoints and stops
  (`StoppedBySignal`; the CLI exits 128 + the signal's number); a second one stops at once (the last
  checkpoint stays). A new run that fails before its first checkpoint removes the run folder it created.

Options for a live embedder and data-efficient training (not in the paper; all off in the `paper` preset,
each a named setting; ../shared/design/quality.md has the evidence):
- `train.init_w_from_data`: before step 1, W_i := mean_k E(x_k, y_k) over the K source frames of one episode
  of video i, computed with the *initial* E (`init_w_from_embedder`), so L_MCH starts at its fixed point
  instead of pulling every e_hat onto a random U(-0.1, 0.1) row (the collapse of the v1 sample model);
- `loss.match_weight`, `loss.match_warmup_steps`, `loss.match_ramp_steps`: L_MCH's weight and a warm-up
  (0, then a linear ramp), logged as `mch_weight`;
- `train.diffaugment`, `train.lecam_weight` (train/augment.py) for the discriminator;
- `train.probe_frames` + `train.probe_every`: an identity probe (`identity_probe`) on frames held back from
  every episode. Every log line also carries mean |e_hat| (`e_hat_abs`) and the fraction of exactly-zero
  entries of e_hat (`e_hat_zero`).

Run directory: log.jsonl (one JSON object of scalars per `log_every` steps), loss_curves.png (redrawn at
every checkpoint, `curves.py`), samples/step_XXXXXXX.png (landmarks | ground truth | output, one row per
episode), model/ (checkpoint.save_model_dir) and
training_state.pt.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from .. import checkpoint, dist
from ..atomic import atomic_path
from ..config import Config
from ..errors import InputError
from . import steps
from .curves import CURVES_FILE, plot_losses

log = logging.getLogger(__name__)


class RunDirError(InputError):
    """RUN_DIR cannot hold this run (not a run, no preset for a new run, another dataset)."""


class StoppedBySignal(Exception):
    """Training stopped cleanly on SIGTERM / SIGINT after writing a checkpoint at `step`; run again to resume."""

    def __init__(self, signum: int, step: int, run_dir: Path):
        import signal as _signal

        self.signum, self.step, self.run_dir = int(signum), int(step), Path(run_dir)
        super().__init__(f"stopped by {_signal.Signals(signum).name} at step {step}: checkpointed in {run_dir}; "
                         "run the same command to resume")

MODEL_DIR = "model"
LOG_FILE = "log.jsonl"
SAMPLES_DIR = "samples"


class EmbedderGenerator(nn.Module):
    """E and G (incl. P) as one module, so that one DDP wrapper and one forward cover the generator side."""

    def __init__(self, embedder: nn.Module, generator: nn.Module):
        super().__init__()
        self.embedder, self.generator = embedder, generator

    def forward(self, x_src: Tensor, y_src: Tensor, y_tgt: Tensor, with_aux: bool = False):
        """(x_fake (B,3,H,W), e_hat (B,N)), plus the generator's aux dict with `with_aux` (the warp
        generator's flow smoothness). A generator that `needs_sources` gets the K source frames too."""
        b, k = x_src.shape[:2]
        e = self.embedder(x_src.flatten(0, 1), y_src.flatten(0, 1))  # B*K,N
        e_hat = e.view(b, k, -1).mean(1)  # B,N
        psi = self.generator.adain_params(e_hat)  # B,num_adain_params
        sources = (x_src, y_src) if self.generator.needs_sources else None
        x_fake, aux = self.generator.forward_with_aux(y_tgt, psi, sources)  # B,3,H,W
        return (x_fake, e_hat, aux) if with_aux else (x_fake, e_hat)


@dataclass
class MetaState:
    """Everything one meta-learning step touches."""

    networks: Any  # models.Networks: the plain modules (what checkpoints store)
    eg: nn.Module  # EmbedderGenerator, DDP-wrapped in a world > 1
    d: nn.Module  # Discriminator, DDP-wrapped in a world > 1 (used by the D step)
    opt_g: torch.optim.Optimizer  # E and G (incl. P)
    opt_d: torch.optim.Optimizer  # V, W, w0, b
    content_loss: nn.Module
    augment: Any = None  # augment.DiffAugment, or None (train.diffaugment = "")
    lecam: Any = None  # augment.LeCam, or None (train.lecam_weight = 0)


def build_optimizers(networks, cfg: Config) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    t = cfg.train
    g_params = list(networks.embedder.parameters()) + list(networks.generator.parameters())
    opt_g = steps.adam(g_params, lr=t.lr_generator, betas=t.betas, impl=t.adam)
    opt_d = steps.adam(networks.discriminator.parameters(), lr=t.lr_discriminator, betas=t.betas, impl=t.adam)
    return opt_g, opt_d


def build_meta_state(cfg: Config, networks, info: dist.DistInfo, content_loss: nn.Module | None = None) -> MetaState:
    """Move networks to the device, wrap them for DDP / torch.compile, build optimisers and the content loss."""
    from ..losses import ContentLoss

    for m in (networks.embedder, networks.generator, networks.discriminator):
        m.to(info.device).train()
    opt_g, opt_d = build_optimizers(networks, cfg)
    eg: nn.Module = EmbedderGenerator(networks.embedder, networks.generator)
    d: nn.Module = networks.discriminator
    eg, d = dist.wrap_ddp(eg, info), dist.wrap_ddp(d, info)
    if cfg.train.compile:
        eg, d = torch.compile(eg), torch.compile(d)
    if content_loss is None:
        content_loss = ContentLoss(cfg)
    content_loss = content_loss.to(info.device).eval()
    steps.set_requires_grad([content_loss], False)
    from .augment import DiffAugment, LeCam

    augment = DiffAugment(cfg.train.diffaugment) or None
    lecam = LeCam(cfg.train.lecam_decay) if cfg.train.lecam_weight > 0 else None
    return MetaState(networks, eg, d, opt_g, opt_d, content_loss, augment, lecam)


def meta_step(state: MetaState, batch: Mapping[str, Tensor], cfg: Config,
              step: int | None = None) -> tuple[dict[str, float], Tensor]:
    """One E/G update and `d_steps_per_g_step` D updates on one batch of episodes. Returns (logs, x_fake).
    `step` (1-based) sets the L_MCH warm-up; None = the full weight."""
    from ..losses import match_loss_weight

    x_src, y_src = batch["x_src"], batch["y_src"]  # B,K,3,H,W
    x_tgt, y_tgt, video = batch["x_tgt"], batch["y_tgt"], batch["video"]  # B,3,H,W ; B
    device = x_tgt.device
    amp, amp_cpu = cfg.train.amp, steps.cpu_amp(cfg.train.amp_cpu)
    disc = state.networks.discriminator  # unwrapped: no DDP collective for D in the G step
    with steps.autocast(device, amp, amp_cpu), steps.record_function("meta.eg_forward"):
        x_fake, e_hat, aux = state.eg(x_src, y_src, y_tgt, with_aux=True)
    extra = {"g_warp_tv": (cfg.loss.warp_smoothness_weight, aux["flow_tv"])} if "flow_tv" in aux else None
    match = (e_hat, disc.video_embedding(video).detach()) if cfg.loss.match_loss else None
    w_mch = match_loss_weight(cfg.loss, step)
    logs = steps.generator_step(x_fake=x_fake, x_real=x_tgt, y=y_tgt, video=video, discriminator=disc,
                                content_loss=state.content_loss, optimizer=state.opt_g, loss_cfg=cfg.loss,
                                match=match, amp=amp, amp_cpu=amp_cpu, points=batch.get("p_tgt"),
                                augment=_augment(state, batch, 0), match_weight=w_mch, extra=extra)
    x_fake = x_fake.detach()
    d_logs: dict[str, float] = {}
    for call in range(cfg.train.d_steps_per_g_step):
        d_logs = steps.discriminator_step(x_real=x_tgt, x_fake=x_fake, y=y_tgt, video=video,
                                          discriminator=state.d, optimizer=state.opt_d, amp=amp, amp_cpu=amp_cpu,
                                          augment=_augment(state, batch, 1 + call), lecam=state.lecam,
                                          lecam_weight=cfg.train.lecam_weight)
    logs.update(d_logs)
    e = e_hat.detach()
    logs["e_hat_abs"] = float(e.abs().mean())  # 0 = the embedder collapsed (all final ReLUs dead)
    logs["e_hat_zero"] = float((e == 0).float().mean())  # fraction of exactly-zero entries
    if cfg.loss.match_loss:
        logs["mch_weight"] = float(w_mch)
    return logs, x_fake


def _report_cpu_precision(setting: bool | str) -> None:
    """Say which arithmetic the forwards run in on this CPU (train.amp_cpu), and warn when bf16 is forced on
    a CPU that only emulates it."""
    from ..inference import cpu_supports_bf16

    on, native = steps.cpu_amp(setting), cpu_supports_bf16()
    if on and not native:
        log.warning("train.amp_cpu: this CPU has no native bf16 (AVX-512 BF16 / AMX), so bf16 autocast is "
                    "emulated and many times slower than fp32 here (docs/benchmarks.md): set "
                    'train.amp_cpu=false or "auto"')
    else:
        log.info("forwards in %s on this CPU (train.amp_cpu=%s%s)", "bf16 autocast" if on else "fp32",
                 str(setting).lower(), "" if native else "; no native bf16 here")


def _augment(state: MetaState, batch: Mapping[str, Tensor], call: int):
    """The DiffAugment of one discriminator call of a step: each episode's transform from its `aug_seed` and
    the call's number (the G step and each D step see different transforms); None when augmentation is off."""
    if state.augment is None:
        return None
    seeds = batch.get("aug_seed")
    if seeds is None:
        return state.augment
    seeds = seeds.detach().cpu().long() * 16 + call
    return lambda images, y: state.augment(images, y, seeds)


@torch.no_grad()
def init_w_from_embedder(networks, dataset, device: torch.device) -> None:
    """W_i := mean_k E(x_k, y_k) over the K source frames of episode i (= video i) of `dataset`, with the
    current E in eval mode (no spectral-norm power iteration, so E's state is untouched)."""
    emb = networks.embedder
    was_training = emb.training
    emb.eval()
    table = networks.discriminator.W.weight
    for i in range(int(dataset.num_videos)):
        item = dataset[i]
        e = emb(item["x_src"].to(device), item["y_src"].to(device))  # K,N
        table[int(item["video"])] = e.mean(0).to(table)
    emb.train(was_training)


def load_initial_weights(networks, model_dir: str | os.PathLike, cfg: Config, num_videos: int) -> None:
    """Load a model directory's E, G, D into freshly built `networks` (RunDirError when it is not the same
    architecture: other model settings, or a W for another number of training videos)."""
    import dataclasses

    model_cfg, meta = checkpoint.read_config(model_dir)
    if meta.get("stage") != "meta":
        raise RunDirError(f"--init-from {model_dir}: not a meta-learned model directory")
    theirs, ours = dataclasses.asdict(model_cfg.model), dataclasses.asdict(cfg.model)
    if diff := sorted(k for k, v in ours.items() if theirs[k] != v):
        raise RunDirError(f"--init-from {model_dir}: its model settings differ from this run's ({', '.join(diff)})")
    if int(meta.get("num_videos", -1)) != num_videos:
        raise RunDirError(f"--init-from {model_dir}: it was trained on {meta.get('num_videos')} videos, this "
                          f"dataset has {num_videos} (W holds one row per training video)")
    for name in checkpoint.NETWORK_NAMES:
        checkpoint.load_module(model_dir, name, getattr(networks, name))


@torch.no_grad()
def identity_probe(embedder, dataset, device: torch.device) -> float | None:
    """Nearest-centroid accuracy of e_hat over identities on frames never used in episodes: per identity a
    centroid of e_hat over K episode frames of each of its videos, per video a query e_hat over its held-back
    probe frames; the fraction of queries whose nearest centroid (Euclidean) is their own identity. Chance is
    1 / number of identities. None when the dataset holds no probe frames."""
    probe = getattr(dataset, "probe_indices", None)
    if probe is None:
        return None
    was_training = embedder.training
    embedder.eval()
    centroids: dict[str, list[Tensor]] = {}
    queries: list[tuple[str, Tensor]] = []
    for v in range(dataset.num_videos):
        held = probe(v)
        if not len(held):
            continue
        ident = dataset.identities[v]
        seen = dataset.clip_frames(v, dataset.train_indices(v)[:dataset.k])
        centroids.setdefault(ident, []).append(embedder(seen["x"].to(device), seen["y"].to(device)).mean(0))
        q = dataset.clip_frames(v, held)
        queries.append((ident, embedder(q["x"].to(device), q["y"].to(device)).mean(0)))
    embedder.train(was_training)
    if len(centroids) < 2 or not queries:
        return None
    names = sorted(centroids)
    c = torch.stack([torch.stack(centroids[n]).mean(0) for n in names])  # I,N
    hits = [names[int(torch.cdist(q[None], c).argmin())] == ident for ident, q in queries]
    return float(np.mean(hits))


# --- run directory ----------------------------------------------------------------------------------

def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    return checkpoint.find_run_checkpoint(run_dir) is not None


def resolve_config(run_dir: str | os.PathLike, cfg: Config | None, overrides: list[str] = ()) -> tuple[Config, bool]:
    """(config, resuming): the run's own config when RUN_DIR holds a checkpoint, else `cfg`; overrides on top."""
    from ..config import apply_overrides

    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise RunDirError(f"--out {run_dir} is a file: give a folder for the run (it is created)")
    ck = checkpoint.find_run_checkpoint(run_dir)
    if ck is not None:
        run_cfg, _ = checkpoint.read_config(ck.model_dir)
        if cfg is not None and cfg.preset != run_cfg.preset:
            log.warning("resuming %s: using the run's preset %r, not %r", run_dir, run_cfg.preset, cfg.preset)
        return apply_overrides(run_cfg, list(overrides)), True
    if cfg is None:
        raise RunDirError(f"{run_dir} holds no run to resume; give a preset")
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not (run_dir / LOG_FILE).exists():
        raise RunDirError(f"{run_dir} exists, is not empty and is not a training run; choose another --out")
    return apply_overrides(cfg, list(overrides)), False


def to_uint8(images: Tensor) -> np.ndarray:
    """(B,3,H,W) in [-1,1] -> (B,H,W,3) uint8."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def save_sample_grid(path: str | os.PathLike, y: Tensor, x_real: Tensor, x_fake: Tensor, max_rows: int = 8) -> Path:
    """PNG grid: columns landmarks | ground truth | output, one row per episode."""
    from PIL import Image

    cols = [to_uint8(t[:max_rows]) for t in (y, x_real, x_fake)]
    rows = [np.concatenate([c[i] for c in cols], axis=1) for i in range(cols[0].shape[0])]
    grid = np.concatenate(rows, axis=0)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return Path(path)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after `step` (by a run killed after its last checkpoint)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
    with atomic_path(path) as tmp:
        tmp.write_text("".join(k + "\n" for k in keep))


def save_checkpoint(run_dir: Path, cfg: Config, state: MetaState, info: dist.DistInfo, *, step: int,
                    sampler_state: dict[str, int], num_videos: int) -> None:
    """One checkpoint folder (model/ + training state), committed atomically (module docstring; rank 0
    writes, every rank contributes its RNG state)."""
    rngs = dist.all_gather_object(checkpoint.rng_state())
    if info.is_main:
        training_state = {
            "step": step,
            "optimizers": {"generator": state.opt_g.state_dict(), "discriminator": state.opt_d.state_dict()},
            "sampler": dict(sampler_state),
            "rng": rngs,
            "world_size": info.world_size,
            **({"lecam": state.lecam.state_dict()} if state.lecam is not None else {}),
        }

        def write(folder: Path) -> None:
            checkpoint.save_model_dir(None, cfg, state.networks, num_videos=num_videos,
                                      content_loss=state.content_loss.mode, step=step, into=folder / MODEL_DIR)
            checkpoint.save_training_state(folder / checkpoint.TRAINING_STATE_FILE, training_state, atomic=False)

        checkpoint.commit_run_checkpoint(run_dir, step, write)
        if (run_dir / LOG_FILE).is_file():
            plot_losses(run_dir / LOG_FILE, run_dir / CURVES_FILE)
    dist.barrier()


def _restore(ck: checkpoint.RunCheckpoint, state: MetaState, info: dist.DistInfo,
             cfg: Config) -> tuple[int, dict[str, int]]:
    """Load the checkpoint `ck` into `state`; returns (step, sampler state)."""
    _, meta = checkpoint.read_config(ck.model_dir)
    ts = checkpoint.load_training_state(ck.state_file)
    if int(meta["step"]) != int(ts["step"]):  # one folder holds both: only a hand-edited run gets here
        raise checkpoint.CheckpointError(
            f"{ck.folder}: model/ is at step {meta['step']} but training_state.pt at step {ts['step']}; "
            "start a new run (--out elsewhere)")
    for name in checkpoint.NETWORK_NAMES:
        checkpoint.load_module(ck.model_dir, name, getattr(state.networks, name))
    state.opt_g.load_state_dict(ts["optimizers"]["generator"])
    state.opt_d.load_state_dict(ts["optimizers"]["discriminator"])
    if state.lecam is not None and "lecam" in ts:
        state.lecam.load_state_dict(ts["lecam"])
    # load_state_dict brings back the saved learning rates and betas; the run's config (with any --set given on
    # resume) is the one source of truth, so it wins
    for opt, lr in ((state.opt_g, cfg.train.lr_generator), (state.opt_d, cfg.train.lr_discriminator)):
        for group in opt.param_groups:
            group["lr"], group["betas"] = lr, tuple(cfg.train.betas)
        steps.set_adam_impl(opt, cfg.train.adam)  # and its implementation (train.adam)
    rngs = ts["rng"]
    if len(rngs) == info.world_size:
        checkpoint.set_rng_state(rngs[info.rank])
    else:
        log.warning("world size changed (%d -> %d): RNG streams are re-seeded, not restored",
                    len(rngs), info.world_size)
        checkpoint.set_rng_state(rngs[0])
        torch.manual_seed(int(ts["step"]) * 1000 + info.rank)
    return int(ts["step"]), dict(ts["sampler"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- the loop ---------------------------------------------------------------------------------------

def make_dataset(cfg: Config, data_dir: str | os.PathLike):
    """The real episode dataset over a preprocessed folder (talking_heads.data)."""
    from ..data import EpisodeDataset

    return EpisodeDataset(data_dir, cfg)


def _loader(dataset, sampler: dist.EpisodeSampler, cfg: Config, info: dist.DistInfo):
    g = torch.Generator().manual_seed(cfg.train.seed + 7919 * info.rank)  # keeps the global RNG untouched
    return torch.utils.data.DataLoader(
        dataset, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=cfg.train.num_workers,
        pin_memory=info.device.type == "cuda", drop_last=True, generator=g,
        persistent_workers=False)


def train(run_dir: str | os.PathLike, *, cfg: Config | None = None, overrides: list[str] = (),
          data_dir: str | os.PathLike | None = None, dataset=None, device: str | None = None,
          progress: bool = True, content_loss: nn.Module | None = None, time_limit: float | None = None,
          init_from: str | os.PathLike | None = None) -> Path:
    """Meta-learn into `run_dir` (resuming it when it holds a checkpoint). Returns the model directory.

    Give `data_dir` (a preprocessed folder) or a `dataset` yielding episode dicts (docs/interfaces.md)
    with a `num_videos` attribute. Under torchrun every process calls this; a plain call is world size 1.
    `time_limit` (seconds): checkpoint and stop cleanly once this much wall time has passed (for time-limited
    jobs such as Slurm allocations); running the same command again resumes.
    `init_from`: a new run starts from this model directory's E, G and D (the same networks: model settings
    and number of training videos) instead of random weights, with fresh optimisers and step 0, e.g. to go
    on training a shipped model when its run folder is gone. Ignored when the run resumes.
    """
    run_dir = Path(run_dir)
    info = dist.init(device)
    if info.is_main and run_dir.is_dir():
        for p in checkpoint.sweep_run_dir(run_dir):
            log.info("removed %s (left by a killed run)", p)
    dist.barrier()
    cfg, resuming = resolve_config(run_dir, cfg, overrides)
    if cfg.train.steps < 1:
        raise RunDirError(f"train.steps={cfg.train.steps}: give at least 1 step (--steps N)")
    if info.device.type == "cpu":
        _report_cpu_precision(cfg.train.amp_cpu)  # also rejects a bad value before anything is built
    if dataset is None:
        if data_dir is None:
            raise ValueError("give data_dir or dataset")
        dataset = make_dataset(cfg, data_dir)
    num_videos = int(dataset.num_videos)
    ck = checkpoint.find_run_checkpoint(run_dir) if resuming else None
    if ck is not None:
        _, meta = checkpoint.read_config(ck.model_dir)
        if int(meta["num_videos"]) != num_videos:
            raise RunDirError(f"{run_dir}: the run was trained on {meta['num_videos']} videos, "
                                             f"this dataset has {num_videos}")

    from ..models import build_networks

    seed_everything(cfg.train.seed)  # identical initial weights on every rank
    networks = build_networks(cfg, num_videos)
    state = build_meta_state(cfg, networks, info, content_loss)
    if state.content_loss.mode == "offline":
        log.warning("=" * 78 + "\nOFFLINE CONTENT LOSS: no VGG19 / VGGFace weight files were given "
                    "(loss.vgg19_weights / loss.vggface_weights).\nThis is NOT the paper's L_CNT; the model "
                    "directory records content_loss='offline'.\n" + "=" * 78)
    sampler = dist.EpisodeSampler(len(dataset), cfg.train.batch_size, cfg.train.seed, info.rank, info.world_size)
    start = 0
    if ck is not None:
        start, sampler_state = _restore(ck, state, info, cfg)
        sampler.load_state(sampler_state)
        log.info("resuming %s at step %d of %d", run_dir, start, cfg.train.steps)
    elif init_from is not None:
        load_initial_weights(networks, init_from, cfg, num_videos)
        log.info("E, G and D initialised from %s (a new run: fresh optimisers, step 0)", init_from)
        seed_everything(cfg.train.seed + info.rank)
    else:
        if cfg.train.init_w_from_data:
            init_w_from_embedder(networks, dataset, info.device)
            log.info("W initialised from the initial embedder's output on one episode per video")
        seed_everything(cfg.train.seed + info.rank)  # per-rank streams for anything random after init
    created = not run_dir.exists()
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if ck is not None:
            _truncate_log(run_dir / LOG_FILE, start)
        else:
            (run_dir / LOG_FILE).unlink(missing_ok=True)
    dist.barrier()
    deadline = None if time_limit is None else time.monotonic() + float(time_limit)
    with _StopSignals() as stop:
        try:
            last = _loop(run_dir, cfg, state, info, dataset, sampler, start, num_videos, progress, deadline, stop)
        except BaseException:
            if ck is None and created and info.is_main and checkpoint.find_run_checkpoint(run_dir) is None:
                import shutil

                shutil.rmtree(run_dir, ignore_errors=True)  # a new run that never checkpointed: leave nothing
            raise
    if stop.signum is not None and last < cfg.train.steps:
        raise StoppedBySignal(stop.signum, last, run_dir)
    return run_dir / MODEL_DIR


class _StopSignals:
    """SIGTERM / SIGINT handlers for the training loop (main thread only): the first signal sets `signum`
    (the loop checkpoints and stops), a second one restores the previous handlers and stops at once."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        import signal

        from ..errors import Terminated

        if self.signum is None:
            self.signum = signum
            log.warning("%s: finishing this step, writing a checkpoint and stopping (send it again to stop at once)",
                        signal.Signals(signum).name)
            return
        self._restore()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    def _restore(self):
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def __exit__(self, *exc):
        self._restore()
        return False


def _loop(run_dir: Path, cfg: Config, state: MetaState, info: dist.DistInfo, dataset, sampler, start: int,
          num_videos: int, progress: bool, deadline: float | None = None, stop: "_StopSignals | None" = None) -> int:
    """Steps start+1 .. train.steps (or until the time limit / a stop signal); returns the last step done."""
    from tqdm import tqdm

    t = cfg.train
    total = t.steps
    if start >= total:
        log.info("%s already at step %d >= train.steps=%d: nothing to do", run_dir, start, total)
        return start
    batches = iter(_loader(dataset, sampler, cfg, info))
    bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, smoothing=0.1,
               disable=not (progress and info.is_main), desc="meta-learning")
    t0, last_step = time.perf_counter(), start
    collapse_warned = False
    with open(run_dir / LOG_FILE, "a") if info.is_main else _null() as log_file:
        for step in range(start + 1, total + 1):
            batch = {k: v.to(info.device, non_blocking=True) for k, v in next(batches).items()}
            logs, x_fake = meta_step(state, batch, cfg, step)
            if not all(math.isfinite(v) for v in logs.values()):
                raise FloatingPointError(f"non-finite loss at step {step}: {logs}")
            bar.update(1)
            bar.set_postfix(g=f"{logs['g_total']:.3f}", d=f"{logs.get('d_loss', float('nan')):.3f}", refresh=False)
            signalled = dist.any_true(stop is not None and stop.signum is not None, info.device)
            out_of_time = signalled or (deadline is not None and dist.any_true(time.monotonic() > deadline,
                                                                               info.device))
            last = step == total or out_of_time
            probe = t.probe_every > 0 and (step % t.probe_every == 0 or last) and info.is_main
            if step % t.log_every == 0 or last or probe:
                logs = dist.all_reduce_mean(logs, info.device)
                now = time.perf_counter()
                record = {"step": step, "epoch": sampler.state_after(step - start - 1)["epoch"],
                          "sec_per_step": (now - t0) / (step - last_step), **logs}
                if probe:
                    acc = identity_probe(state.networks.embedder, dataset, info.device)
                    if acc is not None:
                        record["id_probe_acc"] = acc
                        record["id_probe_chance"] = 1.0 / len(set(dataset.identities))
                t0, last_step = now, step
                if info.is_main and logs.get("e_hat_abs", 1.0) == 0.0 and not collapse_warned:
                    collapse_warned = True
                    log.warning("step %d: the embedder's output is exactly 0 for every episode (collapsed: its "
                                "final ReLUs are dead, so FF avatars will carry no identity). Usually L_MCH pulling "
                                "e_hat onto a small W; see docs/model_card.md", step)
                if info.is_main:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
            if info.is_main and (step % t.sample_every == 0 or last):
                save_sample_grid(run_dir / SAMPLES_DIR / f"step_{step:07d}.png", batch["y_tgt"], batch["x_tgt"], x_fake)
            if step % t.checkpoint_every == 0 or last:
                save_checkpoint(run_dir, cfg, state, info, step=step, sampler_state=sampler.state_after(step - start),
                                num_videos=num_videos)
            if out_of_time and step < total:
                log.info("%s at step %d of %d: checkpointed; run the same command to resume",
                         "stop signal" if signalled else "time limit reached", step, total)
                if signalled and stop is not None and stop.signum is None:  # another rank was signalled
                    import signal

                    stop.signum = int(signal.SIGTERM)
                break
    bar.close()
    return step


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
