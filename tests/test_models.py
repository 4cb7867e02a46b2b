"""Networks E, G, D (paper.md section 3) on the tiny preset (and sample where it is fast); paper counts."""

from __future__ import annotations

import copy

import pytest

from talking_heads.landmarks.motions import motion_landmarks
from talking_heads.models.sources import Sources
from talking_heads.models.tps_prior import normalise_points
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from talking_heads import losses as L
from talking_heads.config import apply_overrides, preset
from talking_heads.models import GENERATORS, Networks, TalkingHeadGenerator, build_networks, parameter_counts
from talking_heads.models.blocks import (AdaIN, FixedConvAvgPool, FixedUpsampleConv, ResBlock, SelfAttention,
                                         conv3x3_avgpool, upsample_conv3x3)

NUM_VIDEOS = 3


def _inputs(cfg, b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    s = cfg.model.image_size
    x = torch.rand(b, 3, s, s, generator=g) * 2 - 1
    y = torch.rand(b, 3, s, s, generator=g) * 2 - 1
    video = torch.arange(b) % NUM_VIDEOS
    return x, y, video


@pytest.fixture
def tiny():
    cfg = preset("tiny")
    torch.manual_seed(0)
    return cfg, build_networks(cfg, NUM_VIDEOS)


# --- shapes ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,b", [("tiny", 2), ("sample", 1)])
def test_shapes(name, b):
    """The paper's direct-synthesis generator at each preset's widths (the warp generator: test_warp.py)."""
    cfg = apply_overrides(preset(name), ["model.generator=adain"])
    m = cfg.model
    torch.manual_seed(0)
    nets = build_networks(cfg, NUM_VIDEOS)
    assert isinstance(nets, Networks)
    x, y, video = _inputs(cfg, b)
    with torch.no_grad():
        e = nets.embedder(x, y)
        psi = nets.generator.adain_params(e)
        x_hat = nets.generator(y, psi)
        score, feats = nets.discriminator(x, y, video)
    assert e.shape == (b, m.embedding_dim)
    assert psi.shape == (b, nets.generator.num_adain_params)
    assert x_hat.shape == x.shape and x_hat.abs().max() <= 1
    assert score.shape == (b,)
    assert len(feats) == len(m.embedder_channels) + m.discriminator_extra_blocks
    last = m.image_size // 2 ** len(m.embedder_channels)
    assert feats[-1].shape == (b, m.embedding_dim, last, last)
    assert nets.discriminator.video_embedding(video).shape == (b, m.embedding_dim)
    for t in (e, psi, x_hat, score, *feats):
        assert torch.isfinite(t).all()


def test_resblock_resampling_shapes():
    x = torch.randn(2, 4, 8, 8)
    assert ResBlock(4, 6, resample="down")(x).shape == (2, 6, 4, 4)
    assert ResBlock(4, 6, resample="up", norm="instance")(x).shape == (2, 6, 16, 16)
    same = ResBlock(4, 4, norm="none")
    assert same.skip is None and same(x).shape == x.shape
    ada = ResBlock(4, 6, resample="up", norm="adain")
    assert ada.num_adain_params == 2 * 4 + 2 * 6
    assert ada(x, torch.zeros(2, 20)).shape == (2, 6, 16, 16)


@pytest.mark.parametrize("size", [8, 16, 32])
def test_fused_conv_avgpool_equals_conv_then_pool(size):
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, padding=1)
    x = torch.randn(2, 5, size, size)
    ref = F.avg_pool2d(conv(x), 2)
    torch.testing.assert_close(conv3x3_avgpool(x, conv), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(4, 4), (5, 9), (16, 16)])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_upsample_conv_equals_upsample_then_conv(size, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, padding=1, bias=bias)
    x = torch.randn(2, 5, *size)
    ref = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    torch.testing.assert_close(upsample_conv3x3(x, conv), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(FixedUpsampleConv(conv)(x), ref, atol=1e-5, rtol=1e-5)
    # gradients flow to the 3x3 weight as through the two ops (training uses the fused form); float64, so
    # that the different summation orders of thousands of terms do not hide a wrong tap
    conv, x = conv.double(), x.double()
    w_ref = torch.autograd.grad(conv(F.interpolate(x, scale_factor=2.0, mode="nearest")).square().sum(), conv.weight)[0]
    w_fused = torch.autograd.grad(upsample_conv3x3(x, conv).square().sum(), conv.weight)[0]
    torch.testing.assert_close(w_fused, w_ref, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("size", [8, 32])
def test_fixed_conv_avgpool_equals_conv_then_pool(size):
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, padding=1)
    x = torch.randn(2, 5, size, size)
    torch.testing.assert_close(FixedConvAvgPool(conv)(x), F.avg_pool2d(conv(x), 2), atol=1e-5, rtol=1e-5)


def test_self_attention_cpu_path_equals_fused_attention():
    torch.manual_seed(0)
    att = SelfAttention(32, spectral=False)
    att.gamma.data.fill_(0.7)  # 0 at init would hide the attention output
    x = torch.randn(2, 32, 8, 8)
    q, k, v = (m(x).flatten(2).transpose(1, 2)[:, None] for m in (att.query, att.key, att.value))
    o = F.scaled_dot_product_attention(q, k, v, scale=1.0)[:, 0].transpose(1, 2).reshape(2, 32, 8, 8)
    torch.testing.assert_close(att(x), x + 0.7 * o, atol=1e-5, rtol=1e-5)


def test_paper_parameter_counts_within_5_percent():
    counts = parameter_counts(preset("paper"))
    for key, target in (("embedder", 15e6), ("generator", 38e6), ("discriminator_V", 20e6)):
        assert abs(counts[key] - target) / target < 0.05, (key, counts[key])
    assert 12_000 < counts["adain_params"] < 14_000  # "about 13k" AdaIN parameters
    assert counts["projection"] == 512 * counts["adain_params"] + counts["adain_params"]


def test_parameter_counts_match_a_real_build(tiny):
    cfg, nets = tiny
    counts = parameter_counts(cfg, NUM_VIDEOS)
    assert counts["embedder"] == sum(p.numel() for p in nets.embedder.parameters())
    assert counts["generator"] == sum(p.numel() for p in nets.generator.parameters())
    assert counts["discriminator_V"] == sum(p.numel() for p in nets.discriminator.V.parameters())
    assert counts["discriminator"] == sum(p.numel() for p in nets.discriminator.parameters())


def test_attention_placement_and_misconfiguration():
    cfg = preset("tiny")
    torch.manual_seed(0)
    nets = build_networks(cfg, 1)
    for net in (nets.embedder, nets.generator, nets.discriminator):
        assert any(isinstance(m, SelfAttention) for m in net.modules())
    bad = copy.deepcopy(cfg)
    bad.model.embedder_attention_at = (5,)
    with pytest.raises(ValueError, match="attention"):
        build_networks(bad, 1)


def test_spectral_norm_on_every_conv_and_linear(tiny):
    _, nets = tiny
    n = 0
    for net in (nets.embedder, nets.generator, nets.discriminator):
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                assert parametrize.is_parametrized(m, "weight"), m
                n += 1
    assert n > 20
    assert parametrize.is_parametrized(nets.generator.projection, "weight")


def test_embedder_is_relu_sum_pool(tiny):
    cfg, nets = tiny
    nets.embedder.eval()  # no power-iteration step between the two calls
    x, y, _ = _inputs(cfg)
    with torch.no_grad():
        last = nets.embedder.down(torch.cat([x, y], 1))[-1]
        torch.testing.assert_close(nets.embedder(x, y), F.relu(last).sum((2, 3)))


# --- AdaIN routing -----------------------------------------------------------------------------------

def test_adain_counts_match_projection(tiny):
    _, nets = tiny
    g = nets.generator
    sizes = [m.num_adain_params for m in g.adain_layers()]
    assert sum(sizes) == g.num_adain_params == g.projection.out_features
    n_adain = sum(isinstance(m, AdaIN) for m in g.modules())
    assert n_adain == 2 * (len(g.bottleneck) + sum(isinstance(m, ResBlock) for m in g.decoder)) + 1


def test_psi_length_mismatch_raises(tiny):
    cfg, nets = tiny
    _, y, _ = _inputs(cfg)
    n = nets.generator.num_adain_params
    for bad in (torch.zeros(2, n - 1), torch.zeros(2, n + 1), torch.zeros(n)):
        with pytest.raises(ValueError, match="psi"):
            nets.generator(y, bad)


def test_each_psi_slice_drives_only_its_layer(tiny):
    """Perturbing layer k's slice leaves every earlier layer's output unchanged and changes layer k's."""
    cfg, nets = tiny
    g = nets.generator.eval()
    _, y, _ = _inputs(cfg)
    layers = g.adain_layers()
    outputs: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, i=i: outputs.__setitem__(i, out.detach().clone()))
             for i, m in enumerate(layers)]
    try:
        torch.manual_seed(0)
        psi = torch.randn(2, g.num_adain_params) * 0.1
        with torch.no_grad():
            g(y, psi)
            base = dict(outputs)
            offsets = [0]
            for m in layers:
                offsets.append(offsets[-1] + m.num_adain_params)
            for k in range(len(layers)):
                bumped = psi.clone()
                bumped[:, offsets[k]:offsets[k + 1]] += 0.5
                g(y, bumped)
                for i in range(k):
                    assert torch.equal(outputs[i], base[i]), (k, i)
                assert not torch.allclose(outputs[k], base[k]), k
    finally:
        for h in hooks:
            h.remove()


