"""Checks on a configuration (positions, types, box) shared by every physics entry point."""

from __future__ import annotations

import numpy as np

from tglassmlp.physics.system import N_TYPES


class ConfigurationError(ValueError):
    """A configuration that the physics cannot use (wrong shape, NaN, unknown types, overlaps...)."""


def validate_configuration(positions, types, box, *, where: str = "configuration"):
    """Return (positions float64 (N, 2), types int64 (N,), box float) or raise ConfigurationError.

    ``where`` names the caller or file in the message so that the user knows which input is wrong.
    """
    try:
        positions = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: positions are not numeric ({exc})") from None
    if positions.ndim != 2 or positions.shape[1] != 2 or positions.shape[0] < 2:
        raise ConfigurationError(f"{where}: positions must have shape (N, 2) with N >= 2, got {positions.shape}")
    bad = ~np.isfinite(positions).all(axis=1)
    if bad.any():
        raise ConfigurationError(
            f"{where}: positions of {bad.sum()} particle(s) are not finite (first: particle {np.flatnonzero(bad)[0]})"
        )
    types_arr = np.asarray(types)
    if types_arr.shape != (positions.shape[0],):
        raise ConfigurationError(
            f"{where}: types must have shape ({positions.shape[0]},) to match positions, got {types_arr.shape}"
        )
    if not np.issubdtype(types_arr.dtype, np.integer):
        if np.issubdtype(types_arr.dtype, np.floating) and np.all(np.isfinite(types_arr)) and np.all(
            types_arr == np.round(types_arr)
        ):
            types_arr = types_arr.astype(np.int64)
        else:
            raise ConfigurationError(f"{where}: types must be integers 0, 1, 2, got dtype {types_arr.dtype}")
    types_arr = types_arr.astype(np.int64)
    unknown = (types_arr < 0) | (types_arr >= N_TYPES)
    if unknown.any():
        raise ConfigurationError(
            f"{where}: unknown particle types {sorted(set(types_arr[unknown].tolist()))} "
            f"(expected 0, 1, 2; GlassBench's 1..3 are converted by tglassmlp.data.read_glassbench)"
        )
    try:
        box = float(np.asarray(box).reshape(()))
    except (TypeError, ValueError):
        raise ConfigurationError(f"{where}: box must be one number (square side length), got {box!r}") from None
    if not np.isfinite(box) or box <= 0:
        raise ConfigurationError(f"{where}: box side must be finite and positive, got {box}")
    return positions, types_arr, box
