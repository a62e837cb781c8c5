"""Where the project's config tree lives (one place, so every module finds the same files)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def config_dir() -> Path:
    """The Hydra config tree ``conf/``; ``TGLASSMLP_CONF`` overrides it (e.g. for a non-editable install)."""
    path = Path(os.environ.get("TGLASSMLP_CONF", PROJECT_ROOT / "conf"))
    if not (path / "system").is_dir():
        raise FileNotFoundError(
            f"tglassmlp config tree not found at {path} (expected {path}/system/*.yaml); "
            "install the project in editable mode (make test does) or set TGLASSMLP_CONF"
        )
    return path