# --- the generator interface (models/interface.py) ----------------------------------------------------

@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_every_registered_generator_implements_the_interface(kind):
    """isinstance of the protocol; meta-learning trains every weight, fine-tuning every weight but P (in the
    same order: the optimisers' state follows it); `specialise(psi)` renders what `forward(y, psi)` does."""
    cfg = apply_overrides(preset("tiny"), [f"model.generator={kind}"])
    torch.manual_seed(0)
    nets = build_networks(cfg, NUM_VIDEOS)
    g = nets.generator
    assert isinstance(g, GENERATORS[kind]) and isinstance(g, TalkingHeadGenerator)
    assert not isinstance(nets.embedder, TalkingHeadGenerator)
    assert isinstance(g.needs_sources, bool)
    assert g.num_adain_params == g.projection.out_features > 0
    assert g.meta_parameters() == list(g.parameters())
    projection = {id(p) for p in g.projection.parameters()}
    assert g.finetune_parameters() == [p for p in g.meta_parameters() if id(p) not in projection]
    assert len(g.finetune_parameters()) == len(g.meta_parameters()) - len(projection)

    _, y, _ = _inputs(cfg, b=2)
    gen = torch.Generator().manual_seed(2)
    s = cfg.model.image_size
    sources = (torch.rand(3, 3, s, s, generator=gen) * 2 - 1, torch.rand(3, 3, s, s, generator=gen) * 2 - 1)
    points = None
    if getattr(g, "needs_points", False):  # the TPS renderer: the sources' and the driver's landmarks too
        faces = torch.tensor(motion_landmarks("talk", 1.0, 5.0, s, cfg.data), dtype=torch.float32)  # 5,68,2
        faces = normalise_points(faces, s)
        sources, points = Sources(*sources, faces[:3]), faces[3:5]
    sources = sources if g.needs_sources else None
    e = torch.randn(1, cfg.model.embedding_dim, generator=gen)
    g.eval()
    with torch.no_grad():
        psi = g.adain_params(e)  # 1,A
        ref, aux = g.forward_with_aux(y, psi.expand(2, -1), sources, points)
        assert torch.equal(g(y, psi.expand(2, -1), sources, points), ref) and isinstance(aux, dict)
        avatar = g.specialise(psi, sources)
        torch.testing.assert_close(avatar(y, points) if points is not None else avatar(y), ref, rtol=0, atol=1e-5)
    assert avatar.needs_sources == g.needs_sources and avatar.generator.num_adain_params == 0
    assert g.num_adain_params == g.projection.out_features  # the original is untouched


