"""The state-point vocabulary: how a temperature, a level c = <C_B> and a state point (T, c) are written in
directory names, metric names and manifests (``T0.600``, ``c0.50``, ``T0.600_c0.50``), and read back."""

from __future__ import annotations

import re

_STATE_POINT = re.compile(r"^T(?P<t>-?\d+(?:\.\d+)?)_c(?P<c>-?\d+(?:\.\d+)?(?:e-?\d+)?)$")


def format_temperature(temperature: float) -> str:
    """``T0.600``: the temperature as in shard directory names."""
    return f"T{float(temperature):.3f}"


def format_level(level: float) -> str:
    """``c0.50``; more decimals only when two decimals would not represent the level (0.875 -> c0.875)."""
    c = float(level)
    return f"c{c:.2f}" if abs(c - round(c, 2)) < 1e-6 else f"c{c:g}"


def state_point_name(temperature: float, level: float) -> str:
    """Readable name of a state point, used in metric names: ``T0.600_c0.50``."""
    return f"{format_temperature(temperature)}_{format_level(level)}"


def parse_state_point(name: str) -> tuple[float, float] | None:
    """(T, c) of a name 'T0.600_c0.50' (:func:`state_point_name`); None for anything else ('avg')."""
    m = _STATE_POINT.match(name)
    return (float(m["t"]), float(m["c"])) if m else None
