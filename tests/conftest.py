"""Settings shared by every test folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# The one setting that locates the shared, read-only sample data (MetalLB and KubeRay manifests).
DATA_ENV = "RAYLB_SHARED_DATA"
DATA_DIR = Path(os.environ.get(DATA_ENV, REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data (or $RAYLB_SHARED_DATA); skips, saying why, where it is absent."""
    if not DATA_DIR.is_dir():
        message = f"shared sample data not found at {DATA_DIR} (set ${DATA_ENV} to its path)"
        if os.environ.get("CI"):  # CI always has shared/ beside the clone: missing data is a failure there
            pytest.fail(message)
        pytest.skip(message)
    return DATA_DIR
