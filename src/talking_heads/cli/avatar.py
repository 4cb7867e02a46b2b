"""`talking-heads avatar create`, `talking-heads animate` and `talking-heads verify`. Parsing only: the work is
`talking_heads.pipeline.TalkingHeadPipeline` and `talking_heads.provenance.verify`; values and paths are
checked by the library's own checks (`limits`, `paths`, `driver`), called before any slow work. Modules that
load torch or PyAV are imported inside the `run_*` functions, so that `talking-heads --help` stays fast."""

from __future__ import annotations

import argparse
import tempfile

from .. import limits
from ..errors import InputError
from ..landmarks.motions import MOTIONS
from ..paths import input_path, output_dir, output_file
from . import UserError
from .common import check_eye_contact, model_args, onnx_arg, pipeline_from_args, print_warnings, use_onnx_file

VERIFY_EPILOG = ("Exit status: 0 when every file is labelled (marker or watermark found); 1 when at least one file "
                 "was read and carries neither; 3 when none is unlabelled but at least one could not be checked "
                 "(unreadable, not media, a FIFO, a decompression bomb, or under 256 x 256 px without a marker); "
                 "2 for a wrong command line. 'Not labelled' does not prove a file is real: resizing, cropping, "
                 "flipping or low-quality re-encoding remove the labels (see talking_heads/provenance.py).")


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("avatar", help="create a personalised avatar from photos or a video",
                       description="Few-shot learning of a new person (paper sections 1 and 6).")
    actions = a.add_subparsers(dest="avatar_command", metavar="ACTION", required=True)
    c = actions.add_parser("create", help="make an avatar directory from T photos or frames",
                           description="FF (default): e_new = mean E over the T frames, psi' = P e_new, instant. "
                                       "--finetune: FT, the paper's fine-tuning of G and D' on the T frames.")
    c.add_argument("sources", nargs="+", metavar="PHOTO", help="photos of one person, or one video or folder of frames")
    c.add_argument("-o", "--out", required=True, metavar="AVATAR", help="avatar directory to write")
    c.add_argument("--with-discriminator", action="store_true", help="FT: also store D' (to fine-tune further)")
    _few_shot_args(c)
    _common_args(c)
    c.set_defaults(func=run_create)

    m = sub.add_parser("animate", help="drive an avatar with a video, landmarks, a built-in motion or speech",
                       description="Puppeteering (paper section 1 stage 3) with landmark adaptation to the avatar's "
                                   "face. Writes OUT.mp4 (H.264, driver's frame rate and audio) and OUT.contact.png. "
                                   "Every output is labelled synthetic (metadata and invisible watermark).")
    who = m.add_mutually_exclusive_group(required=True)
    who.add_argument("--avatar", metavar="DIR", help="an avatar directory (talking-heads avatar create)")
    who.add_argument("--source", nargs="+", metavar="PHOTO", help="photos (or one video) to make the avatar from now")
    drv = m.add_mutually_exclusive_group()
    drv.add_argument("--driver", metavar="VIDEO|FRAMES_DIR|LANDMARKS.npy",
                     help="driving video, folder of frames, or .npy landmarks (frames, 68, 2)")
    drv.add_argument("--motion", choices=list(MOTIONS), default=None,
                     help="built-in motion (default: talk): " + "; ".join(f"{k}: {v[1]}" for k, v in MOTIONS.items()))
    _speech_args(m)
    m.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="length of a built-in motion (default inference.motion_seconds)")
    m.add_argument("-o", "--out", required=True, metavar="OUT.mp4", help="video to write")
    m.add_argument("--no-adapt", action="store_true",
                   help="use the driver's landmarks as they are (the paper's behaviour; shape mismatch)")
    m.add_argument("--reference-frame", type=int, default=None, metavar="N",
                   help="driver frame whose expression and pose count as neutral for adaptation (default: the "
                        "most neutral one: mouth closed, eyes open, frontal)")
    m.add_argument("--smooth", action="store_true", help="One Euro smoothing of the driver's landmarks")
    m.add_argument("--eye-contact", action="store_true",
                   help="turn the driver's sustained gaze towards the camera, keeping blinks and quick eye "
                        "movements (a look at a screen below the camera becomes a look at the viewer); for models "
                        "that render gaze")
    m.add_argument("--side-by-side", action="store_true", help="driver | result in each frame")
    m.add_argument("--paste-back", action="store_true",
                   help="paste the result into the source photo's full frame, through a head mask (only the "
                        "person moves)")
    m.add_argument("--square-paste", action="store_true",
                   help="with --paste-back: blend the whole crop square instead of the head mask")
    m.add_argument("--no-contact-sheet", action="store_true", help="do not write OUT.contact.png")
    _few_shot_args(m)
    _common_args(m)
    onnx_arg(m)
    m.set_defaults(func=run_animate)

    v = sub.add_parser("verify", help="check files for the synthetic marker and watermark",
                       description="Reports per file whether it carries talking-heads' synthetic metadata marker "
                                   "and invisible watermark.", epilog=VERIFY_EPILOG)
    v.add_argument("files", nargs="+", metavar="FILE", help="videos or images")
    v.set_defaults(func=run_verify)


