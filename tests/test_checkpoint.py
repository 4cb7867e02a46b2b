"""Model directories (config.json + safetensors) and the weights_only training state."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from talking_heads import checkpoint
from talking_heads.checkpoint import CheckpointError
from talking_heads.config import apply_overrides, preset


@pytest.fixture
def saved(tmp_path):
    from talking_heads.models import build_networks

    cfg = apply_overrides(preset("tiny"), ["train.steps=7"])
    torch.manual_seed(0)
    nets = build_networks(cfg, num_videos=3)
    path = checkpoint.save_model_dir(tmp_path / "model", cfg, nets, num_videos=3, content_loss="offline", step=5,
                                     extra_meta={"note": "test"})
    return cfg, nets, path


def _outputs(nets, cfg):
    g = torch.Generator().manual_seed(1)
    s = cfg.model.image_size
    x, y = torch.rand(2, 3, s, s, generator=g) * 2 - 1, torch.rand(2, 3, s, s, generator=g) * 2 - 1
    video = torch.tensor([0, 2])
    with torch.no_grad():
        for m in (nets.embedder, nets.generator, nets.discriminator):
            m.eval()
        e = nets.embedder(x, y)
        x_hat = nets.generator(y, nets.generator.adain_params(e))
        score, feats = nets.discriminator(x, y, video)
    return [e, x_hat, score, *feats]


def test_save_load_gives_identical_outputs(saved):
    cfg, nets, path = saved
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json", "discriminator.safetensors", "embedder.safetensors", "generator.safetensors"]
    cfg2, meta, nets2 = checkpoint.load_model_dir(path)
    assert cfg2 == cfg
    assert meta["stage"] == "meta" and meta["num_videos"] == 3 and meta["step"] == 5
    assert meta["content_loss"] == "offline" and meta["note"] == "test" and meta["torch"] == torch.__version__
    assert "created" in meta and meta["format"] == checkpoint.FORMAT
    for a, b in zip(_outputs(nets, cfg), _outputs(nets2, cfg2)):
        assert torch.equal(a, b)
    d = json.loads((path / "config.json").read_text())
    assert d["train"]["steps"] == 7 and d["preset"] == "tiny"  # Config.to_dict() plus "meta"


def test_saved_modules_are_unwrapped(tmp_path):
    from safetensors.torch import load_file

    m = torch.nn.Sequential(torch.nn.Linear(2, 3))
    path = checkpoint.save_dir(tmp_path / "d", preset("tiny"), {"net": torch.compile(m)}, stage="avatar")
    assert set(load_file(str(path / "net.safetensors"))) == {"0.weight", "0.bias"}


def test_tensors_and_extra_meta_for_avatars(tmp_path):
    cfg = preset("tiny")
    psi = torch.randn(1, 11)
    lin = torch.nn.Linear(4, 2)
    path = checkpoint.save_dir(tmp_path / "avatar", cfg, {"generator": lin, "person": {"psi": psi}},
                               stage="avatar", meta={"num_frames": 3})
    cfg2, meta = checkpoint.read_config(path)
    assert cfg2 == cfg and meta["stage"] == "avatar" and meta["files"] == {"generator": "module", "person": "tensors"}
    assert torch.equal(checkpoint.load_tensors(path, "person")["psi"], psi)
    lin2 = checkpoint.load_module(path, "generator", torch.nn.Linear(4, 2))
    assert torch.equal(lin2.weight, lin.weight)
    with pytest.raises(CheckpointError, match="meta-learned"):
        checkpoint.load_model_dir(path)


def test_overwrite_is_atomic_and_leaves_no_temporaries(saved):
    cfg, nets, path = saved
    checkpoint.save_model_dir(path, cfg, nets, num_videos=3, content_loss="offline", step=6)
    assert checkpoint.read_config(path)[1]["step"] == 6
    assert [p.name for p in path.parent.iterdir()] == ["model"]


def test_clear_errors_for_what_is_not_a_model(tmp_path, saved):
    cfg, nets, path = saved
    with pytest.raises(CheckpointError, match="no such folder"):
        checkpoint.load_model_dir(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="not a directory"):
        checkpoint.load_model_dir(path / "config.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        checkpoint.load_model_dir(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"architectures": ["Bert"]}')
    with pytest.raises(CheckpointError, match="not a talking-heads model config"):
        checkpoint.load_model_dir(tmp_path / "other")
    assert not checkpoint.is_model_dir(tmp_path / "other") and checkpoint.is_model_dir(path)


def test_clear_errors_for_incompatible_models(saved):
    cfg, nets, path = saved
    d = json.loads((path / "config.json").read_text())
    d["model"]["new_field"] = 1
    (path / "config.json").write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match="incompatible model config"):
        checkpoint.load_model_dir(path)
    del d["model"]["new_field"]
    d["model"]["generator_res_blocks"] = 2  # weights no longer fit
    (path / "config.json").write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match="do not fit"):
        checkpoint.load_model_dir(path)
    d["model"]["generator_res_blocks"] = cfg.model.generator_res_blocks
    d["model"]["embedder_channels"] = [8, 12, 16]  # changed widths: shape mismatch
    (path / "config.json").write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match="do not fit"):
        checkpoint.load_model_dir(path)
    d["model"]["embedding_dim"] = 23  # a config that cannot be built at all
    (path / "config.json").write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match="cannot build|can build"):
        checkpoint.load_model_dir(path)
    d["model"]["embedder_channels"] = list(cfg.model.embedder_channels)
    d["model"]["embedding_dim"] = cfg.model.embedding_dim
    d["meta"]["format_version"] = checkpoint.FORMAT_VERSION + 1
    (path / "config.json").write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match="newer"):
        checkpoint.load_model_dir(path)
    d["meta"]["format_version"] = checkpoint.FORMAT_VERSION
    (path / "config.json").write_text(json.dumps(d))
    (path / "generator.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing generator.safetensors"):
        checkpoint.load_model_dir(path)


def test_training_state_loads_weights_only_and_restores_rng(tmp_path):
    p = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.Adam([p], lr=1e-3, betas=(0.0, 0.999))
    p.sum().backward()
    opt.step()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    rng = checkpoint.rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(2))
    path = checkpoint.save_training_state(tmp_path / "training_state.pt",
                                          {"step": 9, "optimizers": {"g": opt.state_dict()}, "rng": [rng],
                                           "sampler": {"epoch": 1, "position": 4}})
    state = torch.load(path, weights_only=True)  # the contract
    state = checkpoint.load_training_state(path)
    assert state["step"] == 9 and state["sampler"] == {"epoch": 1, "position": 4}
    opt2 = torch.optim.Adam([torch.nn.Parameter(p.detach().clone())], lr=1e-3)
    opt2.load_state_dict(state["optimizers"]["g"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    random.random(), np.random.rand(), torch.rand(5)  # move the streams on
    checkpoint.set_rng_state(state["rng"][0])
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a loadable training state"):
        checkpoint.load_training_state(tmp_path / "bad.pt")