# --- determinism, save/load, copies --------------------------------------------------------------------

def test_deterministic_initialisation_and_outputs():
    cfg = preset("tiny")
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        nets = build_networks(cfg, NUM_VIDEOS)
        x, y, video = _inputs(cfg)
        with torch.no_grad():
            e = nets.embedder(x, y)
            x_hat = nets.generator(y, nets.generator.adain_params(e))
            outs.append((nets, e, x_hat, nets.discriminator(x, y, video)[0]))
    (n1, *o1), (n2, *o2) = outs
    for name in ("embedder", "generator", "discriminator"):
        s1, s2 = getattr(n1, name).state_dict(), getattr(n2, name).state_dict()
        assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    for a, b in zip(o1, o2):
        assert torch.equal(a, b)


def test_safetensors_roundtrip_and_deepcopy_after_training_forward(tiny, tmp_path):
    from safetensors.torch import load_model, save_model

    cfg, nets = tiny
    x, y, video = _inputs(cfg)
    nets.discriminator(x, y, video)[0].sum().backward()  # train-mode forward (power iteration ran)
    copy.deepcopy(nets.discriminator)  # deep copies after a training forward (fine-tuning relies on it)
    torch.manual_seed(99)
    fresh = build_networks(cfg, NUM_VIDEOS)
    for name in ("embedder", "generator", "discriminator"):
        path = tmp_path / f"{name}.safetensors"
        save_model(getattr(nets, name), str(path))
        missing, unexpected = load_model(getattr(fresh, name), str(path))
        assert not missing and not unexpected
        getattr(nets, name).eval(), getattr(fresh, name).eval()
    with torch.no_grad():
        assert torch.equal(nets.embedder(x, y), fresh.embedder(x, y))
        psi = nets.generator.adain_params(nets.embedder(x, y))
        psi_fresh = fresh.generator.adain_params(fresh.embedder(x, y))
        assert torch.equal(nets.generator(y, psi), fresh.generator(y, psi_fresh))
        assert torch.equal(nets.discriminator(x, y, video)[0], fresh.discriminator(x, y, video)[0])


