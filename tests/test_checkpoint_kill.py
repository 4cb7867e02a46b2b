"""Checkpoints that survive any kill (issue 15 item 6): a SIGKILL after every rename and link of a checkpoint
and after the first and last of each run of file writes resumes from the last complete checkpoint, bit-exactly,
with no stray copies; SIGTERM stops cleanly
with a checkpoint; runs in the earlier layout (and the earlier layout's kill damage) resume; a new run that
fails before its first checkpoint leaves no folder; preprocess workers die with their parent.

The kills are real: a child process replaces `atomic.fault_point` with a function that SIGKILLs the
process at its N-th call (no `finally` block, no atexit handler runs, as with a real kill)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from talking_heads import atomic, checkpoint
from talking_heads.config import apply_overrides, preset
from talking_heads.train import meta, steps
from talking_heads.bench import SyntheticEpisodes

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["train.steps=3", "train.checkpoint_every=1", "train.sample_every=1", "train.batch_size=2"]

CHILD = r"""
import os, signal, sys
import torch
torch.set_num_threads(1)
from talking_heads import atomic
from talking_heads.config import apply_overrides, preset
from talking_heads.train import meta
from talking_heads.bench import SyntheticEpisodes

# one process imports torch once and forks a training per kill point (OMP_NUM_THREADS=1: no thread pool to
# inherit); each fork SIGKILLs itself at its N-th fault point and this process reports how it ended
folder, points, overrides = sys.argv[1], [int(n) for n in sys.argv[2].split(",")], sys.argv[3:]
cfg = apply_overrides(preset("tiny"), overrides)
for kill_at in points:
    pid = os.fork()
    if pid == 0:
        calls = [0]

        def fault(what):
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        atomic.fault_point = fault
        meta.train(os.path.join(folder, f"killed_{kill_at}"), cfg=cfg,
                   dataset=SyntheticEpisodes(cfg, num_episodes=5, num_videos=3), progress=False)
        os._exit(0)  # not killed: reported as such
    _, status = os.waitpid(pid, 0)
    print(kill_at, os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status), flush=True)
