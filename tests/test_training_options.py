"""Training options beyond the paper (issue: training that learns identity): a live embedder (W from data,
L_MCH warm-up, LeakyReLU end, identity probe), DiffAugment and LeCam. Tiny preset; real clips where the
property is about faces."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from talking_heads import checkpoint
from talking_heads.config import apply_overrides, preset
from talking_heads.losses import match_loss_weight
from talking_heads.train import meta, steps
from talking_heads.train.augment import DiffAugment, LeCam, parse_policy
from talking_heads.bench import SyntheticEpisodes, collate

OPTIONS = ["train.diffaugment=translation,cutout,color", "train.lecam_weight=0.3", "train.init_w_from_data=true",
           "model.embedder_activation=leaky_relu", "loss.match_weight=1.0", "loss.match_warmup_steps=1",
           "loss.match_ramp_steps=2"]


def tiny(*overrides):
    return apply_overrides(preset("tiny"), list(overrides))


# --- DiffAugment -------------------------------------------------------------------------------------------

def test_diffaugment_moves_frame_and_landmarks_together_and_colours_the_frame_only():
    torch.manual_seed(0)
    content = torch.rand(6, 3, 32, 32) * 0.9 + 0.1  # strictly positive: 0 and -1 only appear as fills
    aug = DiffAugment("translation,cutout")
    (x,), y = aug([content], content.clone(), torch.arange(6))
    filled_x, filled_y = x == 0, y == -1
    assert torch.equal(filled_x, filled_y) and filled_x.any()  # same pixels padded / cut in both
    assert torch.equal(x[~filled_x], y[~filled_y])  # and the same content moved the same way
    assert not torch.equal(x, content)
    (xc,), yc = DiffAugment("color")([content], content.clone(), torch.arange(6))
    assert torch.equal(yc, content) and not torch.equal(xc, content)


def test_diffaugment_is_per_episode_deterministic_and_differentiable():
    aug = DiffAugment("translation,cutout,color")
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    y = torch.rand(4, 3, 16, 16)
    (a, b), ya = aug([x, x.detach().clone()], y, torch.tensor([5, 6, 7, 8]))
    assert torch.equal(a.detach(), b)  # real and fake of a sample share the transform
    (one,), y_one = aug([x[2:3]], y[2:3], torch.tensor([7]))
    assert torch.equal(one, a[2:3]) and torch.equal(y_one, ya[2:3])  # independent of the batch around it
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="policy"):
        parse_policy("translation,rotate")


def test_lecam_penalty_and_state():
    lecam = LeCam(0.5)
    real, fake = torch.tensor([2.0, 2.0]), torch.tensor([-1.0, -1.0])
    assert float(lecam.penalty(real, fake)) == pytest.approx(4.0 + 1.0)  # relu(2 - 0)^2 + relu(0 + 1)^2
    lecam.update(real, fake)
    assert (lecam.ema_real, lecam.ema_fake) == (1.0, -0.5)
    other = LeCam(0.5)
    other.load_state_dict(lecam.state_dict())
    assert float(other.penalty(real, fake)) == float(lecam.penalty(real, fake))
    with pytest.raises(ValueError):
        LeCam(1.0)


# --- the steps with the options ------------------------------------------------------------------------

def _state(cfg, num_videos=3):
    from talking_heads.models import build_networks

    torch.manual_seed(0)
    nets = build_networks(cfg, num_videos)
    return meta.build_meta_state(cfg, nets, meta.dist.DistInfo())


def test_meta_step_with_every_option_updates_the_right_parameters_without_nan():
    cfg = tiny(*OPTIONS)
    state = _state(cfg)
    assert state.augment and state.lecam is not None
    batch = collate([SyntheticEpisodes(cfg, num_episodes=2, num_videos=3)[i] for i in range(2)])
    nets = state.networks
    before = {n: {k: v.clone() for k, v in getattr(nets, n).state_dict().items()} for n in checkpoint.NETWORK_NAMES}
    seen = {}
    real_g, real_d = steps.GanStep.generator_step, steps.GanStep.discriminator_step

    def spy_g(self, *args, **kw):
        out = real_g(self, *args, **kw)
        seen["g"] = {n: [p.grad is not None for p in getattr(nets, n).parameters()] for n in checkpoint.NETWORK_NAMES}
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(steps.GanStep, "generator_step", spy_g)
    try:
        logs, x_fake = meta.meta_step(state, batch, cfg, step=2)
    finally:
        mp.undo()
    assert all(np.isfinite(v) for v in logs.values()) and torch.isfinite(x_fake).all()
    assert all(seen["g"]["embedder"]) and all(seen["g"]["generator"]) and not any(seen["g"]["discriminator"])
    assert logs["mch_weight"] == pytest.approx(0.5) and "d_lecam" in logs and 0 <= logs["e_hat_zero"] <= 1
    for name in checkpoint.NETWORK_NAMES:
        after = getattr(nets, name).state_dict()
        assert any(not torch.equal(before[name][k], after[k]) for k in after), name


def test_match_weight_warmup_schedule():
    cfg = tiny("loss.match_weight=2.0", "loss.match_warmup_steps=10", "loss.match_ramp_steps=4").loss
    assert [match_loss_weight(cfg, s) for s in (1, 10, 11, 12, 14, 100)] == [0, 0, 0.5, 1.0, 2.0, 2.0]
    assert match_loss_weight(tiny().loss) == 80.0 and match_loss_weight(tiny().loss, 1) == 80.0  # the paper


def test_w_is_initialised_from_the_initial_embedder():
    cfg = tiny("train.init_w_from_data=true")
    from talking_heads.models import build_networks

    torch.manual_seed(0)
    nets = build_networks(cfg, 3)
    ds = SyntheticEpisodes(cfg, num_episodes=3, num_videos=3)
    meta.init_w_from_embedder(nets, ds, torch.device("cpu"))
    nets.embedder.eval()
    with torch.no_grad():
        for i in range(3):
            e = nets.embedder(ds[i]["x_src"], ds[i]["y_src"]).mean(0)
            torch.testing.assert_close(nets.discriminator.W.weight[i], e)


def test_leaky_embedder_can_output_negative_values():
    from talking_heads.models import Embedder

    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    relu = Embedder(tiny().model)
    torch.manual_seed(0)
    leaky = Embedder(tiny("model.embedder_activation=leaky_relu").model)
    assert (relu(x, x) >= 0).all() and (leaky(x, x) < 0).any()
    with pytest.raises(ValueError, match="embedder_activation"):
        Embedder(tiny("model.embedder_activation=gelu").model)


def _run(run_dir, *overrides, steps_=4):
    cfg = tiny("train.checkpoint_every=2", "train.sample_every=100", "train.batch_size=2", f"train.steps={steps_}")
    ds = SyntheticEpisodes(cfg, num_episodes=5, num_videos=3)
    return meta.train(run_dir, cfg=cfg, overrides=list(overrides), dataset=ds, progress=False)


def test_resume_with_the_options_equals_an_uninterrupted_run(tmp_path):
    full = _run(tmp_path / "full", *OPTIONS)
    _run(tmp_path / "part", *OPTIONS, steps_=2)
    ds = SyntheticEpisodes(preset("tiny"), num_episodes=5, num_videos=3)
    resumed = meta.train(tmp_path / "part", overrides=["train.steps=4"], dataset=ds, progress=False)
    from safetensors.torch import load_file

    for name in checkpoint.NETWORK_NAMES:
        a, b = load_file(str(full / f"{name}.safetensors")), load_file(str(resumed / f"{name}.safetensors"))
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=f"{name}.{k}")
    ta = torch.load(tmp_path / "full" / "training_state.pt", weights_only=True)
    tb = torch.load(tmp_path / "part" / "training_state.pt", weights_only=True)
    assert ta["lecam"] == pytest.approx(tb["lecam"])


# --- real clips: a live embedder that tells people apart ---------------------------------------------------

@pytest.fixture(scope="module")
def three_people(shared_data, tmp_path_factory):
    """Three training clips of three different people at the tiny preset's 32 px, 16 frames each."""
    from talking_heads.data.preprocess import preprocess

    out = tmp_path_factory.mktemp("pp3")
    for name in ("dpe_s.mp4", "dagan_driving.mp4", "aniportrait_pose_ref_video.mp4"):
        report = preprocess(shared_data / "videos" / "train" / name, out, size=32, max_frames=16, progress=False)
        assert [r["status"] for r in report.records] == ["ok"]
    return out


