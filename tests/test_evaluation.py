"""Evaluation protocol (talking_heads.evaluation): splits, baseline, and a real `talking-heads evaluate` run on two
preprocessed test clips with a tiny model, whose report files must be written and parse."""

from __future__ import annotations

import json

import numpy as np
import pytest

from talking_heads.evaluation import NotEnoughFrames, nearest_shot, normalise_landmarks, select_videos, split_frames

CLIPS = ("pcavs_Audio_Source_00015.mp4", "pcavs_Audio_Source_00373.mp4")  # two people, 224 px


@pytest.fixture(scope="module")
def tiny_model_and_data(shared_data, tiny_model_dir, tmp_path_factory):
    """The tiny model directory (conftest) and two test clips preprocessed at 64 px, 16 frames each."""
    from talking_heads.data.preprocess import preprocess

    root = tmp_path_factory.mktemp("evaluation")
    videos = root / "videos"
    videos.mkdir()
    for name in CLIPS:
        (videos / name).symlink_to(shared_data / "videos" / "test" / name)
    report = preprocess(videos, root / "test", size=64, max_frames=16, progress=False)
    assert report.counts["ok"] == 2, report.records
    return tiny_model_dir, root / "test"


@pytest.fixture
def one_thread():
    """Tiny networks run ~10x faster on one thread than on two on this shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("n", [5, 9, 40, 100])
@pytest.mark.parametrize("seed", [0, 1])
def test_few_shot_and_hold_out_frames_never_overlap(n, seed):
    shots = (1, 4, 4, 2)
    try:
        split = split_frames(n, shots, holdout=32, seed=seed, key=f"clip{n}")
    except NotEnoughFrames:
        assert n <= max(shots)
        return
    hold = set(split.holdout.tolist())
    assert len(hold) == len(split.holdout) == min(32, n - max(shots))
    assert all(0 <= i < n for i in hold)
    for t in shots:
        s = split.shots(t)
        assert len(set(s.tolist())) == t and not hold & set(s.tolist())
        assert set(s.tolist()) <= set(split.shots(max(shots)).tolist())  # nested
    again = split_frames(n, shots, holdout=32, seed=seed, key=f"clip{n}")
    np.testing.assert_array_equal(again.draw, split.draw)  # deterministic
    np.testing.assert_array_equal(again.holdout, split.holdout)


def test_too_short_clip_is_refused():
    with pytest.raises(NotEnoughFrames):
        split_frames(8, (1, 8), holdout=4, seed=0, key="short")


def test_select_videos_balances_identities_in_clip_order():
    ids = ["mead", "mead", "mead", "amy", "lp", "lp"]
    assert select_videos(ids) == [0, 1, 2, 3, 4, 5]
    assert select_videos(ids, per_identity=1) == [0, 3, 4]
    assert select_videos(ids, per_identity=2) == [0, 1, 3, 4, 5]
    assert select_videos(ids, per_identity=1, videos=2) == [0, 3]
    assert select_videos(ids, videos=4) == [0, 1, 2, 3]


def test_nearest_shot_ignores_translation_and_scale():
    rng = np.random.default_rng(0)
    shots = rng.uniform(10, 50, size=(5, 68, 2))
    targets = shots[[3, 0, 4]] * 1.7 + np.array([12.0, -5.0]) + rng.normal(0, 0.05, size=(3, 68, 2))
    np.testing.assert_array_equal(nearest_shot(shots, targets), [3, 0, 4])
    norm = normalise_landmarks(targets)
    np.testing.assert_allclose(norm.mean(-2), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.sqrt((norm ** 2).sum(-1).mean(-1)), 1.0)


def test_evaluate_command_writes_a_report_that_parses(tiny_model_and_data, tmp_path, capsys, one_thread):
    from PIL import Image

    from talking_heads.cli import main

    model, data = tiny_model_and_data
    out = tmp_path / "report"
    code = main(["evaluate", "--model", str(model), "--data", str(data), "--out", str(out), "--shots", "1", "2",
                 "--holdout", "2", "--videos", "2", "--epochs", "1", "--cross", "--set", "eval.cross_frames=2",
                 "--metrics", "ssim", "psnr", "l1", "csim", "landmark_error", "fid", "--device", "cpu",
                 "--no-progress"])
    assert code == 0
    assert "report:" in capsys.readouterr().out

    records = [json.loads(line) for line in (out / "values.jsonl").read_text().splitlines()]
    by_kind: dict[str, list] = {}
    for r in records:
        by_kind.setdefault(r["record"], []).append(r)
    run = by_kind["run"][0]
    assert run["shots"] == [1, 2] and run["holdout_requested"] == 2 and run["ft_epochs"] == 1
    assert run["device"] == "cpu" and run["ft_content_loss"] == "offline" and len(run["videos"]) == 2
    for clip, used in run["frames"].items():  # the sets actually used never overlap
        hold = set(used["holdout"])
        assert len(hold) == 2
        for t, shots in used["shots"].items():
            assert len(shots) == int(t) and not hold & set(shots)

    table = {(r["T"], r["method"], r["metric"]): r for r in by_kind["table"]}
    assert {m for _, m, _ in table} == {"ff", "ft", "nearest"}
    for t in (1, 2):
        fid = table[(t, "ft", "fid")]
        assert fid["available"] is False and fid["value"] is None and "--fid-weights" in fid["reason"]
        assert 0 < table[(t, "nearest", "ssim")]["value"] <= 1
        assert table[(t, "ff", "ssim")]["n"] == 4  # 2 videos x 2 hold-out frames
    assert len(by_kind["timing"]) == 2 * 2 * 2  # videos x T x variants
    assert all(r["learn_s"] > 0 and r["render_ms_per_frame"] > 0 for r in by_kind["timing"])
    video_records = [r for r in by_kind["video"] if r["metric"] == "ssim"]
    assert len(video_records) == 2 * 2 * 3 and all(len(r["values"]) == 2 for r in video_records)
    assert {(r["T"], r["variant"], r["adapt"]) for r in by_kind["cross"]} == {  # every T: T = 1 is "one photo"
        (t, v, a) for t in (1, 2) for v in ("ff", "ft") for a in (False, True)}
    assert all(r["source_identity"] != r["driver_identity"] for r in by_kind["cross"])
    assert len(by_kind["paper_table1"]) == 15

    md = (out / "report.md").read_text(encoding="utf-8")
    for text in ("Table 1", "Different dataset and model size", "not available", "Nearest shot (2)",
                 "| Ours-FT (1) |", "46.1", "Cross-identity", "| Ours-FT (1) | on |", "Timing", "ms per frame", "ArcFace",
                 "grids/grid_T1.png"):
        assert text in md, text
    for t in (1, 2):
        image = Image.open(out / "grids" / f"grid_T{t}.png")
        assert image.width > 5 * 128 and image.height > 128  # 5 columns of >= 128 px tiles + labels
        assert any("synthetic" in str(v).lower() for v in image.info.values())  # provenance label


def test_evaluate_takes_an_ft_recipe_from_set(tiny_model_and_data, tmp_path, one_thread):
    """--set finetune.* / loss.* change the FT recipe of the evaluation (a step budget here), and the report
    records the recipe that ran; the model's own config is left as it was."""
    from talking_heads.cli import main

    model, data = tiny_model_and_data
    before = (model / "config.json").read_text()
    out = tmp_path / "report"
    code = main(["evaluate", "--model", str(model), "--data", str(data), "--out", str(out), "--shots", "1",
                 "--holdout", "2", "--videos", "1", "--variants", "ft", "--metrics", "ssim", "--device", "cpu",
                 "--set", "finetune.steps=3", "--set", "finetune.batch_size=2", "--set", "finetune.ema=0.5",
                 "--no-progress"])
    assert code == 0
    run = next(json.loads(line) for line in (out / "values.jsonl").read_text().splitlines()
               if json.loads(line)["record"] == "run")
    assert run["ft_recipe"] == "3 steps of 2 frames (EMA 0.5)" and run["ft_epochs"] is None
    assert run["ft_recipe_overrides"] == ["finetune.steps=3", "finetune.batch_size=2", "finetune.ema=0.5"]
    assert "3 steps of 2 frames" in (out / "report.md").read_text(encoding="utf-8")
    assert (model / "config.json").read_text() == before
    assert main(["evaluate", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "r2"),
                 "--set", "finetune.no_such_field=1", "--no-progress"]) == 2


def test_evaluate_refuses_bad_inputs(tiny_model_and_data, tmp_path, capsys):
    from talking_heads.cli import main

    model, data = tiny_model_and_data
    base = ["evaluate", "--out", str(tmp_path / "r"), "--no-progress"]
    assert main([*base, "--model", str(tmp_path), "--data", str(data)]) == 2
    assert main([*base, "--model", str(model), "--data", str(tmp_path / "none")]) == 2
    assert main([*base, "--model", str(model), "--data", str(data), "--set", "train.steps=1"]) == 2
    assert main([*base, "--model", str(model), "--data", str(data), "--metrics", "arcface"]) == 2
    assert "error" in capsys.readouterr().err


def test_reports_record_project_paths_relative(tmp_path, monkeypatch):
    """Paths inside the working directory (the project) are written relative to it, never as this machine's
    absolute path; others stay as given."""
    from talking_heads.evaluation import portable_path

    (tmp_path / "runs" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert portable_path(tmp_path / "runs" / "data") == "runs/data"
    assert portable_path("runs/data") == "runs/data"
    assert portable_path("/elsewhere/model") == "/elsewhere/model"
