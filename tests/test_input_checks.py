"""Input checks defined once in the library and called early by the command line and the web handlers: a
refusal names what the caller gave (a command's flag as typed, a library caller's own argument name) and
comes before any slow work (loading the pipeline, tracking a driver, reading a data folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from talking_heads.cli import main
from talking_heads.driver import DriverError, DriverSequence, check_reference_frame, check_reference_index
from talking_heads.errors import InputError


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --- the reference frame: its sign before anything is loaded, its upper bound once the driver is -----------

def test_reference_index_is_a_whole_number_from_zero():
    assert check_reference_index(0) == 0 and check_reference_index("3") == 3 and check_reference_index(4.0) == 4
    with pytest.raises(DriverError, match=r"^reference frame -1: give a frame number >= 0$"):
        check_reference_index(-1)
    with pytest.raises(InputError, match="--reference-frame must be a whole number, got 2.5"):
        check_reference_index(2.5, "--reference-frame")


def test_reference_frame_is_one_of_the_drivers_frames():
    points = np.zeros((16, 68, 2), np.float32)
    seq = DriverSequence(points, points.copy(), 32, 25.0, "motion", "nod")
    check_reference_frame(seq, 15)
    with pytest.raises(DriverError, match=r"reference frame 16 is outside the driver's 16 frames \(0\.\.15\)"):
        check_reference_frame(seq, 16)
    with pytest.raises(DriverError, match="reference frame -1: give a frame number >= 0"):
        check_reference_frame(seq, -1)


def test_animate_refuses_a_negative_reference_frame_before_loading_the_pipeline(tmp_path, capsys, monkeypatch):
    import talking_heads.cli.avatar as cli_avatar

    def never(args):
        raise AssertionError("the pipeline was loaded before --reference-frame was checked")

    monkeypatch.setattr(cli_avatar, "pipeline_from_args", never)
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"not read before the pipeline")
    code = main(["animate", "--source", str(photo), "--motion", "nod", "--reference-frame", "-1", "-o",
                 str(tmp_path / "o.mp4")])
    assert code == 2 and "--reference-frame -1: give a frame number >= 0" in _error(capsys)


def test_web_animate_refuses_a_negative_reference_frame_before_preparing_the_driver(tmp_path, monkeypatch):
    from talking_heads.web import handlers
    from talking_heads.web.settings import WebSettings

    def never(*args, **kwargs):
        raise AssertionError("the driver was prepared before the reference frame was checked")

    monkeypatch.setattr(handlers, "prepare_driver", never)
    job = handlers.Job(tmp_path / "temp", tmp_path / "results")
    for value, words in ((-1, "the reference frame -1: give a frame number >= 0"),
                         ("2.5", "the reference frame must be a whole number, got '2.5'")):
        with pytest.raises(handlers.USER_ERRORS, match=words):
            handlers.animate(None, object(), WebSettings(), job, motion="nod", reference_frame=value)


# --- the command line names its flags; the library names its arguments --------------------------------------

@pytest.mark.parametrize("flags, words", [
    (["--epochs", "-1"], "--epochs -1: must be >= 0"),
    (["--shots", "1", "0"], "--shots 0: must be >= 1"),
    (["--holdout", "0"], "--holdout 0 is out of range: give a value from 1 to 100000"),
    (["--epochs", "1000000"], "--limit epochs="),
    (["--videos", "0"], "--videos must be >= 1"),
])
def test_evaluate_names_the_flag_before_reading_model_or_data(flags, words, tmp_path, capsys):
    code = main(["evaluate", "--data", str(tmp_path / "gone"), "--out", str(tmp_path / "report"), *flags])
    err = _error(capsys)
    assert code == 2 and words in err and "eval." not in err, err


@pytest.mark.parametrize("steps, words", [("0", "--steps 0: must be >= 1 (give at least 1 step)"),
                                          ("20000000", "--limit steps=")])
def test_train_checks_steps_before_the_data_folder(steps, words, tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "gone"), "--out", str(tmp_path / "run"), "--preset", "tiny",
                 "--steps", steps])
    err = _error(capsys)
    assert code == 2 and words in err and "train.steps" not in err, err


def test_preprocess_checks_name_the_argument_or_the_flag(tmp_path, capsys):
    from talking_heads.data import preprocess as pp

    job = dict(size=5, max_frames=None, workers=1, shard_index=0, num_shards=1)
    with pytest.raises(InputError, match=r"^size 5: give a crop size from 16 to 4096 px$"):
        pp.check_job(**job)
    with pytest.raises(InputError, match=r"^--size 5: "):
        pp.check_job(**job, names={"size": "--size"})
    with pytest.raises(InputError, match=r"^workers 0: give 1 to"):
        pp.check_job(**{**job, "size": 64, "workers": 0})
    gone = tmp_path / "gone.csv"
    with pytest.raises(InputError, match=r"^manifest .*gone.csv: no such file"):
        pp.check_job(**{**job, "size": 64}, manifest=gone)
    with pytest.raises(InputError, match=r"^manifest .*gone.csv: no such file"):
        pp.discover(tmp_path, manifest=gone)
    assert main(["preprocess", str(tmp_path), str(tmp_path / "out"), "--manifest", str(gone)]) == 2
    assert "--manifest " in _error(capsys)


def test_export_model_names_its_arguments_or_the_commands(tmp_path, capsys):
    from talking_heads.release import export_model

    with pytest.raises(InputError, match=r"^dtype int8: choose one of float16, bfloat16, float32$"):
        export_model(tmp_path / "model", tmp_path / "out", "int8")
    assert main(["export-model", str(tmp_path / "model"), str(tmp_path / "out"), "--dtype", "int8"]) == 2
    assert "--dtype int8: choose one of" in _error(capsys)


# --- telepresence: the codec's argument checks, called by the command line early ---------------------------

def test_encoder_step_and_key_interval_are_checked_by_one_definition(capsys, tmp_path):
    from talking_heads.telepresence.basis import load_basis
    from talking_heads.telepresence.codec import LandmarkEncoder, check_key_interval, check_step

    assert check_step(45 / 64) == 45 and check_step(1 / 64) == 1 and check_step(255 / 64) == 255
    for step in (0.0, 0.5 / 64, 256 / 64, float("nan"), float("inf")):
        with pytest.raises(InputError, match="must be between 1/64 and 255/64 px"):
            check_step(step)
    with pytest.raises(ValueError, match=r"^step nan: must be between 1/64 and 255/64 px$"):  # still a ValueError
        LandmarkEncoder(load_basis(), fps=25, step=float("nan"))
    with pytest.raises(ValueError, match=r"^key_interval 0: must be between 1 and 255 frames$"):
        LandmarkEncoder(load_basis(), fps=25, key_interval=0)
    assert check_key_interval(255) == 255
    token = tmp_path / "token"
    assert main(["send", "--video", str(tmp_path / "v.mp4"), "--to", "127.0.0.1:9", "--token-file", str(token),
                 "--key-interval", "300"]) == 2
    assert "--key-interval 300: must be between 1 and 255 frames" in _error(capsys)
    assert not Path(token).exists()
