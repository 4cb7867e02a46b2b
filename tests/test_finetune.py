"""Few-shot fine-tuning FT (paper section 6) on the tiny preset."""

from __future__ import annotations

import copy

import pytest
import torch

from talking_heads.config import apply_overrides, preset
from talking_heads.train import finetune as ft
from talking_heads.train import steps


@pytest.fixture
def setup():
    from talking_heads.models import build_networks

    cfg = preset("tiny")
    torch.manual_seed(0)
    nets = build_networks(cfg, num_videos=3)
    g = torch.Generator().manual_seed(2)
    s = cfg.model.image_size
    x = torch.nn.functional.interpolate(torch.rand(3, 3, 4, 4, generator=g), size=s, mode="bilinear") * 2 - 1
    y = torch.rand(3, 3, s, s, generator=g) * 2 - 1
    return cfg, nets, x, y


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_initialisation_follows_the_paper(setup):
    cfg, nets, x, y = setup
    result = ft.finetune(nets, x, y, cfg, epochs=0, progress=False)
    nets.embedder.eval(), nets.generator.eval(), nets.discriminator.eval()
    with torch.no_grad():
        e_new = nets.embedder(x, y).mean(0, keepdim=True)  # mean over the T frames
        torch.testing.assert_close(result.e_new, e_new, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(result.psi, nets.generator.adain_params(e_new), rtol=1e-5, atol=1e-6)  # P e_new
        # D'(x, y) = V(x, y)^T (w0 + e_new) + b: the meta D with W_0 := e_new scores the same
        d = copy.deepcopy(nets.discriminator)
        d.W.weight[0] = e_new[0]
        want, _ = d(x, y, torch.zeros(3, dtype=torch.long))
        got, _ = result.discriminator.eval()(x, y)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        out = result.generator.eval()(y, result.psi.expand(3, -1))
    assert out.shape == x.shape


def test_finetuning_lowers_its_loss_and_changes_only_what_it_should(setup):
    cfg, nets, x, y = setup
    # T = 3: batches of 2 and 1; a higher learning rate than the paper's so that 12 epochs show progress
    cfg = apply_overrides(cfg, ["finetune.batch_size=2", "finetune.lr_generator=5e-4"])
    before = {n: _state(getattr(nets, n)) for n in ("embedder", "generator", "discriminator")}
    calls = {"g": 0, "d": 0}
    real_g, real_d = steps.GanStep.generator_step, steps.GanStep.discriminator_step

    def count_g(self, *args, **kw):
        calls["g"] += 1
        assert not self.match  # no L_MCH in fine-tuning
        return real_g(self, *args, **kw)

    def count_d(self, *args, **kw):
        calls["d"] += 1
        return real_d(self, *args, **kw)

    epochs = 12
    mp = pytest.MonkeyPatch()
    mp.setattr(steps.GanStep, "generator_step", count_g)
    mp.setattr(steps.GanStep, "discriminator_step", count_d)
    try:
        result = ft.finetune(nets, x, y, cfg, epochs=epochs, progress=False)
    finally:
        mp.undo()
    assert calls == {"g": epochs * 2, "d": epochs * 2 * 2}  # 2 D' updates per G' update
    assert len(result.history) == epochs * 2
    cnt = [h["g_cnt"] for h in result.history]
    assert sum(cnt[-4:]) / 4 < 0.8 * sum(cnt[:4]) / 4, cnt
    assert all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in result.history)

    # E, the meta-learned G and the meta discriminator are untouched (parameters and buffers)
    for n in ("embedder", "generator", "discriminator"):
        after = _state(getattr(nets, n))
        assert all(torch.equal(v, before[n][k]) for k, v in after.items()), n
    # psi' and the generic G weights trained; P was not used
    init_psi = ft.initial_psi(nets.generator, result.e_new)
    assert not torch.equal(result.psi, init_psi)
    g_after = dict(result.generator.named_parameters())
    g_before = before["generator"]
    proj = {k for k in g_after if k.startswith("projection.")}
    assert proj and all(g_after[k].grad is None for k in proj)
    assert all(torch.equal(g_after[k].detach(), g_before[k]) for k in proj)
    changed = [k for k in g_after if k not in proj and not torch.equal(g_after[k].detach(), g_before[k])]
    assert len(changed) > len(g_after) // 2
    # D' trained: w' and V moved away from the meta values
    d_state = _state(result.discriminator)
    assert any(not torch.equal(v, before["discriminator"].get(k, v + 1)) for k, v in d_state.items())


def test_rejects_mismatched_inputs(setup):
    cfg, nets, x, y = setup
    with pytest.raises(ValueError, match="T,3,H,W"):
        ft.finetune(nets, x, y[:2], cfg, epochs=1, progress=False)


def test_finetune_with_face_terms_uses_the_frames_landmarks(shared_data):
    """FT with loss.face_network=dlib on a real photo: the face terms are computed against the photo with its
    own landmarks, logged, and lower the identity loss they optimise."""
    import numpy as np

    from talking_heads.data.faces import prepare_photo
    from talking_heads.images import to_tensor
    from talking_heads.landmarks.raster import rasterize_tensor
    from talking_heads.models import build_networks

    cfg = apply_overrides(preset("tiny"), ["loss.face_network=dlib", "finetune.lr_generator=1e-3"])
    torch.manual_seed(0)
    nets = build_networks(cfg, num_videos=3)
    crop = prepare_photo(shared_data / "photos" / "lp_source_s9.jpg", cfg.model.image_size)
    x = to_tensor(crop.image)[None]
    y = rasterize_tensor(crop.landmarks[None], cfg.model.image_size, cfg.data.line_thickness)
    with pytest.raises(ValueError, match="landmarks"):
        ft.finetune(nets, x, y, cfg, epochs=1, progress=False)
    points = torch.from_numpy(np.asarray(crop.landmarks, np.float32))[None]
    result = ft.finetune(nets, x, y, cfg, epochs=30, progress=False, points=points)
    ids = [h["g_cnt_id"] for h in result.history]
    assert all("g_cnt_face" in h for h in result.history)
    assert np.mean(ids[-5:]) < np.mean(ids[:5])