def _speech_args(m: argparse.ArgumentParser) -> None:
    speech = m.add_mutually_exclusive_group()
    speech.add_argument("--audio", metavar="SOUND", default=None,
                        help="speech that moves the mouth (wav, mp3, m4a, or a video's sound track); the head and "
                             "blinks come from --driver / --motion (default: the idle motion); the video carries "
                             "this sound")
    speech.add_argument("--say", metavar="TEXT", default=None,
                        help="like --audio, with TEXT spoken by espeak-ng (needs espeak-ng installed)")
    m.add_argument("--speech-model", metavar="DIR", default=None,
                   help="speech model folder for --audio / --say (default: the shipped one)")


def _few_shot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, default=None, metavar="T",
                   help="T frames: spread over a source video (default inference.video_frames), or T of the photos")
    p.add_argument("--finetune", action="store_true", help="FT: fine-tune on the T frames (paper section 6)")
    p.add_argument("--epochs", type=int, default=None, metavar="N", help="FT epochs (default finetune.epochs = 40)")


def _common_args(p: argparse.ArgumentParser) -> None:
    model_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def check_few_shot(args: argparse.Namespace) -> None:
    """--frames, --finetune and --epochs (and each photo of --source / create's sources) before any work."""
    limits.check_shots(args.frames, "--frames")
    if args.epochs is not None and not args.finetune:
        raise UserError("--epochs applies to fine-tuning: add --finetune")
    limits.check_epochs(args.epochs, "--epochs")
    for source in getattr(args, "sources", None) or getattr(args, "source", None) or []:
        input_path(source, "source")


def _create(pipe, args: argparse.Namespace, sources):
    return pipe.create_avatar(sources, frames=args.frames, finetune=args.finetune, epochs=args.epochs,
                              progress=not args.no_progress)


def _describe(avatar) -> str:
    kind = f"FT, {avatar.epochs} epochs" if avatar.kind == "ft" else "FF"
    return f"{kind}, T={avatar.num_frames} from {', '.join(avatar.sources) or 'tensors'}"


def run_create(args: argparse.Namespace) -> int:
    check_few_shot(args)
    output_dir(args.out, "-o", inputs=args.sources)
    pipe = pipeline_from_args(args)
    avatar = _create(pipe, args, args.sources)
    path = avatar.save(args.out, with_discriminator=args.with_discriminator)
    size = sum(f.stat().st_size for f in path.iterdir())
    print_warnings(avatar.warnings)
    print(f"avatar: {path} ({_describe(avatar)}; {size / 1024:.0f} kB)")
    return 0


