"""Meta-learning (paper.md sections 1, 4, 5): the explicit training loop behind `talking-heads train`.

One step simulates a K-shot task per episode: K source frames (x_src, y_src) and a distinct target
(x_tgt, y_tgt) of video i. e_hat = mean_k E(x_k, y_k); psi = P e_hat; x_fake = G(y_tgt, psi). Then one
E/G update (`GanStep.generator_step`: L_CNT + L_ADV + L_MCH) and `cfg.train.d_steps_per_g_step` (2) D updates
(`GanStep.discriminator_step`: hinge on V, W, w0, b), bound once per run by `build_meta_state`. Adam, lr 5e-5
(E, G) / 2e-4 (D), betas from the config; its implementation `train.adam` (fused by default), bf16 autocast
on CUDA with `train.amp`, on CPU with `train.amp_cpu` ("auto": where the CPU has native bf16).

Decisions (paper silent; [LAB] does the same):
- Order within a step: the E/G update first, then the D updates. Every D update of a step reuses the
  same episodes and the same x_fake.detach() (produced by E/G before their update): no second generator
  forward, and the E/G graph is freed before D runs (lower peak memory). No D forward is shared between the
  updates either: each D call runs one power iteration of spectral norm (and, with DiffAugment, sees its own
  transform), so reusing one would change the arithmetic, not just its cost.
- Distributed: one DDP wrapper over E and G, one over D (`meta_state.py`); the global batch of step s is the
  same for any world size (`dist.EpisodeSampler`).
- The run folder, resume and checkpoints that survive any kill: `rundir.py`. Stopping on SIGTERM / Ctrl-C:
  `signals.py`. The losses cross to the host only for log lines and checkpoints, which also guard against
  non-finite losses: `runlog.py`.

Options for a live embedder and data-efficient training (not in the paper; all off in the `paper` preset,
each a named setting; ../shared/design/quality.md has the evidence):
- `train.init_w_from_data`: before step 1, W_i := mean_k E(x_k, y_k) over the K source frames of one episode
  of video i, computed with the *initial* E (`init_w_from_embedder`), so L_MCH starts at its fixed point
  instead of pulling every e_hat onto a random U(-0.1, 0.1) row (the collapse of the v1 sample model);
- `loss.match_weight`, `loss.match_warmup_steps`, `loss.match_ramp_steps`: L_MCH's weight and a warm-up
  (0, then a linear ramp), logged as `mch_weight`;
- `train.diffaugment`, `train.lecam_weight` (train/augment.py) for the discriminator;
- `train.probe_frames` + `train.probe_every`: an identity probe (`probe.identity_probe`) on frames held back
  from every episode. Every log line also carries mean |e_hat| (`e_hat_abs`) and the fraction of exactly-zero
  entries of e_hat (`e_hat_zero`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from .. import checkpoint, dist, machine
from ..config import Config
from ..data import EpisodeDataset
from ..models import GENERATORS, build_networks
from . import rundir, steps
from .meta_state import EmbedderGenerator, MetaState, build_meta_state, build_optimizers
from .probe import identity_probe
from .rundir import LOG_FILE, MODEL_DIR, SAMPLES_DIR, RunDirError, has_checkpoint, resolve_config
from .runlog import RunLog
from .samples import save_sample_grid
from .signals import StoppedBySignal, StopSignals

__all__ = ["EmbedderGenerator", "MetaState", "RunDirError", "StoppedBySignal", "build_meta_state",
           "build_optimizers", "has_checkpoint", "identity_probe", "init_w_from_embedder", "load_initial_weights",
           "make_dataset", "meta_step", "resolve_config", "save_sample_grid", "train"]

log = logging.getLogger(__name__)


def meta_step(state: MetaState, batch: Mapping[str, Tensor], cfg: Config,
              step: int | None = None) -> tuple[steps.Logs, Tensor]:
    """One E/G update and `cfg.train.d_steps_per_g_step` D updates on one batch of episodes (everything else
    was bound by `build_meta_state`). Returns (logs: 0-dim tensors and the L_MCH weight, x_fake detached).
    `step` (1-based) sets the L_MCH warm-up; None = the full weight."""
    return state.update(batch, step, d_steps=cfg.train.d_steps_per_g_step)


@torch.no_grad()
def init_w_from_embedder(networks, dataset, device: torch.device) -> None:
    """W_i := mean_k E(x_k, y_k) over the K source frames of episode i (= video i) of `dataset`, with the
    current E in eval mode (no spectral-norm power iteration, so E's state is untouched)."""
    table = networks.discriminator.W.weight
    with steps.eval_mode(networks.embedder):
        for i in range(int(dataset.num_videos)):
            item = dataset[i]
            e = networks.embedder(item["x_src"].to(device), item["y_src"].to(device))  # K,N
            table[int(item["video"])] = e.mean(0).to(table)


def load_initial_weights(networks, model_dir: str | os.PathLike, cfg: Config, num_videos: int) -> None:
    """Load a model directory's E, G, D into freshly built `networks` (RunDirError when it is not the same
    architecture: other model settings, or a W for another number of training videos)."""
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_dataset(cfg: Config, data_dir: str | os.PathLike):
    """The real episode dataset over a preprocessed folder (talking_heads.data)."""
    return EpisodeDataset.from_config(data_dir, cfg)


def _report_cpu_precision(setting: bool | str) -> None:
    """Say which arithmetic the forwards run in on this CPU (train.amp_cpu), and warn when bf16 is forced on
    a CPU that only emulates it."""
    on, native = steps.cpu_amp(setting), machine.cpu_supports_bf16()
    if on and not native:
        log.warning("train.amp_cpu: this CPU has no native bf16 (AVX-512 BF16 / AMX), so bf16 autocast is "
                    "emulated and many times slower than fp32 here (docs/benchmarks.md): set "
                    'train.amp_cpu=false or "auto"')
    else:
        log.info("forwards in %s on this CPU (train.amp_cpu=%s%s)", "bf16 autocast" if on else "fp32",
                 str(setting).lower(), "" if native else "; no native bf16 here")


# --- the run ----------------------------------------------------------------------------------------

@dataclass
class _Run:
    """What the loop needs besides the state: the folder, the settings, the data, and when to stop."""

    run_dir: Path
    cfg: Config
    info: dist.DistInfo
    dataset: Any
    sampler: dist.EpisodeSampler
    num_videos: int
    deadline: float | None = None  # time.monotonic() at which to checkpoint and stop
    collapse_warned: bool = False


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
    rundir.sweep(run_dir, info)
    cfg, resuming = resolve_config(run_dir, cfg, overrides)
    if cfg.train.steps < 1:
        raise RunDirError(f"train.steps={cfg.train.steps}: give at least 1 step (--steps N)")
    if cfg.train.border_dropout > 0 and not getattr(GENERATORS.get(cfg.model.generator), "needs_points", False):
        raise RunDirError(f"train.border_dropout={cfg.train.border_dropout:g} applies to the TPS renderer "
                          f"(model.generator = tps), which knows where its sources are real; the "
                          f"{cfg.model.generator!r} generator would learn black bands: leave it at 0")
    if info.device.type == "cpu":
        _report_cpu_precision(cfg.train.amp_cpu)  # also rejects a bad value before anything is built
    if dataset is None:
        if data_dir is None:
            raise ValueError("give data_dir or dataset")
        dataset = make_dataset(cfg, data_dir)
    num_videos = int(dataset.num_videos)
    ck = rundir.find_checkpoint(run_dir, num_videos) if resuming else None
    seed_everything(cfg.train.seed)  # identical initial weights on every rank
    state = build_meta_state(cfg, build_networks(cfg, num_videos), info, content_loss)
    sampler = dist.EpisodeSampler(len(dataset), cfg.train.batch_size, cfg.train.seed, info.rank, info.world_size)
    run = _Run(run_dir, cfg, info, dataset, sampler, num_videos)
    start = _start(run, state, ck, init_from)
    created = rundir.open_run_dir(run_dir, info, start if ck is not None else None)
    run.deadline = None if time_limit is None else time.monotonic() + float(time_limit)
    with StopSignals() as stop:
        try:
            last = _loop(run, state, start, stop, progress)
        except BaseException:
            if ck is None and created and info.is_main:
                rundir.remove_unfinished(run_dir)  # a new run that never checkpointed: leave nothing
            raise
    if stop.signum is not None and last < cfg.train.steps:
        raise StoppedBySignal(stop.signum, last, run_dir)
    return run_dir / MODEL_DIR


def _start(run: _Run, state: MetaState, ck: checkpoint.RunCheckpoint | None,
           init_from: str | os.PathLike | None) -> int:
    """The step the run starts after: the checkpoint's (restored into `state` and the sampler), or 0 from
    `init_from`'s weights or from the initial ones (with W from the data when asked); then per-rank RNG
    streams for anything random after the initialisation."""
    cfg, info = run.cfg, run.info
    if state.content_loss.mode == "offline":
        log.warning("=" * 78 + "\nOFFLINE CONTENT LOSS: no VGG19 / VGGFace weight files were given "
                    "(loss.vgg19_weights / loss.vggface_weights).\nThis is NOT the paper's L_CNT; the model "
                    "directory records content_loss='offline'.\n" + "=" * 78)
    if ck is not None:
        start, sampler_state = rundir.restore_checkpoint(ck, state, info, cfg)
        run.sampler.load_state(sampler_state)
        log.info("resuming %s at step %d of %d", run.run_dir, start, cfg.train.steps)
        return start
    if init_from is not None:
        load_initial_weights(state.networks, init_from, cfg, run.num_videos)
        log.info("E, G and D initialised from %s (a new run: fresh optimisers, step 0)", init_from)
    elif cfg.train.init_w_from_data:
        init_w_from_embedder(state.networks, run.dataset, info.device)
        log.info("W initialised from the initial embedder's output on one episode per video")
    seed_everything(cfg.train.seed + info.rank)
    return 0


def _loader(dataset, sampler: dist.EpisodeSampler, cfg: Config, info: dist.DistInfo):
    g = torch.Generator().manual_seed(cfg.train.seed + 7919 * info.rank)  # keeps the global RNG untouched
    return torch.utils.data.DataLoader(
        dataset, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=cfg.train.num_workers,
        pin_memory=info.device.type == "cuda", drop_last=True, generator=g,
        persistent_workers=False, worker_init_fn=_leave_stop_signals_to_the_trainer)


def _leave_stop_signals_to_the_trainer(_worker_id: int) -> None:
    """In each data-loading worker: ignore SIGTERM and SIGINT. A stop signal sent to the whole process group
    (Ctrl-C in a terminal, `kill -TERM -PGID`, a service manager stopping a control group) would otherwise kill
    the workers at once, and the trainer, which finishes its step and writes a checkpoint on that signal
    (`signals.StopSignals`), would fail on the dead worker instead; the trainer shuts its workers down itself
    (and they exit when it dies)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _to_device(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """The episodes on the device, except aug_seed: DiffAugment draws from it on the CPU."""
    return {k: v if k == "aug_seed" else v.to(device, non_blocking=True) for k, v in batch.items()}


def _loop(run: _Run, state: MetaState, start: int, stop: StopSignals, progress: bool) -> int:
    """Steps start+1 .. train.steps (or until the time limit / a stop signal); returns the last step done."""
    t, info = run.cfg.train, run.info
    if start >= t.steps:
        log.info("%s already at step %d >= train.steps=%d: nothing to do", run.run_dir, start, t.steps)
        return start
    batches = iter(_loader(run.dataset, run.sampler, run.cfg, info))
    bar = tqdm(total=t.steps, initial=start, unit="step", dynamic_ncols=True, smoothing=0.1,
               disable=not (progress and info.is_main), desc="meta-learning")
    with RunLog(run.run_dir / LOG_FILE, info.is_main, start) as book:
        for step in range(start + 1, t.steps + 1):
            batch = _to_device(next(batches), info.device)
            logs, x_fake = meta_step(state, batch, run.cfg, step)
            book.add(step, logs)
            bar.update(1)
            past_deadline = run.deadline is not None and time.monotonic() > run.deadline
            signalled, past_deadline = dist.any_true_each([stop.signum is not None, past_deadline], info.device)
            out_of_time = signalled or past_deadline
            last = step == t.steps or out_of_time
            probe = t.probe_every > 0 and (step % t.probe_every == 0 or last) and info.is_main
            if step % t.log_every == 0 or last or probe:
                _log_line(run, state, book, bar, step, start, probe)
            if info.is_main and (step % t.sample_every == 0 or last):
                save_sample_grid(run.run_dir / SAMPLES_DIR / f"step_{step:07d}.png", batch["y_tgt"], batch["x_tgt"],
                                 x_fake)
            if step % t.checkpoint_every == 0 or last:
                book.check()  # never a checkpoint of weights that a non-finite loss updated
                rundir.save_checkpoint(run.run_dir, run.cfg, state, info, step=step,
                                       sampler_state=run.sampler.state_after(step - start), num_videos=run.num_videos)
            if out_of_time and step < t.steps:
                log.info("%s at step %d of %d: checkpointed; run the same command to resume",
                         "stop signal" if signalled else "time limit reached", step, t.steps)
                if signalled:
                    stop.adopt()  # another rank's signal stops this one the same way
                break
    bar.close()
    return step


def _log_line(run: _Run, state: MetaState, book: RunLog, bar: tqdm, step: int, start: int, probe: bool) -> None:
    """One line of log.jsonl: the step's losses (checked, then averaged over ranks), its epoch, the wall time
    per step since the previous line, and with `probe` the identity probe; warns once when E collapsed."""
    logs = dist.all_reduce_mean(book.check(), run.info.device)
    bar.set_postfix(g=f"{logs['g_total']:.3f}", d=f"{logs.get('d_loss', float('nan')):.3f}", refresh=False)
    record = {"step": step, "epoch": run.sampler.state_after(step - start - 1)["epoch"],
              "sec_per_step": book.seconds_per_step(step), **logs}
    if probe:
        acc = identity_probe(state.networks.embedder, run.dataset, run.info.device)
        if acc is not None:
            record["id_probe_acc"] = acc
            record["id_probe_chance"] = 1.0 / len(set(run.dataset.identities))
    if run.info.is_main and logs.get("e_hat_abs", 1.0) == 0.0 and not run.collapse_warned:
        run.collapse_warned = True
        log.warning("step %d: the embedder's output is exactly 0 for every episode (collapsed: its final ReLUs "
                    "are dead, so FF avatars will carry no identity). Usually L_MCH pulling e_hat onto a small W; "
                    "see docs/model_card.md", step)
    book.write(record)
