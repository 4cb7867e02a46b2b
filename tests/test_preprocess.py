"""`talking-heads preprocess`: discovery, identities, layout, resume, shards, a killed run (issue 3 item 4)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from talking_heads.data import preprocess as pp

SIZE = 64  # small crops keep the tests fast; detection runs on the original frames anyway
MAX_FRAMES = 5


# --- discovery (no decoding) ------------------------------------------------------------------------

def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_discover_ids_identities_and_shards(tmp_path):
    root = tmp_path / "in"
    touch(root / "id001" / "vidA" / "00001.mp4")
    touch(root / "id001" / "vidA" / "00002.MOV")
    touch(root / "id002" / "vidB" / "00001.webm")
    touch(root / "loose clip (1).avi")
    touch(root / "talk" / "frames_clip" / "000001.jpg")
    touch(root / "talk" / "frames_clip" / "000002.jpg")
    touch(root / "notes.txt")
    touch(root / ".hidden" / "x.mp4")
    touch(root / "out" / "clips" / "c" / "frames" / "000000.jpg")  # an OUT inside INPUT is not input
    csv = touch(tmp_path / "ids.csv", b"path,identity\nin/loose clip (1).avi,alice\nid002/vidB/00001.webm,bob\n")
    found = pp.discover(root, manifest=csv, exclude=[root / "out"])
    by_rel = {s.rel: s for s in found}
    assert set(by_rel) == {"id001/vidA/00001.mp4", "id001/vidA/00002.MOV", "id002/vidB/00001.webm",
                           "loose clip (1).avi", "talk/frames_clip"}
    assert by_rel["id001/vidA/00001.mp4"].identity == "id001"  # VoxCeleb2 layout
    assert by_rel["id002/vidB/00001.webm"].identity == "bob"  # CSV, path relative to INPUT
    assert by_rel["loose clip (1).avi"].identity == "alice"  # CSV, path relative to the CSV's folder
    assert by_rel["talk/frames_clip"].identity == "frames_clip" and by_rel["talk/frames_clip"].kind == "frames"
    assert by_rel["id001/vidA/00001.mp4"].clip_id == "id001__vidA__00001.mp4"
    ids = [s.clip_id for s in found]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(pp.make_clip_id(s.rel) == s.clip_id and "/" not in s.clip_id and " " not in s.clip_id for s in found)
    assert [s.clip_id for s in pp.discover(root, exclude=[root / "out"])] == ids  # stable
    shards = [{s.clip_id for s in found if pp.shard_of(s.clip_id, 3) == i} for i in range(3)]
    assert set().union(*shards) == set(ids) and sum(map(len, shards)) == len(ids)
    # the stem rule, and a single file as INPUT
    assert pp.discover(root / "loose clip (1).avi")[0].identity == "loose clip (1)"


# --- real clips ---------------------------------------------------------------------------------------

def make_input(shared_data: Path, root: Path) -> Path:
    """A VoxCeleb2-like tree of symlinks to three short real clips (512 px video, 224 px video, frames)."""
    links = {
        "id_a/v1/00001.mp4": "videos/test/lp_driving_d1_old.mp4",
        "id_b/v2/00001.mp4": "videos/test/pcavs_Audio_Source_00373.mp4",
        "id_c/v3/clip1": "frames/pcavs_Pose_Source_517600078",
    }
    for rel, target in links.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(shared_data / target, root / rel)
    return root


@pytest.fixture(scope="module")
def processed(shared_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("pp")
    inp = make_input(shared_data, base / "in")
    out = base / "out"
    report = pp.preprocess(inp, out, size=SIZE, max_frames=MAX_FRAMES, progress=False)
    return inp, out, report


def test_preprocess_writes_clips_and_manifest(processed):
    inp, out, report = processed
    assert report.all_ok and report.processed == 3 and report.counts == {"ok": 3, "skipped": 0, "failed": 0}
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [m["identity"] for m in manifest] == ["id_a", "id_b", "id_c"]
    assert pp.read_manifest(out) == manifest
    assert json.loads((out / "preprocess.json").read_text())["size"] == SIZE
    for m in manifest:
        d = out / "clips" / m["clip_id"]
        meta = json.loads((d / "meta.json").read_text())
        n = meta["n_frames"]
        assert n == m["n_frames"] and 2 <= n <= MAX_FRAMES
        frames = sorted((d / "frames").iterdir())
        assert [f.name for f in frames] == [f"{i:06d}.jpg" for i in range(n)]
        lm, conf = np.load(d / "landmarks.npy"), np.load(d / "confidence.npy")
        assert lm.shape == (n, 68, 2) and lm.dtype == np.float32 and conf.shape == (n,)
        assert (lm >= 0).all() and (lm < SIZE).all() and (conf > 0).all()
        assert len(meta["frame_indices"]) == n and meta["frame_indices"] == sorted(meta["frame_indices"])
        assert meta["crop"]["size"] == SIZE and meta["fps"] > 0 and meta["width"] > 0
        assert meta["source"] == m["source"] and Path(meta["source_path"]).name == Path(m["source"]).name
        from PIL import Image

        with Image.open(frames[0]) as im:
            assert im.size == (SIZE, SIZE) and im.mode == "RGB"


def test_second_run_does_no_work(processed):
    inp, out, _ = processed
    before = {p: p.stat().st_mtime_ns for p in (out / "clips").rglob("*")}
    report = pp.preprocess(inp, out, size=SIZE, max_frames=MAX_FRAMES, progress=False)
    assert report.processed == 0 and report.all_ok and len(report.records) == 3
    assert {p: p.stat().st_mtime_ns for p in (out / "clips").rglob("*")} == before
    with pytest.raises(ValueError, match="other settings"):
        pp.preprocess(inp, out, size=SIZE * 2, progress=False)


def test_manifest_can_be_rebuilt_from_the_clip_folders(processed):
    _, out, _ = processed
    listed = pp.read_manifest(out)
    assert pp.rebuild_manifest(out) == listed


def test_two_shards_partition_the_clips(processed, tmp_path):
    inp, _, full = processed
    out = tmp_path / "sharded"
    r0 = pp.preprocess(inp, out, size=SIZE, max_frames=MAX_FRAMES, shard_index=0, num_shards=2, progress=False)
    ids0 = {r["clip_id"] for r in r0.records}
    assert pp.read_manifest(out) == pp.rebuild_manifest(out)  # shard 1 missing: listed from the folders
    r1 = pp.preprocess(inp, out, size=SIZE, max_frames=MAX_FRAMES, shard_index=1, num_shards=2, progress=False)
    ids1 = {r["clip_id"] for r in r1.records}
    assert not ids0 & ids1 and ids0 | ids1 == {r["clip_id"] for r in full.records}
    assert (out / "manifest-shard-00000-of-00002.jsonl").is_file()
    assert (out / "manifest-shard-00001-of-00002.jsonl").is_file()
    assert [r["clip_id"] for r in pp.read_manifest(out)] == sorted(ids0 | ids1)


def test_killed_run_resumes(processed, tmp_path, monkeypatch):
    inp, _, _ = processed
    out = tmp_path / "killed"
    real_write = pp._write_frames
    calls = []

    def dying_write(folder, *args, **kwargs):  # the process dies while writing the second clip
        calls.append(folder)
        if len(calls) == 2:
            (folder).mkdir(parents=True, exist_ok=True)
            (folder / "000000.jpg").write_bytes(b"partial")
            raise KeyboardInterrupt
        return real_write(folder, *args, **kwargs)

    monkeypatch.setattr(pp, "_write_frames", dying_write)
    with pytest.raises(KeyboardInterrupt):
        pp.preprocess(inp, out, size=SIZE, max_frames=MAX_FRAMES, progress=False)
    monkeypatch.undo()
    clips = sorted(p.name for p in (out / "clips").iterdir())
    assert len(clips) == 1 and (out / "clips" / clips[0] / "meta.json").is_file()  # no half-written clip
    assert [r["status"] for r in pp.read_manifest(out)] == ["ok"]
    # a SIGKILL leaves the temporary folder behind: it must not look finished, and is cleaned on resume
    all_ids = [s.clip_id for s in pp.discover(inp)]
    leftover = out / "clips" / f".{all_ids[2]}.abc123.tmp"
    (leftover / "frames").mkdir(parents=True)
    assert [r["clip_id"] for r in pp.rebuild_manifest(out)] == clips
    report = pp.preprocess(inp, out, size=SIZE, max_frames=MAX_FRAMES, progress=False)
    assert report.processed == 2 and report.all_ok
    assert not leftover.exists()
    assert sorted(p.name for p in (out / "clips").iterdir()) == sorted(all_ids)


@pytest.mark.slow
def test_cli_with_two_workers(processed, tmp_path, capsys):
    from talking_heads.cli import main

    inp, _, _ = processed
    out = tmp_path / "cli"
    code = main(["preprocess", str(inp), str(out), "--size", str(SIZE), "--max-frames", "3", "--workers", "2",
                 "--no-progress"])
    assert code == 0
    assert "3 ok, 0 skipped, 0 failed" in capsys.readouterr().out
    assert len(pp.read_manifest(out)) == 3
    assert main(["preprocess", str(inp), str(out), "--merge-manifests"]) == 0


def test_two_inputs_into_one_out_keep_both_in_the_manifest(shared_data, tmp_path):
    """A folder of videos and then a folder of frames preprocessed into the same OUT: all clips listed."""
    out = tmp_path / "out"
    pp.preprocess(shared_data / "videos" / "test" / "lp_driving_d1_old.mp4", out, size=SIZE, max_frames=3,
                  progress=False)
    pp.preprocess(shared_data / "frames" / "pcavs_Pose_Source_517600078", out, size=SIZE, max_frames=3,
                  progress=False)
    ids = {r["clip_id"] for r in pp.read_manifest(out)}
    assert len(ids) == 2 and ids == {p.name for p in (out / "clips").iterdir()}