def run_animate(args: argparse.Namespace) -> int:
    from ..avatar import Avatar
    from ..driver import check_reference_frame, check_reference_index

    if args.avatar and (args.frames is not None or args.finetune or args.epochs is not None):
        raise UserError("--frames, --finetune and --epochs apply to --source (an avatar is already made)")
    check_few_shot(args)
    output_file(args.out, "-o", suffixes=[".mp4"], inputs=[args.driver, args.audio, *(args.source or [])])
    if args.duration is not None and args.driver:
        raise UserError("--duration applies to built-in motions (--motion), not to --driver")
    speaking = args.audio is not None or args.say is not None
    if args.duration is not None and speaking:
        raise UserError("--duration applies to built-in motions; with --audio or --say the sound sets the length")
    if args.speech_model is not None and not speaking:
        raise UserError("--speech-model applies to --audio and --say")
    if args.audio is not None:
        from ..speech.audio import check_audio_path
        check_audio_path(args.audio)
    limits.check_seconds(args.duration, "--duration")
    if args.reference_frame is not None:
        check_reference_index(args.reference_frame, "--reference-frame")
    pipe = pipeline_from_args(args)
    check_eye_contact(pipe, args)
    with tempfile.TemporaryDirectory(prefix="talking-heads-say-") as scratch:
        # the driver first: a bad driver (or sound) fails before minutes of fine-tuning
        if speaking:
            from ..speech.drive import say
            sound = say(args.say, scratch) if args.say is not None else args.audio
            seq = pipe.speech_driver(sound, head=args.driver or args.motion, smooth=args.smooth,
                                     speech_model=args.speech_model)
        else:
            seq = pipe.load_driver(args.driver or args.motion or "talk", smooth=args.smooth, duration=args.duration)
        if args.reference_frame is not None:
            check_reference_frame(seq, args.reference_frame)
        avatar = Avatar.load(args.avatar, pipe) if args.avatar else _create(pipe, args, args.source)
        use_onnx_file(pipe, avatar, args)
        result = pipe.animate(avatar, seq, args.out, adapt=not args.no_adapt, reference_frame=args.reference_frame,
                              side_by_side=args.side_by_side, paste_back=args.paste_back, eye_contact=args.eye_contact,
                              paste_mask=not args.square_paste, contact_sheet=not args.no_contact_sheet,
                              progress=not args.no_progress)
    print_warnings(avatar.warnings, result.warnings)
    _print_animation(result, seq, avatar, adapted=not args.no_adapt)
    return 0


def _print_animation(result, seq, avatar, adapted: bool) -> None:
    if seq.kind == "speech":
        audio = "mouth driven by the speech, with its sound"
    else:
        audio = "with the driver's audio" if seq.audio is not None else "no audio"
    print(f"video: {result.video} ({result.frames} frames at {result.fps:g} fps, {audio}; avatar {_describe(avatar)}; "
          f"landmarks {'adapted to the avatar' if adapted else 'as driven'})")
    if result.lost_frames:
        print(f"driver frames without a face (held the last good landmarks): {result.lost_frames}")
    if result.held_frames:
        print(f"driver frames with a face too poorly seen to trust (profile, occluded; held the last good "
              f"landmarks): {result.held_frames}")
    if result.background_change is not None:
        print(f"background outside the person: {result.background_change:.2f}/255 mean change per frame")
    if result.contact_sheet:
        print(f"contact sheet: {result.contact_sheet}")


def run_verify(args: argparse.Namespace) -> int:
    """One line per file; every file is checked whatever happened to the one before (exit codes: epilog)."""
    from ..provenance import verify, verify_exit_code

    statuses = []
    for name in args.files:
        try:
            report = verify(name)
        except InputError as err:
            print(f"{name}: COULD NOT CHECK: {err}")
            statuses.append("could not check")
            continue
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the batch
            print(f"{name}: COULD NOT CHECK: internal error {type(err).__name__}: {err} (run with -v)")
            statuses.append("could not check")
            continue
        print(report)
        statuses.append(report.status)
    return verify_exit_code(statuses)