def test_few_shot_copies_move_frame_and_landmarks_together():
    """A bright dot drawn at a landmark stays on that landmark through flip, scale and shift (the flip
    re-indexes: the dot at the right eye corner 45 ends up at the mirrored image's point 36)."""
    import numpy as np

    from talking_heads.landmarks.motions import FaceControls, face_landmarks
    from talking_heads.train.augment import few_shot_copies

    s = 64
    p = face_landmarks(FaceControls())
    p = torch.from_numpy(((p - p.mean(0)) * 0.3 * s + s / 2).astype(np.float32))[None].repeat(16, 1, 1)
    x = -torch.ones(16, 3, s, s)
    cx, cy = (int(round(float(v))) for v in p[0, 45])
    x[:, :, cy - 1:cy + 2, cx - 1:cx + 2] = 1.0
    g = torch.Generator().manual_seed(0)
    xa, ya, pa = few_shot_copies(x, p, g)
    assert xa.shape == ya.shape == (16, 3, s, s) and pa.shape == (16, 68, 2)
    flipped = 0
    for i in range(16):
        bright = (xa[i, 0] > 0).nonzero().float()
        centre = bright.mean(0).flip(0)  # (x, y)
        near45, near36 = (centre - pa[i, 45]).norm(), (centre - pa[i, 36]).norm()
        assert min(near45, near36) < 1.0, i
        flipped += int(near36 < near45)
    assert 0 < flipped < 16  # both flipped and unflipped copies were drawn
    from talking_heads.landmarks.raster import rasterize_tensor

    torch.testing.assert_close(ya, rasterize_tensor(pa.numpy(), s))


def test_step_budget_psi_rate_and_ema(setup):
    cfg, nets, x, y = setup
    from talking_heads.bench import neutral_landmarks

    pts = neutral_landmarks(cfg.model.image_size)[None].repeat(3, 1, 1)
    budget = apply_overrides(cfg, ["finetune.steps=5", "finetune.batch_size=4", "finetune.augment=true",
                                   "finetune.lr_psi=1e-2"])
    seen = {}
    real_step = ft.finetune_step

    def spy(gan, batch):
        seen.setdefault("shapes", []).append(tuple(batch["x_tgt"].shape))
        seen["lrs"] = sorted(group["lr"] for group in gan.opt_g.param_groups)
        return real_step(gan, batch)

    mp = pytest.MonkeyPatch()
    mp.setattr(ft, "finetune_step", spy)
    try:
        result = ft.finetune(nets, x, y, budget, progress=False, points=pts)
    finally:
        mp.undo()
    assert len(result.history) == 5 and seen["shapes"] == [(4, 3, 32, 32)] * 5  # 4 draws from T=3 frames
    assert seen["lrs"] == [budget.finetune.lr_generator, 1e-2]
    assert len(ft.finetune(nets, x, y, budget, epochs=2, progress=False, points=pts).history) == 2  # epochs win
    with pytest.raises(ValueError, match="landmarks"):
        ft.finetune(nets, x, y, budget, progress=False)
    plain = ft.finetune(nets, x, y, apply_overrides(cfg, ["finetune.steps=5"]), progress=False)
    smooth = ft.finetune(nets, x, y, apply_overrides(cfg, ["finetune.steps=5", "finetune.ema=0.5"]), progress=False)
    assert not torch.equal(plain.psi, smooth.psi)
    start = ft.initial_psi(nets.generator, plain.e_new)
    # the average lies between the start and the last iterate along the path taken
    assert (smooth.psi - start).norm() < (plain.psi - start).norm()


def test_recipe_on_a_real_photo_lowers_the_identity_loss(shared_data):
    import numpy as np

    from talking_heads.data.faces import prepare_photo
    from talking_heads.images import to_tensor
    from talking_heads.landmarks.raster import rasterize_tensor
    from talking_heads.models import build_networks

    cfg = apply_overrides(preset("tiny"), ["loss.face_network=dlib", "finetune.steps=30", "finetune.augment=true",
                                           "finetune.lr_generator=1e-3", "finetune.lr_psi=1e-2", "finetune.ema=0.9"])
    torch.manual_seed(0)
    nets = build_networks(cfg, num_videos=3)
    crop = prepare_photo(shared_data / "photos" / "lp_source_s9.jpg", cfg.model.image_size)
    x = to_tensor(crop.image)[None]
    y = rasterize_tensor(crop.landmarks[None], cfg.model.image_size, cfg.data.line_thickness)
    points = torch.from_numpy(np.asarray(crop.landmarks, np.float32))[None]
    result = ft.finetune(nets, x, y, cfg, progress=False, points=points)
    ids = [h["g_cnt_id"] for h in result.history]
    assert np.mean(ids[-5:]) < np.mean(ids[:5])
    with torch.no_grad():
        out = result.generator(y, result.psi)
    assert out.min() >= -1 and out.max() <= 1 and torch.isfinite(out).all()
