"""The warp-then-refine generator option (models/warp.py; model.generator = "warp") on the tiny preset."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from talking_heads import checkpoint
from talking_heads.config import apply_overrides, preset
from talking_heads.models import GENERATORS, WarpGenerator, build_networks
from talking_heads.train import meta
from talking_heads.train import finetune as ft
from talking_heads.bench import SyntheticEpisodes, collate


def warp_cfg(*overrides):
    return apply_overrides(preset("tiny"), ["model.generator=warp", *overrides])


def _sources(b=2, k=3, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, k, 3, s, s, generator=g) * 2 - 1, torch.rand(b, k, 3, s, s, generator=g) * 2 - 1


def test_registry_builds_the_configured_generator():
    assert set(GENERATORS) == {"adain", "warp", "tps"}
    nets = build_networks(warp_cfg(), 2)
    assert isinstance(nets.generator, WarpGenerator) and nets.generator.needs_sources
    assert not build_networks(preset("tiny"), 2).generator.needs_sources
    with pytest.raises(ValueError, match="model.generator"):
        build_networks(apply_overrides(preset("tiny"), ["model.generator=vae"]), 2)


def test_shapes_and_identity_warp_at_initialisation():
    torch.manual_seed(0)
    g = WarpGenerator(warp_cfg().model)
    x_src, y_src = _sources()
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    psi = torch.zeros(2, g.num_adain_params)
    x_hat, aux = g.forward_with_aux(y, psi, (x_src, y_src))
    assert x_hat.shape == (2, 3, 32, 32) and x_hat.abs().max() <= 1
    # zero-initialised flow head: no motion, equal confidences -> the fused warp is the mean source
    torch.testing.assert_close(aux["warped"], x_src.mean(1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(aux["confidence"], torch.full((2, 1, 32, 32), 0.5))
    assert float(aux["flow_tv"].detach()) == 0.0
    # an avatar's T frames (K,3,H,W) are shared by every frame of a batch
    shared = g(y, psi, (x_src[0], y_src[0]))
    assert shared.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="source frames"):
        g(y, psi)


def test_a_flow_moves_the_source():
    """A constant flow of one pixel to the right samples the source one pixel to the right."""
    g = WarpGenerator(warp_cfg().model)
    with torch.no_grad():
        g.flow.head.bias[0] = 2.0 / 32  # x offset in grid_sample units: one pixel of 32
    x_src, y_src = _sources(b=1, k=1)
    fused, _, _ = g.warp(torch.zeros(1, 3, 32, 32), (x_src, y_src))
    torch.testing.assert_close(fused[..., :-1], x_src[:, 0, ..., 1:], rtol=1e-4, atol=1e-4)


def test_meta_step_trains_the_flow_network_and_round_trips(tmp_path):
    cfg = warp_cfg()
    torch.manual_seed(0)
    nets = build_networks(cfg, 3)
    state = meta.build_meta_state(cfg, nets, meta.dist.DistInfo())
    batch = collate([SyntheticEpisodes(cfg, num_episodes=2, num_videos=3)[i] for i in range(2)])
    flow_before = copy.deepcopy(nets.generator.flow.state_dict())
    logs, x_fake = meta.meta_step(state, batch, cfg, step=1)
    assert "g_warp_tv" in logs and all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert any(not torch.equal(flow_before[k], v) for k, v in nets.generator.flow.state_dict().items())
    checkpoint.save_model_dir(tmp_path / "model", cfg, nets, num_videos=3, content_loss="offline", step=1)
    cfg2, _, nets2 = checkpoint.load_model_dir(tmp_path / "model")
    assert cfg2.model.generator == "warp" and isinstance(nets2.generator, WarpGenerator)
    nets.generator.eval(), nets2.generator.eval()
    psi = torch.zeros(1, nets.generator.num_adain_params)
    src = (batch["x_src"][:1], batch["y_src"][:1])
    with torch.no_grad():
        torch.testing.assert_close(nets2.generator(batch["y_tgt"][:1], psi, src),
                                   nets.generator(batch["y_tgt"][:1], psi, src))


def test_finetuning_the_warp_generator_uses_the_t_frames_and_trains_the_flow():
    cfg = warp_cfg("finetune.epochs=2")
    torch.manual_seed(0)
    nets = build_networks(cfg, 3)
    x, y = (t[0] for t in _sources(b=1, k=3))
    result = ft.finetune(nets, x, y, cfg, progress=False)
    assert len(result.history) == 4 and all("g_warp_tv" in h for h in result.history)  # 2 epochs x 2 batches
    assert any(not torch.equal(a, b) for a, b in zip(result.generator.flow.parameters(), nets.generator.flow.parameters()))
    with torch.no_grad():
        out = result.generator(y, result.psi.expand(3, -1), (x, y))
    assert out.shape == (3, 3, 32, 32) and torch.isfinite(out).all()


def test_resume_with_the_warp_generator_equals_an_uninterrupted_run(tmp_path):
    def run(d, steps):
        c = warp_cfg("train.checkpoint_every=2", "train.sample_every=100", "train.batch_size=2", f"train.steps={steps}")
        return meta.train(d, cfg=c, dataset=SyntheticEpisodes(c, num_episodes=5, num_videos=3), progress=False)

    full = run(tmp_path / "full", 4)
    run(tmp_path / "part", 2)
    resumed = meta.train(tmp_path / "part", overrides=["train.steps=4"],
                         dataset=SyntheticEpisodes(warp_cfg(), num_episodes=5, num_videos=3), progress=False)
    from safetensors.torch import load_file

    a, b = load_file(str(full / "generator.safetensors")), load_file(str(resumed / "generator.safetensors"))
    assert any(k.startswith("flow.") for k in a)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)


@pytest.mark.slow
def test_tiny_warp_model_overfits_a_real_clip(shared_data, tmp_path):
    from talking_heads.data import EpisodeDataset
    from talking_heads.data.preprocess import preprocess

    data = tmp_path / "pp"
    preprocess(shared_data / "videos" / "train" / "dpe_s.mp4", data, size=32, max_frames=12, progress=False)
    cfg = warp_cfg("train.steps=60", "train.log_every=20", "train.sample_every=1000", "train.checkpoint_every=1000",
                   "train.lr_generator=1e-3", "train.lr_discriminator=1e-3", "train.flip=false")
    eval_set = EpisodeDataset.from_config(data, cfg)
    eval_set.set_epoch(10_000)

    def error(nets):
        eg = meta.EmbedderGenerator(nets.embedder, nets.generator).eval()
        batch = collate([eval_set[i] for i in range(6)])
        with torch.no_grad():
            x_fake, _ = eg(batch["x_src"], batch["y_src"], batch["y_tgt"])
        return float((x_fake - batch["x_tgt"]).abs().mean())

    torch.manual_seed(cfg.train.seed)
    start = error(build_networks(cfg, 1))
    model = meta.train(tmp_path / "run", cfg=cfg, data_dir=data, progress=False)
    end = error(checkpoint.load_model_dir(model)[2])
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all("g_warp_tv" in r for r in rows)
    assert end < 0.5 * start, (start, end)


def test_pipeline_renders_a_warp_avatar_from_its_source_crops(shared_data, tmp_path):
    """A warp model end to end: the avatar keeps its crops, renders, and renders the same after save/load."""
    from talking_heads.avatar import Avatar
    from talking_heads.pipeline import TalkingHeadPipeline

    cfg = warp_cfg()
    torch.manual_seed(0)
    checkpoint.save_model_dir(tmp_path / "model", cfg, build_networks(cfg, 2), num_videos=2, content_loss="offline",
                              step=0)
    pipe = TalkingHeadPipeline.from_pretrained(tmp_path / "model")
    avatar = pipe.create_avatar(shared_data / "photos" / "lp_source_s9.jpg", progress=False)
    assert avatar.source_images.shape == (1, 32, 32, 3)
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    first = pipe.render(avatar, y)
    again = pipe.render(Avatar.load(avatar.save(tmp_path / "avatar"), pipe), y)
    torch.testing.assert_close(again, first)
    avatar.source_images = None
    with pytest.raises(ValueError, match="source frames"):
        pipe.render(avatar, y)
