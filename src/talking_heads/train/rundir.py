"""The run folder of meta-learning (RUN_DIR): which config a run uses, its log, and its checkpoints.

Layout: log.jsonl (one JSON object of scalars per `log_every` steps), loss_curves.png (redrawn at every
checkpoint, `curves.py`), samples/step_XXXXXXX.png (`samples.py`), checkpoints/step_NNNNNNN/{model/,
training_state.pt}, and the links latest -> checkpoints/step_NNNNNNN, model -> latest/model,
training_state.pt -> latest/training_state.pt.

Decisions:
- Resume: when RUN_DIR holds a checkpoint the run continues from it with the run's own config (`--set`
  overrides applied on top, e.g. more steps). Parameters, optimiser states, spectral-norm vectors (buffers
  in the model files), RNG states of python/numpy/torch/CUDA (per rank) and the sampler position are
  restored, so a killed and resumed run equals an uninterrupted one. log.jsonl lines written after the
  checkpoint by the killed run are dropped.
- Checkpoints survive any kill: the model and the training state of a step are one folder, written and
  fsynced under a temporary name, renamed, and committed by replacing the symbolic link RUN/latest (one
  atomic rename); the previous checkpoint is deleted only after that (`checkpoint.commit_run_checkpoint`).
  RUN/model and RUN/training_state.pt never change, so RUN/model is the model directory to pass to other
  commands (a link, not a pointer file only this loader follows: every tool, `ls`, the web app and other
  programs see a plain model directory, and the switch is atomic; copy it with `cp -rL`). A start sweeps
  what a killed run left half-done (`checkpoint.sweep_run_dir`). Runs in the earlier layout (a real model/
  folder beside training_state.pt) resume and are converted at their next checkpoint.
- A new run that fails before its first checkpoint removes the run folder it created.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from .. import checkpoint, dist
from ..atomic import atomic_path
from ..config import Config, apply_overrides
from ..errors import InputError
from . import steps
from .curves import CURVES_FILE, plot_losses
from .meta_state import MetaState

log = logging.getLogger(__name__)

MODEL_DIR = "model"
LOG_FILE = "log.jsonl"
SAMPLES_DIR = "samples"


class RunDirError(InputError):
    """RUN_DIR cannot hold this run (not a run, no preset for a new run, another dataset)."""


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    return checkpoint.find_run_checkpoint(run_dir) is not None


def resolve_config(run_dir: str | os.PathLike, cfg: Config | None, overrides: list[str] = ()) -> tuple[Config, bool]:
    """(config, resuming): the run's own config when RUN_DIR holds a checkpoint, else `cfg`; overrides on top."""
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


def sweep(run_dir: Path, info: dist.DistInfo) -> None:
    """Remove what a killed run left half-done (rank 0; every rank waits)."""
    if info.is_main and run_dir.is_dir():
        for p in checkpoint.sweep_run_dir(run_dir):
            log.info("removed %s (left by a killed run)", p)
    dist.barrier()


def find_checkpoint(run_dir: Path, num_videos: int) -> checkpoint.RunCheckpoint | None:
    """The checkpoint to resume from; RunDirError when it was trained on another number of videos."""
    ck = checkpoint.find_run_checkpoint(run_dir)
    if ck is not None:
        _, meta = checkpoint.read_config(ck.model_dir)
        if int(meta["num_videos"]) != num_videos:
            raise RunDirError(f"{run_dir}: the run was trained on {meta['num_videos']} videos, "
                              f"this dataset has {num_videos}")
    return ck


def open_run_dir(run_dir: Path, info: dist.DistInfo, resumed_at: int | None) -> bool:
    """Create RUN_DIR and start its log: a resumed run keeps the lines up to its checkpoint's step
    `resumed_at`, a new one starts an empty log. Returns whether the folder was created."""
    created = not run_dir.exists()
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resumed_at is not None:
            truncate_log(run_dir / LOG_FILE, resumed_at)
        else:
            (run_dir / LOG_FILE).unlink(missing_ok=True)
    dist.barrier()
    return created


def remove_unfinished(run_dir: Path) -> None:
    """Remove a new run's folder that never got a checkpoint (after a failure: leave nothing)."""
    if checkpoint.find_run_checkpoint(run_dir) is None:
        shutil.rmtree(run_dir, ignore_errors=True)


def truncate_log(path: Path, step: int) -> None:
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


def restore_checkpoint(ck: checkpoint.RunCheckpoint, state: MetaState, info: dist.DistInfo,
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
