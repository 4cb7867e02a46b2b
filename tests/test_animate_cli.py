"""The real commands (`talking-heads avatar create`, `animate`, `verify`) on the tiny preset with real photos and
clips: what they write, what they print, their exit codes, and that bad input leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from talking_heads.cli import main

PHOTO = "photos/avatarify_jobs.jpg"
TALKER = "videos/test/lp_driving_d2_old.mp4"  # 16 frames, 30 fps, aac audio
SHORT = "videos/test/lp_driving_d1_old.mp4"
REAL = "videos/test/lp_driving_d1_old.mp4"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _stream_info(path: Path):
    import av

    with av.open(str(path)) as c:
        return c.streams.video[0].frames, float(c.streams.video[0].average_rate), [s.type for s in c.streams]


def test_create_animate_verify(shared_data, tiny_model_dir, tmp_path, capsys):
    model = ["--model", tiny_model_dir, "--no-progress"]
    code, out, _ = run(capsys, "avatar", "create", shared_data / PHOTO, "-o", tmp_path / "jobs", *model)
    assert code == 0 and "avatar:" in out and "FF, T=1 from avatarify_jobs.jpg" in out
    assert (tmp_path / "jobs" / "config.json").is_file()
    video = tmp_path / "talk.mp4"
    code, out, _ = run(capsys, "animate", "--avatar", tmp_path / "jobs", "--motion", "talk", "--duration", "0.4",
                       "-o", video, *model)
    assert code == 0 and f"video: {video} (10 frames at 25 fps, no audio" in out and "contact sheet:" in out
    assert _stream_info(video) == (10, 25.0, ["video"]) and video.with_suffix(".contact.png").is_file()
    code, out, _ = run(capsys, "verify", video, video.with_suffix(".contact.png"))
    assert code == 0 and out.count("SYNTHETIC") == 2
    code, out, _ = run(capsys, "verify", video, shared_data / REAL)
    assert code == 1 and "no synthetic marker found" in out  # real footage: a true negative
    code, out, err = run(capsys, "verify", tmp_path / "missing.mp4")
    assert code == 3 and "no such file" in out and "COULD NOT CHECK" in out  # 3: could not check (provenance.py)


def test_animate_from_photos_with_a_driver_finetuned(shared_data, tiny_model_dir, tmp_path, capsys):
    video = tmp_path / "puppet.mp4"
    code, out, err = run(capsys, "animate", "--source", shared_data / PHOTO, "--driver", shared_data / TALKER,
                         "--finetune", "--epochs", "1", "--side-by-side", "--smooth", "--reference-frame", "2",
                         "-o", video, "--model", tiny_model_dir)
    assert code == 0, err
    assert "16 frames at 30 fps, with the driver's audio; avatar FT, 1 epochs" in out
    assert "fine-tuning" in err and "rendering" in err  # progress bars
    assert _stream_info(video) == (16, 30.0, ["video", "audio"])


def test_several_faces_use_the_largest_with_a_warning(shared_data, tiny_model_dir, tmp_path, capsys):
    import cv2
    from PIL import Image

    from talking_heads.data import read_image

    big = read_image(shared_data / PHOTO)
    small = cv2.resize(read_image(shared_data / "photos/sadtalker_happy.png"), (200, 200))
    canvas = np.full((big.shape[0], big.shape[1] + 220, 3), 128, np.uint8)
    canvas[:, : big.shape[1]] = big
    canvas[20:220, big.shape[1] + 10: big.shape[1] + 210] = small
    Image.fromarray(canvas).save(tmp_path / "two.png")
    code, out, err = run(capsys, "avatar", "create", tmp_path / "two.png", "-o", tmp_path / "av", "--model",
                         tiny_model_dir)
    assert code == 0 and "2 faces found in two.png; using the largest" in err


@pytest.fixture(scope="module")
def bad(shared_data, tiny_model_dir, tmp_path_factory):
    """Bad inputs made in a temporary folder from the real footage."""
    from PIL import Image

    from talking_heads.checkpoint import save_model_dir
    from talking_heads.config import apply_overrides, preset
    from talking_heads.data import read_frames
    from talking_heads.models import build_networks

    root = tmp_path_factory.mktemp("bad")
    wide = next(read_frames(shared_data / "videos/test/lp_source_s18.mp4", [0]))[1]
    Image.fromarray(wide[440:696, 0:256]).save(root / "noface.png")
    (root / "notes.jpg").write_text("not a photo")
    (root / "broken.mp4").write_bytes((shared_data / TALKER).read_bytes()[:3000])
    no_attention = [f"model.{k}_attention_at=[]" for k in ("embedder", "generator_down", "generator_up")]
    cfg = apply_overrides(preset("tiny"), ["model.image_size=256", *no_attention])  # detection only: never run
    save_model_dir(root / "model256", cfg, build_networks(cfg, 2), num_videos=2, content_loss="offline", step=0)
    return root


BAD_CASES = {  # name -> (arguments after the model, words in the message)
    "no face": (["avatar", "create", "{bad}/noface.png", "-o", "{out}"], "no face found in noface.png"),
    "corrupt photo": (["avatar", "create", "{bad}/notes.jpg", "-o", "{out}"], "notes.jpg: not a readable image"),
    "missing photo": (["avatar", "create", "{bad}/gone.jpg", "-o", "{out}"], "gone.jpg: no such file"),
    "face too small": (["avatar", "create", "{data}/photos/lia_ted_subject2.png", "-o", "{out}", "--model",
                        "{bad}/model256"], "only 61 px across"),
    "T too large": (["animate", "--source", "{data}/" + SHORT, "--frames", "20", "-o", "{out}.mp4"],
                    "has 16 frames: cannot pick T=20"),
    "corrupt driver": (["animate", "--source", "{data}/" + PHOTO, "--driver", "{bad}/broken.mp4", "-o", "{out}.mp4"],
                       "not a readable video"),
    "no face in driver": (["animate", "--source", "{data}/" + PHOTO, "--driver", "{bad}/noface.png", "-o",
                           "{out}.mp4"], "no face found in any of its 1 frames"),
    "reference frame": (["animate", "--source", "{data}/" + PHOTO, "--driver", "{data}/" + SHORT,
                         "--reference-frame", "16", "-o", "{out}.mp4"], "reference frame 16 is outside"),
    "model as avatar": (["animate", "--avatar", "{model}", "-o", "{out}.mp4"], "not an avatar"),
    "not mp4": (["animate", "--source", "{data}/" + PHOTO, "-o", "{out}.gif"], "must be an .mp4"),
    "epochs without finetune": (["avatar", "create", "{data}/" + PHOTO, "--epochs", "3", "-o", "{out}"],
                                "add --finetune"),
    "no model": (["animate", "--source", "{data}/" + PHOTO, "-o", "{out}.mp4", "--model", "{bad}"],
                 "not a talking-heads model directory"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_exits_2_with_a_message_and_writes_nothing(case, bad, shared_data, tiny_model_dir, tmp_path, capsys):
    args, words = BAD_CASES[case]
    fill = {"bad": bad, "data": shared_data, "out": tmp_path / "out", "model": tiny_model_dir}
    argv = [a.format(**fill) for a in args]
    if "--model" not in argv:
        argv += ["--model", str(tiny_model_dir)]
    code, out, err = run(capsys, *argv, "--no-progress")
    assert code == 2 and words in err, err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no partial output, no temporary file


def test_incompatible_avatar_directory(shared_data, tiny_model_dir, tmp_path, capsys):
    import torch

    from talking_heads.checkpoint import save_model_dir
    from talking_heads.config import preset
    from talking_heads.models import build_networks

    code, _, _ = run(capsys, "avatar", "create", shared_data / PHOTO, "-o", tmp_path / "av", "--model", tiny_model_dir)
    assert code == 0
    torch.manual_seed(5)
    cfg = preset("tiny")
    save_model_dir(tmp_path / "other", cfg, build_networks(cfg, 2), num_videos=2, content_loss="offline", step=0)
    code, _, err = run(capsys, "animate", "--avatar", tmp_path / "av", "-o", tmp_path / "x.mp4", "--model",
                       tmp_path / "other")
    assert code == 2 and "made with other model weights" in err and not (tmp_path / "x.mp4").exists()


def test_output_equal_to_the_driver_is_refused_and_the_driver_kept(shared_data, tmp_path, capsys):
    """Issue 15: `animate --driver d.mp4 -o d.mp4` used to replace the driver with the result."""
    import shutil

    from talking_heads.cli import main

    driver = tmp_path / "d.mp4"
    shutil.copy(shared_data / "videos" / "test" / "lp_driving_d1_old.mp4", driver)
    before = driver.read_bytes()
    code = main(["animate", "--source", str(shared_data / "photos" / "lp_source_s9.jpg"), "--driver", str(driver),
                 "-o", str(driver), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "destroy the input" in err and "Traceback" not in err
    assert driver.read_bytes() == before
    folder = tmp_path / "out.mp4"
    folder.mkdir()
    assert main(["animate", "--source", str(shared_data / "photos" / "lp_source_s9.jpg"), "--motion", "nod",
                 "-o", str(folder), "--no-progress"]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_unknown_device_is_one_line(shared_data, capsys, tmp_path):
    from talking_heads.cli import main

    assert main(["animate", "--source", str(shared_data / "photos" / "lp_source_s9.jpg"), "--motion", "nod",
                 "-o", str(tmp_path / "x.mp4"), "--device", "tpu"]) == 2
    err = capsys.readouterr().err
    assert "--device tpu" in err and "Traceback" not in err and not (tmp_path / "x.mp4").exists()
