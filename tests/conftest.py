"""Test-wide settings: offline, single-threaded, deterministic."""

import os

# Must be set before torch is imported anywhere (see ../shared/OFFLINE.md: threads).
os.environ.setdefault("OMP_NUM_THREADS", "1")
for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_k] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed():
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def test_assets() -> Path:
    """Folder with the real tokenizer vocabularies (made by `make test-assets`)."""
    path = Path(os.environ.get("EMOLLM_TEST_ASSETS", REPO / ".cache" / "test-assets"))
    if not (path / ".complete").exists():
        pytest.fail(f"test assets missing in {path}: run `make test-assets` (or `make test`, which fetches them)")
    return path
