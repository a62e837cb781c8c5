"""t_max of the paper preset's MD temperatures from the time-temperature superposition, and the cost it implies.

Table I ('x' cells) asks for MD labels down to <C_B> = 0.5 at T = 0.25, 0.75 at 0.23 and 0.8 at 0.21
(conf/experiment/paper_tmin021.yaml, ``transfer.md``). Whether conf/simulation_dataset/paper.yaml's t_max reaches them
is estimated with ``tglassmlp.observables.tts.TimeTemperatureSuperposition`` fitted to

* the demo dataset's <C_B>(t) curves (data/demo: T = 0.6 ... 0.4, 4 structures each): the master curve's
  stretching beta and tau_alpha there;
* the GlassBench anchor at T = 0.23 (../shared/reference/glassmlp-facts.md, section 2: <C_B> = 0.74 at
  t = 1.5e6, one point): tau_alpha(0.23) by overlap with the master curve.

tau_alpha(0.21) then comes from two Arrhenius laws, both reported:
  A. TimeTemperatureSuperposition's own Arrhenius fit over T <= 0.4 (0.4 and 0.23);
  B. the Arrhenius law through tau_alpha(0.23) and tau_alpha(T_g = 0.15) = tau_glass = 1e12 (the paper's T_g),
     set as the superposition's Arrhenius parameters.
The glass former is super-Arrhenius, so the chord B (to T_g) is steeper than the local law near 0.21 and gives
the longer (safer) time; the preset takes a t_max at which B's <C_B> is clearly below the lowest 'x' level.

Writes benchmarks/results/paper_t_max.{md,json}. ``python benchmarks/paper_t_max.py`` (seconds).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import shlex
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

from machine import machine_info  # noqa: E402

from tglassmlp.analysis.labels_report import temperature_curves  # noqa: E402
from tglassmlp.observables.tts import TimeTemperatureSuperposition  # noqa: E402
from tglassmlp.paths import config_dir  # noqa: E402
from tglassmlp.tracking import git_commit  # noqa: E402

DEMO = ROOT / "data" / "demo"
# GlassBench (facts, section 2): <C_B> at t = 1.5e6 for T = 0.23
ANCHOR_T, ANCHOR_TIME, ANCHOR_LEVEL = 0.23, 1.5e6, 0.74
T_GLASS = 0.15  # the paper's T_g: tau_alpha = tau_glass there
ARRHENIUS_T_MAX_A = 0.4  # fit A: the measured temperatures <= 0.4 (0.4 and the anchor)
# the CPU rate of benchmarks/results/paper_scale_projection.md (isoconfigurational_runs end to end, per core)
CPU_RATE_PER_CORE = 0.885e6


def main():
    labels = OmegaConf.load(Path(config_dir()) / "labels" / "default.yaml")
    table = OmegaConf.load(Path(config_dir()) / "experiment" / "paper_tmin021.yaml").transfer.md
    lowest_x = {float(T): min(levels) for T, levels in table.items()}
    ds = OmegaConf.load(Path(config_dir()) / "simulation_dataset" / "paper.yaml")
    found = temperature_curves(DEMO)
    found.pop("skipped", None)
    curves = {T: (t, c) for T, (t, c, _) in found.items()}
    curves[ANCHOR_T] = (np.array([ANCHOR_TIME]), np.array([ANCHOR_LEVEL]))
    settings = dict(fit_below=labels.tts.fit_below, tau_glass=labels.tts.tau_glass)
    fit_a = TimeTemperatureSuperposition(arrhenius_t_max=ARRHENIUS_T_MAX_A, **settings).compute(curves)
    tau_anchor = fit_a.tau_alpha[ANCHOR_T]
    e_b = (math.log(fit_a.tau_glass) - math.log(tau_anchor)) / (1 / T_GLASS - 1 / ANCHOR_T)
    a_b = math.log(tau_anchor) - e_b / ANCHOR_T
    fit_b = TimeTemperatureSuperposition.from_dict({**fit_a.to_dict(), "arrhenius": [a_b, e_b]})
    rows = []
    for sp in ds.state_points:
        T = float(sp.temperature)
        if T not in lowest_x:
            continue
        level = lowest_x[T]
        row = {"temperature": T, "lowest_x_level": level, "t_max": sp.t_max}
        for name, fit in (("A", fit_a), ("B", fit_b)):
            row[f"tau_{name}"] = fit.relaxation_time(T)
            row[f"t_needed_{name}"] = float(fit.time_at(level, T))
            row[f"level_at_t_max_{name}"] = float(fit.level_at(sp.t_max, T)) if sp.t_max else None
        row["reached"] = bool(sp.t_max and max(row["level_at_t_max_A"], row["level_at_t_max_B"]) < level)
        rows.append(row)
    n_runs, n_struct, n = ds.isoconfigurational.n_runs, ds.n_structures, ds.n_particles
    cost = [{"temperature": float(sp.temperature), "t_max": float(sp.t_max),
             "particle_steps": sp.t_max / 0.01 * n_runs * n_struct * n} for sp in ds.state_points if sp.t_max]
    total = sum(c["particle_steps"] for c in cost)
    out = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "command": " ".join(["python", *map(shlex.quote, sys.argv)]), "machine": machine_info(),
           "git_commit": git_commit(ROOT)[0][:7], "beta": fit_a.beta, "tau_alpha_fitted": fit_a.tau_alpha,
           "arrhenius_A": list(fit_a.arrhenius), "T_g_implied_by_A": fit_a.glass_transition_temperature(),
           "arrhenius_B": [a_b, e_b], "rows": rows, "cost": cost, "total_particle_steps": total,
           "cpu_core_hours": total / CPU_RATE_PER_CORE / 3600}
    (HERE / "results" / "paper_t_max.json").write_text(json.dumps(out, indent=2, default=float) + "\n")
    lines = ["# t_max of the paper preset from the time-temperature superposition", "",
             f"- date: {out['date']}; command: `{out['command']}`; commit {out['git_commit']}",
             f"- master curve from data/demo (T = 0.6 ... 0.4): beta = {fit_a.beta:.3f}; tau_alpha^BB = "
             + ", ".join(f"{tau:.3g} (T = {T:g})" for T, tau in fit_a.tau_alpha.items()),
             f"- GlassBench anchor (one structure, facts section 2): <C_B> = {ANCHOR_LEVEL} at t = {ANCHOR_TIME:g}, "
             f"T = {ANCHOR_T} -> tau_alpha(0.23) = {tau_anchor:.3g}",
             f"- A: TimeTemperatureSuperposition's Arrhenius fit over T <= {ARRHENIUS_T_MAX_A}: log tau = "
             f"{fit_a.arrhenius[0]:.3f} + {fit_a.arrhenius[1]:.3f} / T (implies T_g = "
             f"{out['T_g_implied_by_A']:.3f} for tau = 1e12)",
             f"- B: Arrhenius through tau_alpha(0.23) and tau_alpha(T_g = {T_GLASS}) = 1e12: log tau = {a_b:.3f} + "
             f"{e_b:.3f} / T (the steeper chord of a super-Arrhenius law: the safer estimate)", "",
             "| T | lowest 'x' level of Table I | tau_alpha A / B | t needed A / B | t_max (paper.yaml) | "
             "<C_B>(t_max) A / B | reached |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['temperature']:g} | {r['lowest_x_level']} | {r['tau_A']:.3g} / {r['tau_B']:.3g} | "
                     f"{r['t_needed_A']:.3g} / {r['t_needed_B']:.3g} | {r['t_max']:.3g} | "
                     f"{r['level_at_t_max_A']:.3f} / {r['level_at_t_max_B']:.3f} | {'yes' if r['reached'] else 'NO'} |")
    lines += ["", f"Cost of the preset: {total:.3g} particle-steps ("
              + ", ".join(f"T = {c['temperature']:g}: {c['particle_steps']:.3g}" for c in cost)
              + f"), {out['cpu_core_hours'] / 1e6:.2f} M core-hours at {CPU_RATE_PER_CORE / 1e6:.3f} M particle-steps/s "
              "per core (benchmarks/results/paper_scale_projection.md)."]
    (HERE / "results" / "paper_t_max.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
