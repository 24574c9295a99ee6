"""Where the toolkit keeps what it fetches and computes: ``$TOOLKIT_CACHE``, else ``~/.cache/toolkit``.

One root for every stage: ``weights/`` holds fetched wheels and converted models (the door reads them too),
``features/`` the feature cache of training. Read at call time, so tests can redirect it.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "TOOLKIT_CACHE"


def cache_home() -> Path:
    """``$TOOLKIT_CACHE`` when set, else ``~/.cache/toolkit``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "toolkit"


def weights_root() -> Path:
    """Fetched wheels and converted models: ``<cache home>/weights``."""
    return cache_home() / "weights"


def features_root() -> Path:
    """The feature cache of training: ``<cache home>/features``."""
    return cache_home() / "features"
