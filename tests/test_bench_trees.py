"""scripts/bench_trees.py (two source trees timed against each other): its table and its argument checks. The
workers themselves run the bench package's animate and train-step measurements, tested in test_train_speed."""

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def bt():
    return load_script("bench_trees")


def test_table_gives_medians_and_ratios(bt):
    runs = {"before": [{"animate_fps": 20.0, "live_ms": 40.0, "step_s": 1.0},
                       {"animate_fps": 30.0, "live_ms": 30.0, "step_s": 3.0},
                       {"animate_fps": 25.0, "live_ms": 50.0, "step_s": 2.0}],
            "after": [{"animate_fps": 25.0, "live_ms": 20.0, "step_s": 1.0}] * 3}
    rows = {line.split(" | ")[0].lstrip("| "): line for line in bt.table(runs).splitlines()[2:]}
    assert rows["animate, frames/s (higher is better)"].endswith("| 25 | 25 | 1.000 |")
    assert rows["live stage, ms per frame (median)"].endswith("| 40 | 20 | 0.500 |")
    assert rows["sample meta-learning step, s (offline + dlib face terms)"].endswith("| 2 | 1 | 0.500 |")


def test_a_tree_without_the_package_is_refused(bt, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        bt.main(["--before", str(tmp_path), "--after", str(tmp_path)])
    assert err.value.code == 2
    assert "holds no src/talking_heads" in capsys.readouterr().err


def test_selfreenact_check_on_a_real_test_clip(tmp_path, shared_data):
    """scripts/selfreenact_check.py end to end on one test-split person, two driving frames: the sheet (source +
    three real | rendered pairs), the frames and finite metrics against the real frames."""
    import json

    import numpy as np
    from PIL import Image

    check = load_script("selfreenact_check")
    assert check.main([str(tmp_path), "--clips", "1", "--frames", "2"]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 < m["mean"]["ssim"] <= 1 and m["mean"]["psnr"] > 10 and 0 < m["mean"]["landmark_error"] < 0.2
    frames = np.load(tmp_path / "frames.npz")
    (clip,) = frames.files
    assert frames[clip].shape[0] == 2 and frames[clip].dtype == np.uint8
    sheet = np.asarray(Image.open(tmp_path / "sheet.png"))
    assert sheet.shape[1] > 6 * frames[clip].shape[2]  # 7 tiles across