def test_probe_frames_are_never_drawn_into_episodes(three_people):
    from talking_heads.data import EpisodeDataset

    ds = EpisodeDataset.from_config(three_people, tiny("train.probe_frames=4"))
    for v in range(ds.num_videos):
        held = set(ds.probe_indices(v).tolist())
        assert len(held) == 4 and not held & set(ds.train_indices(v).tolist())
        for epoch in range(5):
            ds.set_epoch(epoch)
            _, target, sources, _ = ds.sample(v)
            assert target not in held and not held & set(sources.tolist())


def test_live_embedder_on_real_clips_differs_between_people(three_people, tmp_path):
    """With W initialised from the data and L_MCH warmed up, 40 steps leave e_hat non-zero and different for
    the three people; the log carries the zero fraction and the identity probe."""
    from talking_heads.data import EpisodeDataset

    cfg = tiny("train.steps=40", "train.log_every=10", "train.sample_every=1000", "train.checkpoint_every=1000",
               "train.init_w_from_data=true", "loss.match_warmup_steps=10", "loss.match_ramp_steps=10",
               "train.probe_frames=4", "train.probe_every=20", "train.flip=false")
    model = meta.train(tmp_path / "run", cfg=cfg, data_dir=three_people, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(r["e_hat_zero"] < 0.5 and r["e_hat_abs"] > 0 for r in rows)
    probes = [r for r in rows if "id_probe_acc" in r]
    assert probes and all(0 <= r["id_probe_acc"] <= 1 and r["id_probe_chance"] == pytest.approx(1 / 3) for r in probes)
    _, _, nets = checkpoint.load_model_dir(model)
    ds = EpisodeDataset.from_config(three_people, cfg)
    nets.embedder.eval()
    with torch.no_grad():
        e = torch.stack([nets.embedder(*(ds.clip_frames(v, ds.train_indices(v)[:4])[k] for k in ("x", "y"))).mean(0)
                         for v in range(3)])
    assert e.abs().mean() > 0
    d = torch.cdist(e, e)
    assert float(d[~torch.eye(3, dtype=torch.bool)].min()) > 1e-3 * float(e.norm(dim=1).mean())
