"""`talking-heads speech train` and `talking-heads speech evaluate`: the speech-to-motion model (`talking_heads.speech`).
Driving an avatar by speech is `animate --audio` / `--say` (cli/avatar.py). Parsing only."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import limits
from ..paths import input_path


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("speech", help="train and evaluate the speech-to-motion model (avatars driven by a voice)",
                       description="The model behind animate --audio: log-mel features of speech -> mouth and chin "
                                   "motion in landmark space (talking_heads/speech).")
    actions = s.add_subparsers(dest="speech_command", metavar="ACTION", required=True)
    t = actions.add_parser("train", help="train (or resume) the speech model on a preprocessed train split",
                           description="Pairs the sound of each preprocessed clip's source video with its tracked "
                                       "mouth. Resumable: run the same command again. The model is exported to "
                                       "RUN/model at every checkpoint.")
    t.add_argument("--data", required=True, metavar="DIR", help="a folder written by talking-heads preprocess "
                                                                "(the train split)")
    t.add_argument("--run", required=True, metavar="DIR", help="run folder (checkpoint.pt, log.jsonl, model/)")
    t.add_argument("--steps", type=int, default=None, help="training steps (default speech.steps)")
    t.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop after this long with a checkpoint (resume by running again)")
    t.add_argument("--set", action="append", default=[], metavar="speech.FIELD=VALUE",
                   help="override a SpeechConfig setting (repeatable)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=run_train)

    e = actions.add_parser("evaluate", help="measure the speech model on the test split against two baselines",
                           description="Mouth landmark distance (LMD), mouth-opening correlation and audio-video "
                                       "offset on test-split speakers the model never heard, against (a) mouth "
                                       "opening from loudness and (b) no motion. Writes OUT/report.md, report.json "
                                       "and contact sheets.")
    e.add_argument("--data", default="../shared/data", metavar="DIR", help="the sample data (manifest.csv)")
    e.add_argument("--model", default=None, metavar="DIR", help="speech model folder (default: the shipped one)")
    e.add_argument("-o", "--out", required=True, metavar="DIR", help="report folder")
    e.add_argument("--min-seconds", type=float, default=2.0, help="skip test clips with less sound than this")
    e.add_argument("--sheets", type=int, default=4, metavar="N", help="contact sheets for the first N clips")
    e.add_argument("--clips", type=int, default=0, metavar="N", help="only the first N clips (0: all)")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=run_evaluate)


def _speech_config(overrides: list[str], steps: int | None):
    from ..config import SpeechConfig, speech_overrides

    cfg = speech_overrides(SpeechConfig(), overrides)
    if steps is not None:
        cfg.steps = limits.check_steps(steps, "--steps")
    return cfg


def run_train(args: argparse.Namespace) -> int:
    from ..speech.data import preprocessed_clips
    from ..speech.train import train

    cfg = _speech_config(args.set, args.steps)
    limits.finite_positive(args.time_limit, "--time-limit")
    data = input_path(args.data, "--data")
    clips = preprocessed_clips(data, progress=not args.no_progress)
    if not clips:
        from ..errors import InputError
        raise InputError(f"--data {data}: no preprocessed clip has a source video with sound; preprocess a split "
                         "whose videos have audio")
    model = train(clips, args.run, cfg, time_limit=args.time_limit, progress=not args.no_progress,
                  data_note=str(data))
    print(f"speech model: {model} (run folder {args.run}; resume by running the same command)")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ..speech.evaluate import evaluate

    data = input_path(args.data, "--data")
    limits.finite_positive(args.min_seconds, "--min-seconds", allow_zero=True)
    clips = limits.whole_number(args.clips, "--clips")
    sheets = limits.whole_number(args.sheets, "--sheets")
    if clips < 0 or sheets < 0:
        from ..errors import InputError
        raise InputError("--clips and --sheets must be >= 0")
    if args.model is not None:
        from ..speech.model_io import load_speech_model
        load_speech_model(args.model)  # a bad folder fails before any clip is tracked
    report = evaluate(data, Path(args.out), model_path=args.model, min_seconds=args.min_seconds,
                      sheets=sheets, clips=clips, progress=not args.no_progress)
    print(report.summary())
    return 0