def test_single_person_discriminator(tiny):
    cfg, nets = tiny
    d = nets.discriminator
    with torch.no_grad():
        d.w0.normal_()
        d.b.fill_(0.3)
    e_new = torch.randn(1, cfg.model.embedding_dim)
    dp = d.single_person(e_new)
    torch.testing.assert_close(dp.w_prime.detach(), d.w0.detach() + e_new[0])
    meta_ids = {id(p) for p in d.parameters()} | {id(b) for b in d.buffers()}
    assert not meta_ids & ({id(p) for p in dp.parameters()} | {id(b) for b in dp.buffers()})
    meta_ptrs = {p.data_ptr() for p in d.parameters()}
    assert not meta_ptrs & {p.data_ptr() for p in dp.parameters()}
    assert dp.w_prime.requires_grad and dp.w_prime.is_leaf
    # D'(x, y) equals the meta discriminator with W_i = e_new; `video` is ignored
    d.eval(), dp.eval()
    x, y, _ = _inputs(cfg)
    with torch.no_grad():
        d.W.weight[0] = e_new[0]
        ref, _ = d(x, y, torch.zeros(2, dtype=torch.long))
        s1, feats = dp(x, y)
        s2, _ = dp(x, y, torch.tensor([2, 1]))
    torch.testing.assert_close(s1, ref)
    assert torch.equal(s1, s2) and len(feats) == len(cfg.model.embedder_channels) + 1
    # training D' leaves the meta discriminator untouched
    before = {k: v.clone() for k, v in d.state_dict().items()}
    dp.train()
    opt = torch.optim.SGD(dp.parameters(), lr=0.1)
    dp(x, y)[0].sum().backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in d.state_dict().items())


