"""Where the project's data files live (configs/, bundled weights) relative to the checkout."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS_DIR = Path(os.environ.get("PREREAD_CONFIGS_DIR", REPO_ROOT / "configs"))
SHARED_DATA_DIR = Path(os.environ.get("PREREAD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def config_path(*parts: str) -> Path:
    return CONFIGS_DIR.joinpath(*parts)
