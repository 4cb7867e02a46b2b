"""Losses (paper.md section 4) and the perceptual nets: maths on hand-made values, weight files, modes."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from talking_heads import losses as L
from talking_heads.config import preset
from talking_heads.models.perceptual import VGG19, VGGFace, PerceptualWeightsError, caffe_preprocess


# --- adversarial pieces on hand-made values ------------------------------------------------------------

def test_hinge_discriminator_loss_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.5, 3.0])
    # relu(1 + fake) = [0, 1.5, 4] -> 5.5/3 ; relu(1 - real) = [0, 0.5, 2] -> 2.5/3
    assert L.hinge_discriminator_loss(real, fake).item() == pytest.approx(8.0 / 3)
    assert L.hinge_discriminator_loss(torch.tensor([1.0, 5.0]), torch.tensor([-1.0, -7.0])).item() == 0.0


def test_adversarial_generator_loss_is_minus_mean_score():
    assert L.adversarial_generator_loss(torch.tensor([1.0, -3.0, 5.0])).item() == pytest.approx(-1.0)


def test_feature_matching_by_hand_and_real_detached():
    real = [torch.tensor([[1.0, 2.0]], requires_grad=True), torch.zeros(1, 2, 2, requires_grad=True)]
    fake = [torch.tensor([[2.0, 0.0]], requires_grad=True), torch.ones(1, 2, 2, requires_grad=True)]
    loss = L.feature_matching_loss(real, fake)  # mean(|1|,|2|) = 1.5, mean(1) = 1
    assert loss.item() == pytest.approx(2.5)
    loss.backward()
    assert all(r.grad is None for r in real)
    assert all(f.grad is not None for f in fake)
    with pytest.raises(ValueError):
        L.feature_matching_loss(real, fake[:1])


def test_match_loss_by_hand_and_gradient_side():
    e_hat = torch.tensor([[1.0, -1.0]], requires_grad=True)
    w_i = torch.tensor([[0.0, 1.0]], requires_grad=True)
    loss = L.match_loss(e_hat, w_i)
    assert loss.item() == pytest.approx(1.5)
    loss.backward()
    assert w_i.grad is None  # W is trained by the hinge loss only
    torch.testing.assert_close(e_hat.grad, torch.tensor([[0.5, -0.5]]))


def test_weight_sets():
    cfg = preset("tiny")
    assert L.match_loss_weight(cfg.loss) == 80.0 and L.content_weights(cfg.loss) == {"vgg19": 1e-2, "vggface": 2e-3}
    cfg.loss.weights = "v2"
    assert L.match_loss_weight(cfg.loss) == 10.0
    assert L.content_weights(cfg.loss) == {"vgg19": 1.5e-1, "vggface": 2.5e-2}
    cfg.loss.weights = "v3"
    with pytest.raises(ValueError, match="v1"):
        L.match_loss_weight(cfg.loss)


# --- perceptual nets ----------------------------------------------------------------------------------

def test_caffe_preprocess_by_hand():
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1)  # R=0, G=127.5, B=255
    out = caffe_preprocess(x, torch.tensor([103.939, 116.779, 123.68])).flatten()
    torch.testing.assert_close(out, torch.tensor([255 - 103.939, 127.5 - 116.779, 0 - 123.68]))


def test_only_used_layers_are_built():
    v19, vf = VGG19(), VGGFace()
    assert len(v19.features) == 30 and v19.layers == (1, 6, 11, 20, 29)
    assert len(vf.features) == 26 and vf.layers == (1, 6, 11, 18, 25)
    feats = v19(torch.zeros(1, 3, 16, 16))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]


def _torchvision_vgg19_state_dict(seed=0):
    """Random weights with every key of a torchvision vgg19 state_dict (features.0-34, classifier)."""
    g = torch.Generator().manual_seed(seed)
    sd, cin, i = {}, 3, 0
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"):
        if v == "M":
            i += 1
            continue
        sd[f"features.{i}.weight"] = torch.randn(v, cin, 3, 3, generator=g) * 0.05
        sd[f"features.{i}.bias"] = torch.randn(v, generator=g) * 0.05
        cin, i = v, i + 2
    sd["classifier.0.weight"], sd["classifier.0.bias"] = torch.randn(8, 4), torch.randn(8)
    return sd


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_vgg19_loads_torchvision_layout(tmp_path, suffix):
    sd = _torchvision_vgg19_state_dict()
    path = tmp_path / f"vgg19{suffix}"
    (torch.save(sd, path) if suffix == ".pth" else save_file(sd, str(path)))
    net = VGG19.from_file(path)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    torch.testing.assert_close(net.features[28].weight, sd["features.28.weight"])
    again = VGG19.from_file(path)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        for a, b in zip(net(x), again(x)):
            assert torch.equal(a, b)


def test_vggface_loads_both_layouts(tmp_path):
    torch.manual_seed(0)
    ours = VGGFace()
    path = tmp_path / "vggface_features.pth"
    torch.save(ours.state_dict(), path)  # features.N layout (Caffe / BGR weights)
    loaded = VGGFace.from_file(path)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        for a, b in zip(ours(x), loaded(x)):
            assert torch.equal(a, b)
    # vgg_face_dag layout (conv1_1 ... conv5_3, fc6-8), RGB-input weights: conv1_1 reversed on load
    names = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv4_1", "conv4_2",
             "conv4_3", "conv5_1", "conv5_2", "conv5_3"]
    dag, cin = {}, 3
    for name, cout in zip(names, [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]):
        dag[f"{name}.weight"], dag[f"{name}.bias"] = torch.randn(cout, cin, 3, 3) * 0.05, torch.randn(cout) * 0.05
        cin = cout
    dag["fc8.weight"], dag["fc8.bias"] = torch.randn(10, 4), torch.randn(10)
    dag_path = tmp_path / "vgg_face_dag.pth"
    torch.save(dag, dag_path)
    net = VGGFace.from_file(dag_path)
    torch.testing.assert_close(net.features[0].weight, dag["conv1_1.weight"].flip(1))
    torch.testing.assert_close(net.features[24].weight, dag["conv5_1.weight"])
    torch.testing.assert_close(net.features[17].bias, dag["conv4_1.bias"])
    # the RGB-weight conv1_1 applied to RGB - RGB mean equals our first feature map
    rgb = (x + 1) * 127.5 - torch.tensor([129.1863, 104.7624, 93.5940]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = F.relu(F.conv2d(rgb, dag["conv1_1.weight"], dag["conv1_1.bias"], padding=1))
        torch.testing.assert_close(net(x)[0], ref, atol=1e-3, rtol=1e-4)


def test_wrong_weight_files_name_the_expected_layout(tmp_path):
    resnet_like = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 4)}, resnet_like)
    with pytest.raises(PerceptualWeightsError, match=r"features\.\{0,2,5,7,10"):
        VGG19.from_file(resnet_like)
    with pytest.raises(PerceptualWeightsError, match="vgg_face_dag"):
        VGGFace.from_file(resnet_like)
    # a VGG16-shaped file given as VGG19 (same keys up to features.28, different shapes / missing layers)
    face = tmp_path / "face.pth"
    torch.save(VGGFace().state_dict(), face)
    with pytest.raises(PerceptualWeightsError, match="VGG19"):
        VGG19.from_file(face)
    junk = tmp_path / "junk.pth"
    torch.save({"not": "tensors"}, junk)
    with pytest.raises(PerceptualWeightsError, match="state_dict"):
        VGG19.from_file(junk)
    with pytest.raises(FileNotFoundError):
        VGG19.from_file(tmp_path / "missing.pth")


# --- content loss -------------------------------------------------------------------------------------

def test_offline_content_loss_zero_for_identical_positive_otherwise():
    torch.manual_seed(0)
    a = torch.rand(2, 3, 32, 32) * 2 - 1
    assert L.offline_content_loss(a, a.clone()).item() == 0.0
    assert L.offline_content_loss(a, a + 0.1).item() > 0
    assert L.offline_content_loss(a, a.flip(-1)).item() > 0


def test_content_loss_offline_mode_warns(caplog):
    cfg = preset("tiny")
    with caplog.at_level(logging.WARNING, logger="talking_heads.losses"):
        loss = L.ContentLoss(cfg)
    assert loss.mode == "offline" and "OFFLINE" in caplog.text
    fake = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    real = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    value = loss(fake, real)
    torch.testing.assert_close(value, cfg.loss.offline_content_weight * L.offline_content_loss(fake, real))
    value.backward()
    assert fake.grad is not None and real.grad is None


@pytest.fixture
def vgg_files(tmp_path):
    torch.manual_seed(0)
    p19, pface = tmp_path / "vgg19.pth", tmp_path / "vggface.safetensors"
    torch.save(_torchvision_vgg19_state_dict(), p19)
    save_file({k: v.contiguous() for k, v in VGGFace().state_dict().items()}, str(pface))
    return str(p19), str(pface)


def test_content_loss_vgg_modes_and_value(vgg_files):
    cfg = preset("tiny")
    cfg.loss.vgg19_weights, cfg.loss.vggface_weights = vgg_files
    loss = L.ContentLoss(cfg)
    assert loss.mode == "vgg"
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert all(not net.training for net in loss.nets.values())
    torch.manual_seed(1)
    fake = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    real = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    value = loss(fake, real)
    with torch.no_grad():  # weighted sum over nets of the sum over layers of mean L1
        ref = sum(w * sum(F.l1_loss(a, b) for a, b in zip(loss.nets[n](fake), loss.nets[n](real)))
                  for n, w in (("vgg19", 1e-2), ("vggface", 2e-3)))
    torch.testing.assert_close(value.detach(), ref)
    value.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0 and real.grad is None
    assert loss(real.detach(), real.detach()).item() == 0.0

    one = copy.deepcopy(cfg)
    one.loss.vggface_weights = ""
    assert L.ContentLoss(one).mode == "vgg19"
    one = copy.deepcopy(cfg)
    one.loss.vgg19_weights = ""
    assert L.ContentLoss(one).mode == "vggface"