def test_w_initialisation(tiny):
    _, nets = tiny
    w = nets.discriminator.W.weight
    assert w.shape[0] == NUM_VIDEOS and w.abs().max() <= 0.1
    assert not parametrize.is_parametrized(nets.discriminator.W)


# --- gradient flow ------------------------------------------------------------------------------------

def _params(*modules):
    return [p for m in modules for p in m.parameters()]


def test_generator_loss_reaches_every_embedder_and_generator_parameter_and_no_discriminator(tiny):
    """The G/E step: L_CNT + L_ADV (+ L_FM) + L_MCH, backward restricted to E and G (what steps.py does)."""
    cfg, nets = tiny
    e_net, g_net, d_net = nets.embedder, nets.generator, nets.discriminator
    with torch.no_grad():  # let attention contribute (gamma starts at 0, which zeroes q/k/v gradients)
        for m in (*e_net.modules(), *g_net.modules(), *d_net.modules()):
            if isinstance(m, SelfAttention):
                m.gamma.fill_(0.5)
    from talking_heads.train.meta_state import EmbedderGenerator, MetaState

    x, y, video = _inputs(cfg)
    # the training code's own G/E update (lr 0: the gradients are what is checked, not the step), E on K = 1 frame
    state = MetaState(networks=nets, generator=EmbedderGenerator(e_net, g_net), discriminator=d_net, critic=d_net,
                      opt_g=torch.optim.SGD(_params(e_net, g_net), lr=0.0),
                      opt_d=torch.optim.SGD(d_net.parameters(), lr=0.0),
                      content_loss=L.ContentLoss(cfg), loss=cfg.loss, match=True, amp=False)
    state.generator_step({"x_src": x[:, None], "y_src": y[:, None], "x_tgt": x, "y_tgt": y, "video": video})
    for name, p in [*e_net.named_parameters(), *g_net.named_parameters()]:
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in d_net.parameters())


def test_hinge_loss_reaches_discriminator_only(tiny):
    cfg, nets = tiny
    x, y, video = _inputs(cfg)
    with torch.no_grad():
        for m in nets.discriminator.modules():
            if isinstance(m, SelfAttention):
                m.gamma.fill_(0.5)
    from talking_heads.train.meta_state import EmbedderGenerator, MetaState

    e_hat = nets.embedder(x, y)
    x_fake = nets.generator(y, nets.generator.adain_params(e_hat))
    # the training code's own D update (lr 0: the gradients are what is checked)
    state = MetaState(networks=nets, generator=EmbedderGenerator(nets.embedder, nets.generator),
                      discriminator=nets.discriminator, critic=nets.discriminator,
                      opt_g=torch.optim.SGD(_params(nets.embedder, nets.generator), lr=0.0),
                      opt_d=torch.optim.SGD(nets.discriminator.parameters(), lr=0.0),
                      content_loss=L.ContentLoss(cfg), loss=cfg.loss, amp=False)
    state.discriminator_step({"x_tgt": x, "y_tgt": y, "video": video, "x_fake": x_fake})
    d = nets.discriminator
    for name, p in d.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name not in ("W.weight", "b"):  # b's gradient cancels when every hinge is active (1/B - 1/B)
            assert p.grad.abs().sum() > 0, name
    used = set(video.tolist())
    for row in range(NUM_VIDEOS):
        assert (d.W.weight.grad[row].abs().sum() > 0) == (row in used)
    assert all(p.grad is None for p in _params(nets.embedder, nets.generator))


def test_match_loss_trains_embedder_not_w(tiny):
    cfg, nets = tiny
    x, y, video = _inputs(cfg)
    e_hat = nets.embedder(x, y)
    w_i = nets.discriminator.video_embedding(video)
    L.match_loss(e_hat, w_i).backward()
    assert nets.discriminator.W.weight.grad is None
    assert all(p.grad is not None for p in nets.embedder.parameters())
    assert sum(p.grad.abs().sum() for p in nets.embedder.parameters()) > 0
