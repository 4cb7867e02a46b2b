"""EpisodeDataset (issue 3 item 5): K sources + a distinct target, ranges, determinism, workers, flip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from talking_heads.data.episodes import EpisodeDataset, identity_split
from talking_heads.landmarks import flip_landmarks, rasterize

STORED = 32


def template(size=STORED) -> np.ndarray:
    """A roughly frontal synthetic 68-point face in a size x size frame."""
    pts = np.zeros((68, 2))
    pts[0:17] = np.c_[np.linspace(48, 208, 17), 110 + 100 * np.sin(np.linspace(0, np.pi, 17))]
    pts[17:22] = np.c_[np.linspace(60, 115, 5), [95, 88, 85, 86, 90]]
    pts[22:27] = np.c_[np.linspace(141, 196, 5), [90, 86, 85, 88, 95]]
    pts[27:31] = np.c_[[128] * 4, np.linspace(100, 145, 4)]
    pts[31:36] = np.c_[np.linspace(112, 144, 5), [155, 158, 160, 158, 155]]
    eye = np.array([[-18, 0], [-9, -6], [9, -6], [18, 0], [9, 6], [-9, 6]], float)
    pts[36:42], pts[42:48] = eye + [92, 112], eye + [164, 112]
    ang = np.linspace(np.pi, -np.pi, 12, endpoint=False)
    pts[48:60] = np.c_[128 - 32 * np.cos(ang), 185 - 12 * np.sin(ang)]
    ang = np.linspace(np.pi, -np.pi, 8, endpoint=False)
    pts[60:68] = np.c_[128 - 20 * np.cos(ang), 185 - 4 * np.sin(ang)]
    pts[:, 0] += 20  # off-centre, so that a flip moves it
    return (pts * size / 256.0).astype(np.float32)


def fake_preprocessed(root: Path, frames_per_clip: dict[str, int], identities: dict[str, str] | None = None) -> Path:
    """A preprocessed folder (the layout of talking_heads/data/preprocess.py) with synthetic frames: frame i of
    every clip is a flat image whose red channel is 20*i and whose left quarter is white (to see flips)."""
    import cv2

    (root / "clips").mkdir(parents=True)
    (root / "preprocess.json").write_text(json.dumps({"layout_version": 1, "size": STORED}))
    lines = []
    for clip_id, n in frames_per_clip.items():
        d = root / "clips" / clip_id
        (d / "frames").mkdir(parents=True)
        for i in range(n):
            img = np.zeros((STORED, STORED, 3), np.uint8)
            img[..., 0] = 20 * i
            img[:, : STORED // 4] = 255
            cv2.imwrite(str(d / "frames" / f"{i:06d}.jpg"), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
        lm = np.stack([template() + [0.0, 0.1 * i] for i in range(n)]).astype(np.float32)
        np.save(d / "landmarks.npy", lm)
        np.save(d / "confidence.npy", np.ones(n, np.float32))
        ident = (identities or {}).get(clip_id, clip_id.split("__")[0])
        meta = {"clip_id": clip_id, "identity": ident, "n_frames": n, "size": STORED, "source": clip_id}
        (d / "meta.json").write_text(json.dumps(meta))
        lines.append({"clip_id": clip_id, "identity": ident, "n_frames": n, "source": clip_id, "status": "ok",
                      "reason": "", "warnings": []})
    lines.append({"clip_id": "zz_failed", "identity": "q", "n_frames": 0, "source": "x", "status": "failed",
                  "reason": "not a video", "warnings": []})
    (root / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


def frame_index(x: torch.Tensor) -> int:
    """Recover the frame index from the red channel of an unflipped or flipped synthetic frame."""
    red = (x[0, :, STORED // 2 - 2: STORED // 2 + 2].mean().item() + 1) * 127.5
    return int(round(red / 20))


@pytest.fixture
def root(tmp_path):
    return fake_preprocessed(tmp_path / "pp", {"ida__v1": 12, "ida__v2": 3, "idb__v1": 6, "idc__v9": 2})


def test_item_layout_and_ranges(root):
    ds = EpisodeDataset(root, k=4)
    assert len(ds) == ds.num_videos == 4 and ds.clip_ids == sorted(ds.clip_ids)
    item = ds[0]
    assert set(item) == {"x_src", "y_src", "x_tgt", "y_tgt", "p_src", "p_tgt", "video", "aug_seed"}
    assert item["aug_seed"] == ds[0]["aug_seed"] != ds[1]["aug_seed"]  # a function of the episode
    assert item["p_tgt"].shape == (68, 2) and item["p_tgt"].dtype == torch.float32
    # the target's landmarks are the ones its landmark image was drawn from
    from talking_heads.images import to_tensor
    from talking_heads.landmarks.raster import rasterize
    drawn = to_tensor(rasterize(item["p_tgt"].double().numpy(), STORED, ds.line_thickness))
    assert torch.equal(drawn, item["y_tgt"])
    assert item["p_src"].shape == (4, 68, 2) and item["p_src"].dtype == torch.float32
    for k in range(4):  # each source's landmarks are those its landmark image was drawn from
        drawn = to_tensor(rasterize(item["p_src"][k].double().numpy(), STORED, ds.line_thickness))
        assert torch.equal(drawn, item["y_src"][k])
    assert item["x_src"].shape == item["y_src"].shape == (4, 3, STORED, STORED)
    assert item["x_tgt"].shape == item["y_tgt"].shape == (3, STORED, STORED)
    assert item["video"].dtype == torch.int64 and item["video"].ndim == 0 and int(item["video"]) == 0
    for key in ("x_src", "y_src", "x_tgt", "y_tgt"):
        assert item[key].dtype == torch.float32 and item[key].min() >= -1 and item[key].max() <= 1
    assert item["y_tgt"].min() == -1  # black landmark canvas
    assert int(ds[7]["video"]) == 3  # indices beyond the length wrap (next epoch)


def test_target_is_never_among_the_sources(root):
    ds = EpisodeDataset(root, k=4)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            video, target, sources, _ = ds.sample(i)
            assert target not in sources and len(sources) == 4
            assert (sources >= 0).all() and (sources < ds.n_frames[video]).all()
            if ds.n_frames[video] > 4:  # enough frames: sources are distinct
                assert len(set(sources.tolist())) == 4
            item = ds[i]
            tgt = frame_index(item["x_tgt"])
            assert tgt == target and tgt not in [frame_index(x) for x in item["x_src"]]


def test_landmark_images_come_from_stored_landmarks(root):
    ds = EpisodeDataset(root, k=2)
    video, target, _, _ = ds.sample(0)
    lm = np.load(root / "clips" / ds.clip_ids[video] / "landmarks.npy")
    expected = rasterize(lm[target], STORED)
    got = ((ds[0]["y_tgt"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    np.testing.assert_array_equal(got, expected)


def test_seeded_and_epoch_dependent(root):
    a, b = EpisodeDataset(root, k=2, seed=1), EpisodeDataset(root, k=2, seed=1)
    for i in range(len(a)):
        torch.testing.assert_close(a[i], b[i])
    draws = {}
    for epoch in range(6):
        a.set_epoch(epoch)
        draws[epoch] = a.sample(0)[1:3]
    assert len({(t, tuple(s)) for t, s in draws.values()}) > 1  # episodes change with the epoch
    a.set_epoch(2)
    assert a.sample(0)[1] == draws[2][0]
    # a sampler that never calls set_epoch can encode the epoch in the index
    c = EpisodeDataset(root, k=2, seed=1)
    assert c.sample(2 * len(c) + 0)[1] == draws[2][0]
    other = EpisodeDataset(root, k=2, seed=2)
    assert any(other.sample(i)[1] != c.sample(i)[1] or (other.sample(i)[2] != c.sample(i)[2]).any()
               for i in range(len(c)))


def test_same_items_with_several_loader_workers(root):
    ds = EpisodeDataset(root, k=3, seed=3)
    ds.set_epoch(1)
    plain = [ds[i] for i in range(len(ds))]
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, shuffle=False)
    for i, batch in enumerate(loader):
        for key, value in plain[i].items():
            torch.testing.assert_close(batch[key][0], value)


def test_flip_is_consistent_for_images_and_landmarks(root):
    flipped_ds = EpisodeDataset(root, k=2, flip=True, seed=0)
    plain_ds = EpisodeDataset(root, k=2, flip=False, seed=0)
    n_flipped = 0
    for i in range(len(flipped_ds)):
        video, target, sources, flip = flipped_ds.sample(i)
        item = flipped_ds[i]
        if not flip:
            continue
        n_flipped += 1
        assert item["x_tgt"][:, :, -1].min() > 0.9  # white quarter moved to the right for every frame
        assert all(x[:, :, -1].min() > 0.9 for x in item["x_src"])
        lm = np.load(root / "clips" / flipped_ds.clip_ids[video] / "landmarks.npy")
        expected = rasterize(flip_landmarks(lm[target], STORED), STORED)
        got = ((item["y_tgt"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        np.testing.assert_array_equal(got, expected)
        # the subject's right eye (magenta) stays on the image's left after a flip
        e = expected.astype(int)
        magenta = np.argwhere((e[..., 0] > 120) & (e[..., 2] > 120) & (e[..., 1] < 60))
        assert len(magenta) and magenta[:, 1].mean() < STORED / 2
    assert n_flipped > 0
    assert all(not plain_ds.sample(i)[3] for i in range(len(plain_ds)))


def test_resize_filters_and_config(root):
    from talking_heads.config import preset

    ds = EpisodeDataset(root, k=2, image_size=16)
    assert ds[0]["x_src"].shape == (2, 3, 16, 16) and ds[0]["y_tgt"].shape == (3, 16, 16)
    only_a = EpisodeDataset(root, k=2, identities=["ida"])
    assert only_a.clip_ids == ["ida__v1", "ida__v2"] and set(only_a.identities) == {"ida"}
    assert "ida__v1" not in EpisodeDataset(root, k=2, exclude_identities=["ida"]).clip_ids
    cfg = preset("tiny")
    from_cfg = EpisodeDataset.from_config(root, cfg)
    assert from_cfg.k == cfg.train.k_shot and from_cfg.image_size == cfg.model.image_size
    assert from_cfg.flip == cfg.train.flip and from_cfg.seed == cfg.train.seed
    with pytest.raises(ValueError):
        EpisodeDataset(root, k=2, identities=["nobody"])
    with pytest.raises(ValueError, match="no such folder"):  # DatasetError, an InputError (issue 15)
        EpisodeDataset(root / "missing", k=2)
    train, test = identity_split(["a", "b", "c", "d", "e", "f", "g", "h"], 0.25, seed=0)
    assert not set(train) & set(test) and len(train) + len(test) == 8
    assert identity_split(["h", "g", "f", "e", "d", "c", "b", "a"], 0.25, seed=0) == (train, test)


@pytest.mark.slow
def test_episodes_from_real_preprocessed_clip(shared_data, tmp_path):
    from talking_heads.data.preprocess import preprocess

    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "d1.mp4").symlink_to(shared_data / "videos/test/lp_driving_d1_old.mp4")
    (inp / "d2.mp4").symlink_to(shared_data / "videos/test/lp_driving_d2_old.mp4")
    out = tmp_path / "out"
    assert preprocess(inp, out, size=64, max_frames=6, progress=False).all_ok
    ds = EpisodeDataset(out, k=4, flip=True)
    assert ds.num_videos == 2 and ds.identities == ["d1", "d2"]
    for i in range(2):
        item = ds[i]
        assert item["x_src"].shape == (4, 3, 64, 64) and -1 <= item["x_tgt"].min() and item["x_tgt"].max() <= 1
        assert (item["y_tgt"] > -1).float().mean() > 0.01  # landmark lines were drawn


def test_border_dropout_blacks_out_bands_and_marks_them_invalid(root):
    plain = EpisodeDataset(root, k=4, seed=3)
    assert "valid_src" not in plain[0]  # off by default: the episode layout is unchanged
    ds = EpisodeDataset(root, k=4, seed=3, border_dropout=1.0)
    item, again, ref = ds[1], ds[1], plain[1]
    valid = item["valid_src"]
    assert valid.shape == (4, 1, STORED, STORED) and torch.equal(valid, again["valid_src"])  # deterministic
    for k in range(4):
        lost = valid[k, 0] == 0
        frac = lost.float().mean()
        assert 0.07 < frac < 0.31  # one band along one edge
        rows, cols = lost.any(1), lost.any(0)
        assert rows.all() or cols.all()  # the band spans the whole side
        assert (item["x_src"][k][:, lost] == -1).all()  # black, as a photo's crop past its edge is given
        assert torch.equal(item["x_src"][k][:, ~lost], ref["x_src"][k][:, ~lost])  # the rest as it was
    for key in ("y_src", "x_tgt", "p_src"):  # the same episode: only the sources' pixels change
        assert torch.equal(item[key], ref[key])
