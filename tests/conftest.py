"""Shared fixtures: the real footage folder (../shared/data) and the tiny preset."""

from __future__ import annotations

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
