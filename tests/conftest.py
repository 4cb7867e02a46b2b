"""Shared fixtures: the real footage folder (../shared/data), the tiny preset and a tiny model directory."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """../shared/data beside the checkout, or $TALKING_HEADS_DATA; None when absent."""
    env = os.environ.get("TALKING_HEADS_DATA")
    path = Path(env) if env else ROOT.parent / "shared" / "data"
    return path if (path / "manifest.csv").is_file() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real footage not found: put ../shared/data beside the checkout or set TALKING_HEADS_DATA")
    return path


@pytest.fixture
def tiny_config():
    from talking_heads.config import preset

    return preset("tiny")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A model directory of the tiny preset (random weights, seed 0), written once per session: what the
    pipeline, avatar and animate tests load (no shipped weights needed)."""
    import torch

    from talking_heads.checkpoint import save_model_dir
    from talking_heads.config import preset
    from talking_heads.models import build_networks

    cfg = preset("tiny")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_model") / "model"
    save_model_dir(path, cfg, build_networks(cfg, num_videos=3), num_videos=3, content_loss="offline", step=0)
    return path


def load_script(name: str):
    """A module of scripts/ (not a package) by file name, e.g. load_script("code_stats")."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
