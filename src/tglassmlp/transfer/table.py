"""Table I of the two-step transfer (paper Sec. II E): the role of every state point (T, c = <C_B>): 'x' MD
labels, 't' labels transferred by step 1, 'r' predictions only, 'h' held-out MD."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tglassmlp.statepoints import state_point_name


# ================================================================================================ Table I
def as_table(mapping: Mapping | None, what: str) -> dict[float, tuple[float, ...]]:
    """{T: (c, ...)} with rounded float keys and levels sorted high to low, from a config mapping."""
    out: dict[float, tuple[float, ...]] = {}
    for t, cs in dict(mapping or {}).items():
        try:
            temperature = round(float(t), 3)
            levels = [cs] if isinstance(cs, (int, float)) else [float(c) for c in cs]
        except (TypeError, ValueError):
            raise ValueError(f"transfer.{what}: expected {{T: [c, ...]}}, got {t!r}: {cs!r}") from None
        bad = [c for c in levels if not 0.0 < c < 1.0]
        if bad:
            raise ValueError(f"transfer.{what}[{t}]: levels <C_B> must lie in (0, 1), got {bad}")
        out[temperature] = tuple(sorted(set(out.get(temperature, ())) | set(levels), reverse=True))
    return dict(sorted(out.items(), reverse=True))


@dataclass(frozen=True)
class TransferTable:
    """The roles of the state points (paper Table I): {T: levels} for each role.

    Attributes:
        md: 'x', MD labels used for training.
        transferred: 't', labels made by step 1 on the structures at T (no MD used there).
        results: 'r', where predictions are wanted (scored by the selection, never trained on).
        held_out: 'h', MD labels kept out of training to measure the transfer.
    """

    md: dict[float, tuple[float, ...]]
    transferred: dict[float, tuple[float, ...]]
    results: dict[float, tuple[float, ...]] = field(default_factory=dict)
    held_out: dict[float, tuple[float, ...]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, md, transferred, results=None, held_out=None) -> TransferTable:
        if not md:
            raise ValueError("transfer.md is empty: choose a preset (experiment=demo_transfer, paper_tmin021, "
                             "paper_tmin025) or give {T: [levels]} of the MD state points")
        table = cls(as_table(md, "md"), as_table(transferred, "transferred"), as_table(results, "results"),
                    as_table(held_out, "held_out"))
        table.validate()
        return table

    def points(self, role: str) -> list[tuple[float, float]]:
        """(T, c) pairs of one role ('md', 'transferred', 'results', 'held_out')."""
        return [(t, c) for t, cs in getattr(self, role).items() for c in cs]

    def validate(self) -> None:
        md, tr = set(self.points("md")), set(self.points("transferred"))
        both = sorted(md & tr)
        if both:
            raise ValueError(f"state points both 'x' (md) and 't' (transferred): {both}")
        leak = sorted(md & set(self.points("held_out")))
        if leak:
            raise ValueError(f"held-out state points {leak} are also MD training points ('x')")
        for t, c in sorted(tr):
            above = [tm for tm, cs in self.md.items() if c in cs and tm > t]
            if not above:
                raise ValueError(f"transferred point {state_point_name(t, c)}: no MD temperature above {t} has "
                                 f"the level {c}; step 1 has nothing to learn from")

    # --------------------------------------------------------------------------------------- step 1
    @property
    def step1_levels(self) -> list[float]:
        """Levels with transferred entries (one equi-time ensemble each), high to low."""
        return sorted({c for _, c in self.points("transferred")}, reverse=True)

    def equitime_state_points(self, level: float) -> dict[float, list[float]]:
        """{T: [c]}: the MD temperatures at this level (training data of its step-1 ensemble)."""
        return {t: [level] for t, cs in sorted(self.md.items()) if level in cs}

    def t_min(self, level: float | None = None) -> float:
        """Lowest MD temperature (at ``level``; None: over all levels)."""
        temps = [t for t, cs in self.md.items() if level is None or level in cs]
        return min(temps)

    def transfer_temperatures(self, level: float) -> list[float]:
        return sorted(t for t, cs in self.transferred.items() if level in cs)

    def selection_points(self, level: float | None = None) -> list[tuple[float, float]]:
        """(T, c) scored by the self-consistency test: 't' and 'r' points below T_min (of ``level``, at that
        level only; None: the step-2 selection, below the overall T_min, at every level)."""
        t_min = self.t_min(level)
        pts = set(self.points("transferred")) | set(self.points("results"))
        return sorted((t, c) for t, c in pts if t < t_min - 1e-9 and (level is None or c == level))

    # --------------------------------------------------------------------------------------- step 2
    @property
    def step2_state_points(self) -> dict[float, list[float]]:
        """{T: levels} of step 2: every 'x' and 't' point."""
        out: dict[float, set[float]] = {}
        for t, c in self.points("md") + self.points("transferred"):
            out.setdefault(t, set()).add(c)
        return {t: sorted(cs, reverse=True) for t, cs in sorted(out.items())}

    def to_markdown(self) -> str:
        """Table I in the paper's layout: rows <C_B> (high to low), columns T (low to high);
        x MD, t transferred, r results, h held-out MD."""
        roles = (("md", "x"), ("transferred", "t"), ("results", "r"), ("held_out", "h"))
        temps = sorted({t for role, _ in roles for t, _ in self.points(role)})
        levels = sorted({c for role, _ in roles for _, c in self.points(role)}, reverse=True)
        lines = ["| <C_B> \\ T | " + " | ".join(f"{t:g}" for t in temps) + " |",
                 "|---|" + "---|" * len(temps)]
        for c in levels:
            cells = []
            for t in temps:
                marks = "".join(m for role, m in roles if c in getattr(self, role).get(t, ()))
                cells.append(marks)
            lines.append(f"| {c:g} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