"""

def _dataset():
    return SyntheticEpisodes(apply_overrides(preset("tiny"), OVERRIDES), num_episodes=5, num_videos=3)


def _train(run, **kw):
    return meta.train(run, cfg=apply_overrides(preset("tiny"), OVERRIDES), dataset=_dataset(), progress=False, **kw)


def _params(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for name in checkpoint.NETWORK_NAMES:
        out.update({f"{name}.{k}": v for k, v in load_file(str(model_dir / f"{name}.safetensors")).items()})
    return out


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the child runs with 1 thread: the same kernels, so bit-equal results
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-step run (a checkpoint after every step) and the fault points it passed."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    seen: list[str] = []
    real = atomic.fault_point
    atomic.fault_point = seen.append
    try:
        run = tmp_path_factory.mktemp("kill") / "full"
        _train(run)
    finally:
        atomic.fault_point = real
        torch.set_num_threads(n)
    return run, seen


def assert_same_run(run: Path, ref: Path) -> None:
    a, b = _params(ref / "model"), _params(run / "model")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ta = torch.load(ref / "training_state.pt", weights_only=True)
    tb = torch.load(run / "training_state.pt", weights_only=True)
    assert ta["step"] == tb["step"] == 3 and ta["sampler"] == tb["sampler"]
    for opt in ("generator", "discriminator"):
        sa, sb = ta["optimizers"][opt]["state"], tb["optimizers"][opt]["state"]
        for i in sa:
            assert torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) and torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"])
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


def assert_clean(run: Path) -> None:
    """One checkpoint, the fixed links, no temporaries or second copies anywhere."""
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["checkpoints", "latest", "log.jsonl", "loss_curves.png", "model", "samples", "training_state.pt"])
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_0000003"]
    assert os.readlink(run / "latest") == "checkpoints/step_0000003"
    assert os.readlink(run / "model") == "latest/model" and os.readlink(run / "training_state.pt") == "latest/training_state.pt"
    assert not [p for p in run.rglob(".*")], "temporary files left behind"
    assert checkpoint.read_config(run / "model")[1]["step"] == 3  # RUN/model is a model directory


def test_layout_and_fault_points(reference):
    run, seen = reference
    assert_clean(run)
    per_checkpoint = len(seen) // 3
    assert len(seen) > 20 and per_checkpoint >= 8
    names = " | ".join(seen)
    for what in ("wrote embedder.safetensors", "wrote training_state.pt", "wrote config.json",
                 "renamed the checkpoint folder", "switched latest", "removed step_0000001"):
        assert what in names
    _, meta_block, _ = checkpoint.load_model_dir(run / "model")  # what users pass to other commands
    assert meta_block["step"] == 3


def _kill_points(seen: list[str]) -> list[int]:
    """1-based fault-point numbers: every point of the second checkpoint (a previous one exists, and is
    removed at its end), and of the first one from the rename of its folder on (the first commit and the
    fixed links)."""
    commits = [i for i, s in enumerate(seen, 1) if s == "switched latest"]
    first_rename = seen.index("renamed the checkpoint folder") + 1
    points = list(range(first_rename, commits[1] + 2))
    kind = lambda n: seen[n - 1].split()[0] if n <= len(seen) else ""  # noqa: E731 - "wrote", "linked", ...
    # a run of writes of one kind (e.g. each network's file into the unfinished folder) leaves the same state
    # after each: its first and last stand for it
    return [n for n in points if kind(n) != kind(n - 1) or kind(n) != kind(n + 1)]


def test_sigkill_at_every_write_and_rename_resumes_bit_exactly(reference, tmp_path, one_thread):
    ref, seen = reference
    points = _kill_points(seen)
    assert len(points) >= 10
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), ",".join(map(str, points)), *OVERRIDES],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ended = dict(tuple(map(int, line.split())) for line in proc.stdout.split("\n") if line.strip())
    for n in points:
        assert ended.get(n) == signal.SIGKILL, (n, seen[n - 1], ended.get(n), proc.stderr[-2000:])
        run = tmp_path / f"killed_{n}"
        _train(run)  # resume (the run's checkpoint, or from the start when the first commit never happened)
        assert_same_run(run, ref)
        assert_clean(run)


def test_sigterm_stops_cleanly_with_a_checkpoint_and_resumes(reference, tmp_path, monkeypatch, one_thread):
    ref, _ = reference
    real_g, calls = steps.GanStep.generator_step, {"n": 0}

    def terminated_in_step_2(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-step: the step finishes, then a checkpoint
        return real_g(self, *args, **kw)

    monkeypatch.setattr(steps.GanStep, "generator_step", terminated_in_step_2)
    run = tmp_path / "run"
    with pytest.raises(meta.StoppedBySignal, match="SIGTERM at step 2") as err:
        meta.train(run, cfg=apply_overrides(preset("tiny"), OVERRIDES[:1] + ["train.checkpoint_every=10"]),
                   overrides=OVERRIDES[1:], dataset=_dataset(), progress=False)
    assert err.value.step == 2 and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert checkpoint.read_config(run / "model")[1]["step"] == 2
    monkeypatch.setattr(steps.GanStep, "generator_step", real_g)
    _train(run)
    assert_same_run(run, ref)


def _legacy(run: Path, ref: Path, step_folder: str) -> None:
    """Turn a run into the layout before checkpoint folders: RUN/model/ and RUN/training_state.pt."""
    folder = run / "checkpoints" / step_folder
    for name in ("model", "training_state.pt", "latest"):
        (run / name).unlink()
    shutil.move(folder / "model", run / "model")
    shutil.move(folder / "training_state.pt", run / "training_state.pt")
    shutil.rmtree(run / "checkpoints")


def test_earlier_layout_resumes_and_is_converted(reference, tmp_path, one_thread):
    ref, _ = reference
    run = tmp_path / "old"
    meta.train(run, cfg=apply_overrides(preset("tiny"), OVERRIDES), overrides=["train.steps=2"], dataset=_dataset(),
               progress=False)
    _legacy(run, ref, "step_0000002")
    assert meta.has_checkpoint(run) and (run / "model").is_dir() and not (run / "model").is_symlink()
    _train(run, overrides=["train.steps=3"])
    assert_same_run(run, ref)
    assert_clean(run)


def test_earlier_layouts_kill_between_its_two_renames_is_recovered(reference, tmp_path, one_thread):
    """The old atomic_dir moved model/ aside (.model.old-PID) and was killed before moving the new one in:
    the old version restarted from step 0 and deleted log.jsonl."""
    ref, _ = reference
    run = tmp_path / "old"
    meta.train(run, cfg=apply_overrides(preset("tiny"), OVERRIDES), overrides=["train.steps=2"], dataset=_dataset(),
               progress=False)
    _legacy(run, ref, "step_0000002")
    (run / "model").rename(run / ".model.old-4242")
    assert meta.has_checkpoint(run)
    _train(run, overrides=["train.steps=3"])
    assert_same_run(run, ref)
    assert_clean(run)


def test_new_run_failing_before_its_first_checkpoint_leaves_no_folder(tmp_path, monkeypatch):
    def fails(self, *args, **kw):
        raise FloatingPointError("boom")

    monkeypatch.setattr(steps.GanStep, "generator_step", fails)
    with pytest.raises(FloatingPointError):
        _train(tmp_path / "new")
    assert not (tmp_path / "new").exists()


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_preprocess_workers_die_with_their_parent(shared_data, tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(4):
        (tmp_path / "in" / f"clip{i}.mp4").symlink_to(shared_data / "videos/test/lp_driving_d1_old.mp4")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "talking_heads", "preprocess", str(tmp_path / "in"),
                             str(tmp_path / "out"), "--workers", "2", "--size", "64", "--no-progress"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.5)
            workers = [c for c in _children(proc.pid)
                       if b"spawn_main" in (Path("/proc") / str(c) / "cmdline").read_bytes()]
        assert len(workers) >= 2, "the workers did not start"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "workers outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers:  # a failing run must not leave them behind either
            if _alive(w):
                os.kill(w, signal.SIGKILL)


GROUP_CHILD = r"""
import sys
import torch
torch.set_num_threads(1)
from talking_heads.config import apply_overrides, preset
from talking_heads.train import meta
from talking_heads.bench import SyntheticEpisodes

cfg = apply_overrides(preset("tiny"), ["train.steps=100000", "train.checkpoint_every=100000", "train.num_workers=1"])
try:
    meta.train(sys.argv[1], cfg=cfg, dataset=SyntheticEpisodes(cfg, num_episodes=5, num_videos=3), progress=False)
except meta.StoppedBySignal as stop:
    print("stopped at step", stop.step, flush=True)
    sys.exit(3)
"""


def test_sigterm_to_the_whole_process_group_with_loader_workers_stops_cleanly(tmp_path):
    """Ctrl-C in a terminal or a service manager signals every process of the run, its data-loading workers
    too: the workers must leave the stop to the trainer, which finishes its step and checkpoints."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", GROUP_CHILD, str(run)], env=env, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (run / "log.jsonl").is_file():  # training steps are running
            time.sleep(0.2)
        assert (run / "log.jsonl").is_file(), child.stderr.read() if child.poll() is not None else "no step logged"
        os.killpg(child.pid, signal.SIGTERM)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 3, err[-2000:]
    step = int(out.split("stopped at step")[1].split()[0])
    assert checkpoint.read_config(run / "model")[1]["step"] == step >= 1
