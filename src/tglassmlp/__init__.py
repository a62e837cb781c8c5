"""tglassmlp: transferable GlassMLP for the 2D ternary Kob-Andersen glass former."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# numba's default threading layer here is OpenMP (libgomp), torch ships its own OpenMP runtime: once a numba
# parallel kernel has run, the two runtimes' spinning worker threads fight over the cores and torch's steps in the
# same process became ~10x slower (tglassmlp.model.fused next to the torch validation; benchmarks/training.py).
# numba's own 'workqueue' layer has no such interaction. An explicit NUMBA_THREADING_LAYER is respected.
if "NUMBA_THREADING_LAYER" not in _os.environ:
    _os.environ["NUMBA_THREADING_LAYER"] = "workqueue"
    if "numba" in _sys.modules:  # imported before us: its config was read already, but no layer launched yet
        _sys.modules["numba"].config.THREADING_LAYER = "workqueue"
