"""`talking-heads evaluate` (the paper's evaluation protocol) and `talking-heads userstudy make | score` (the USER
metric). Parsing only; the work is in talking_heads.evaluation. Modules that load torch or PyAV are imported
inside the `run_*` functions, so that `talking-heads --help` stays fast."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from .. import limits
from ..config import Config, EvalConfig, apply_overrides, check_section
from ..paths import output_dir
from . import UserError
from .common import flag_names


def register(sub: argparse._SubParsersAction) -> None:
    _evaluate_parser(sub)
    u = sub.add_parser("userstudy", help="the USER metric: make an HTML triplet study, score its answers",
                       description="Paper section 7's user study: triplets of one person (two real frames from "
                                   "different clips, one generated); participants pick the fake.")
    us = u.add_subparsers(dest="userstudy_command", metavar="ACTION")
    m = us.add_parser("make", help="write STUDY_DIR/study.html (self-contained) and STUDY_DIR/key.json")
    m.add_argument("--model", required=True, help="model directory")
    m.add_argument("--data", required=True, help="preprocessed test clips")
    m.add_argument("--out", required=True, metavar="STUDY_DIR", help="study folder")
    m.add_argument("--triplets", type=int, default=20, help="number of triplets (default 20)")
    m.add_argument("--shots", type=int, default=8, metavar="T", help="few-shot frames per avatar (default 8)")
    m.add_argument("--variant", choices=["ff", "ft"], default="ft", help="avatar variant (default ft)")
    m.add_argument("--epochs", type=int, default=None, help="FT epochs (default finetune.epochs)")
    m.add_argument("--size", type=int, default=256, help="displayed image size in px (default 256)")
    m.add_argument("--seed", type=int, default=0, help="seed of the triplet plan (default 0)")
    m.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.set_defaults(func=run_userstudy_make)
    s = us.add_parser("score", help="accuracy of fake picks with a Wilson 95%% interval (1/3 is chance)")
    s.add_argument("answers", nargs="+", metavar="ANSWERS.json", help="answer files downloaded from the page")
    s.add_argument("--key", default=None, help="the study's key.json (default: key.json beside the first answers)")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=run_userstudy_score)
    u.set_defaults(func=lambda args: _usage(u))


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="self-reenactment metrics, baselines, cross-identity, timings: a Table-1-style report",
        description="Evaluate a meta-learned model with the paper's protocol (section 7) on preprocessed test "
                    "clips (`talking-heads preprocess`): per video, few-shot sets of T frames and hold-out frames "
                    "that never overlap; FF and FT avatars; every hold-out frame generated from its own "
                    "landmarks; nearest-shot retrieval baseline; SSIM, PSNR, L1, CSIM, landmark error, and FID "
                    "/ LPIPS when their weight files are given. Writes report.md, values.jsonl and grids/ "
                    "into --out. Defaults not given here come from the model's config (eval.*).")
    p.add_argument("--model", default=None,
                   help="model directory (talking-heads train output; default: the shipped sample model, as for "
                        "avatar and animate)")
    p.add_argument("--data", required=True, help="preprocessed test clips (talking-heads preprocess output)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--shots", type=int, nargs="+", default=None, metavar="T", help="few-shot sizes (default 1 8 32)")
    p.add_argument("--holdout", type=int, default=None, help="hold-out frames per video (default 32)")
    p.add_argument("--variants", nargs="+", choices=["ff", "ft"], default=None, help="avatar variants (default ff ft)")
    p.add_argument("--videos", type=int, default=None, help="use the first N test videos (default all)")
    p.add_argument("--per-identity", type=int, default=None, metavar="N",
                   help="at most N test videos per identity (default all), for identity-balanced numbers")
    p.add_argument("--epochs", type=int, default=None, help="FT epochs (default finetune.epochs, the paper's 40)")
    p.add_argument("--cross", action="store_true", default=None,
                   help="also cross-identity puppeteering with landmark adaptation on and off")
    p.add_argument("--metrics", nargs="+", default=None, metavar="NAME",
                   help="registry names (default: this version's full list, " + " ".join(EvalConfig().metrics)
                        + ", whatever the model's config.json lists)")
    p.add_argument("--fid-weights", default=None, metavar="PATH",
                   help="pt_inception-2015-12-05-6726825d.pth (else FID is reported as not available)")
    p.add_argument("--lpips-weights", default=None, metavar="PATH",
                   help="LPIPS v0.1 linear layers, alex.pth or vgg.pth (else LPIPS is not available)")
    p.add_argument("--lpips-backbone", default=None, metavar="PATH",
                   help="torchvision alexnet-owt-7be5be79.pth / vgg16-397923af.pth for LPIPS")
    p.add_argument("--seed", type=int, default=None, help="seed of the few-shot draws (default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any eval setting, e.g. --set eval.render_batch=8, or the FT recipe with finetune.* "
                        "and loss.* settings, e.g. --set finetune.steps=60 (repeatable; recorded in the report)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 is much faster for tiny models on shared cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_evaluate)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


RECIPE_SECTIONS = ("finetune.", "loss.")  # --set sections that change the FT recipe (evaluation.evaluate's `recipe`)
FLAGS = ("shots", "holdout", "variants", "videos", "per_identity", "epochs", "cross", "metrics", "fid_weights",
         "lpips_weights", "lpips_backbone", "seed")  # options that set the EvalConfig field of the same name


def _eval_settings(args: argparse.Namespace) -> dict:
    """EvalConfig overrides from --set eval.* and the flags, checked by the config's own checks (a refusal
    names the --set setting or the flag, as typed)."""
    from ..metrics import METRICS

    bad = [o for o in args.overrides if not o.startswith(("eval.",) + RECIPE_SECTIONS)]
    if bad:
        raise UserError(f"only eval.*, finetune.* and loss.* settings apply to evaluation, got {bad}")
    from_set = apply_overrides(Config(), args.overrides).eval  # every --set checked, the recipe's too
    settings = {o.split("=", 1)[0].split(".", 1)[1]: None for o in args.overrides if o.startswith("eval.")}
    settings = {k: getattr(from_set, k) for k in settings}
    flags = {k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None}
    settings.update(flags)
    for flag in ("videos", "per_identity"):  # the flags count videos (0, "all", is their default)
        if settings.get(flag) is not None and settings[flag] < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1")
    check_section("eval", flags, names=flag_names(flags))
    settings.setdefault("metrics", EvalConfig().metrics)  # metrics belong to the evaluation code, not the model
    if not settings.get("variants", ["ff"]):
        raise UserError("variants must be ff and/or ft, got none")
    unknown = [n for n in settings.get("metrics", []) if n not in METRICS]
    if unknown:
        raise UserError(f"unknown metric(s) {unknown}; available: {sorted(METRICS)}")
    return settings


def _check_inputs(model: str, data: str) -> None:
    """--model (its config.json) and --data (preprocessed clips with at least 2 frames)."""
    from ..checkpoint import CheckpointError, read_config
    from ..data.layout import usable_clips

    try:
        read_config(model)
    except CheckpointError as err:
        raise UserError(f"--model: {err}") from None
    usable_clips(data, "--data")


def run_evaluate(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation import evaluate
    from ..pipeline import SHIPPED_MODELS, shipped_model_dir

    settings = _eval_settings(args)
    if args.model is None or (args.model in SHIPPED_MODELS and not Path(args.model).exists()):
        args.model = str(shipped_model_dir(args.model))
    _check_inputs(args.model, args.data)
    output_dir(args.out, "--out", inputs=[args.model, args.data])
    if args.threads is not None:
        if args.threads < 1:
            raise UserError("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    result, paths = evaluate(args.model, args.data, args.out, device=args.device, progress=not args.no_progress,
                             command=shlex.join(["talking-heads", *sys.argv[1:]]),
                             recipe=[o for o in args.overrides if o.startswith(RECIPE_SECTIONS)], **settings)
    print(f"report: {paths['report']}")
    print(f"values: {paths['values']}")
    for (t, method), values in result.table.items():
        cells = ", ".join(f"{k} {v.format()}" for k, v in values.items() if v.available)
        print(f"  {method} T={t}: {cells}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} video(s): see the report's notes")
    return 0


def run_userstudy_make(args: argparse.Namespace) -> int:
    from ..evaluation.userstudy import make_study

    _check_inputs(args.model, args.data)
    if args.triplets < 1 or args.size < 16:
        raise UserError("--triplets must be >= 1, --size >= 16")
    limits.check_shots(args.shots, "--shots")
    limits.check_epochs(args.epochs, "--epochs")
    study, paths = make_study(args.model, args.data, args.out, triplets=args.triplets, shots=args.shots,
                              variant=args.variant, epochs=args.epochs, display_size=args.size, seed=args.seed,
                              device=args.device, progress=not args.no_progress)
    print(f"study page: {paths['html']} ({len(study.triplets)} triplets; send it to participants)")
    print(f"key (keep it; do not send): {paths['key']}")
    for w in study.warnings:
        print(f"warning: {w}")
    print(f"score with: talking-heads userstudy score ANSWERS.json ... --key {paths['key']}")
    return 0


def run_userstudy_score(args: argparse.Namespace) -> int:
    from ..evaluation.userstudy import score_files

    result = score_files(args.answers, args.key)
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.text())
    return 0
