"""`talking-heads export-model`: the release copy of a trained model (what the shipped sample model is), run on a
small real model directory: fp16 files that load back into the same networks, the run's meta kept, one-line
refusals (exit 2) for bad input, and an existing release replaced in place."""

from __future__ import annotations

import json

import pytest
import torch

from talking_heads import checkpoint
from talking_heads.cli import main
from talking_heads.config import preset
from talking_heads.models import build_networks
from talking_heads.pipeline import TalkingHeadPipeline


@pytest.fixture
def model_dir(tmp_path):
    """RUN_DIR/model of a tiny meta-learned model (random weights), as `talking-heads train` writes it."""
    cfg = preset("tiny")
    torch.manual_seed(0)
    nets = build_networks(cfg, num_videos=3)
    return checkpoint.save_model_dir(tmp_path / "run" / "model", cfg, nets, num_videos=3, content_loss="offline",
                                     step=7)


def _states(networks) -> dict[str, dict[str, torch.Tensor]]:
    return {name: getattr(networks, name).state_dict() for name in checkpoint.NETWORK_NAMES}


def test_export_model_writes_fp16_that_loads_back(model_dir, tmp_path, capsys):
    out = tmp_path / "release"
    assert main(["export-model", str(model_dir), str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    for name in checkpoint.NETWORK_NAMES:
        header = checkpoint.read_safetensors_header(out / f"{name}.safetensors")
        dtypes = {dtype for dtype, _ in header.values()}
        assert "F16" in dtypes and "F32" not in dtypes, (name, dtypes)
    cfg, meta, nets = checkpoint.load_model_dir(out)
    src_cfg, src_meta, src_nets = checkpoint.load_model_dir(model_dir)
    assert cfg == src_cfg
    assert meta["dtype"] == "float16" and meta["exported_from"] == str(model_dir)
    assert meta["step"] == 7 and meta["num_videos"] == 3 and meta["content_loss"] == "offline"
    loaded, source = _states(nets), _states(src_nets)
    for name in checkpoint.NETWORK_NAMES:
        for key, value in source[name].items():
            got = loaded[name][key]
            assert got.dtype == value.dtype, (name, key)  # back in the networks' fp32
            expected = value.half().to(value.dtype) if value.is_floating_point() else value
            assert torch.equal(got, expected), (name, key)
    # the release loads where the shipped model does
    assert TalkingHeadPipeline.from_pretrained(out).image_size == preset("tiny").model.image_size


def test_export_model_replaces_an_earlier_release(model_dir, tmp_path):
    out = tmp_path / "release"
    assert main(["export-model", str(model_dir), str(out), "--dtype", "float32"]) == 0
    assert json.loads((out / "config.json").read_text())["meta"]["dtype"] == "float32"
    assert main(["export-model", str(model_dir), str(out), "--dtype", "bfloat16"]) == 0
    assert json.loads((out / "config.json").read_text())["meta"]["dtype"] == "bfloat16"
    assert {p.name for p in out.iterdir()} == {"config.json"} | {f"{n}.safetensors" for n in checkpoint.NETWORK_NAMES}


@pytest.mark.parametrize("case", ["missing", "not-a-model", "busy-folder", "same", "inside", "dtype"])
def test_export_model_refuses_bad_input_in_one_line(model_dir, tmp_path, capsys, case):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    src, dst, extra = str(model_dir), str(tmp_path / "out"), []
    if case == "missing":
        src = str(tmp_path / "nope")
    elif case == "not-a-model":
        src = str(busy)
    elif case == "busy-folder":
        dst = str(busy)
    elif case == "same":
        dst = src
    elif case == "inside":
        dst = str(model_dir / "release")
    else:
        extra = ["--dtype", "int8"]
    assert main(["export-model", src, dst, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("talking-heads export-model: error:") and "\n" not in err, err
    assert (busy / "keep.txt").read_text() == "mine"
    assert checkpoint.is_model_dir(model_dir) and not (tmp_path / "out").exists()


def test_export_model_sets_rendering_settings_only(model_dir, tmp_path, capsys):
    out = tmp_path / "release"
    assert main(["export-model", str(model_dir), str(out), "--set", "inference.max_yaw=20",
                 "--set", "inference.output_size=0"]) == 0
    cfg, _, _ = checkpoint.load_model_dir(out)
    assert cfg.inference.max_yaw == 20 and cfg.inference.output_size == 0
    assert cfg.model == checkpoint.load_model_dir(model_dir)[0].model
    capsys.readouterr()
    assert main(["export-model", str(model_dir), str(tmp_path / "r2"), "--set", "model.image_size=64"]) == 2
    err = capsys.readouterr().err
    assert "only inference.* settings" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r2").exists()
